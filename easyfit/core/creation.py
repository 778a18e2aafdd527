"""Functions that create tensors: from data, filled, ranges and random."""
import numpy as np

from .backend import array_module_for, parse_device, to_device, is_array
from .random import default_generator
from .tensor import Tensor, DEFAULT_FLOAT, _to_array


def _dtype(dtype, default=DEFAULT_FLOAT):
    return np.dtype(default if dtype is None else dtype)


def _finish(array, device, requires_grad):
    device = parse_device(device)
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of `data` (a list, scalar, array or Tensor).

    Python floats become float32, ints int64, bools bool; arrays keep their dtype.
    """
    if isinstance(data, Tensor):
        data = data.array
    if is_array(data):
        array = data.astype(dtype if dtype is not None else data.dtype, copy=True)
        if device is None:
            return Tensor(array, requires_grad=requires_grad)
    else:
        array = _to_array(data, None if dtype is None else np.dtype(dtype))
    return _finish(array, device, requires_grad)


def from_numpy(array):
    """A tensor sharing memory with a NumPy array (no copy)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _filled(fill, shape, dtype, device, requires_grad):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    xp = array_module_for(parse_device(device))
    if xp is np:
        return Tensor(fill(np, shape, _dtype(dtype)), requires_grad=requires_grad)
    with xp.cuda.Device(int(parse_device(device)[5:])):
        return Tensor(fill(xp, shape, _dtype(dtype)), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros of the given shape (float32 unless `dtype` says otherwise)."""
    return _filled(lambda xp, s, d: xp.zeros(s, d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    """A tensor of ones of the given shape (float32 unless `dtype` says otherwise)."""
    return _filled(lambda xp, s, d: xp.ones(s, d), shape, dtype, device, requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor of the given shape: its values are whatever memory held."""
    return _filled(lambda xp, s, d: xp.empty(s, d), shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of `shape` filled with `fill_value` (float32 for Python floats)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _filled(lambda xp, s, d: xp.full(s, fill_value, d), shape, dtype, device, requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    """Zeros with `t`'s shape, dtype and device unless given."""
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    """Ones with `t`'s shape, dtype and device unless given."""
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    """NumPy's arange; integer arguments give int64, float ones float32."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, stop, step))
        dtype = np.int64 if is_int else DEFAULT_FLOAT
    return _finish(np.arange(start, stop, step, dtype=np.dtype(dtype)), device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """An n x m identity matrix (m defaults to n)."""
    return _finish(np.eye(n, m, dtype=_dtype(dtype)), device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1), drawn from the generator that manual_seed seeds."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    array = default_generator().random(shape, dtype=np.float64).astype(_dtype(dtype))
    return _finish(array, device, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal, drawn from the generator that manual_seed seeds."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    array = default_generator().standard_normal(shape, dtype=np.float64).astype(_dtype(dtype))
    return _finish(array, device, requires_grad)
