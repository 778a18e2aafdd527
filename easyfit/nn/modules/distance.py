"""torch.nn.modules.distance: CosineSimilarity (defined in easyfit.nn.distance)."""
from ..distance import CosineSimilarity

__all__ = ["CosineSimilarity"]
