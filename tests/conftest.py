"""Shared test configuration.

Every test starts from the same global seed. Tests marked `slow` (end-to-end training)
are skipped by default so that `python -m pytest -q` stays fast; they run in CI (where
`CI` is set), with `EASYFIT_RUN_SLOW=1`, or when selected with `-m slow`.
"""
import os

import pytest

import easyfit


@pytest.fixture(autouse=True)
def _seed_everything():
    easyfit.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    selected = "slow" in (config.getoption("markexpr") or "")
    if selected or os.environ.get("CI") or os.environ.get("EASYFIT_RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with EASYFIT_RUN_SLOW=1 or -m slow (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lane_threads(monkeypatch):
    """The names of the threads that ran chunks of easyfit.core.lanes.run (recorded)."""
    import threading
    from easyfit.core import lanes
    names = set()
    original = lanes.run

    def recording(work, chunks, make_state=lambda: None):
        # A lane whose thread starts late can find every chunk taken (the kernels here are
        # small): each chunk waits, up to a few seconds, until this run has a second lane.
        this_run, both_started = set(), threading.Event()
        wait = lanes.count() > 1 and len(chunks) > 1

        def named(state, index, chunk):
            this_run.add(threading.current_thread().name)
            names.add(threading.current_thread().name)
            if len(this_run) > 1:
                both_started.set()
            if wait:
                both_started.wait(timeout=5)
            work(state, index, chunk)
        original(named, chunks, make_state)
    monkeypatch.setattr(lanes, "run", recording)
    return names
