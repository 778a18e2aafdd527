"""save/load and resuming a fit from a mid-epoch checkpoint, byte for byte."""
import json

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.learner import Learner, Callback, SaveModelCallback, GradientAccumulation
from easyfit.core.serialization import load_with_metadata
from easyfit.learner.checkpoint import METADATA_KEY
from conftest import make_dls, make_model, weights, assert_bytes_equal


class SaveAt(Callback):
    """Saves a checkpoint after training batch `at` (counted over the whole fit)."""
    order = 100

    def __init__(self, at, name="mid"):
        self.at, self.ckpt_name = at, name

    def after_batch(self):
        if self.learner.training and self.learner.train_iter == self.at:
            self.learner.save(self.ckpt_name)


class CrashAt(Callback):
    def __init__(self, at):
        self.at = at

    def after_batch(self):
        if self.learner.training and self.learner.train_iter == self.at:
            raise KeyboardInterrupt("simulated crash")


def new_learner(tmp_path, seed=0, **kwargs):
    # dropout draws from the global generator and the loader shuffles: both must be restored
    return Learner(make_dls(), make_model(dropout=0.3, seed=seed), nn.CrossEntropyLoss(), path=tmp_path,
                   default_cbs=True, **kwargs)


@pytest.mark.parametrize("method", ["fit", "fit_one_cycle", "fit_flat_cos"])
def test_resume_mid_epoch_is_byte_identical(tmp_path, method):
    reference = new_learner(tmp_path / "a")
    ef.manual_seed(123)
    getattr(reference, method)(3, cbs=[SaveAt(8)])  # 6 batches per epoch: the save is in epoch 1
    expected = weights(reference.model)

    crashed = new_learner(tmp_path / "b")
    ef.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        getattr(crashed, method)(3, cbs=[SaveAt(8), CrashAt(10)])
    progress = json.loads(load_with_metadata(tmp_path / "b" / "models" / "mid.safetensors")[1][METADATA_KEY])["progress"]
    assert (progress["epoch"], progress["batches_done"], progress["train_iter"]) == (1, 2, 8)

    ef.manual_seed(999)  # a different global state in the "new process"
    resumed = new_learner(tmp_path / "b", seed=7)  # different initial weights too
    getattr(resumed, method)(3, resume="mid")
    assert_bytes_equal(weights(resumed.model), expected)
    assert resumed.recorder.losses == pytest.approx(reference.recorder.losses)
    assert len(resumed.recorder.values) == 3
    assert resumed.recorder.lrs == reference.recorder.lrs


def test_resume_from_end_of_epoch_checkpoint(tmp_path):
    reference = new_learner(tmp_path / "a")
    ef.manual_seed(5)
    reference.fit_one_cycle(3, cbs=[SaveModelCallback(every_epoch=True, fname="ep")])
    expected = weights(reference.model)
    resumed = new_learner(tmp_path / "a", seed=3)
    resumed.fit_one_cycle(3, resume="ep_0")
    assert_bytes_equal(weights(resumed.model), expected)


def test_resume_keeps_accumulated_gradients(tmp_path):
    reference = new_learner(tmp_path / "a")
    ef.manual_seed(1)
    reference.fit(2, cbs=[GradientAccumulation(n_acc=48), SaveAt(4)])  # saved mid-accumulation
    expected = weights(reference.model)
    resumed = new_learner(tmp_path / "a", seed=4)
    resumed.fit(2, cbs=[GradientAccumulation(n_acc=48)], resume="mid")
    assert_bytes_equal(weights(resumed.model), expected)


def test_resume_with_a_different_call_is_refused(tmp_path):
    learn = new_learner(tmp_path)
    learn.fit(2, cbs=[SaveAt(3)])
    with pytest.raises(ValueError, match="n_epoch=2"):
        new_learner(tmp_path).fit(3, resume="mid")
    learn.save("outside")
    with pytest.raises(ValueError, match="not written during a fit"):
        new_learner(tmp_path).fit(2, resume="outside")


def test_save_load_round_trip_restores_everything(tmp_path):
    learn = new_learner(tmp_path)
    learn.fit(1)
    path = learn.save("state")
    assert path == tmp_path / "models" / "state.safetensors"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["state.safetensors"]  # one file
    saved_weights = weights(learn.model)
    saved_opt = learn.opt.state_dict()
    saved_rng = ef.core.random.get_rng_state()
    saved_position = learn.dls.train.state_dict()
    saved_losses = list(learn.recorder.losses)
    learn.fit(1)  # move everything on

    other = new_learner(tmp_path, seed=9)
    other.load("state")
    assert_bytes_equal(weights(other.model), saved_weights)
    restored = other.opt.state_dict()
    for index, entry in saved_opt["state"].items():
        for key, value in entry.items():
            assert np.array_equal(np.asarray(restored["state"][index][key]), np.asarray(value))
    assert ef.core.random.get_rng_state() == saved_rng
    assert other.dls.train.state_dict() == saved_position
    assert other.recorder.losses == saved_losses


def to_legacy_format(stem):
    """Rewrite checkpoint `stem`.safetensors in the two-file format of easyfit before one-file
    checkpoints: arrays in the safetensors file, the description in a JSON sidecar with its SHA-256."""
    import hashlib
    arrays, metadata = load_with_metadata(f"{stem}.safetensors")
    sidecar = json.loads(metadata[METADATA_KEY])
    ef.save(arrays, f"{stem}.safetensors")
    sidecar["weights_sha256"] = hashlib.sha256(open(f"{stem}.safetensors", "rb").read()).hexdigest()
    open(f"{stem}.json", "w").write(json.dumps(sidecar))


def test_checkpoints_of_the_two_file_format_still_load_and_are_checked(tmp_path):
    learn = new_learner(tmp_path)
    learn.save("one")
    saved = weights(learn.model)
    learn.fit(1)
    learn.save("two")
    models = tmp_path / "models"
    to_legacy_format(models / "one")
    to_legacy_format(models / "two")
    other = new_learner(tmp_path, seed=5)
    other.load("one")
    assert_bytes_equal(weights(other.model), saved)
    (models / "one.safetensors").write_bytes((models / "two.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match its sidecar"):
        learn.load("one")
    (models / "two.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no JSON sidecar two.json"):
        learn.load("two")
    (models / ".tmp-k2j4h5g6.json").write_text("{")  # a temporary sidecar of a killed two-file save
    (models / "notes.json").write_text("{}")
    learn.save("one")  # saving over a two-file checkpoint leaves one file
    assert not (models / "one.json").exists() and not (models / ".tmp-k2j4h5g6.json").exists()
    assert (models / "notes.json").exists()
    other.load("one")


def test_saving_inside_a_batch_before_its_step_is_refused(tmp_path):
    class SaveTooEarly(Callback):
        def after_loss(self):
            if self.learner.training:
                self.learner.save("bad")

    with pytest.raises(RuntimeError, match="in the middle of training batch"):
        new_learner(tmp_path).fit(1, cbs=[SaveTooEarly()])


def test_resume_from_save_model_every_n_batches(tmp_path):
    reference = new_learner(tmp_path / "a")
    ef.manual_seed(2)
    reference.fit_one_cycle(2, cbs=[SaveModelCallback(fname="run", every_n_batches=5)])
    expected = weights(reference.model)

    crashed = new_learner(tmp_path / "b")
    ef.manual_seed(2)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit_one_cycle(2, cbs=[SaveModelCallback(fname="run", every_n_batches=5), CrashAt(7)])
    resumed = new_learner(tmp_path / "b", seed=11)
    resumed.fit_one_cycle(2, cbs=[SaveModelCallback(fname="run", every_n_batches=5)], resume="run_last")
    assert_bytes_equal(weights(resumed.model), expected)
