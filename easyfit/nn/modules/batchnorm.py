"""torch.nn.modules.batchnorm: BatchNorm1d, BatchNorm2d and their base _BatchNorm (easyfit.nn.normalization)."""
from ..normalization import _BatchNorm, BatchNorm1d, BatchNorm2d

__all__ = ["BatchNorm1d", "BatchNorm2d"]
