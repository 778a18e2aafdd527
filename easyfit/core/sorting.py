"""Sorting and selection with PyTorch's names: sort, argsort, topk, and max/min/median
along a dim, which return (values, indices) as PyTorch's named tuples do.

The values are gathered from the input at the indices, so the gradient reaches exactly
the selected entries (PyTorch's rule for these ops).
"""
from collections import namedtuple

import numpy as np

from .backend import get_array_module
from .indexing import _dim, gather
from .tensor import _wrap, squeeze

# PyTorch's torch.return_types: a tuple that also names its two fields.
MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])
SortResult = namedtuple("sort", ["values", "indices"])
TopkResult = namedtuple("topk", ["values", "indices"])


def _order(array, dim, descending, xp):
    key = array
    if descending:
        key = -(array.astype(np.int64) if array.dtype.kind in "bu" else array)
    if xp is np:
        return np.argsort(key, axis=dim, kind="stable")
    return xp.argsort(key, axis=dim)


def argsort(x, dim=-1, descending=False, stable=False):
    """Indices that sort x along `dim` (ties keep their order)."""
    dim = _dim(dim, x.ndim)
    return _wrap(_order(x.array, dim, descending, get_array_module(x.array)))


def sort(x, dim=-1, descending=False, stable=False):
    """(values, indices) of x sorted along `dim`."""
    indices = argsort(x, dim, descending)
    return SortResult(gather(x, _dim(dim, x.ndim), indices), indices)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) entries along `dim`, largest first."""
    dim = _dim(dim, x.ndim)
    if not 0 <= k <= x.shape[dim]:
        raise ValueError(f"topk: k={k} is out of range for size {x.shape[dim]} of dimension {dim}")
    order = _order(x.array, dim, largest, get_array_module(x.array))
    indices = _wrap(order[(slice(None),) * dim + (slice(0, k),)])
    return TopkResult(gather(x, dim, indices), indices)


def extreme_along(x, dim, keepdim, take_min):
    """PyTorch's max(dim) / min(dim): (values, indices), the gradient going to the chosen index."""
    dim = _dim(dim, x.ndim)
    pick = x.array.argmin if take_min else x.array.argmax
    if x.shape[dim] == 0:
        raise ValueError(f"{'min' if take_min else 'max'}: dimension {dim} of shape {x.shape} is empty")
    indices = _wrap(pick(axis=dim, keepdims=True))
    values = gather(x, dim, indices)
    if not keepdim:
        values, indices = squeeze(values, dim), _wrap(indices.array.squeeze(axis=dim))
    return (MinResult if take_min else MaxResult)(values, indices)
