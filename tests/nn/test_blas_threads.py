"""The BLAS thread choice of the recurrent layers' step loops (easyfit/nn/_blas_threads.py)."""
import numpy as np
import pytest

from easyfit.nn import _blas_threads
from easyfit.nn._blas_threads import ThreadChoice, blas_threads, set_blas_threads


class FakeBlas:
    """Stands in for OpenBLAS: a thread count, and a clock the loops advance."""

    def __init__(self, monkeypatch, default=2):
        self.threads = default
        self.now = 0.0
        monkeypatch.setattr(_blas_threads, "blas_threads", lambda: self.threads)
        monkeypatch.setattr(_blas_threads, "set_blas_threads", self.set)
        monkeypatch.setattr(_blas_threads.time, "perf_counter", lambda: self.now)

    def set(self, n):
        self.threads = n
        return True

    def loop(self, seconds_by_threads):
        def run():
            self.now += seconds_by_threads[self.threads]
            return self.threads
        return run


def test_choice_follows_the_faster_setting_and_restores_the_default(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    busy = {1: 1.0, 2: 7.0}            # another process holds a CPU: one thread is faster
    used = [choice.run("k", blas.loop(busy)) for _ in range(40)]
    assert blas.threads == 2           # the library's setting is back after every call
    assert used[:2] == [2, 1]          # each setting tried once
    assert used[2:].count(2) <= 4      # then one thread, with rare probes of the other
    quiet = {1: 1.5, 2: 1.0}           # the machine becomes quiet: two threads are faster
    used = [choice.run("k", blas.loop(quiet)) for _ in range(300)]
    assert used[-50:].count(2) >= 45


def test_probes_back_off_while_the_choice_holds(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    used = [choice.run("k", blas.loop({1: 1.0, 2: 7.0})) for _ in range(600)]
    probes = used[2:].count(2)
    assert 3 <= probes <= 8            # 4, 8, 16, ... calls apart, at most 256
    assert choice.records["k"]["interval"] == ThreadChoice.MAX_INTERVAL


def test_keys_are_independent_and_work_scales_the_time(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    for _ in range(10):
        choice.run("short", blas.loop({1: 1.0, 2: 3.0}), work=1)
        choice.run("long", blas.loop({1: 30.0, 2: 10.0}), work=10)
    assert choice.records["short"]["best"] == 1 and choice.records["long"]["best"] == 2
    assert choice.records["long"]["seconds"][2] == pytest.approx(1.0)


def test_without_a_controllable_blas_the_loop_just_runs(monkeypatch):
    monkeypatch.setattr(_blas_threads, "blas_threads", lambda: None)
    assert ThreadChoice().run("k", lambda: 42) == 42


def test_openblas_thread_count_is_set_and_read_back():
    before = blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS whose thread count can be set")
    try:
        assert set_blas_threads(1) and blas_threads() == 1
        a = np.random.default_rng(0).standard_normal((64, 64))
        assert np.allclose(a @ a, np.einsum("ij,jk->ik", a, a))
    finally:
        set_blas_threads(before)
    assert blas_threads() == before
