"""The BLAS thread choice of the recurrent layers' step loops (easyfit/nn/_blas_threads.py)."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import threads
from easyfit.nn import _blas_threads
from easyfit.nn._blas_threads import ThreadChoice, blas_threads, set_blas_threads


class FakeBlas:
    """Stands in for OpenBLAS: a thread count, and a clock that the steps advance."""

    def __init__(self, monkeypatch, default=2):
        self.threads = default
        self.now = 0.0
        self.cost = {1: 1.0, 2: 1.0}   # seconds per step for each thread count
        self.log = []                  # the thread count of every step run
        monkeypatch.setattr(_blas_threads, "blas_threads", lambda: self.threads)
        monkeypatch.setattr(_blas_threads, "set_blas_threads", self.set)
        monkeypatch.setattr(_blas_threads.time, "perf_counter", lambda: self.now)
        monkeypatch.setitem(threads._state, "fixed", threads.AUTO)   # the choice is opt-in

    def set(self, n):
        self.threads = n
        return True

    def loop(self, first, stop):
        for _ in range(first, stop):
            self.now += self.cost[self.threads]
            self.log.append(self.threads)


def test_choice_follows_the_faster_setting_and_restores_the_default(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    blas.cost = {1: 1.0, 2: 7.0}       # another process holds a CPU: one thread is faster
    for _ in range(40):
        choice.run("k", blas.loop, 100)
    assert blas.threads == 2           # the library's setting is back after every call
    # the first call probes one thread on its first eighth, the rest runs with the default ...
    assert blas.log[:100] == [1] * 12 + [2] * 88
    assert choice.records["k"]["best"] == 1   # ... and one thread, faster, is kept
    assert blas.log[100:500] == [1] * 400
    assert blas.log[100:].count(2) <= 4 * 12  # then rare probes of a few steps each
    blas.log.clear()
    blas.cost = {1: 1.5, 2: 1.0}       # the machine becomes quiet: two threads are faster
    for _ in range(300):
        choice.run("k", blas.loop, 100)
    assert choice.records["k"]["best"] == 2
    assert blas.log[-5000:].count(1) <= 2 * 12


def test_probes_back_off_while_the_choice_holds(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    blas.cost = {1: 1.0, 2: 7.0}
    for _ in range(600):
        choice.run("k", blas.loop, 100)
    record = choice.records["k"]
    assert 5 <= record["probes"] <= 9  # 4, 8, 16, ... calls apart, at most 256
    assert record["interval"] == ThreadChoice.MAX_INTERVAL
    assert blas.log.count(2) == 88 + 12 * (record["probes"] - 1)   # a losing probe costs 12 of 100 steps


def test_keys_are_independent(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    for _ in range(10):
        blas.cost = {1: 1.0, 2: 3.0}
        choice.run("small", blas.loop, 64)
        blas.cost = {1: 3.0, 2: 1.0}
        choice.run("large", blas.loop, 64)
    assert choice.records["small"]["best"] == 1 and choice.records["large"]["best"] == 2


def test_short_loops_use_the_known_choice_without_probing(monkeypatch):
    blas = FakeBlas(monkeypatch)
    choice = ThreadChoice()
    choice.run("k", blas.loop, 3)                  # unknown key, too short to probe: the default
    assert blas.log == [2] * 3 and "k" not in choice.records
    blas.cost = {1: 1.0, 2: 7.0}
    choice.run("k", blas.loop, 100)
    blas.log.clear()
    choice.run("k", blas.loop, 3)
    assert blas.log == [1] * 3 and blas.threads == 2


def test_without_a_controllable_blas_the_loop_just_runs(monkeypatch):
    monkeypatch.setattr(_blas_threads, "blas_threads", lambda: None)
    steps = []
    ThreadChoice().run("k", lambda first, stop: steps.append((first, stop)), 50)
    assert steps == [(0, 50)]


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


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_results_do_not_depend_on_the_thread_choice(monkeypatch, kind):
    """A probe splits a call's steps between two settings: outputs and gradients stay the same
    as one uninterrupted loop (compared with a choice that never probes)."""
    ef.manual_seed(0)
    layer = getattr(nn, kind)(5, 16, num_layers=2)
    x = ef.randn(40, 8, 5)

    def run(choice):
        monkeypatch.setattr("easyfit.nn.recurrent.thread_choice", choice)
        for p in layer.parameters():
            p.grad = None
        out, _ = layer(x)
        (out * out).sum().backward()
        return out.numpy().copy(), [p.grad.numpy().copy() for p in layer.parameters()]

    never = ThreadChoice()
    never.run = lambda key, loop, n_steps: loop(0, n_steps)
    always = ThreadChoice()
    always.MAX_INTERVAL = 0   # probe in every call: the steps are split in two parts
    out_a, grads_a = run(never)
    out_b, grads_b = run(always)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_count_fixed_by_the_user_is_kept(monkeypatch):
    blas = FakeBlas(monkeypatch)
    blas.cost = {1: 1.0, 2: 7.0}       # one thread would be faster, but the user chose two
    choice = ThreadChoice()
    ef.set_num_threads(2)
    try:
        for _ in range(20):
            choice.run("k", blas.loop, 100)
    finally:
        ef.set_num_threads(None)
    assert blas.log == [2] * 2000 and not choice.records
