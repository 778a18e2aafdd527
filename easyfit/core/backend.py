"""Array backends: NumPy on the CPU, CuPy on CUDA devices.

This is the only module that knows about CuPy. Everything else asks it for the
array module of its inputs (`get_array_module`) and for the few helpers that NumPy
and CuPy spell differently. CuPy is imported lazily, on first use of a CUDA device.
"""
import numpy as np

_cupy = None          # the cupy module once imported
_cupy_error = None    # why importing it failed, if it did


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as error:  # ImportError, or a broken CUDA install
            _cupy_error = error
    return _cupy


def cupy_module():
    """The cupy module, or an error naming the pip extra that provides it."""
    cupy = _import_cupy()
    if cupy is None:
        raise RuntimeError(
            "CUDA tensors need CuPy, which could not be imported "
            f"({_cupy_error}). Install it with: pip install 'easyfit[cuda]'")
    return cupy


def cuda_is_available():
    """True when CuPy imports and sees at least one GPU; never raises."""
    cupy = _import_cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def cuda_device_count():
    return cupy_module().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def get_array_module(array):
    """numpy for NumPy arrays and scalars, cupy for CuPy arrays."""
    if isinstance(array, (np.ndarray, np.generic)) or _cupy is None:
        return np
    return _cupy.get_array_module(array)


def is_array(obj):
    if isinstance(obj, np.ndarray):
        return True
    return _cupy is not None and isinstance(obj, _cupy.ndarray)


def parse_device(device):
    """Normalise 'cpu', 'cuda', 'cuda:1' (or None, meaning cpu) to a canonical string."""
    if device is None:
        return "cpu"
    if not isinstance(device, str):
        device = str(device)
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        return "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        return device
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def device_of(array):
    if isinstance(array, np.ndarray):
        return "cpu"
    return f"cuda:{array.device.id}"


def array_module_for(device):
    return np if device == "cpu" else cupy_module()


def to_device(array, device):
    """Move an array to a canonical device string; no copy when it is already there."""
    if device == "cpu":
        if isinstance(array, np.ndarray):
            return array
        return array.get()
    cupy = cupy_module()
    index = int(device[5:])
    if isinstance(array, cupy.ndarray) and array.device.id == index:
        return array
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def scatter_add(target, indices, values):
    """target[indices] += values, accumulating repeated indices (in place)."""
    if isinstance(target, np.ndarray):
        if (isinstance(indices, np.ndarray) and indices.ndim == 1
                and indices.dtype.kind in "iu" and target.ndim >= 1):
            _scatter_add_rows(target, indices, values)
        else:
            np.add.at(target, indices, values)
    else:
        import cupyx
        cupyx.scatter_add(target, indices, values)
    return target


def _scatter_add_rows(target, rows, values):
    """Fast path for target[rows] += values with a 1-D integer index (embeddings).

    np.add.at is slow for row blocks; summing rows through one sparse-like matmul is
    not available in NumPy, so sort the rows, reduce equal neighbours with
    np.add.reduceat, and add each distinct row once.
    """
    if rows.size == 0:
        return
    values = np.broadcast_to(values, rows.shape + target.shape[1:])
    rows = np.where(rows < 0, rows + target.shape[0], rows)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0)
    target[sorted_rows[starts]] += sums
