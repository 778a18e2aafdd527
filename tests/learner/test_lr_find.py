"""lr_find: the sweep, the suggestions, and leaving everything as it was."""
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.learner import Learner, Callback
from easyfit.learner.schedule import suggest_lrs, valley, slide, minimum, steep
from conftest import make_dls, make_model, weights, assert_bytes_equal


def new_learner(**kwargs):
    return Learner(make_dls(), make_model(dropout=0.2), nn.CrossEntropyLoss(), **kwargs)


def test_lr_find_restores_weights_optimizer_rng_and_data_position():
    learn = new_learner()
    learn.fit(1)  # works after a previous fit, with optimizer state
    before = weights(learn.model)
    opt_before = learn.opt.state_dict()
    rng_before = ef.core.random.get_rng_state()
    position = learn.dls.train.state_dict(), learn.dls.valid.state_dict()
    losses_before = list(learn.recorder.losses)

    suggestions = learn.lr_find(num_it=30)

    assert_bytes_equal(weights(learn.model), before)
    opt_after = learn.opt.state_dict()
    assert opt_after["param_groups"] == opt_before["param_groups"]
    for index, entry in opt_before["state"].items():
        for key, value in entry.items():
            assert np.asarray(opt_after["state"][index][key]).tobytes() == np.asarray(value).tobytes()
    assert ef.core.random.get_rng_state() == rng_before
    assert (learn.dls.train.state_dict(), learn.dls.valid.state_dict()) == position
    assert learn.recorder.losses == losses_before
    for name in ("valley", "slide", "minimum", "steep"):
        value = getattr(suggestions, name)
        assert 1e-7 <= value <= 10 and math.isfinite(value)
    assert len(learn.recorder.lr_find_lrs) == len(learn.recorder.lr_find_losses) > 10


def test_training_after_lr_find_equals_training_without_it():
    plain = new_learner()
    ef.manual_seed(3)
    plain.fit(2)
    probed = new_learner()
    ef.manual_seed(3)
    probed.lr_find(num_it=20)
    assert probed.opt is None  # no optimizer existed before, none after
    probed.fit(2)
    assert_bytes_equal(weights(probed.model), weights(plain.model))


def test_lr_find_sweeps_exponentially_and_stops_on_divergence():
    learn = new_learner()
    learn.lr_find(start_lr=1e-5, end_lr=1e3, num_it=60)
    lrs = np.array(learn.recorder.lr_find_lrs)
    ratios = lrs[1:] / lrs[:-1]
    assert np.allclose(ratios, ratios[0])
    assert lrs[0] == pytest.approx(1e-5)
    assert len(lrs) < 60  # a learning rate of 1e3 diverges before the end


def test_lr_find_ignores_non_finite_losses():
    class NaNEvery3(Callback):
        order = -10

        def after_loss(self):
            if self.learner.training and self.learner.train_iter % 3 == 1:
                self.learner.loss = self.learner.loss * float("nan")

    learn = new_learner(cbs=[NaNEvery3()])
    learn.lr_find(num_it=30, stop_div=False)
    assert all(math.isfinite(v) for v in learn.recorder.lr_find_losses)
    assert len(learn.recorder.lr_find_losses) == 20  # 10 of the 30 were NaN


def test_suggestion_rules_on_a_synthetic_curve():
    lrs = np.logspace(-6, 0, 100)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) ** 2 * 20, 0)
    assert 1e-4 < steep(lrs, losses) < 1e-2  # steepest descent around 1e-3
    assert minimum(lrs, losses) == pytest.approx(lrs[np.argmin(losses)] / 10)
    assert 1e-4 < valley(lrs, losses) < 1e-1
    assert 1e-4 < slide(lrs, losses) <= 1
    result = suggest_lrs(lrs, losses)
    assert set(result._fields) == {"valley", "slide", "minimum", "steep"}


def test_lr_find_plot(tmp_path):
    pytest.importorskip("matplotlib")
    learn = new_learner()
    suggestions = learn.lr_find(num_it=20)
    learn.recorder.plot_lr_find(tmp_path / "lr.png", suggestions=suggestions)
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    learn.fit(1)
    learn.recorder.plot_loss(tmp_path / "loss.png")
    learn.recorder.plot_sched(tmp_path / "sched.png")
    assert (tmp_path / "loss.png").exists() and (tmp_path / "sched.png").exists()


def test_lr_find_restores_the_state_into_the_same_optimizer_object():
    learn = new_learner()
    learn.fit(1)
    opt = learn.opt
    steps_before = {index: int(entry["step"]) for index, entry in opt.state_dict()["state"].items()}
    learn.lr_find(num_it=20)
    assert learn.opt is opt
    steps_after = {index: int(entry["step"]) for index, entry in opt.state_dict()["state"].items()}
    assert steps_after == steps_before
