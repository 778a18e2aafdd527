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
        out = xp.zeros((self.num_embeddings,) + dim, dtype=gy.dtype)
        scatter_add(out, self.indices.reshape(-1), gy.reshape((-1,) + dim))
        if self.padding_idx is not None:
            out[self.padding_idx] = 0
        return out

    def backward(self, ggw):
        g = EmbeddingLookup(self.indices)(ggw)
        if self.padding_idx is not None:
            keep = (self.indices != self.padding_idx).astype(ggw.dtype)
            g = g * _wrap(keep.reshape(keep.shape + (1,) * (g.ndim - keep.ndim)))
        return g


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
