"""Resizing: interpolate (nearest, nearest-exact, linear, bilinear), as PyTorch computes it.

Each spatial axis is resized on its own: an output position reads one input position
(nearest) or blends two neighbours (linear), with the source positions and weights
computed in the input's precision by PyTorch's formulas, so results match it. The
backward pass is that of indexing: gradients add up at the positions read.
"""
import math
import numbers

import numpy as np

from ...core.backend import to_device
from ...core.tensor import Tensor, reshape

_MODES = {"nearest": None, "nearest-exact": None, "linear": 3, "bilinear": 4}


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial axes of x (N, C, L) or (N, C, H, W) to `size`, or by `scale_factor`
    (output size floor(input size * scale_factor)).

    Modes: 'nearest' (PyTorch's: source floor(i * in / out)), 'nearest-exact'
    (floor((i + 0.5) * in / out)), 'linear' (3-D) and 'bilinear' (4-D) with `align_corners`
    (False by default: pixel centres are aligned; True: the corner pixels are).
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: input must be a Tensor, got {type(input).__name__}")
    if mode not in _MODES:
        raise ValueError(f"interpolate: mode must be one of {sorted(_MODES)}, got {mode!r} (bicubic, trilinear "
                         f"and area are not implemented)")
    if antialias:
        raise ValueError("interpolate: antialias=True is not implemented")
    needed = _MODES[mode]
    if needed is not None and input.ndim != needed:
        raise ValueError(f"interpolate: mode {mode!r} expects a {needed}-D input, got shape {tuple(input.shape)}")
    if input.ndim not in (3, 4):
        raise ValueError(f"interpolate: expected a 3-D (N, C, L) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    if align_corners is not None and needed is None:
        raise ValueError("interpolate: align_corners can only be set with the interpolating modes 'linear' and "
                         "'bilinear'")
    align_corners = bool(align_corners)
    spatial = input.shape[2:]
    sizes, scales = _output_sizes(spatial, size, scale_factor, recompute_scale_factor)
    out = input
    for axis, (in_size, out_size, scale) in enumerate(zip(spatial, sizes, scales)):
        out = _resize_axis(out, 2 + axis, in_size, out_size, scale, mode, align_corners)
    return out


def _output_sizes(spatial, size, scale_factor, recompute_scale_factor):
    count = len(spatial)
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = _per_axis(size, count, "size")
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
            raise ValueError(f"interpolate: size must hold positive integers, got {size!r}")
        return [int(n) for n in sizes], [None] * count
    factors = _per_axis(scale_factor, count, "scale_factor")
    if any(isinstance(f, bool) or not isinstance(f, numbers.Real) or not f > 0 for f in factors):
        raise ValueError(f"interpolate: scale_factor must hold positive numbers, got {scale_factor!r}")
    sizes = [math.floor(float(n) * float(f)) for n, f in zip(spatial, factors)]
    if any(n < 1 for n in sizes):
        raise ValueError(f"interpolate: scale_factor {scale_factor!r} gives an empty output for input size "
                         f"{tuple(spatial)}")
    scales = [None] * count if recompute_scale_factor else [float(f) for f in factors]
    return sizes, scales


def _per_axis(value, count, name):
    if isinstance(value, (tuple, list)):
        if len(value) != count:
            raise ValueError(f"interpolate: {name} must have one value per spatial axis ({count}), got {value!r}")
        return list(value)
    return [value] * count


def _inverse_scale(dtype, in_size, out_size, scale):
    """PyTorch's compute_scales_value: 1 / scale_factor when given, else in / out, in `dtype`."""
    return dtype.type(1.0 / scale) if scale is not None and scale > 0 else dtype.type(in_size) / dtype.type(out_size)


def _take(x, axis, indices):
    index = (slice(None),) * axis + (to_device(indices, x.device),)
    return x[index]


def _resize_axis(x, axis, in_size, out_size, scale, mode, align_corners):
    if in_size == out_size:
        return x
    dtype = np.dtype(x.dtype) if np.dtype(x.dtype).kind == "f" else np.dtype(np.float32)
    positions = np.arange(out_size)
    if mode in ("nearest", "nearest-exact"):
        # PyTorch computes nearest sources in float32 whatever the input's dtype
        step = _inverse_scale(np.dtype(np.float32), in_size, out_size, scale)
        if mode == "nearest" and out_size == 2 * in_size:
            source = positions >> 1
        else:
            offset = np.float32(0.5) if mode == "nearest-exact" else np.float32(0.0)
            source = np.floor((positions.astype(np.float32) + offset) * step).astype(np.int64)
        return _take(x, axis, np.minimum(source, in_size - 1))
    if align_corners:
        step = dtype.type(in_size - 1) / dtype.type(out_size - 1) if out_size > 1 else dtype.type(0)
        real = step * positions.astype(dtype)
    else:
        step = _inverse_scale(dtype, in_size, out_size, scale)
        real = step * (positions.astype(dtype) + dtype.type(0.5)) - dtype.type(0.5)
        real = np.maximum(real, dtype.type(0))
    low = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    high_weight = np.clip(real - low.astype(dtype), 0, 1).astype(dtype)
    high = low + (low < in_size - 1)
    low_weight = (dtype.type(1) - high_weight).astype(dtype)
    shape = (out_size,) + (1,) * (x.ndim - axis - 1)
    low_weight = Tensor(to_device(low_weight.reshape(shape), x.device))
    high_weight = Tensor(to_device(high_weight.reshape(shape), x.device))
    return _take(x, axis, low) * low_weight + _take(x, axis, high) * high_weight
