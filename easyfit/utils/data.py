"""`easyfit.utils.data`: torch.utils.data's names, which live in easyfit.data."""
from ..data import DataLoader, Dataset, TensorDataset, random_split

__all__ = ["DataLoader", "Dataset", "TensorDataset", "random_split"]
