"""Fault injection into resume: interrupt a short run at every event of every batch, resume
from the last checkpoint in a fresh Learner, and require the end state byte for byte.

The run: 2 epochs of 4 training batches (and 2 validation batches), a checkpoint after
every `period` training batches (SaveModelCallback(every_n_batches=period)), a model
with BatchNorm (its `num_batches_tracked` counts every training batch) and dropout (the
random generators must be restored). An interruption is a KeyboardInterrupt raised by a
callback at one (event, epoch, training/validation, batch index) point; the resumed run
continues from the newest checkpoint (or starts again when none was written yet) and
must end with the same weights, optimizer state and recorder values as a run that was
never interrupted. The default run covers every point (94) with period 2 (it divides the
epoch, so a checkpoint lands at the end of each epoch: issue 15 item 1); the `slow`
profile adds periods 1 and 3 and a one-cycle schedule (6 x 94 interruptions).
"""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import Learner, Callback, SaveModelCallback
from easyfit.learner.callback import EVENTS
from conftest import weights, assert_bytes_equal

N_EPOCH, TRAIN_BATCHES, VALID_BATCHES = 2, 4, 2
BATCH_EVENTS = ("before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
                "before_step", "after_step", "after_batch")
VALID_BATCH_EVENTS = ("before_batch", "after_pred", "after_loss", "after_batch")


class Interrupted(KeyboardInterrupt):
    """Stands for Ctrl-C (or a crash) at one point of the run."""


class _Interrupter(Callback):
    """Raises Interrupted at `event` of `epoch` (and of batch `batch` in `phase` for batch events)."""
    order = 100

    def __init__(self, event, epoch=None, phase=None, batch=None):
        self.event, self.at_epoch, self.phase, self.batch = event, epoch, phase, batch

    @property
    def name(self):
        return "interrupt_at"

    def _maybe_interrupt(self):
        learn = self.learner
        if self.at_epoch is not None and learn.epoch != self.at_epoch:
            return
        if self.phase is not None:
            if ("train" if learn.training else "valid") != self.phase or learn.iter != self.batch:
                return
        raise Interrupted(f"{self.event} epoch {self.at_epoch} {self.phase} batch {self.batch}")


def InterruptAt(event, epoch=None, phase=None, batch=None):
    """An _Interrupter whose class defines the one hook `event` (hooks are read from the class)."""
    cls = type(f"InterruptAt_{event}", (_Interrupter,), {event: _Interrupter._maybe_interrupt})
    return cls(event, epoch, phase, batch)


def interruption_points():
    """Every (event, epoch, phase, batch) of the run, in the order they happen."""
    points = [("before_fit", None, None, None)]
    for epoch in range(N_EPOCH):
        points += [("before_epoch", epoch, None, None), ("before_train", epoch, None, None)]
        points += [(event, epoch, "train", batch) for batch in range(TRAIN_BATCHES) for event in BATCH_EVENTS]
        points += [("after_train", epoch, None, None), ("before_validate", epoch, None, None)]
        points += [(event, epoch, "valid", batch) for batch in range(VALID_BATCHES) for event in VALID_BATCH_EVENTS]
        points += [("after_validate", epoch, None, None), ("after_epoch", epoch, None, None)]
    points.append(("after_fit", None, None, None))
    return points


def make_learner(path, seed=0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(TRAIN_BATCHES * 8 + VALID_BATCHES * 8, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    split = TRAIN_BATCHES * 8
    train = DataLoader(ArrayDataset(x[:split], y[:split]), batch_size=8, shuffle=True, seed=3, num_workers=0)
    valid = DataLoader(ArrayDataset(x[split:], y[split:]), batch_size=8, num_workers=0)
    ef.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))
    learn = Learner(DataLoaders(train, valid), model, nn.CrossEntropyLoss(), path=path)
    learn.remove_cb(learn.progress)
    return learn


def run(learn, method, period, extra=(), resume=None):
    callbacks = [SaveModelCallback(fname="ckpt", every_n_batches=period, at_end=True)] + list(extra)
    getattr(learn, method)(N_EPOCH, cbs=callbacks, resume=resume)


def end_state(learn):
    opt = {}
    for index, entry in learn.opt.state_dict()["state"].items():
        for key, value in entry.items():
            opt[f"{index}.{key}"] = np.asarray(value.numpy_cpu() if hasattr(value, "numpy_cpu") else value).copy()
    recorder = learn.recorder
    return weights(learn.model), opt, (recorder.losses, recorder.lrs, recorder.values)


def assert_same_end(learn, expected, where):
    got_weights, got_opt, got_recorder = end_state(learn)
    want_weights, want_opt, want_recorder = expected
    assert_bytes_equal(got_weights, want_weights)
    assert_bytes_equal(got_opt, want_opt)
    # the recorder's epoch table ends with the epoch's wall time: compare everything else exactly
    got_losses, got_lrs, got_values = got_recorder
    want_losses, want_lrs, want_values = want_recorder
    assert got_losses == want_losses and got_lrs == want_lrs, where
    assert [v[:-1] for v in got_values] == [v[:-1] for v in want_values], where


def interrupt_and_resume(tmp_path, method, period):
    """Runs every interruption point; returns how many runs were interrupted and resumed."""
    reference = make_learner(tmp_path / "reference")
    ef.manual_seed(123)
    run(reference, method, period)
    expected = end_state(reference)
    count = 0
    for index, point in enumerate(interruption_points()):
        folder = tmp_path / f"run{index}"
        crashed = make_learner(folder)
        ef.manual_seed(123)
        with pytest.raises(Interrupted):
            run(crashed, method, period, extra=[InterruptAt(*point)])
        count += 1
        has_checkpoint = (folder / "models" / "ckpt_last.safetensors").exists()
        if has_checkpoint:
            ef.manual_seed(999)  # a fresh process: other global state, other initial weights
            resumed = make_learner(folder, seed=7)
        else:  # nothing saved yet: the run starts again
            resumed = make_learner(folder)
            ef.manual_seed(123)
        run(resumed, method, period, resume="ckpt_last" if has_checkpoint else None)
        assert_same_end(resumed, expected, f"interrupted at {point}, period {period}")
    return count


def test_interruption_points_cover_every_event():
    points = interruption_points()
    assert {event for event, *_ in points} == set(EVENTS)
    assert len(points) == 2 + N_EPOCH * (6 + TRAIN_BATCHES * len(BATCH_EVENTS) + VALID_BATCHES * len(VALID_BATCH_EVENTS))


@pytest.mark.parametrize("period", [2])
def test_resume_after_an_interruption_at_every_point_is_byte_identical(tmp_path, period):
    assert interrupt_and_resume(tmp_path, "fit", period) == len(interruption_points())


@pytest.mark.slow
@pytest.mark.parametrize("method,period", [("fit", 1), ("fit", 3), ("fit_one_cycle", 1), ("fit_one_cycle", 2),
                                           ("fit_one_cycle", 3)])
def test_resume_after_an_interruption_at_every_point_slow_profile(tmp_path, method, period):
    assert interrupt_and_resume(tmp_path, method, period) == len(interruption_points())
