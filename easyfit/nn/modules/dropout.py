"""torch.nn.modules.dropout: Dropout (defined in easyfit.nn.dropout)."""
from ..dropout import Dropout

__all__ = ["Dropout"]
