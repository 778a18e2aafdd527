"""Shape ops with PyTorch's names: view, unsqueeze, expand, repeat, flip, roll, split,
chunk, narrow, flatten, tril/triu, clone, contiguous.

Most are built from reshape, broadcast, transpose and indexing, so their gradients (and
higher-order gradients) come from those ops; the others are one small Function each.
"""
import builtins

import numpy as np

from .backend import get_array_module
from .spellings import numpy_spellings
from .functions import Split
from .indexing import _dim, index_select
from .tensor import Function, Tensor, _normalize_axis, _wrap, broadcast_to, expand_dims, reshape, transpose


def _sizes(sizes):
    """`f(2, 3)` and `f((2, 3))` both mean the sizes (2, 3), as in PyTorch."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        return tuple(sizes[0])
    return tuple(sizes)


class View(Function):
    """PyTorch's view: a reshape that shares the input's memory, never a hidden copy of a
    layout PyTorch would refuse too (`x.t().view(-1)` raises in both).

    One exception: easyfit keeps conv and pooling results (and elementwise results of
    them) as channels-last arrays seen as (N, C, H, W), where PyTorch's tensors are
    contiguous. NumPy cannot view those as (N, -1), so the values are copied instead:
    `y.view(y.size(0), -1)` after a conv works as in PyTorch; only a write through that
    view would not reach `y` (docs/from-pytorch.md).
    """

    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        out = a.reshape(self.shape)
        if out.size and not get_array_module(a).may_share_memory(out, a) and not _channels_last(a):
            raise RuntimeError(f"view{self.shape} of a tensor of shape {a.shape} whose memory layout "
                               f"(strides {a.strides}) cannot be viewed that way; use .reshape(...) instead")
        return out

    def backward(self, gy):
        return reshape(gy, self.inputs[0].shape)


def _channels_last(a):
    """Whether `a` is (N, C, H, W) stored as N, H, W, C: the layout of conv and pooling results."""
    if a.ndim != 4:
        return False
    channels, width, item = a.shape[1], a.shape[3], a.itemsize
    return a.strides[1] == item and a.strides[3] == channels * item and a.strides[2] == width * channels * item


def view(x, *shape):
    """x in a new shape (one size may be -1), sharing memory where the layout allows (see View);
    `view(dtype)` reinterprets the bytes."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int, np.integer)):
        return _wrap(x.array.view(np.dtype(shape[0])))
    return View(_sizes(shape))(x)


@numpy_spellings
def unsqueeze(x, dim):
    """A size-1 axis inserted at `dim`."""
    return expand_dims(x, dim)


def expand(x, *sizes):
    """Broadcast x to `sizes` (-1 keeps a size); new axes may be added in front."""
    sizes = _sizes(sizes)
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: {len(sizes)} sizes for a tensor with {x.ndim} dimensions")
    shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes))
    return broadcast_to(x, shape)


def expand_as(x, other):
    """x broadcast to other's shape."""
    return broadcast_to(x, other.shape)


def permute(x, *dims):
    """The axes in the order `dims` (a full permutation)."""
    return transpose(x, _sizes(dims))


def t(x):
    """A 2-D tensor transposed; 0-D and 1-D tensors come back as they are."""
    if x.ndim > 2:
        raise ValueError(f"t() expects a tensor with at most 2 dimensions, got {x.ndim}; use transpose(dim0, dim1)")
    return transpose(x) if x.ndim == 2 else x


def tile(x, dims):
    """NumPy's and PyTorch's tile: `repeat`, with fewer counts than dimensions allowed."""
    dims = (1,) * (x.ndim - len(dims)) + tuple(dims)
    return repeat(x, dims)


@numpy_spellings
def repeat_interleave(x, repeats, dim=None):
    """Each element repeated `repeats` times along `dim` (flattened first when None): NumPy's repeat."""
    if dim is None:
        x, dim = reshape(x, (-1,)), 0
    dim = _dim(dim, x.ndim)
    if isinstance(repeats, Tensor):
        repeats = repeats.array.tolist()
    if isinstance(repeats, (list, tuple)) or (hasattr(repeats, "ndim") and repeats.ndim):
        if len(repeats) == 1:
            repeats = int(repeats[0])
        else:
            positions = np.repeat(np.arange(x.shape[dim]), np.asarray(repeats, dtype=np.int64))
            return index_select(x, dim, positions)
    repeats = int(repeats)
    shape = tuple(x.shape)
    spread = broadcast_to(reshape(x, shape[:dim + 1] + (1,) + shape[dim + 1:]),
                          shape[:dim + 1] + (repeats,) + shape[dim + 1:])
    return reshape(spread, shape[:dim] + (shape[dim] * repeats,) + shape[dim + 1:])


def _numpy_repeat(x, repeats, axis=None):
    """NumPy's repeat (x.repeat(r, axis=k)): repeat_interleave."""
    return repeat_interleave(x, repeats, dim=axis)


@numpy_spellings(numpy=_numpy_repeat)
def repeat(x, *sizes):
    """PyTorch's repeat (NumPy's tile): the whole tensor repeated `sizes[i]` times along axis i."""
    sizes = _sizes(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: {len(sizes)} repeat counts for a tensor with {x.ndim} dimensions; "
                         "give at least one per dimension")
    shape = (1,) * (len(sizes) - x.ndim) + tuple(x.shape)
    interleaved = tuple(n for size in shape for n in (1, size))
    target = tuple(n for count, size in zip(sizes, shape) for n in (count, size))
    tiled = broadcast_to(reshape(x, interleaved), target)
    return reshape(tiled, tuple(count * size for count, size in zip(sizes, shape)))


class Flip(Function):
    def __init__(self, dims):
        self.dims = dims

    def forward(self, a):
        return get_array_module(a).flip(a, self.dims)

    def backward(self, gy):
        return Flip(self.dims)(gy)


@numpy_spellings
def flip(x, dims=None):
    """The order of the entries reversed along `dims` (all axes when None, as in NumPy)."""
    if isinstance(dims, int):
        dims = (dims,)
    return Flip(_normalize_axis(dims, x.ndim))(x)


class Roll(Function):
    def __init__(self, shifts, dims):
        self.shifts, self.dims = shifts, dims

    def forward(self, a):
        return get_array_module(a).roll(a, self.shifts, axis=self.dims)

    def backward(self, gy):
        shifts = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return Roll(shifts, self.dims)(gy)


@numpy_spellings
def roll(x, shifts, dims=None):
    """Entries shifted cyclically by `shifts` along `dims` (over the flattened tensor when None)."""
    if isinstance(shifts, (list, tuple)):
        shifts = tuple(int(s) for s in shifts)
    if isinstance(dims, (list, tuple)):
        dims = tuple(int(d) for d in dims)
    return Roll(shifts, dims)(x)


def _split_sizes(split_size_or_sections, length):
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split: the chunk size must be positive, got {size}")
        return [size] * (length // size) + ([length % size] if length % size else []) or [0]
    sizes = [int(s) for s in split_size_or_sections]
    if builtins.sum(sizes) != length:
        raise ValueError(f"split: sizes {sizes} add up to {builtins.sum(sizes)}, not the length {length} "
                         "of the dimension (NumPy's cut indices are split(x, indices, axis=d))")
    return sizes


def _numpy_split(x, indices_or_sections, axis=0):
    """NumPy's split: a number of equal sections, or the indices to cut at (a list)."""
    if not isinstance(indices_or_sections, (int, np.integer)):
        indices_or_sections = [int(i) for i in indices_or_sections]
    return list(Split(indices_or_sections, axis % x.ndim)(x))


@numpy_spellings(numpy=_numpy_split)
def split(x, split_size_or_sections, dim=0):
    """PyTorch's split: chunks of `split_size` (the last one smaller), or of the listed sizes.

    `split(x, 3, axis=1)` keeps NumPy's meaning (three sections, or cut indices).
    """
    dim = _dim(dim, x.ndim)
    sizes = _split_sizes(split_size_or_sections, x.shape[dim])
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(Split(cuts, dim)(x)) if cuts else (x,)


@numpy_spellings
def chunk(x, chunks, dim=0):
    """At most `chunks` pieces of equal size (the last one smaller), as PyTorch's chunk."""
    length = x.shape[_dim(dim, x.ndim)]
    return split(x, builtins.max(-(-length // int(chunks)), 1), dim)


@numpy_spellings
def narrow(x, dim, start, length):
    """The entries start .. start + length - 1 along `dim` (a view)."""
    dim = _dim(dim, x.ndim)
    start = start % x.shape[dim] if start < 0 else start
    if start + length > x.shape[dim]:
        raise IndexError(f"narrow: start {start} + length {length} exceeds size {x.shape[dim]} of dimension {dim}")
    return x[(slice(None),) * dim + (slice(start, start + length),)]


def flatten(x, start_dim=0, end_dim=-1):
    """Dimensions start_dim..end_dim merged into one (all of them by default)."""
    if x.ndim == 0:
        return reshape(x, (1,))
    start, end = _dim(start_dim, x.ndim), _dim(end_dim, x.ndim)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = tuple(x.shape)
    return reshape(x, shape[:start] + (-1 if 0 not in shape else int(np.prod(shape[start:end + 1])),) + shape[end + 1:])


def unflatten(x, dim, sizes):
    """Dimension `dim` split into `sizes`."""
    dim = _dim(dim, x.ndim)
    return reshape(x, tuple(x.shape[:dim]) + tuple(sizes) + tuple(x.shape[dim + 1:]))


class Copy(Function):
    """A copy of the input whose gradient passes straight through (clone, contiguous)."""

    def forward(self, a):
        return get_array_module(a).array(a, copy=True, order="C")

    def backward(self, gy):
        return gy


def clone(x):
    """A copy with its own memory, recorded in the graph (the gradient passes through)."""
    return Copy()(x)


def contiguous(x):
    """x itself when its memory is in C order, else a C-ordered copy."""
    return x if x.array.flags.c_contiguous else Copy()(x)


class Triangle(Function):
    """The lower (tril) or upper (triu) triangle of the last two dimensions, zeros elsewhere:
    a fixed mask, so the gradient is the same triangle of the incoming gradient."""

    def __init__(self, diagonal, upper):
        self.diagonal, self.upper = int(diagonal), bool(upper)

    def forward(self, a):
        xp = get_array_module(a)
        return xp.triu(a, self.diagonal) if self.upper else xp.tril(a, self.diagonal)

    def backward(self, gy):
        return Triangle(self.diagonal, self.upper)(gy)


def _triangle(x, diagonal, upper):
    if x.ndim < 2:
        raise ValueError(f"tril/triu need a tensor with at least 2 dimensions, got shape {x.shape}")
    return Triangle(diagonal, upper)(x)


def tril(x, diagonal=0):
    """The lower triangle (j <= i + diagonal) of the last two dimensions; zeros above."""
    return _triangle(x, diagonal, upper=False)


def triu(x, diagonal=0):
    """The upper triangle (j >= i + diagonal) of the last two dimensions; zeros below."""
    return _triangle(x, diagonal, upper=True)
