"""torch.nn.modules.conv: Conv1d, Conv2d, ConvTranspose2d (defined in easyfit.nn.conv)."""
from ..conv import Conv1d, Conv2d, ConvTranspose2d

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]
