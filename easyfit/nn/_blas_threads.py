"""How many threads NumPy's BLAS uses, and choosing it for the recurrent layers' step loops.

A recurrent layer runs one small matmul per time step (batch x hidden times hidden x
gates: 32 x 256 x 1024 in the char-RNN recipe), hundreds per batch. OpenBLAS splits
each one over every CPU and joins its threads after it. On a quiet machine that is
faster than one thread; when another process keeps a CPU busy, each join waits for a
thread the scheduler has not run yet, and the same loop becomes several times slower
(7x measured on 2 CPUs) than with one thread. Neither setting wins everywhere, so
`ThreadChoice` measures both while training and keeps the faster (see its docstring).

Only OpenBLAS is controlled, through `easyfit.core.threads` (which finds it); with any
other BLAS `blas_threads()` returns None and nothing is changed. The choice is opt-in, as
the engine's is (`easyfit.set_num_threads("auto")` or `EASYFIT_BLAS_THREADS=auto`): OpenBLAS
rounds some products differently with another thread count, so by default, or with a count
the user fixed, the loops keep the count and measure nothing.
"""
import time

from ..core import threads


def blas_threads():
    """The number of threads NumPy's OpenBLAS uses now, or None when it cannot be controlled."""
    return threads.get_num_threads()


def set_blas_threads(n):
    """Make NumPy's OpenBLAS use `n` threads (process-wide) for a while; returns False when
    it cannot be controlled. The engine's own choice (`easyfit.core.threads`) is restored
    by the caller, which sets the count it read before."""
    return threads.set_raw(n)


class ThreadChoice:
    """Picks the BLAS thread count for a step loop by timing it: the library's default or one.

    `run(key, loop, n_steps)` runs `loop(first, stop)` over steps 0..n_steps with the
    chosen count in force; `key` names the kind of loop (its shapes, forward or
    backward), and each key keeps its own record. A probe call runs its first eighth
    of the steps (at least 4, at most half) with the other setting and the rest with the
    current one, and keeps the setting whose steps were faster: both are timed in the
    same call, under the same load, and a losing probe costs a few steps, not a call.
    The first call of a key probes; the next probe comes after 4 calls, then after twice
    as many each time the current setting wins (up to 256), and after 4 again when it
    loses, so a machine that gets busy or quiet is followed within a few calls. Only the
    count changes, never the arithmetic: results are identical either way.
    """

    MAX_INTERVAL = 256
    MIN_PROBE_STEPS = 4

    def __init__(self):
        self.records = {}

    def run(self, key, loop, n_steps):
        if threads.is_fixed():
            return loop(0, n_steps)
        default = blas_threads()
        if default is None or default <= 1 or n_steps < 2 * self.MIN_PROBE_STEPS:
            if default is not None and default > 1 and key in self.records and self.records[key]["best"] == 1:
                return self._with_threads(1, default, loop, 0, n_steps)
            return loop(0, n_steps)
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = {"best": default, "interval": 4, "countdown": 0, "probes": 0,
                                          "seconds_per_step": {}}
        best = record["best"]
        if record["countdown"] > 0:
            record["countdown"] -= 1
            return self._with_threads(best, default, loop, 0, n_steps)
        other = 1 if best == default else default
        split = min(max(self.MIN_PROBE_STEPS, n_steps // 8), n_steps // 2)
        start = time.perf_counter()
        self._with_threads(other, default, loop, 0, split)
        middle = time.perf_counter()
        self._with_threads(best, default, loop, split, n_steps)
        end = time.perf_counter()
        per_step = {other: (middle - start) / split, best: (end - middle) / (n_steps - split)}
        record["seconds_per_step"] = per_step
        record["probes"] += 1
        if per_step[other] < per_step[best]:
            record["best"], record["interval"] = other, 4
        else:
            record["interval"] = min(2 * record["interval"], self.MAX_INTERVAL)
        record["countdown"] = record["interval"]

    @staticmethod
    def _with_threads(threads, default, loop, first, stop):
        if threads == default:
            return loop(first, stop)
        set_blas_threads(threads)
        try:
            return loop(first, stop)
        finally:
            set_blas_threads(default)


thread_choice = ThreadChoice()
