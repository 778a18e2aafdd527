"""torch.nn.modules.normalization: LayerNorm, GroupNorm (defined in easyfit.nn.normalization)."""
from ..normalization import LayerNorm, GroupNorm

__all__ = ["LayerNorm", "GroupNorm"]
