"""torch.nn.modules.module: Module (defined in easyfit.nn.module)."""
from ..module import Module

__all__ = ["Module"]
