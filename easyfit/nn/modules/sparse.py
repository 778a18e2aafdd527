"""torch.nn.modules.sparse: Embedding (defined in easyfit.nn.embedding)."""
from ..embedding import Embedding

__all__ = ["Embedding"]
