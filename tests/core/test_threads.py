"""BLAS threads: fixed by the user, or chosen from the machine's load (easyfit.core.threads)."""
import pytest

import easyfit as ef
from easyfit.core import threads


@pytest.fixture
def restore_threads():
    before = ef.get_num_threads()
    yield
    ef.set_num_threads(None)
    if before is not None:
        threads._apply(before)


def test_one_thread_per_core_that_other_processes_leave_free():
    assert threads.threads_for(0.0, 2, 2) == 2
    assert threads.threads_for(0.3, 2, 2) == 2
    assert threads.threads_for(1.0, 2, 2) == 1      # one core taken: do not wait for it
    assert threads.threads_for(7.5, 2, 2) == 1      # never fewer than one
    assert threads.threads_for(0.0, 8, 4) == 4      # never more than the limit
    assert threads.threads_for(2.2, 8, 8) == 6


def test_the_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert threads.thread_limit() == 3
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.thread_limit() == 1


def test_set_num_threads_checks_its_argument():
    with pytest.raises(ValueError, match="positive int, 'auto' or None, got 0"):
        ef.set_num_threads(0)
    with pytest.raises(ValueError, match="got 1.5"):
        ef.set_num_threads(1.5)


@pytest.mark.skipif(threads._openblas() is None, reason="NumPy's BLAS is not an OpenBLAS")
def test_set_num_threads_reaches_openblas(restore_threads):
    ef.set_num_threads(1)
    assert ef.get_num_threads() == 1
    threads.adapt()                    # a fixed number is kept whatever the load
    assert ef.get_num_threads() == 1


@pytest.mark.skipif(threads._openblas() is None, reason="NumPy's BLAS is not an OpenBLAS")
def test_backward_lowers_the_threads_when_other_processes_take_a_core(monkeypatch, restore_threads):
    ef.set_num_threads("auto")
    samples = iter([(0.0, 100.0, 10.0), (1.0, 102.0, 11.0),     # 2 CPU-s in 1 s, 1 of them ours
                    (2.0, 103.0, 12.0)])                        # then only our own second
    monkeypatch.setattr(threads, "_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "thread_limit", lambda: 2)
    monkeypatch.setattr(threads, "INTERVAL", 0.0)
    x = ef.ones(3, requires_grad=True)
    (x * 2.0).sum().backward()         # first look: nothing to compare with yet
    (x * 2.0).sum().backward()         # another process used one core: one thread
    assert ef.get_num_threads() == 1
    (x * 2.0).sum().backward()         # the core is free again: two
    assert ef.get_num_threads() == 2


@pytest.mark.skipif(threads._openblas() is None, reason="NumPy's BLAS is not an OpenBLAS")
def test_by_default_the_load_does_not_change_the_threads(monkeypatch, restore_threads):
    """OpenBLAS rounds differently with another thread count: following the load is opt-in,
    so that a run (and a resumed run) is reproducible bit for bit."""
    before = ef.get_num_threads()
    samples = iter([(0.0, 100.0, 10.0), (1.0, 102.0, 11.0), (2.0, 104.0, 12.0)])
    monkeypatch.setattr(threads, "_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "thread_limit", lambda: 2)
    monkeypatch.setattr(threads, "INTERVAL", 0.0)
    x = ef.ones(3, requires_grad=True)
    for _ in range(3):
        (x * 2.0).sum().backward()
    assert ef.get_num_threads() == before
