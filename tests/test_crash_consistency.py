"""Crash consistency of every file easyfit writes (issue 15 item 2 and its suite).

A forked child saves version after version of one file (`learn.save`, `easyfit.save` or
`learn.export`), each version recognisable (every weight equals the version number),
and is killed with SIGKILL:

* at each step of a save, by a fault hook in the child (before the data is fsynced,
  before the rename, after the rename, after the folder fsync), and
* after a random delay (landing anywhere: mid-write, mid-rename, between saves).

After every kill the file must load as one whole version, never older than the last one
seen, and the next load must leave no temporary file behind. The same is checked on a
2 MB tmpfs that fills up mid-save (root only; skipped with the reason elsewhere).
Default: 3 kinds x (4 hooked + 12 random) = 48 kills; the `slow` profile adds 3 x 100.
"""
import errno
import os
import random
import signal
import subprocess

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import Learner, Callback, load_learner

KINDS = ("learn.save", "easyfit.save", "export")
HOOKS = ("before data fsync", "before rename", "after rename", "after folder fsync")


class Version(Callback):
    """A callback whose saved state is the version number (stored in the checkpoint's arrays)."""

    def __init__(self):
        self.version = 0

    def state_dict(self):
        return {"version": self.version}

    def load_state_dict(self, state):
        self.version = int(state["version"])


def make_learner(folder, width=256):
    x = np.zeros((8, width), np.float32)
    dls = DataLoaders(DataLoader(ArrayDataset(x, np.zeros(8, np.int64)), batch_size=4, num_workers=0))
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), path=folder, cbs=[Version()], default_cbs=False)
    folder.mkdir(parents=True, exist_ok=True)
    learn.create_opt()
    return learn


def target_path(folder, kind):
    return {"learn.save": folder / "models" / "ckpt.safetensors", "easyfit.save": folder / "state.safetensors",
            "export": folder / "export.safetensors"}[kind]


def write_version(learn, folder, kind, version):
    """Save `version` of the file of `kind` (every weight equals `version`)."""
    for p in learn.model.parameters():
        p.array[...] = version
    learn.version.version = version
    if kind == "learn.save":
        learn.save("ckpt")
    elif kind == "easyfit.save":
        ef.save({"model": learn.model.state_dict(), "meta": {"version": version}}, target_path(folder, kind))
    else:
        learn.export(target_path(folder, kind))


def read_version(folder, kind, width=256):
    """The version the file holds, after checking that all of it belongs to that one version."""
    path = target_path(folder, kind)
    if kind == "learn.save":
        learn = make_learner(folder, width)
        learn.load("ckpt")
        values = [p.numpy_cpu() for p in learn.model.parameters()]
        declared = learn.version.version
    elif kind == "easyfit.save":
        state = ef.load(path)
        values = list(state["model"].values())
        declared = state["meta"]["version"]
    else:
        values = [p.numpy_cpu() for p in load_learner(path).model.parameters()]
        declared = int(values[0].flat[0])
    for value in values:
        assert np.all(value == declared), f"{path} mixes versions: {np.unique(value)[:4]} vs {declared}"
    return declared


def temporaries(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def _install_hook(hook):
    """In the child: SIGKILL itself at one step of the next save (patching os in the child only)."""
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_replace = os.fsync, os.replace
    calls = {"fsync": 0}

    def fsync(fd):
        calls["fsync"] += 1
        if hook == "before data fsync" and calls["fsync"] == 1:
            die()
        real_fsync(fd)
        if hook == "after folder fsync" and calls["fsync"] == 2:
            die()

    def replace(source, destination):
        if hook == "before rename":
            die()
        real_replace(source, destination)
        if hook == "after rename":
            die()

    os.fsync, os.replace = fsync, replace


def kill_during_save(folder, kind, first_version, hook=None, delay=None):
    """Fork a child that saves versions first_version, first_version+1, ...; kill it (at `hook`
    in its first save, or after `delay` seconds); returns when it is dead."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            learn = make_learner(folder)
            if hook is not None:
                _install_hook(hook)
            version = first_version
            while True:
                write_version(learn, folder, kind, version)
                version += 1
        finally:
            os._exit(1)
    if delay is not None:
        import time
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child ended with status {status}"


def run_kills(tmp_path, kind, hooked, random_kills, seed=0):
    """Returns (kills, kills that left a temporary file behind)."""
    folder = tmp_path / kind.replace(".", "_")
    learn = make_learner(folder)
    write_version(learn, folder, kind, 1)
    last_seen, kills, interrupted = 1, 0, 0
    rng = random.Random(seed)
    plan = [(hook, None) for hook in (HOOKS if hooked else ())]
    plan += [(None, rng.uniform(0.0, 0.15)) for _ in range(random_kills)]
    for hook, delay in plan:
        kill_during_save(folder, kind, last_seen + 1, hook=hook, delay=delay)
        kills += 1
        interrupted += bool(temporaries(folder))
        version = read_version(folder, kind)  # whole, and old or new
        assert version >= last_seen, f"{kind}: the file went back from version {last_seen} to {version}"
        if hook in ("after rename", "after folder fsync"):
            assert version == last_seen + 1, f"{kind}: killed {hook}, yet the new version is not there"
        if hook in ("before data fsync", "before rename"):
            assert version == last_seen, f"{kind}: killed {hook}, yet the file changed"
        assert temporaries(folder) == [], f"{kind}: temporary files left after a load: {temporaries(folder)}"
        last_seen = version
    assert sorted(p.name for p in target_path(folder, kind).parent.iterdir() if p.name.startswith(
        target_path(folder, kind).stem)) == [target_path(folder, kind).name]
    return kills, interrupted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.parametrize("kind", KINDS)
def test_a_save_killed_at_any_point_leaves_the_old_or_the_new_file(tmp_path, kind):
    kills, _ = run_kills(tmp_path, kind, hooked=True, random_kills=12)
    assert kills == len(HOOKS) + 12


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
@pytest.mark.parametrize("kind", KINDS)
def test_a_save_killed_at_random_points_slow_profile(tmp_path, kind):
    kills, interrupted = run_kills(tmp_path, kind, hooked=False, random_kills=100, seed=1)
    assert kills == 100
    assert interrupted > 0, "no kill landed inside a save; the delays are too long for this machine"


@pytest.mark.parametrize("kind", ["learn.save", "easyfit.save"])
def test_a_stale_temporary_file_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path, kind):
    folder = tmp_path / "f"
    learn = make_learner(folder)
    write_version(learn, folder, kind, 1)
    target = target_path(folder, kind)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        dead = _a_dead_pid()
        stale = target.with_name(f".{target.name}.{dead}.abcd1234.tmp")
        legacy = target.with_name(f".{target.name}.k2j4h5g6.tmp")
        live = target.with_name(f".{target.name}.{sleeper.pid}.abcd1234.tmp")
        other = target.with_name(".someone-else.tmp")
        for path in (stale, legacy, live, other):
            path.write_bytes(b"x" * 100)
        read_version(folder, kind)
        assert not stale.exists() and not legacy.exists()
        assert live.exists() and other.exists()  # a save in progress, and a file not ours
        live.unlink()
        stale.write_bytes(b"x")
        write_version(learn, folder, kind, 2)
        assert not stale.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def _a_dead_pid():
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MB tmpfs (root only)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_during_a_save_keeps_the_old_file(small_filesystem, kind):
    folder = small_filesystem / "run"
    learn = make_learner(folder, width=400)  # about 650 kB a file: the second copy does not fit with ballast
    write_version(learn, folder, kind, 1)
    ballast = small_filesystem / "ballast"
    free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
    ballast.write_bytes(b"\0" * max(0, free - 200_000))
    with pytest.raises(OSError) as info:
        write_version(learn, folder, kind, 2)
    assert info.value.errno == errno.ENOSPC
    assert read_version(folder, kind, width=400) == 1
    assert temporaries(small_filesystem) == []
    ballast.unlink()
    write_version(learn, folder, kind, 3)
    assert read_version(folder, kind, width=400) == 3
