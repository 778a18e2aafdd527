"""Issue 15 item 3 and part of 11: a loader that gave up on a stuck or dead worker never keeps
the program alive and never surfaces a raw executor error."""
import pathlib
import subprocess
import sys

import pytest

import easyfit as ef

STUCK = """
import sys, threading, numpy as np
from easyfit.data import Dataset, DataLoader, DataLoaderError

class Stuck(Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        if i == 2:
            threading.Event().wait()  # blocks for ever
        return np.zeros(1, np.float32), i

loader = DataLoader(Stuck(), batch_size=1, num_workers=2, worker_type=sys.argv[1], timeout=0.5)
try:
    list(loader)
except DataLoaderError as error:
    print("caught:", error)
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_stuck_worker_does_not_keep_the_program_alive_after_a_timeout(kind, tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    try:
        done = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True, timeout=60,
                              cwd=pathlib.Path(ef.__file__).parent.parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the program did not exit after the DataLoaderError (a stuck {kind} worker kept it alive)")
    assert done.returncode == 0, done.stderr
    assert "caught: DataLoader: batch 2 of epoch 0 took longer than timeout" in done.stdout


EXITING = """
import os, time, numpy as np
from easyfit.data import Dataset, DataLoader, DataLoaderError

class Exiting(Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        if i >= 4:
            os._exit(3)
        return np.zeros(1, np.float32), i

# batches 0-3 are loaded before the worker dies on batch 4; the slow consumer lets the pool
# break while it holds finished results, so the loader meets the broken pool when it submits
loader = DataLoader(Exiting(), batch_size=1, num_workers=1, worker_type="process", prefetch=4)
try:
    for batch in loader:
        time.sleep(1.0)
except DataLoaderError as error:
    assert "worker process died" in str(error), error
    print("DataLoaderError")
"""


def test_a_worker_calling_os_exit_always_gives_a_dataloader_error(tmp_path):
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=pathlib.Path(ef.__file__).parent.parent)
    assert done.returncode == 0 and "DataLoaderError" in done.stdout, done.stderr[-2000:]
