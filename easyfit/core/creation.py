"""Functions that create tensors: from data, filled, ranges and random."""
import numpy as np

from .backend import array_module_for, parse_device, to_device, is_array
from .random import default_generator
from .spellings import numpy_spellings
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


def as_tensor(data, dtype=None, device=None):
    """`data` as a tensor, sharing its memory when it already is one (or an array) of that
    dtype and device; otherwise a converted copy."""
    if isinstance(data, Tensor):
        return data.to(device, dtype)
    if is_array(data) and (dtype is None or np.dtype(dtype) == data.dtype):
        return Tensor(data).to(device)
    return tensor(data, dtype=dtype, device=device)


def is_tensor(obj):
    """True for an easyfit Tensor (and its subclasses, such as nn.Parameter)."""
    return isinstance(obj, Tensor)


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


@numpy_spellings
def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """start, start + step, ... up to (not including) end; integer arguments give int64, float ones float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if is_int else DEFAULT_FLOAT
    return _finish(np.arange(start, end, step, dtype=np.dtype(dtype)), device, requires_grad)


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


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    """`fill_value` everywhere, with `t`'s shape, dtype and device unless given."""
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    """An uninitialised tensor with `t`'s shape, dtype and device unless given."""
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    """Uniform on [0, 1) with `t`'s shape, dtype and device unless given."""
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    """Standard normal with `t`'s shape, dtype and device unless given."""
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randint(*args, size=None, dtype=None, device=None, requires_grad=False):
    """Integers uniform on [low, high): randint(high, size) or randint(low, high, size) (int64)."""
    if size is None:
        *args, size = args
    low, high = (0, *args) if len(args) == 1 else args
    size = (size,) if isinstance(size, int) else tuple(size)
    array = default_generator().integers(low, high, size=size, dtype=np.int64).astype(_dtype(dtype, np.int64))
    return _finish(array, device, requires_grad)


def randint_like(t, *args, dtype=None, device=None):
    """randint with `t`'s shape: randint_like(t, high) or randint_like(t, low, high)."""
    return randint(*args, size=t.shape, dtype=dtype or t.dtype, device=device or t.device)


def randperm(n, dtype=None, device=None, requires_grad=False):
    """A random permutation of 0 .. n-1 (int64)."""
    return _finish(default_generator().permutation(n).astype(_dtype(dtype, np.int64)), device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end, both included."""
    return _finish(np.linspace(start, end, steps, dtype=np.float64).astype(_dtype(dtype)), device, requires_grad)


def multinomial(input, num_samples, replacement=False):
    """Indices drawn from each row of `input` (non-negative weights, not necessarily normalised)."""
    weights = np.asarray(input.numpy_cpu(), dtype=np.float64)
    rows = weights.reshape(-1, weights.shape[-1]) if weights.ndim else None
    if rows is None or (rows < 0).any() or not np.isfinite(rows).all() or (rows.sum(axis=1) <= 0).any():
        raise ValueError("multinomial: input must be a 1-D or 2-D tensor of finite, non-negative weights "
                         "with a positive sum in each row")
    if not replacement and num_samples > (rows > 0).sum(axis=1).min():
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from a row "
                         f"with fewer non-zero weights")
    generator = default_generator()
    drawn = np.stack([generator.choice(rows.shape[1], num_samples, replace=replacement, p=row / row.sum())
                      for row in rows])
    return _finish(drawn.reshape(weights.shape[:-1] + (num_samples,)).astype(np.int64), input.device, False)
