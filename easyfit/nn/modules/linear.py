"""torch.nn.modules.linear: Linear, Identity (defined in easyfit.nn.linear).

`NonDynamicallyQuantizableLinear` is PyTorch's name for the Linear inside
MultiheadAttention (a subclass there only so that quantization leaves it alone). easyfit
has no quantization, so the name is Linear itself; programs that list it (for example in
`serialization.safe_globals`) find it here.
"""
from ..linear import Linear, Identity

NonDynamicallyQuantizableLinear = Linear

__all__ = ["Linear", "Identity", "NonDynamicallyQuantizableLinear"]
