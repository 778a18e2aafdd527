"""Shape helpers with PyTorch's signatures: flatten, F.pad's width order, one_hot."""
import numpy as np

from ...core.backend import get_array_module
from ...core.functions import pad as _pad
from ...core.tensor import reshape, Tensor
from ._arguments import _axis


def flatten(x, start_axis=1, end_axis=-1, *, start_dim=None, end_dim=None):
    """Merge axes start_axis..end_axis into one (PyTorch's start_dim/end_dim also accepted)."""
    start_axis = _axis(start_axis, start_dim, 1, "flatten")
    end_axis = _axis(end_axis, end_dim, -1, "flatten")
    ndim = x.ndim
    start, end = start_axis % ndim, end_axis % ndim
    shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
    return reshape(x, shape)


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each index, as torch's one_hot (-1: the largest index + 1)."""
    indices = tensor.array if isinstance(tensor, Tensor) else np.asarray(tensor)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {indices.dtype}")
    if num_classes == -1:
        if indices.size == 0:
            raise ValueError("one_hot: num_classes=-1 needs at least one index to infer the class count")
        num_classes = int(indices.max()) + 1
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= num_classes):
        raise ValueError(f"one_hot: indices must be in [0, {num_classes}), got values from {int(indices.min())} "
                         f"to {int(indices.max())}")
    xp = get_array_module(indices)
    classes = xp.arange(num_classes)
    if isinstance(tensor, Tensor):   # by tensor ops (a comparison and a cast), so tracing (ONNX export) sees it
        return (reshape(tensor, tuple(tensor.shape) + (1,)) == Tensor(classes)).astype(np.int64)
    return Tensor((indices[..., None] == classes).astype(np.int64))


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad: `pad` gives (before, after) widths from the last axis backwards,
    e.g. (left, right, top, bottom) for an image. Only mode='constant' (see easyfit.pad)."""
    pad = tuple(int(width) for width in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of widths, at most two per axis of the "
                         f"{x.ndim}-d input, got {pad}")
    widths = [(0, 0)] * x.ndim
    for pair in range(len(pad) // 2):
        widths[x.ndim - 1 - pair] = (pad[2 * pair], pad[2 * pair + 1])
    return _pad(x, widths, mode=mode, constant_values=value)
