"""Embedding lookup: a row gather whose backward is a fast scatter-add."""
import numpy as np

from ...core.backend import get_array_module, scatter_add, to_device
from ...core.tensor import _wrap, Function, Tensor


class EmbeddingLookup(Function):
    """weight[indices] for an integer array of any shape."""

    def __init__(self, indices, padding_idx=None):
        self.indices, self.padding_idx = indices, padding_idx

    def forward(self, weight):
        xp = get_array_module(weight)
        rows = xp.take(weight, self.indices.reshape(-1), axis=0)
        return rows.reshape(self.indices.shape + weight.shape[1:])

    def backward(self, gy):
        weight = self.inputs[0]
        return EmbeddingGrad(self.indices, weight.shape[0], self.padding_idx)(gy)


class EmbeddingGrad(Function):
    """The gradient of a lookup: gy's rows summed into a (num_embeddings, dim) array."""

    def __init__(self, indices, num_embeddings, padding_idx):
        self.indices, self.num_embeddings, self.padding_idx = indices, num_embeddings, padding_idx

    def forward(self, gy):
        xp = get_array_module(gy)
        dim = gy.shape[self.indices.ndim:]
        rows, values = self.indices.reshape(-1), gy.reshape((-1,) + dim)
        if xp is np and values.flags.c_contiguous:
            return _sum_rows(self.num_embeddings, rows, values, self.padding_idx)
        out = xp.zeros((self.num_embeddings,) + dim, dtype=gy.dtype)
        scatter_add(out, rows, values)
        if self.padding_idx is not None:
            out[self.padding_idx] = 0
        return out

    def backward(self, ggw):
        g = EmbeddingLookup(self.indices)(ggw)
        if self.padding_idx is not None:
            keep = (self.indices != self.padding_idx).astype(ggw.dtype)
            g = g * _wrap(keep.reshape(keep.shape + (1,) * (g.ndim - keep.ndim)))
        return g


# A row used more often than this is summed by np.add.reduceat (about a microsecond per row,
# fine for the few rows used very often); the others are summed round by round.
_MANY_USES = 8


def _sum_rows(num_rows, rows, values, skip=None):
    """A (num_rows, ...) array whose row r is the sum of values[i] over every i with
    rows[i] == r; the row `skip` (the padding row) stays zero and its uses cost nothing.
    A row used at most `_MANY_USES` times is summed in the order of i (as a plain loop
    does), one used more often by NumPy's pairwise summation: bit for bit what
    `backend.scatter_add` gives, about three times faster.

    Sorting the indices (stably) groups each row's uses. Ordering the rows by their number
    of uses makes "the rows used more than k times" a prefix, so round k adds the k-th use
    of every such row with one gather (`np.take`, several times faster than fancy
    indexing on 2-D arrays) and one in-place add on a slice; the sums are written into the
    zero table once, through a one-dimensional view whose items are whole rows.
    """
    out = np.zeros((num_rows,) + values.shape[1:], dtype=values.dtype)
    count = rows.size
    if count == 0 or out.size == 0:
        return out
    keys = rows.astype(np.uint16) if num_rows <= 1 << 16 else rows   # radix sort for 16-bit keys
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.empty(count, dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)              # where each distinct row's uses begin
    uses = np.diff(starts, append=count)
    targets = sorted_keys[starts].astype(np.intp)
    if skip is not None:
        keep = targets != skip
        starts, uses, targets = starts[keep], uses[keep], targets[keep]
    row_items = _as_row_items(out)
    many = uses > _MANY_USES
    if many.any():
        many_starts, many_uses = starts[many], uses[many]
        segment_starts = np.cumsum(many_uses) - many_uses
        positions = np.repeat(many_starts - segment_starts, many_uses) + np.arange(int(many_uses.sum()))
        sums = np.add.reduceat(np.take(values, order[positions], axis=0), segment_starts, axis=0)
        row_items[targets[many]] = _as_row_items(sums)
        few = ~many
        starts, uses, targets = starts[few], uses[few], targets[few]
    if starts.size:
        by_uses = np.argsort((_MANY_USES - uses).astype(np.uint8), kind="stable")   # most used first
        starts, uses, targets = starts[by_uses], uses[by_uses], targets[by_uses]
        sums = np.take(values, order[starts], axis=0)
        # rows used more than k times: the first (number of rows with uses > k) rows
        more_than = np.searchsorted(-uses, -np.arange(1, int(uses[0])), side="left")
        for k, prefix in enumerate(more_than, start=1):
            sums[:prefix] += np.take(values, order[starts[:prefix] + k], axis=0)
        row_items[targets] = _as_row_items(sums)
    return out


def _as_row_items(array):
    """A C-contiguous (n, ...) array seen as n opaque items, one per row."""
    return array.reshape(len(array), -1).view(np.dtype((np.void, array.itemsize * array[0].size))).reshape(-1)


def embedding(indices, weight, padding_idx=None):
    """Rows of `weight` at integer `indices`; the row `padding_idx` receives no gradient."""
    indices = indices.array if isinstance(indices, Tensor) else np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {indices.dtype}")
    num = weight.shape[0]
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= num):
        raise IndexError(f"embedding: indices must lie in [0, {num}), got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num
    return EmbeddingLookup(to_device(indices, weight.device), padding_idx)(weight)
