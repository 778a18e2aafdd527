"""Tensor's shape, view and indexing methods, and the primitive shape ops under them.

The ops here (reshape, transpose, swapaxes, squeeze, expand_dims, broadcast_to, sum_to, and
GetItem/IndexAdd behind `x[...]`) are the ones the engine itself needs (sum_to reduces a
broadcast gradient) and the ones the other shape ops are built from. PyTorch's other shape
ops live in layout.py (view, permute, repeat, flip, ...) and gather/scatter in indexing.py;
both import Tensor, so they load after it, and ShapeMethods (a base class of Tensor) reaches
them through the package: `core.layout`, `core.indexing`.
"""
import numpy as np

from .. import core  # the package: Tensor and the op modules that load after it, at call time
from .autograd import _grad_enabled
from .backend import get_array_module, scatter_add
from .spellings import numpy_spellings
from .tensor import Function, _is_basic_index, _normalize_axis, _normalize_index, _wrap


class ShapeMethods:
    """Tensor's shape, view and indexing methods (`x.reshape`, `x.view`, `x[...]`, `x.gather`, ...)."""
    __slots__ = ()

    @property
    def T(self):
        return transpose(self)

    @property
    def mT(self):
        """The last two dimensions swapped (a batch of matrices transposed)."""
        return swapaxes(self, -2, -1)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def view(self, *shape):
        """The same memory in a new shape (an error where only a copy could do it: use reshape)."""
        return core.layout.view(self, *shape)

    def view_as(self, other):
        return core.layout.view(self, other.shape)

    def reshape_as(self, other):
        return reshape(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """Dims start_dim..end_dim merged into one (all of them by default)."""
        return core.layout.flatten(self, start_dim, end_dim)

    def unflatten(self, dim, sizes):
        return core.layout.unflatten(self, dim, sizes)

    def transpose(self, *dims, **kwargs):
        """Two dims: swapped (PyTorch); a full permutation: reordered (NumPy); none: reversed."""
        return transpose(self, *dims, **kwargs)

    def permute(self, *dims):
        return core.layout.permute(self, *dims)

    def t(self):
        return core.layout.t(self)

    def swapaxes(self, axis0, axis1):
        return swapaxes(self, axis0, axis1)

    def squeeze(self, *args, **kwargs):
        return squeeze(self, *args, **kwargs)

    def unsqueeze(self, *args, **kwargs):
        return core.layout.unsqueeze(self, *args, **kwargs)

    def expand(self, *sizes):
        return core.layout.expand(self, *sizes)

    def expand_as(self, other):
        return core.layout.expand_as(self, other)

    def broadcast_to(self, shape):
        return broadcast_to(self, shape)

    def repeat(self, *sizes, **kwargs):
        """PyTorch's repeat: the tensor tiled `sizes` times; `x.repeat(r, axis=d)` is NumPy's (each element)."""
        return core.layout.repeat(self, *sizes, **kwargs)

    def repeat_interleave(self, *args, **kwargs):
        return core.layout.repeat_interleave(self, *args, **kwargs)

    def tile(self, *dims):
        return core.layout.tile(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    def flip(self, *dims, **kwargs):
        return core.layout.flip(self, *((core.layout._sizes(dims),) if dims else ()), **kwargs)

    def roll(self, *args, **kwargs):
        return core.layout.roll(self, *args, **kwargs)

    def split(self, *args, **kwargs):
        return core.layout.split(self, *args, **kwargs)

    def chunk(self, *args, **kwargs):
        return core.layout.chunk(self, *args, **kwargs)

    def narrow(self, *args, **kwargs):
        return core.layout.narrow(self, *args, **kwargs)

    def contiguous(self):
        return core.layout.contiguous(self)

    def is_contiguous(self):
        """Whether the array is stored in C order (conv and pooling outputs are channels-last: False)."""
        return bool(self.array.flags.c_contiguous)

    def clone(self):
        return core.layout.clone(self)

    def tril(self, diagonal=0):
        return core.layout.tril(self, diagonal)

    def triu(self, diagonal=0):
        return core.layout.triu(self, diagonal)

    # ----- indexing ---------------------------------------------------------------
    def __getitem__(self, index):
        return GetItem(_normalize_index(index))(self)

    def __setitem__(self, index, value):
        if self.creator is not None or (self.requires_grad and _grad_enabled[0]):
            raise RuntimeError("in-place assignment to a tensor that is part of a graph (or requires grad) "
                               "would corrupt its gradient; assign under easyfit.no_grad() to a leaf, "
                               "assign to tensor.array, or build a new tensor")
        self.array[_normalize_index(index)] = value.array if isinstance(value, core.Tensor) else value

    def gather(self, dim, index):
        return core.indexing.gather(self, dim, index)

    def scatter(self, dim, index, src=None, *, value=None):
        return core.indexing.scatter(self, dim, index, src, value=value)

    def scatter_add(self, dim, index, src):
        return core.indexing.scatter_add(self, dim, index, src)

    def index_select(self, dim, index):
        return core.indexing.index_select(self, dim, index)

    def masked_fill(self, mask, value):
        return core.indexing.masked_fill(self, mask, value)


def expand_dims(x, axis):
    """Insert a size-1 axis at `axis` (an int or a tuple of ints)."""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = x.ndim + len(axes)
    axes = sorted(a % ndim for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        return a.reshape(self.shape)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(gy.array.reshape(self.inputs[0].array.shape))
        return reshape(gy, self.inputs[0].shape)


def reshape(x, shape):
    """The same elements in a new shape (a view when NumPy can make one)."""
    if isinstance(shape, int):
        shape = (shape,)
    return Reshape(tuple(shape))(x)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return transpose(gy)
        inverse = tuple(np.argsort([a % len(self.axes) for a in self.axes]))
        return transpose(gy, inverse)


def transpose(x, *dims, axes=None):
    """Two dims swap them (PyTorch's transpose(x, 0, 1)); a full permutation, as a tuple or as
    three or more ints, reorders the axes (NumPy's transpose); none reverses them."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        axes = dims[0]
    elif len(dims) == 2:
        return swapaxes(x, *dims)
    elif dims:
        axes = dims
    return Transpose(tuple(axes) if axes is not None else None)(x)


def swapaxes(x, axis1, axis2):
    """Exchange two axes."""
    axes = list(range(x.ndim))
    axis1, axis2 = axis1 % x.ndim, axis2 % x.ndim
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


def _numpy_squeeze(x, axis=None):
    """NumPy's squeeze: naming an axis whose size is not 1 is an error."""
    if axis is not None:
        for a in _normalize_axis(axis, x.ndim):
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (shape {x.shape})")
    return squeeze(x, axis)


@numpy_spellings(numpy=_numpy_squeeze)
def squeeze(x, dim=None):
    """Remove axes of length one: all of them, or those among `dim` (others are left, as in PyTorch)."""
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        dims = _normalize_axis(dim, x.ndim)
        shape = tuple(n for i, n in enumerate(x.shape) if i not in dims or n != 1)
    return reshape(x, shape)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        return get_array_module(a).broadcast_to(a, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.inputs[0].shape)


def broadcast_to(x, shape):
    """A read-only view of x broadcast to `shape`; backward sums over the broadcast axes."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return BroadcastTo(shape)(x)


class SumTo(Function):
    """Sum over broadcast axes so that the result has `shape` (the inverse of broadcasting)."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        shape = self.shape
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1)
        y = a.sum(axis=axes, keepdims=True) if axes else a
        if lead:
            y = y.reshape(shape)
        return y

    def backward(self, gy):
        return broadcast_to(gy, self.inputs[0].shape)


def sum_to(x, shape):
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return SumTo(shape)(x)


# ----- indexing ---------------------------------------------------------------------

class GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, a):
        return a[self.index]

    def backward(self, gy):
        x = self.inputs[0]
        return IndexAdd(self.index, x.shape)(gy)


class IndexAdd(Function):
    """zeros(shape) with `values` added at `index` (repeated indices accumulate)."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def forward(self, values):
        xp = get_array_module(values)
        out = xp.zeros(self.shape, dtype=values.dtype)
        if _is_basic_index(self.index):
            out[self.index] = values
        else:
            scatter_add(out, self.index, values)
        return out

    def backward(self, gy):
        return GetItem(self.index)(gy)
