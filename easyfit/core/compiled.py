"""Optional compiled kernels: numba, from the `fast` extra.

A few kernels are many NumPy passes over the data where PyTorch makes one or two
(layer_norm, depthwise convolution). With numba installed they run as one compiled loop
over NumPy arrays; without it, or with `EASYFIT_NUMBA=0` in the environment, the NumPy
path runs. Both paths are kept, and tests run each kernel both ways (`numba_disabled()`).

numba is imported on the first call of a compiled kernel, never at `import easyfit`, and
compiled functions are cached on disk (`cache=True`), so only the first run on a machine
pays the compile time. CuPy arrays always take the array-module path.

Even from the cache, a process's first kernel costs about a second: importing numba, and
setting up its CPU target (type registries, SciPy's BLAS bindings). `load_in_background()`
does that in a daemon thread while the caller does other work (the recipes call it before
reading their data), so the first training step finds numba ready.
"""
import contextlib
import os
import threading

import numpy as np

_numba = None          # the numba module once imported
_numba_error = None    # why importing it failed, if it did
_disabled_depth = 0    # > 0 inside numba_disabled()
_lock = threading.Lock()


def _environment_allows():
    return os.environ.get("EASYFIT_NUMBA", "1").strip().lower() not in ("0", "false", "no", "off")


def _import_numba():
    global _numba, _numba_error
    if _numba is None and _numba_error is None:
        try:
            import numba
            _numba = numba
        except Exception as error:  # ImportError, or an llvmlite that does not load
            _numba_error = error
    return _numba


def numba_enabled():
    """True when compiled kernels run: numba imports, and neither the environment
    (`EASYFIT_NUMBA=0`) nor `numba_disabled()` turned them off."""
    return _disabled_depth == 0 and _environment_allows() and _import_numba() is not None


@contextlib.contextmanager
def numba_disabled():
    """Run the NumPy path of every kernel inside the block (tests compare both paths)."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


class _Kernel:
    """A Python function compiled by numba on its first call (`numba.njit`)."""

    def __init__(self, function, options):
        self.py_func = function
        self._options = options
        self._compiled = None
        self.__name__ = function.__name__
        self.__doc__ = function.__doc__

    def __call__(self, *args):
        compiled = self._compiled
        if compiled is None:
            with _lock:
                if self._compiled is None:
                    numba = _import_numba()
                    if numba is None:
                        raise RuntimeError(
                            f"{self.__name__} is a compiled kernel and needs numba, which could not "
                            f"be imported ({_numba_error}); callers check numba_enabled() first. "
                            "Install it with: pip install 'easyfit[fast]'")
                    self._compiled = numba.njit(**self._options)(self.py_func)
                compiled = self._compiled
        return compiled(*args)


def load_in_background():
    """Import numba and set up its CPU target in a daemon thread; returns the thread (the
    same one on every call), or None when compiled kernels are off. Failures are left to
    the first kernel call in the caller's own thread, which reports them as usual."""
    if _disabled_depth or not _environment_allows():
        return None
    with _lock:
        if _background[0] is None:
            _background[0] = threading.Thread(target=_warm_up, name="easyfit-numba-warm-up", daemon=True)
            _background[0].start()
    return _background[0]


def _warm_up():
    try:
        if _import_numba() is not None:
            _smallest_kernel(np.zeros(1))
    except Exception:  # noqa: BLE001 - reported by the caller's own first kernel call
        pass


def kernel(function=None, **options):
    """Decorator: compile `function` with numba on first use.

    Defaults: `cache=True` (compiled code kept on disk between runs), `nogil=True`
    (the data loader's threads keep running), `fastmath=False` (results match the NumPy
    path to rounding). Other `numba.njit` options pass through (`parallel=True`, ...).
    Call sites check `numba_enabled()` and keep a NumPy path for when it is False.
    """
    options = {"cache": True, "nogil": True, "fastmath": False, **options}
    if function is None:
        return lambda f: _Kernel(f, options)
    return _Kernel(function, options)


_background = [None]   # the warm-up thread, once started


@kernel
def _smallest_kernel(values):
    """A tiny cached kernel: loading it sets up numba's CPU target for every later kernel."""
    total = 0.0
    for i in range(values.shape[0]):
        total += values[i]
    return total
