"""Multi-head attention with PyTorch's parameters, masks and return values."""
import math

import numpy as np

from ..core.backend import get_array_module, to_device
from ..core.creation import ones
from ..core.layout import triu
from ..core.functions import swapaxes, transpose, reshape, expand_dims, mean, where
from ..core.tensor import Tensor, DEFAULT_FLOAT
from . import functional as F
from . import init
from .linear import Linear
from .module import Module, Parameter

__all__ = ["MultiheadAttention"]


def _causal_mask(length, source_length=None, device="cpu"):
    """The boolean (length, source_length) mask that forbids attending to later positions (True above
    the diagonal). Built by tensor ops, so a traced model (ONNX export) keeps the lengths dynamic."""
    source_length = length if source_length is None else source_length
    return triu(ones((length, source_length), device=device), 1) > 0


class MultiheadAttention(Module):
    """softmax(Q K^T / sqrt(head_dim) + mask) V over `num_heads` heads, as torch.nn.MultiheadAttention.

    Parameters have PyTorch's names and shapes: `in_proj_weight` (3 * embed_dim, embed_dim)
    holding the query, key and value projections, `in_proj_bias`, and `out_proj` (a Linear),
    so a PyTorch state dict loads unchanged.

    `forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)` returns `(attn_output, attn_weights)`. Shapes are (L, N, E)
    for the query and (S, N, E) for key and value ((N, L, E) with `batch_first=True`; a 2-D
    input is one unbatched sequence). `key_padding_mask` (N, S) and `attn_mask` (L, S) or
    (N * num_heads, L, S) are boolean (True = may not attend) or float (added to the scores).
    `is_causal=True` says that `attn_mask` is the causal mask (position i may not attend to
    j > i); PyTorch requires the mask with it, easyfit builds it when `attn_mask` is None.
    `attn_weights` is (N, L, S) averaged over heads, (N, num_heads, L, S) with
    `average_attn_weights=False`, or None with `need_weights=False`.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MultiheadAttention: {name} must be a positive integer, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"MultiheadAttention: dropout must be a number in [0, 1], got {dropout!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype=DEFAULT_FLOAT))
        self.in_proj_bias = Parameter(np.empty(3 * embed_dim, dtype=DEFAULT_FLOAT)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's: xavier-uniform input projection, zero biases, out_proj as a Linear."""
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def extra_repr(self):
        text = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.in_proj_bias is None:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        return text

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this layer without pickle."""
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "dropout": self.dropout,
                "bias": self.in_proj_bias is not None, "batch_first": self.batch_first}

    def _describe(self):
        return f"MultiheadAttention({self.extra_repr()})"

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        batched = self._check_inputs(query, key, value)
        if is_causal and attn_mask is None:
            length_axis = 1 if batched and self.batch_first else 0
            attn_mask = _causal_mask(query.shape[length_axis], key.shape[length_axis], query.device)
        self_attention = query is key and key is value
        if not batched:
            query, key, value = (expand_dims(t, 1) for t in (query, key, value))
        elif self.batch_first:
            query, key, value = (swapaxes(t, 0, 1) for t in (query, key, value))
        length, batch = query.shape[0], query.shape[1]
        source_length = key.shape[0]
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value, self_attention)

        def by_head(t, steps):   # (steps, N, E) -> (N, heads, steps, head_dim)
            return transpose(reshape(t, (steps, batch, heads, head_dim)), (1, 2, 0, 3))

        q = by_head(q * (1.0 / math.sqrt(head_dim)), length)
        scores = q @ swapaxes(by_head(k, source_length), -1, -2)          # (N, heads, L, S)
        mask = self._merged_mask(attn_mask, key_padding_mask, batch, length, source_length, batched, scores)
        if mask is not None:
            scores = scores + mask
        weights = F.softmax(scores, axis=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        context = weights @ by_head(v, source_length)                    # (N, heads, L, head_dim)
        context = reshape(transpose(context, (2, 0, 1, 3)), (length, batch, self.embed_dim))
        output = self.out_proj(context)
        if not batched:
            output = reshape(output, (length, self.embed_dim))
        elif self.batch_first:
            output = swapaxes(output, 0, 1)
        if not need_weights:
            return output, None
        if average_attn_weights:
            weights = mean(weights, axis=1)
        if not batched:
            weights = reshape(weights, weights.shape[1:])
        return output, weights

    def _project(self, query, key, value, self_attention):
        """The query, key and value projections: one matmul when they share an input."""
        E = self.embed_dim
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if self_attention:
            return F.linear(query, weight, bias).chunk(3, dim=-1)
        projections = []
        for index, x in enumerate((query, key, value)):
            rows = slice(index * E, (index + 1) * E)
            projections.append(F.linear(x, weight[rows], None if bias is None else bias[rows]))
        return projections

    def _check_inputs(self, query, key, value):
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{self._describe()}: expected {name} as a Tensor, got {type(t).__name__}")
        if query.ndim not in (2, 3):
            raise ValueError(f"{self._describe()}: expected a 3-D query "
                             f"{'(N, L, E)' if self.batch_first else '(L, N, E)'} or a 2-D unbatched query "
                             f"(L, E), got shape {tuple(query.shape)}")
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"{self._describe()}: expected query with embed_dim={self.embed_dim} features in its "
                             f"last axis, got shape {tuple(query.shape)}")
        for name, t in (("key", key), ("value", value)):
            if t.ndim != query.ndim or t.shape[-1] != self.embed_dim:
                raise ValueError(f"{self._describe()}: expected {name} with {query.ndim} axes and embed_dim="
                                 f"{self.embed_dim} features like the query {tuple(query.shape)}, got shape "
                                 f"{tuple(t.shape)}")
        if key.shape != value.shape:
            raise ValueError(f"{self._describe()}: key and value must have the same shape, got key "
                             f"{tuple(key.shape)} and value {tuple(value.shape)}")
        batch_axis = 0 if self.batch_first else 1
        if query.ndim == 3 and key.shape[batch_axis] != query.shape[batch_axis]:
            raise ValueError(f"{self._describe()}: query and key have different batch sizes, query "
                             f"{tuple(query.shape)}, key {tuple(key.shape)} (batch_first={self.batch_first})")
        if self.in_proj_weight.dtype != query.dtype:
            raise TypeError(f"{self._describe()}: input dtype {query.dtype} does not match the parameters' dtype "
                            f"{self.in_proj_weight.dtype}; convert one of them (model.to({query.dtype}) or "
                            f"input.astype(...))")
        return query.ndim == 3

    def _merged_mask(self, attn_mask, key_padding_mask, batch, length, source_length, batched, scores):
        """Both masks as one additive float mask broadcastable to (N, heads, L, S), or None."""
        mask = None
        if attn_mask is not None:
            per_head = (batch * self.num_heads, length, source_length) if batched else \
                (self.num_heads, length, source_length)
            mask = self._additive(attn_mask, "attn_mask", [(length, source_length), per_head], scores)
            mask = reshape(mask, (1, 1, length, source_length) if mask.ndim == 2 else
                           (batch, self.num_heads, length, source_length))
        if key_padding_mask is not None:
            expected = (batch, source_length) if batched else (source_length,)
            padding = self._additive(key_padding_mask, "key_padding_mask", [expected], scores)
            padding = reshape(padding, (batch, 1, 1, source_length))
            mask = padding if mask is None else mask + padding
        return mask

    def _additive(self, mask, name, allowed_shapes, scores):
        """A boolean mask as 0 / -inf, a float mask as is; shape checked against `allowed_shapes`."""
        if tuple(mask.shape) not in [tuple(s) for s in allowed_shapes]:
            expected = " or ".join(str(tuple(s)) for s in allowed_shapes)
            raise ValueError(f"{self._describe()}: expected {name} of shape {expected}, got {tuple(mask.shape)}")
        data = mask.array if isinstance(mask, Tensor) else np.asarray(mask)
        if data.dtype == np.bool_:   # a traced op (where), so that ONNX export follows a mask given as input
            xp = get_array_module(scores.array)
            condition = mask if isinstance(mask, Tensor) else Tensor(to_device(data, scores.device))
            return where(condition, Tensor(xp.asarray(-np.inf, dtype=scores.dtype)),
                         Tensor(xp.asarray(0, dtype=scores.dtype)))
        if data.dtype.kind != "f":
            raise TypeError(f"{self._describe()}: {name} must be boolean or floating point, got dtype {data.dtype}")
        if isinstance(mask, Tensor):
            return mask if mask.dtype == scores.dtype else mask.astype(scores.dtype)
        return Tensor(to_device(data.astype(scores.dtype, copy=False), scores.device))
