"""torch.nn.modules.upsampling: Upsample and its older spellings (defined in easyfit.nn.upsampling)."""
from ..upsampling import Upsample, UpsamplingNearest2d, UpsamplingBilinear2d

__all__ = ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]
