"""Embedding."""
import numpy as np

from ..core.tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """A lookup table: integer indices -> rows of weight (num_embeddings, embedding_dim).

    Initialised N(0, 1) as in PyTorch; the row `padding_idx` starts at zero and never
    receives a gradient. `sparse=True` is accepted (the gradient is dense, with the same
    values); `max_norm` and `scale_grad_by_freq` are not implemented and raise.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        if max_norm is not None or scale_grad_by_freq:
            raise ValueError("Embedding: max_norm and scale_grad_by_freq are not implemented in easyfit; leave "
                             "them at their defaults (None, False)")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx must lie in [-{self.num_embeddings}, "
                                 f"{self.num_embeddings}), got {padding_idx}")
            padding_idx = padding_idx % self.num_embeddings
        self.padding_idx = padding_idx
        self.sparse = sparse
        if _weight is not None:
            weight = _weight.array if isinstance(_weight, Tensor) else np.asarray(_weight)
            if tuple(weight.shape) != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(weight.shape)}, expected "
                                 f"{(self.num_embeddings, self.embedding_dim)}")
            self.weight = Parameter(weight.copy() if dtype is None else weight.astype(dtype),
                                    requires_grad=not _freeze)
        else:
            dtype = np.dtype(np.float32 if dtype is None else dtype)
            self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=dtype),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        if device is not None:
            self.to(device)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding holding a copy of `embeddings` (rows, dim), frozen unless `freeze=False`;
        the padding row keeps its given values."""
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D (rows, dim), got shape "
                             f"{tuple(embeddings.shape)}")
        rows, dim = embeddings.shape
        return cls(rows, dim, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.array[self.padding_idx] = 0

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this layer without pickle."""
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim, padding_idx=self.padding_idx,
                    sparse=self.sparse, _freeze=not self.weight.requires_grad, dtype=str(self.weight.dtype))

    def forward(self, indices):
        return F.embedding(indices, self.weight, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
