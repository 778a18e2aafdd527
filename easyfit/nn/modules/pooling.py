"""torch.nn.modules.pooling: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (defined in easyfit.nn.pooling)."""
from ..pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
