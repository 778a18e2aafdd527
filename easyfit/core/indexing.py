"""Indexing ops with PyTorch's names: gather, scatter, scatter_add, index_select, masked_fill.

gather is `x[index along dim]`, so it is the same GetItem op as `x[...]` (its backward
accumulates repeated indices); scatter_add is the IndexAdd op that GetItem's backward uses.
"""
import builtins

import numpy as np

from .backend import get_array_module, to_device
from .functions import where
from .tensor import Function, GetItem, IndexAdd, Tensor, _operand, _wrap, broadcast_to


def _dim(dim, ndim):
    if not -builtins.max(ndim, 1) <= dim < builtins.max(ndim, 1):
        raise IndexError(f"dimension {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % builtins.max(ndim, 1)


def _along(index, dim, source, name):
    """The advanced index that picks index[i, j, ...] along `dim` and position i, j, ... elsewhere."""
    source_shape = source.shape
    index = to_device(index.array if isinstance(index, Tensor) else np.asarray(index), source.device)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{name}: index must hold integers, got dtype {index.dtype}")
    if index.ndim != len(source_shape):
        raise ValueError(f"{name}: index has {index.ndim} dimensions but the tensor has {len(source_shape)}")
    for d, (n, limit) in enumerate(zip(index.shape, source_shape)):
        if d != dim and n > limit:
            raise ValueError(f"{name}: index shape {index.shape} is larger than {tuple(source_shape)} "
                             f"in dimension {d}")
    xp = get_array_module(index)
    grids = []
    for d, n in enumerate(index.shape):
        if d == dim:
            grids.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            grids.append(xp.arange(n).reshape(shape))
    return tuple(grids)


def gather(x, dim, index):
    """out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and so on): values picked along `dim`."""
    dim = _dim(dim, x.ndim)
    return GetItem(_along(index, dim, x, "gather"))(x)


def _source(src, index, like, name):
    """`src` as a tensor cut to index's shape (a scalar fills that shape)."""
    index_shape = (index.array if isinstance(index, Tensor) else np.asarray(index)).shape
    src = _operand(src, like)
    if src.ndim == 0:
        return broadcast_to(src, index_shape)
    if any(n > m for n, m in zip(index_shape, src.shape)) or src.ndim != len(index_shape):
        raise ValueError(f"{name}: src of shape {src.shape} is smaller than index of shape {index_shape}")
    if tuple(src.shape) == tuple(index_shape):
        return src  # already that shape: no slicing op (whose bounds a traced export would freeze)
    return src[tuple(slice(0, n) for n in index_shape)]


def scatter_add(x, dim, index, src):
    """x with src[i][j][k] added at [index[i][j][k]][j][k] (for dim 0); repeated indices accumulate."""
    dim = _dim(dim, x.ndim)
    along = _along(index, dim, x, "scatter_add")
    return x + IndexAdd(along, tuple(x.shape))(_source(src, index, x, "scatter_add").astype(x.dtype))


class Scatter(Function):
    """x with src written at the positions `along` picks (the last write wins on repeats)."""

    def __init__(self, along):
        self.along = along

    def forward(self, a, src):
        out = a.copy()
        out[self.along] = src
        return out

    def backward(self, gy):
        x, src = self.inputs
        gx = None
        if x.requires_grad:
            keep = get_array_module(gy.array).ones(gy.shape, dtype=bool)
            keep[self.along] = False
            gx = where(keep, gy, _wrap(get_array_module(gy.array).zeros((), gy.dtype)))
        return gx, (GetItem(self.along)(gy) if src.requires_grad else None)


def scatter(x, dim, index, src=None, *, value=None):
    """x with src (or the scalar `value`) written at [index[i][j][k]][j][k] (for dim 0), as PyTorch's scatter."""
    if (src is None) == (value is None):
        raise TypeError("scatter: give exactly one of src and value")
    dim = _dim(dim, x.ndim)
    along = _along(index, dim, x, "scatter")
    return Scatter(along)(x, _source(src if value is None else value, index, x, "scatter").astype(x.dtype))


def index_select(x, dim, index):
    """The entries at the 1-D integer `index` along `dim`."""
    index = to_device(index.array if isinstance(index, Tensor) else np.asarray(index), x.device)
    if index.ndim != 1:
        raise ValueError(f"index_select: index must be 1-D, got shape {index.shape}")
    return x[(slice(None),) * _dim(dim, x.ndim) + (index,)]


def masked_fill(x, mask, value):
    """x with `value` where the boolean `mask` (broadcast to x's shape) is true."""
    mask = mask.array if isinstance(mask, Tensor) else mask
    if getattr(mask, "dtype", None) is None or mask.dtype != np.bool_:
        raise TypeError(f"masked_fill: mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if np.broadcast_shapes(x.shape, mask.shape) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's shape {x.shape}")
    return where(mask, _operand(value, x), x)
