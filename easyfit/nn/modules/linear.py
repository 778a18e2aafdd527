"""torch.nn.modules.linear: Linear, Identity (defined in easyfit.nn.linear)."""
from ..linear import Linear, Identity

__all__ = ["Linear", "Identity"]
