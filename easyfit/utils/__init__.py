"""`easyfit.utils`: PyTorch's torch.utils paths for code that imports from there."""
from . import data
