"""Distances and similarities between vectors: cosine_similarity."""
import numpy as np

from ...core.backend import get_array_module
from ...core.functions import broadcast_to, maximum, sqrt
from ...core.tensor import Tensor, sum


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """The cosine of the angle between x1 and x2 along `dim`, as PyTorch computes it:
    sum(x1 / max(|x1|, eps) * x2 / max(|x2|, eps)). The inputs broadcast to a common shape."""
    for name, value in (("x1", x1), ("x2", x2)):
        if not isinstance(value, Tensor):
            raise TypeError(f"cosine_similarity: {name} must be a Tensor, got {type(value).__name__}")
    shape = _broadcast_shape(x1.shape, x2.shape)
    if x1.shape != shape:
        x1 = broadcast_to(x1, shape)
    if x2.shape != shape:
        x2 = broadcast_to(x2, shape)
    ndim = len(shape)
    if not -ndim <= dim < max(ndim, 1):
        raise ValueError(f"cosine_similarity: dim {dim} is out of range for inputs of shape {shape}")
    return sum((x1 / _clamped_norm(x1, dim, eps)) * (x2 / _clamped_norm(x2, dim, eps)), axis=dim)


def _clamped_norm(x, dim, eps):
    """max(|x|, eps) along `dim` (kept), differentiated as |x| itself: PyTorch clamps the norm
    outside autograd, so its gradient is the unclamped norm's (0 for a zero vector)."""
    squared = sum(x * x, axis=dim, keepdims=True)
    norm = sqrt(maximum(squared, np.finfo(x.dtype).tiny))  # the floor only keeps sqrt's gradient finite at 0
    xp = get_array_module(norm.array)
    return norm + Tensor(xp.maximum(norm.array, eps) - norm.array)


def _broadcast_shape(a, b):
    ndim = max(len(a), len(b))
    a, b = (1,) * (ndim - len(a)) + tuple(a), (1,) * (ndim - len(b)) + tuple(b)
    shape = []
    for left, right in zip(a, b):
        if left != right and 1 not in (left, right):
            raise ValueError(f"cosine_similarity: shapes {a} and {b} do not broadcast")
        shape.append(max(left, right) if 1 in (left, right) else left)
    return tuple(shape)
