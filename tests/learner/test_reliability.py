"""Issue 15: training never leaks state between fits, never hides a divergence, never
trains zero steps in silence."""
import copy
import math
import warnings

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
