"""Keep the arrays a training step frees in the process heap, ready for the next step.

glibc's malloc serves every block above 128 KiB with a fresh `mmap` and trims the top of
its heap as soon as a few hundred KiB are free. A training step allocates and frees the
same few-megabyte activations and gradients every step, so each step pays one page fault
per 4 KiB page of them: about a third of a CNN or ResNet step on a 2-core machine (see
`bench/train_step.py`). Raising the mmap threshold to glibc's maximum (32 MiB) and the
trim threshold to 1 GiB lets malloc hand the same pages back step after step; the cost is
that the process keeps up to that much freed memory instead of returning it.

`import easyfit` calls `tune_malloc()` once. It does nothing when the C library is not
glibc, when the user already tunes malloc through `MALLOC_MMAP_THRESHOLD_`,
`MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES`, or when `EASYFIT_TUNE_MALLOC=0`.
"""
import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20   # glibc refuses larger values on 64-bit (half its 64 MiB heap size)
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1      # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_state = {"tuned": False, "reason": "not attempted"}


def tune_malloc():
    """Apply the thresholds above once per process; returns whether they are in effect."""
    if _state["reason"] == "not attempted":
        _state["tuned"], _state["reason"] = _apply()
    return _state["tuned"]


def malloc_tuning():
    """(tuned, reason): whether tune_malloc() changed malloc's thresholds, and why not if not."""
    return _state["tuned"], _state["reason"]


def _apply():
    if os.environ.get("EASYFIT_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False, "EASYFIT_TUNE_MALLOC turns it off"
    given = [name for name in _USER_SETTINGS if name in os.environ]
    if given:
        return False, f"the environment already tunes malloc ({', '.join(given)})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False, "the C library is not glibc"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as error:
        return False, f"mallopt is not available ({error})"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Setting either threshold also stops glibc from moving them on its own.
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return False, "mallopt refused the thresholds"
    return True, f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
