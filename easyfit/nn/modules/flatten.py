"""torch.nn.modules.flatten: Flatten (defined in easyfit.nn.linear)."""
from ..linear import Flatten

__all__ = ["Flatten"]
