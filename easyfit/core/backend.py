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


def nccl_module():
    """CuPy's NCCL bindings (cupy.cuda.nccl) when CuPy imports and was built with NCCL, else None."""
    cupy = _import_cupy()
    if cupy is None:
        return None
    try:
        from cupy.cuda import nccl
    except Exception:
        return None
    return nccl if getattr(nccl, "available", True) else None


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
        leading = _leading_rows(indices, target)
        if leading is None:
            np.add.at(target, indices, values)
        else:
            rows, index_shape, k = leading
            rest = target.shape[k:]
            values = np.broadcast_to(values, index_shape + rest).reshape((rows.size,) + rest)
            _scatter_add_rows(target.reshape((-1,) + rest), rows, values)
    else:
        import cupyx
        cupyx.scatter_add(target, indices, values)
    return target


def _leading_rows(indices, target):
    """For an index made only of integer arrays on target's leading axes (x[i], x[i, j],
    ...; what embeddings and gathers use): (the selected rows of target's leading axes
    flattened, as a 1-D array in [0, rows); the index's broadcast shape; how many leading
    axes). None for any other index, or a target that a reshape would copy."""
    arrays = indices if isinstance(indices, tuple) else (indices,)
    if (not arrays or len(arrays) > target.ndim or not target.flags.c_contiguous
            or not all(isinstance(a, np.ndarray) and a.dtype.kind in "iu" for a in arrays)):
        return None
    k = len(arrays)
    arrays = np.broadcast_arrays(*arrays)
    arrays = [np.where(a < 0, a + n, a) for a, n in zip(arrays, target.shape)]
    rows = arrays[0].ravel() if k == 1 else np.ravel_multi_index(arrays, target.shape[:k]).ravel()
    return rows, arrays[0].shape, k


# A row repeated more often than this is summed by np.add.reduceat; rarer repeats are added
# round by round (second occurrences, then third, ...). reduceat costs about a microsecond
# per segment, so it only pays for the few rows repeated many times (padding tokens).
_REPEATS_BY_ROUNDS = 8


def _scatter_add_rows(target, rows, values):
    """Fast path for target[rows] += values with a 1-D integer index in [0, len(target)).

    np.add.at is slow for row blocks. Sorting the rows groups repeats: each distinct row's
    sum starts from its first occurrence, repeats are added to it, and the sums are added
    to the target once (fancy-index updates are only right without repeats).
    """
    n = rows.size
    if n == 0:
        return
    values = np.broadcast_to(values, rows.shape + target.shape[1:])
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_rows[1:], sorted_rows[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sums = values[order[starts]]
    if starts.size < n:
        group = np.cumsum(first) - 1                  # distinct-row number of each sorted position
        rank = np.arange(n) - starts[group]           # 0 for a first occurrence, 1 for the second, ...
        counts = np.diff(np.append(starts, n))
        many = counts > _REPEATS_BY_ROUNDS
        few = ~many[group]
        for occurrence in range(1, int(counts[~many].max(initial=1))):
            take = (rank == occurrence) & few
            sums[group[take]] += values[order[take]]
        if many.any():
            segment_starts = np.append(0, np.cumsum(counts[many])[:-1])
            sums[many] = np.add.reduceat(values[order[~few]], segment_starts, axis=0)
    target[sorted_rows[starts]] += sums
