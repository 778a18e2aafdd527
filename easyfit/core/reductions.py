"""Tensor's reductions and sorting: sum, mean, var, std, max/min (with a dim: values and
indices), amax/amin, argmax/argmin, sort/argsort, their ops, and the methods that call them.

Each function takes PyTorch's `dim`/`keepdim` and NumPy's `axis`/`keepdims` (spellings.py);
where the two mean different things (max with a dim, var's correction, sort) `axis=` asks for
NumPy's. ReductionMethods, a base class of Tensor, makes each a method: `x.sum(dim=1)` is
`easyfit.sum(x, dim=1)`. The sorting kernels (sorting.py) and prod, norm, cumsum and softmax
(functions.py) import Tensor, so they load after it and are reached through the package.
"""
import builtins

import numpy as np

from .. import core  # the package: Tensor and the op modules that load after it, at call time
from .autograd import _grad_enabled
from .backend import get_array_module
from .shapes import broadcast_to, reshape
from .spellings import numpy_spellings
from .tensor import Function, _keepdims_shape, _normalize_axis, _wrap


class ReductionMethods:
    """Tensor's reductions and sorting (`x.sum(dim)`, `x.max(dim)`, `x.sort()`, ...)."""
    __slots__ = ()

    # Each method calls the function of the same name: they share the spelling rules.
    def sum(self, *args, **kwargs):
        return sum(self, *args, **kwargs)

    def mean(self, *args, **kwargs):
        return mean(self, *args, **kwargs)

    def var(self, *args, **kwargs):
        return var(self, *args, **kwargs)

    def std(self, *args, **kwargs):
        return std(self, *args, **kwargs)

    def max(self, *args, **kwargs):
        return max(self, *args, **kwargs)

    def min(self, *args, **kwargs):
        return min(self, *args, **kwargs)

    def argmax(self, *args, **kwargs):
        return argmax(self, *args, **kwargs)

    def argmin(self, *args, **kwargs):
        return argmin(self, *args, **kwargs)

    def prod(self, *args, **kwargs):
        return core.functions.prod(self, *args, **kwargs)

    def norm(self, *args, **kwargs):
        return core.functions.norm(self, *args, **kwargs)

    def cumsum(self, *args, **kwargs):
        return core.functions.cumsum(self, *args, **kwargs)

    def softmax(self, *args, **kwargs):
        return core.functions.softmax(self, *args, **kwargs)

    def log_softmax(self, *args, **kwargs):
        return core.functions.log_softmax(self, *args, **kwargs)

    # ----- sorting ----------------------------------------------------------------
    def sort(self, *args, **kwargs):
        return sort(self, *args, **kwargs)

    def argsort(self, *args, **kwargs):
        return argsort(self, *args, **kwargs)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return core.sorting.topk(self, k, dim, largest, sorted)


class Sum(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        return a.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not _grad_enabled[0]:   # a read-only broadcast view: the consumers never write into it
            g = gy.array if self.keepdims else gy.array.reshape(_keepdims_shape(shape, self.axis))
            return _wrap(get_array_module(g).broadcast_to(g, shape))
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy, shape)


@numpy_spellings
def sum(x, dim=None, keepdim=False, *, dtype=None):
    """Sum over `dim` (all dimensions when None)."""
    if dtype is not None:
        x = x.astype(dtype)
    return Sum(_normalize_axis(dim, x.ndim), keepdim)(x)


class Mean(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        return a.mean(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = x.shape
        count = x.array.size // builtins.max(gy.array.size, 1) if x.array.size else 1
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy * (1.0 / count if count else 0.0), shape)


@numpy_spellings
def mean(x, dim=None, keepdim=False, *, dtype=None):
    """Mean over `dim` (all dimensions when None)."""
    if dtype is not None:
        x = x.astype(dtype)
    return Mean(_normalize_axis(dim, x.ndim), keepdim)(x)


def _variance(x, dim, keepdim, correction):
    axes = _normalize_axis(dim, x.ndim)
    count = x.array.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    centered = x - mean(x, dim, True)
    scale = 1.0 / (count - correction) if count > correction else float("nan")
    return sum(centered * centered, dim, keepdim) * scale


def _correction(unbiased, correction):
    if unbiased is not None and correction is not None:
        raise TypeError("var/std: give unbiased= or correction=, not both")
    return correction if correction is not None else (0 if unbiased is False else 1)


def _numpy_var(x, axis=None, keepdims=False, ddof=0):
    """NumPy's var (named axis=): ddof=0 unless given."""
    return _variance(x, axis, keepdims, ddof)


def _numpy_std(x, axis=None, keepdims=False, ddof=0):
    """NumPy's std (named axis=): ddof=0 unless given."""
    return _variance(x, axis, keepdims, ddof) ** 0.5


@numpy_spellings(numpy=_numpy_var)
def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over `dim` with PyTorch's default correction=1 (n - 1); `axis=` gives NumPy's ddof=0."""
    return _variance(x, dim, keepdim, _correction(unbiased, correction))


@numpy_spellings(numpy=_numpy_std)
def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation over `dim` (PyTorch's correction=1 by default; `axis=` gives NumPy's ddof=0).

    Equal values give a zero gradient, as in PyTorch (not NaN)."""
    return root_with_zero_slope(_variance(x, dim, keepdim, _correction(unbiased, correction)), 0.5)


class RootWithZeroSlope(Function):
    """s ** exponent for s >= 0 whose gradient at s == 0 is 0 (a root's slope there is inf).

    std and norm end in such a root; PyTorch gives equal values and zero vectors a zero
    gradient there, so a constant input never turns the gradients to NaN.
    """

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, s):
        return s ** self.exponent

    def backward(self, gy):
        s = self.inputs[0]
        positive = _wrap((s.array > 0).astype(gy.dtype))
        safe = s + (1 - positive)  # 1 where s == 0, so no inf is formed at any order
        return gy * positive * safe ** (self.exponent - 1) * self.exponent


def root_with_zero_slope(s, exponent):
    return RootWithZeroSlope(exponent)(s)


class Max(Function):
    """max/min over axes; the gradient is shared evenly between tied extremes."""
    save_outputs = True

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        if a.size == 0 and (self.axis is None or 0 in [a.shape[k] for k in np.atleast_1d(self.axis)]):
            # as in NumPy: reducing a zero-size axis has no identity; other axes of an empty tensor do
            raise ValueError(f"{'min' if self.take_min else 'max'} over a zero-size axis of an empty tensor")
        reduce = a.min if self.take_min else a.max
        return reduce(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = _keepdims_shape(x.shape, self.axis)
        y = self.output().array.reshape(shape)
        mask = (x.array == y).astype(gy.dtype)
        mask /= mask.sum(axis=self.axis, keepdims=True)
        return broadcast_to(reshape(gy, shape), x.shape) * _wrap(mask)


def _numpy_max(x, axis=None, keepdims=False):
    """NumPy's max (named axis=): the values only; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, False)(x)


def _numpy_min(x, axis=None, keepdims=False):
    """NumPy's min (named axis=): the values only; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, True)(x)


@numpy_spellings(numpy=_numpy_max)
def max(x, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) along it; with a tensor, the elementwise maximum."""
    if isinstance(dim, core.Tensor):
        return core.functions.maximum(x, dim)
    if dim is None:
        return Max(None, False, False)(x)
    return core.sorting.extreme_along(x, dim, keepdim, take_min=False)


@numpy_spellings(numpy=_numpy_min)
def min(x, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) along it; with a tensor, the elementwise minimum."""
    if isinstance(dim, core.Tensor):
        return core.functions.minimum(x, dim)
    if dim is None:
        return Max(None, False, True)(x)
    return core.sorting.extreme_along(x, dim, keepdim, take_min=True)


def amax(x, dim=None, keepdim=False):
    """The largest values over `dim` (a tuple allowed); ties share the gradient equally."""
    return Max(_normalize_axis(dim, x.ndim), keepdim, False)(x)


def amin(x, dim=None, keepdim=False):
    """The smallest values over `dim` (a tuple allowed); ties share the gradient equally."""
    return Max(_normalize_axis(dim, x.ndim), keepdim, True)(x)


class ArgMax(Function):
    """Index of the extreme value over one axis (or of the flattened array when axis is
    None); an integer result, so no gradient. An op, so that tracing sees it."""

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        reduce = a.argmin if self.take_min else a.argmax
        return reduce(axis=self.axis, keepdims=self.keepdims)


@numpy_spellings
def argmax(x, dim=None, keepdim=False):
    """Index of the largest value over `dim` (of the flattened tensor when None; int64, no gradient)."""
    return ArgMax(dim, keepdim, False)(x)


@numpy_spellings
def argmin(x, dim=None, keepdim=False):
    """Index of the smallest value over `dim` (of the flattened tensor when None; int64, no gradient)."""
    return ArgMax(dim, keepdim, True)(x)


# ----- sorting ----------------------------------------------------------------------

def _numpy_sort(x, axis=-1):
    """NumPy's sort (named axis=): the sorted values only."""
    return core.sorting.sort(x, axis).values


@numpy_spellings(numpy=_numpy_sort)
def sort(x, dim=-1, descending=False, stable=False):
    """Sorted along `dim`: PyTorch's (values, indices); `axis=` gives NumPy's sorted values."""
    return core.sorting.sort(x, dim, descending, stable)


@numpy_spellings
def argsort(x, dim=-1, descending=False, stable=False):
    """Indices that sort x along `dim` (ties keep their order)."""
    return core.sorting.argsort(x, dim, descending, stable)
