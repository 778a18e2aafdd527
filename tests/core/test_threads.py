"""BLAS threads: fixed by the user, or chosen from the machine's load (easyfit.core.threads)."""
import os
import subprocess
import sys

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


_IDLE_CPU_SCRIPT = """
import time, numpy as np
import easyfit
from easyfit.core import blas, threads
threads.set_raw(2)
a = np.ones((512, 512), np.float32)
for _ in range(3):
    product = a @ a          # a threaded product: wakes OpenBLAS's worker
assert product[0, 0] == 512.0
before = time.process_time()  # CPU time of every thread of this process
time.sleep(0.2)
import os
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"), time.process_time() - before)
"""


def test_openblas_workers_sleep_soon_after_a_threaded_product():
    # OpenBLAS's default keeps its idle worker spinning for about 0.1 s after each product,
    # on the core that a lane of the next conv needs; easyfit shortens that to ~0.4 ms.
    from easyfit.core import blas
    if not blas.functions() or (os.cpu_count() or 1) < 2 or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        pytest.skip("needs NumPy's OpenBLAS with its thread pool, on two CPUs or more")
    result = subprocess.run([sys.executable, "-c", _IDLE_CPU_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    variable, idle_cpu = result.stdout.split()
    assert variable == "unset"    # child processes start with OpenBLAS's own default
    idle_cpu = float(idle_cpu)
    assert idle_cpu < 0.03, f"the process burned {idle_cpu:.3f} s of CPU while idle for 0.2 s"


def test_a_users_own_openblas_thread_timeout_is_kept(monkeypatch):
    from easyfit.core import blas
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    assert blas.shorten_worker_spin() is False
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "28"

