"""Work a recipe run does not repeat or wait for: the final metrics reuse the last epoch's
validation when the model is unchanged, and numba's setup overlaps reading the data."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import ArrayDataset, DataLoader, DataLoaders
from easyfit.learner import Callback, Learner
from easyfit.learner.callback import CancelValidException
from easyfit.learner import learner as learner_module
from recipes import run, vision
from recipes.run import LastValidation, model_fingerprint


def _learner(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    train = DataLoader(ArrayDataset(x[:64], y[:64]), batch_size=16, shuffle=True, seed=1, num_workers=0)
    valid = DataLoader(ArrayDataset(x[64:], y[64:]), batch_size=16, num_workers=0)
    ef.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    learn = Learner(DataLoaders(train, valid), model, nn.CrossEntropyLoss(), path=tmp_path)
    learn.remove_cb(learn.progress)
    return learn


def test_kept_results_are_those_of_a_fresh_validation(tmp_path):
    learn = _learner(tmp_path)
    kept = LastValidation()
    learn.fit(2, lr=0.01, cbs=[kept])
    assert kept.results_if_unchanged(learn) == learn.validate()


@pytest.mark.parametrize("change", ["weight", "buffer", "loader"])
def test_a_changed_model_or_loader_is_validated_again(tmp_path, change):
    learn = _learner(tmp_path)
    kept = LastValidation()
    learn.fit(1, lr=0.01, cbs=[kept])
    if change == "weight":
        learn.model[0].weight.array[0, 0] += 1e-3
    elif change == "buffer":
        learn.model[1].running_mean.array[0] += 1e-3
    else:
        learn.dls.valid = DataLoader(learn.dls.valid.dataset, batch_size=8, num_workers=0)
    assert kept.results_if_unchanged(learn) is None


def test_fingerprint_follows_every_byte_and_name():
    ef.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    model[0].bias.array[1] = np.nextafter(model[0].bias.array[1], np.float32(np.inf))
    assert model_fingerprint(model) != before


class _ChangesWeightsAtTheEnd(Callback):
    def after_fit(self):
        self.learner.model[0].weight.array[...] *= 0.5


def _count_validations(monkeypatch):
    passes = []
    original = learner_module.Learner._do_epoch_validate

    def counted(self, dl=None):
        original(self, dl)
        passes.append(self.valid_results)
    monkeypatch.setattr(learner_module.Learner, "_do_epoch_validate", counted)
    return passes


def test_a_recipe_run_validates_once_per_epoch(tmp_path, monkeypatch):
    passes = _count_validations(monkeypatch)
    config = run.resolve_config(vision, overrides=["epochs=2", "width=4", "bs=128"])
    results = run.train(vision, config, tmp_path / "run", log=lambda *a: None)
    assert len(passes) == 2     # not a third pass for the final metrics
    assert [results["valid_loss"], results["accuracy"]] == pytest.approx(passes[-1], rel=0, abs=0)


def test_a_recipe_run_validates_again_when_a_callback_changes_the_weights(tmp_path, monkeypatch):
    passes = _count_validations(monkeypatch)
    original = vision.build_learner

    def build_learner(config, out_dir):
        learn = original(config, out_dir)
        learn.add_cb(_ChangesWeightsAtTheEnd())
        return learn
    monkeypatch.setattr(vision, "build_learner", build_learner)
    config = run.resolve_config(vision, overrides=["epochs=1", "width=4", "bs=128"])
    results = run.train(vision, config, tmp_path / "run", log=lambda *a: None)
    assert len(passes) == 2
    assert [results["valid_loss"], results["accuracy"]] == pytest.approx(passes[-1], rel=0, abs=0)


def test_a_recipe_run_sets_up_numba_before_reading_its_data(tmp_path, monkeypatch):
    """The first kernel's setup (about a second) overlaps reading the data set."""
    order = []
    monkeypatch.setattr(run.compiled, "load_in_background", lambda: order.append("numba"))
    original = vision.build_learner
    monkeypatch.setattr(vision, "build_learner", lambda *args: (order.append("data"), original(*args))[1])
    config = run.resolve_config(vision, overrides=["epochs=1", "width=4", "bs=128"])
    run.train(vision, config, tmp_path / "run", log=lambda *a: None)
    assert order == ["numba", "data"]


class _CutsValidationShort(Callback):
    def after_batch(self):
        if not self.learner.training:
            raise CancelValidException()


def test_a_validation_cut_short_is_not_kept(tmp_path):
    """A pass that stopped after its first batch measured part of the validation set: the
    final metrics must come from a whole pass."""
    learn = _learner(tmp_path)
    kept = LastValidation()
    learn.fit(1, lr=0.01, cbs=[kept, _CutsValidationShort()])
    assert learn.valid_results is not None
    assert kept.results_if_unchanged(learn) is None
