"""Independent chunks of one kernel run on several threads ("lanes"), each chunk's BLAS
products on one thread.

A convolution is a loop over batch chunks: copy a chunk's windows (a compiled loop, one
thread), multiply (BLAS), fold or transform the result (one thread). With BLAS split over
two threads only the products ran in parallel: a 32->32 3x3 conv took 0.9x its one-thread
time on two threads where PyTorch's took 0.6x. Run as lanes, each thread takes the next
chunk whole, copies and product and fold, so everything runs in parallel, and a lane whose
core is busy with another process takes fewer chunks instead of holding the others up at
every product, as a BLAS thread does.

Lanes take chunks in whatever order they free up, so callers make every chunk's result
independent of which lane computed it (sums over chunks are added in chunk order
afterwards), and every product runs on one BLAS thread whatever the lane count: a kernel
of two chunks or more gives the same results bit for bit on any number of threads. A
single chunk (one large image) runs on BLAS's own threads instead, which may round its
products differently on another thread count, as any BLAS product may. The lane count is
the BLAS thread count in force (`easyfit.set_num_threads`, OPENBLAS_NUM_THREADS); without
an OpenBLAS to set to one thread, there is one lane.
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import threads

_pool = {"executor": None, "size": 0}
_pool_lock = threading.Lock()
_local = threading.local()   # marks a thread that is running a lane (no nested lanes)
# Kernels running lanes now (from any thread) and the BLAS thread count the first found:
# the last to finish restores it.
_blas = {"running": 0, "saved": None}
_blas_lock = threading.Lock()


def _executor(size):
    with _pool_lock:
        if _pool["size"] < size:
            if _pool["executor"] is not None:
                _pool["executor"].shutdown(wait=False)
            _pool["executor"] = ThreadPoolExecutor(size, thread_name_prefix="easyfit-lane")
            _pool["size"] = size
        return _pool["executor"]


def _after_fork_in_child():
    """The child has none of the parent's threads: start a new pool when needed, and give
    BLAS back the count a conv running in the parent at the fork had set aside."""
    global _pool_lock, _blas_lock
    _pool_lock, _blas_lock = threading.Lock(), threading.Lock()   # another thread may have held them
    _pool["executor"], _pool["size"] = None, 0
    if _blas["running"]:
        _blas["running"] = 0
        if _blas["saved"] not in (None, 1):
            threads.set_raw(_blas["saved"])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def count():
    """How many lanes a kernel may run: the BLAS thread count, or 1 where it cannot be set."""
    n = threads.get_num_threads()
    return n if n and n > 1 and not getattr(_local, "busy", False) else 1


def run(work, chunks, make_state=lambda: None):
    """Call work(state, index, chunk) for every chunk in `chunks` (a sequence), on up to
    count() threads; each lane has its own state from make_state() (its scratch buffers).
    With two lanes or more, BLAS runs on one thread meanwhile and gets its count back
    afterwards. One lane (one thread set, a single chunk such as one large image, no
    OpenBLAS to set) runs the chunks in order with BLAS as it is."""
    lanes = min(count(), len(chunks))
    if lanes == 1:
        state = make_state()
        for index, chunk in enumerate(chunks):
            work(state, index, chunk)
        return
    taken = itertools.count()   # next() on it is atomic: each chunk goes to one lane

    def lane():
        _local.busy = True
        try:
            state = make_state()
            for index in iter(taken.__next__, None):
                if index >= len(chunks):
                    return
                work(state, index, chunks[index])
        finally:
            _local.busy = False

    _hold_blas_at_one()
    try:
        futures = [_executor(lanes - 1).submit(lane) for _ in range(lanes - 1)]
        try:
            lane()
        finally:
            for future in futures:
                future.result()
    finally:
        _release_blas()


def blocks(count, per_block):
    """range(count) cut into slices of per_block items (the last may be shorter): chunk
    boundaries that depend on the sizes alone, never on the number of lanes."""
    per_block = max(1, per_block)
    return [slice(start, min(count, start + per_block)) for start in range(0, count, per_block)]


def run_sums(work, chunks, *shapes):
    """work(chunk, *partials) for every chunk on lanes, each call with zeroed float64 arrays
    of `shapes` to add into; returns one total per shape, the chunks' partials added in
    chunk order (OrderedSum), so the totals are the same on any number of threads."""
    totals = [OrderedSum(np.zeros(shape)) for shape in shapes]

    def chunk_sums(state, index, chunk):
        partials = [np.zeros(shape) for shape in shapes]
        work(chunk, *partials)
        for total, partial in zip(totals, partials):
            total.add(index, partial)
    run(chunk_sums, chunks)
    return [total.total for total in totals]


def _hold_blas_at_one():
    with _blas_lock:
        if _blas["running"] == 0:
            _blas["saved"] = threads.get_num_threads()
            if _blas["saved"] != 1:
                threads.set_raw(1)
        _blas["running"] += 1


def _release_blas():
    with _blas_lock:
        _blas["running"] -= 1
        if _blas["running"] == 0 and _blas["saved"] != 1:
            threads.set_raw(_blas["saved"])


class OrderedSum:
    """Adds per-chunk arrays into `total` in chunk order (0, 1, 2, ...), whatever order the
    lanes finish them in, so the sum rounds the same way on any number of threads. A chunk
    that arrives early waits (as an array) for those before it."""

    def __init__(self, total):
        self.total = total
        self._waiting = {}
        self._next = 0
        self._lock = threading.Lock()

    def add(self, index, array):
        with self._lock:
            self._waiting[index] = array
            while self._next in self._waiting:
                self.total += self._waiting.pop(self._next)
                self._next += 1
