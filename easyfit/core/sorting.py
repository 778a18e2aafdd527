"""Sorting and selection with PyTorch's names: sort, argsort, topk, and max/min/median
along a dim, which return (values, indices) as PyTorch's named tuples do.

The values are gathered from the input at the indices, so the gradient reaches exactly
the selected entries (PyTorch's rule for these ops). The indices come from ops (ArgSort,
ArgMax), so a traced forward pass (ONNX export) sees where they came from.
"""
from collections import namedtuple

import numpy as np

from .backend import get_array_module
from .indexing import _dim, gather
from .tensor import ArgMax, Function, squeeze

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


class ArgSort(Function):
    """Indices that sort along one axis (ties keep their order); an integer result, so no
    gradient. An op, so that tracing sees it."""

    def __init__(self, axis, descending):
        self.axis, self.descending = axis, descending

    def forward(self, a):
        return _order(a, self.axis, self.descending, get_array_module(a))


def argsort(x, dim=-1, descending=False, stable=False):
    """Indices that sort x along `dim` (ties keep their order)."""
    return ArgSort(_dim(dim, x.ndim), bool(descending))(x)


def sort(x, dim=-1, descending=False, stable=False):
    """(values, indices) of x sorted along `dim`."""
    indices = argsort(x, dim, descending)
    return SortResult(gather(x, _dim(dim, x.ndim), indices), indices)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) entries along `dim`, largest first."""
    dim = _dim(dim, x.ndim)
    if not 0 <= k <= x.shape[dim]:
        raise ValueError(f"topk: k={k} is out of range for size {x.shape[dim]} of dimension {dim}")
    indices = ArgSort(dim, bool(largest))(x)[(slice(None),) * dim + (slice(0, k),)]
    return TopkResult(gather(x, dim, indices), indices)


def extreme_along(x, dim, keepdim, take_min):
    """PyTorch's max(dim) / min(dim): (values, indices), the gradient going to the chosen index."""
    dim = _dim(dim, x.ndim)
    if x.shape[dim] == 0:
        raise ValueError(f"{'min' if take_min else 'max'}: dimension {dim} of shape {x.shape} is empty")
    indices = ArgMax(dim, True, take_min)(x)
    values = gather(x, dim, indices)
    if not keepdim:
        values, indices = squeeze(values, dim), squeeze(indices, dim)
    return (MinResult if take_min else MaxResult)(values, indices)
