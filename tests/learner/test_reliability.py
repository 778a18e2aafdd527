"""Issue 15: training never leaks state between fits, never hides a divergence, never
trains zero steps in silence."""
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import Learner, Callback
from conftest import make_dls, make_model, weights, assert_bytes_equal


def quiet_learner(tmp_path, **kwargs):
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path, **kwargs)
    learn.remove_cb(learn.progress)
    return learn


class RaiseAt(Callback):
    """Raises `error` at `event` of the first training batch."""

    def __init__(self, error):
        self.error = error


@pytest.mark.parametrize("event", ["after_backward", "before_step", "after_step"])
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_gradients_of_an_abandoned_batch_do_not_leak_into_the_next_fit(tmp_path, event, error):
    cls = type("Raise_" + event, (RaiseAt,), {event: lambda self: (_ for _ in ()).throw(self.error("stop"))})
    learn = quiet_learner(tmp_path / "a")
    with pytest.raises(error):
        learn.fit(1, cbs=[cls(error)])
    assert all(p.grad is None for p in learn.model.parameters())
    # the next fit's first step uses only its own gradients: same as a learner that starts clean
    clean = quiet_learner(tmp_path / "b")
    clean.model.load_state_dict(learn.model.state_dict())
    next(iter(clean.dls.train))  # the loader was left after handing out one batch
    clean.opt = None
    learn.opt = None
    ef.manual_seed(4)
    learn.fit(1)
    ef.manual_seed(4)
    clean.fit(1)
    assert_bytes_equal(weights(learn.model), weights(clean.model))


def test_gradients_left_by_hand_are_cleared_when_a_fit_starts(tmp_path):
    learn = quiet_learner(tmp_path / "a")
    clean = quiet_learner(tmp_path / "b")
    for p in learn.model.parameters():
        p.grad = ef.ones(p.shape) * 100.0
    ef.manual_seed(4)
    learn.fit(1)
    ef.manual_seed(4)
    clean.fit(1)
    assert_bytes_equal(weights(learn.model), weights(clean.model))


class PoisonGradient(Callback):
    """Writes a NaN into one gradient of training batch `at` (the loss stays finite)."""

    def __init__(self, at):
        self.at = at

    def after_backward(self):
        if self.learner.train_iter == self.at:
            first = next(iter(self.learner.model.parameters()))
            first.grad.array[0] = np.nan


def test_a_non_finite_gradient_stops_before_the_step_and_the_message_is_true(tmp_path):
    learn = quiet_learner(tmp_path)
    learn.fit(1, cbs=[PoisonGradient(at=3)])  # warm up: the optimizer has state
    learn = quiet_learner(tmp_path)
    learn.fit(1)
    before = weights(learn.model)
    with pytest.warns(RuntimeWarning, match="gradient of 0.weight holds NaN"):
        learn.fit(1, cbs=[PoisonGradient(at=0)])
    assert learn.terminate_on_na_n.diverged
    assert "The weights are those before this batch" in learn.stop_reason
    assert_bytes_equal(weights(learn.model), before)  # the message is true: no step was taken
    assert all(np.isfinite(p.numpy_cpu()).all() for p in learn.model.parameters())


def test_after_a_diverged_step_the_message_says_the_weights_are_not_finite(tmp_path):
    learn = quiet_learner(tmp_path)
    with pytest.warns(RuntimeWarning, match="Training stopped"):
        learn.fit(1, lr=math.inf)
    message = learn.stop_reason
    assert learn.terminate_on_na_n.diverged
    assert "already hold NaN or inf" in message and "those before this batch" not in message


def _learner_on(n_train, batch_size, drop_last, tmp_path):
    x = np.zeros((n_train, 6), np.float32)
    y = np.zeros(n_train, np.int64)
    train = DataLoader(ArrayDataset(x, y), batch_size=batch_size, drop_last=drop_last, num_workers=0)
    valid = DataLoader(ArrayDataset(np.zeros((4, 6), np.float32), np.zeros(4, np.int64)), batch_size=4,
                       num_workers=0)
    return Learner(DataLoaders(train, valid), make_model(), nn.CrossEntropyLoss(), path=tmp_path)


@pytest.mark.parametrize("n_train,batch_size,drop_last", [(0, 4, False), (3, 4, True)])
def test_an_empty_training_loader_is_an_error_before_fitting(tmp_path, n_train, batch_size, drop_last):
    learn = _learner_on(n_train, batch_size, drop_last, tmp_path)
    before = weights(learn.model)
    with pytest.raises(ValueError, match=f"fit: the training data loader yields no batches .*{n_train} samples"):
        learn.fit_one_cycle(2)
    with pytest.raises(ValueError, match="lr_find: the training data loader yields no batches"):
        learn.lr_find()
    assert_bytes_equal(weights(learn.model), before)
