"""The OpenBLAS that NumPy loaded, reached through ctypes: its thread count, how long its
idle worker threads spin, and two level-1 kernels that NumPy's ufuncs would spend two
passes on.

`axpy(alpha, x, y)` (y += alpha * x) and `axpby(alpha, x, beta, y)` (y = alpha * x +
beta * y) each read and write memory once, where NumPy needs a temporary or a second
pass; optimizers use them for their updates. Each returns False, having done nothing,
where it does not apply (no OpenBLAS, CuPy arrays, another dtype, strided or small
arrays), and the caller then takes its NumPy path.
"""
import ctypes
import glob
import os

import numpy as np

# The thread functions under the names of the OpenBLAS builds NumPy has shipped (scipy-openblas
# since NumPy 2, "openblas64_" before), first found wins; the kernels under scipy-openblas's names.
_THREAD_FUNCTIONS = {"set": ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                             "openblas_set_num_threads64_", "openblas_set_num_threads"),
                     "get": ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                             "openblas_get_num_threads64_", "openblas_get_num_threads")}
_KERNELS = {(np.dtype(np.float32), "axpy"): "scipy_cblas_saxpy64_", (np.dtype(np.float64), "axpy"): "scipy_cblas_daxpy64_",
            (np.dtype(np.float32), "axpby"): "scipy_cblas_saxpby64_",
            (np.dtype(np.float64), "axpby"): "scipy_cblas_daxpby64_"}
SMALLEST = 4096          # below this a ctypes call costs more than the pass it saves

# After each threaded call an OpenBLAS worker busy-waits 2**28 CPU cycles (about 0.1 s) for
# the next one before it sleeps. On two cores that spinning thread takes the core a lane
# needs (easyfit.core.lanes): the ResNet step of bench/train_step.py ran 1.6x slower than
# with workers that sleep within 2**20 cycles (about 0.4 ms, still long enough to bridge
# back-to-back products). OpenBLAS reads OPENBLAS_THREAD_TIMEOUT (an exponent) only when
# it starts its pool, so the pool is restarted once, lazily, with this setting.
WORKER_SPIN_EXPONENT = 20
_SPIN_FUNCTIONS = ("openblas_read_env", "blas_thread_shutdown_")

_found = []              # [functions] once looked up: {name: ctypes function}, empty when none


def functions():
    """{'set', 'get', (dtype, 'axpy'), (dtype, 'axpby')} -> ctypes function, and 'library' ->
    the ctypes library; {} without an OpenBLAS."""
    if not _found:
        _found.append(_find())
    return _found[0]


def _candidates():
    paths = []
    try:
        with open("/proc/self/maps") as maps:   # the library as loaded, wherever it lies
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        pass
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in ("numpy.libs/*openblas*", "numpy/.dylibs/*openblas*"):
        paths += glob.glob(os.path.join(numpy_dir, pattern))
    return paths


def _find():
    for path in _candidates():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        names = {role: next((n for n in candidates if hasattr(library, n)), None)
                 for role, candidates in _THREAD_FUNCTIONS.items()}
        if None in names.values():
            continue
        found = {"library": library}
        found["set"] = getattr(library, names["set"])
        found["set"].argtypes, found["set"].restype = [ctypes.c_int], None
        found["get"] = getattr(library, names["get"])
        found["get"].argtypes, found["get"].restype = [], ctypes.c_int
        for (dtype, kind), name in _KERNELS.items():
            if hasattr(library, name):
                kernel = getattr(library, name)
                scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
                vector = [ctypes.c_void_p, ctypes.c_int64]
                kernel.argtypes = ([ctypes.c_int64, scalar] + vector + ([scalar] if kind == "axpby" else []) + vector)
                kernel.restype = None
                found[(dtype, kind)] = kernel
        return found
    return {}


def shorten_worker_spin(exponent=WORKER_SPIN_EXPONENT):
    """Make OpenBLAS's idle workers sleep after 2**exponent cycles instead of 2**28; True when
    done. Left alone (False): a user's own OPENBLAS_THREAD_TIMEOUT, no OpenBLAS, or one
    without its pthread pool (an OpenMP build). Call it when no other thread is inside BLAS:
    the pool is shut down here and starts again with the next threaded call."""
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return False
    library = functions().get("library")
    if library is None or not all(hasattr(library, name) for name in _SPIN_FUNCTIONS):
        return False
    # OpenBLAS copies the variable when it reads the environment; the variable itself is
    # removed again so that child processes start with their own defaults.
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(exponent))
    try:
        library.openblas_read_env()
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
    library.blas_thread_shutdown_()
    return True


def _applies(x, y):
    return (type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype and x.size == y.size
            and x.size >= SMALLEST and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable)


def axpy(alpha, x, y):
    """y += alpha * x in one pass; False (y untouched) where the BLAS kernel does not apply."""
    if not _applies(x, y):
        return False
    kernel = functions().get((x.dtype, "axpy"))
    if kernel is None:
        return False
    kernel(x.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
    return True


def axpby(alpha, x, beta, y):
    """y = alpha * x + beta * y in one pass; False (y untouched) where the BLAS kernel does not apply."""
    if not _applies(x, y):
        return False
    kernel = functions().get((x.dtype, "axpby"))
    if kernel is None:
        return False
    kernel(x.size, alpha, x.ctypes.data, 1, beta, y.ctypes.data, 1)
    return True
