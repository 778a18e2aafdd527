"""Dropout, drawn from easyfit's seeded generator."""
import numpy as np

from ...core.backend import to_device
from ...core.random import default_generator
from ...core.tensor import _wrap


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    The mask is drawn from easyfit's seeded generator (`easyfit.manual_seed`).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    keep = default_generator().random(x.shape, dtype=dtype) >= p
    mask = keep.astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return x * _wrap(to_device(mask, x.device))
