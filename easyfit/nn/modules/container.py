"""torch.nn.modules.container: Sequential, ModuleList, ModuleDict (defined in easyfit.nn.module)."""
from ..module import Sequential, ModuleList, ModuleDict

__all__ = ["Sequential", "ModuleList", "ModuleDict"]
