"""How many threads NumPy's BLAS (OpenBLAS) uses, chosen by how busy the machine is.

On a CPU where another process keeps a core busy, a BLAS call split over every core waits
for the thread that shares its core with that process: a two-thread OpenBLAS product on a
two-core machine with one core taken ran 3 to 100 times slower than on one thread. So,
when the user asks for it (`set_num_threads("auto")`, or `EASYFIT_BLAS_THREADS=auto`), the
engine looks at the CPU time
that other processes took since its last look (at most once a second, from backward) and
gives the BLAS one thread per core they leave free, never more than the limit set before
the start (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the CPUs this process may use).
It is not the default because OpenBLAS rounds many products differently with another
number of threads: a run that followed the load is not reproducible bit for bit, and a
resumed run would not end byte-identical to an uninterrupted one.

The number goes to OpenBLAS through its own `openblas_set_num_threads`, found in the
library NumPy loaded (no extra dependency); where there is none (another BLAS, another
OS), the functions here report None and change nothing.
"""
import os
import time

from . import blas

# OpenBLAS's idle workers would spin about 0.1 s after every threaded product, on the core
# that the engine's lanes (lanes.py) run on; they now sleep within about 0.4 ms.
blas.shorten_worker_spin()

INTERVAL = 1.0          # seconds between two looks at the machine's load

# "fixed": an int the user fixed; AUTO: follow the load; None (the default): leave the BLAS
# alone. Following the load is opt-in because OpenBLAS's products round differently with
# another number of threads: a run whose thread count followed the load is not
# bit-for-bit reproducible, and a resumed run would not end byte-identical.
AUTO = "auto"
_state = {"fixed": None, "current": None, "next": 0.0, "sample": None}


def _initial_mode():
    value = os.environ.get("EASYFIT_BLAS_THREADS", "").strip().lower()
    return AUTO if value == AUTO else None


_state["fixed"] = _initial_mode()


def _openblas():
    """(setter, getter) of the OpenBLAS that NumPy loaded, or None."""
    found = blas.functions()
    return (found["set"], found["get"]) if found else None


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_limit():
    """The most BLAS threads the engine chooses: OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return _cpu_count()


def get_num_threads():
    """The number of threads NumPy's BLAS uses now (None where it is not an OpenBLAS)."""
    library = _openblas()
    return library[1]() if library is not None else None


def set_num_threads(n):
    """Fix the BLAS threads at `n` (PyTorch's `torch.set_num_threads`). `"auto"` (or
    `EASYFIT_BLAS_THREADS=auto` in the environment) lets the engine follow the machine's load:
    faster on a busy machine, but results then vary in their last bits with the load.
    `None`, the default, leaves the BLAS's own setting alone (reproducible runs)."""
    if n != AUTO and n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: n must be a positive int, 'auto' or None, got {n!r}")
    _state["fixed"] = n
    _state["next"] = 0.0
    _state["sample"] = None
    if isinstance(n, int):
        _apply(n)


def is_fixed():
    """True unless the engine may choose the count (`set_num_threads("auto")`)."""
    return _state["fixed"] != AUTO


def set_raw(n):
    """Set OpenBLAS's thread count for a moment (a caller that restores it after), bypassing
    the engine's record; False where there is no OpenBLAS to set."""
    library = _openblas()
    if library is None:
        return False
    library[0](int(n))
    return True


def _apply(n):
    library = _openblas()
    if library is not None and n != _state["current"]:
        library[0](n)
        _state["current"] = n


def _sample():
    """(wall seconds, CPU seconds of every process, CPU seconds of this one), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)   # all but idle and iowait
    own = os.times()
    return time.monotonic(), busy / _CLOCK_TICKS, own.user + own.system


try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _CLOCK_TICKS = 100


def threads_for(other_cores, cpus, limit):
    """BLAS threads for a machine of `cpus` cores of which other processes use `other_cores`:
    one per core they leave free (rounded), at least one, at most `limit`."""
    free = cpus - other_cores
    return max(1, min(limit, int(free + 0.5)))


def adapt():
    """Follow the load: called once per backward; looks at most once per INTERVAL."""
    now = time.monotonic()
    if now < _state["next"] or _state["fixed"] != AUTO:
        return
    _state["next"] = now + INTERVAL
    sample = _sample()
    previous, _state["sample"] = _state["sample"], sample
    if sample is None or previous is None or _openblas() is None:
        return
    wall = sample[0] - previous[0]
    if wall <= 0:
        return
    others = ((sample[1] - previous[1]) - (sample[2] - previous[2])) / wall
    _apply(threads_for(max(0.0, others), _cpu_count(), thread_limit()))
