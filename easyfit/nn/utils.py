"""Gradient clipping: `clip_grad_norm_` and `clip_grad_value_`, in place on `.grad`."""
import math

import numpy as np

from ..core.backend import get_array_module
from ..core.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads, seen = [], set()
    for p in parameters:
        g = p.grad
        # Two parameters may hold the very same gradient array: scale it once.
        if g is not None and id(g.array) not in seen:
            seen.add(id(g.array))
            grads.append(g)
    return grads


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most max_norm.

    Returns the total norm before clipping (a 0-d Tensor), as PyTorch does.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.array(0.0, dtype=np.float32))
    dtype = grads[0].dtype
    if norm_type == math.inf:
        total = max(float(get_array_module(g.array).abs(g.array).max()) if g.array.size else 0.0 for g in grads)
    else:
        total = 0.0
        for g in grads:
            xp = get_array_module(g.array)
            flat = g.array.reshape(-1)
            if norm_type == 2.0:
                total += float(xp.dot(flat, flat))
            else:
                total += float((xp.abs(flat) ** norm_type).sum())
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}; "
                           "pass error_if_nonfinite=False to clip anyway")
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        for g in grads:
            if getattr(g.array.flags, "writeable", True):
                g.array *= g.array.dtype.type(coefficient)
            else:  # a read-only broadcast view from the engine: replace instead
                g.array = g.array * g.array.dtype.type(coefficient)
    return Tensor(np.array(total, dtype=dtype))


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        xp = get_array_module(g.array)
        if getattr(g.array.flags, "writeable", True):
            xp.clip(g.array, -clip_value, clip_value, out=g.array)
        else:
            g.array = xp.clip(g.array, -clip_value, clip_value)
