"""Built-in callbacks: Recorder, schedules, early stopping, saving, clipping, accumulation, CSV, NaN."""
import math

import numpy as np
import pytest

from easyfit import nn
from easyfit.optim import SGD
from easyfit.optim.schedule import one_cycle_lr, one_cycle_mom
from easyfit.learner import (Learner, Callback, EarlyStoppingCallback, SaveModelCallback, GradientClip,
                             GradientAccumulation, CSVLogger, accuracy)
from conftest import make_dls, make_model, weights, assert_bytes_equal


def new_learner(tmp_path=".", dls=None, **kwargs):
    return Learner(dls or make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path, **kwargs)


def test_recorder_keeps_one_loss_lr_and_mom_per_batch_and_values_per_epoch():
    learn = new_learner(metrics=accuracy)
    learn.fit(2, lr=0.01)
    n = 2 * len(learn.dls.train)
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == len(learn.recorder.moms) == n
    assert learn.recorder.lrs == [0.01] * n and learn.recorder.moms == [0.9] * n
    assert len(learn.recorder.values) == 2 and len(learn.recorder.values[0]) == 3
    assert learn.recorder.metric_names == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    # the epoch's train loss is the mean over its items (batches of 16 and a short one would differ)
    assert learn.recorder.values[1][0] == pytest.approx(np.mean(learn.recorder.losses[6:]), rel=1e-6)
    assert learn.recorder.values[-1][1:] == pytest.approx(learn.validate())


def test_fit_one_cycle_follows_fastai_schedules():
    learn = new_learner()
    learn.fit_one_cycle(2, lr_max=1e-2)
    total = 2 * len(learn.dls.train)
    expected_lr = [one_cycle_lr(1e-2)(i / total) for i in range(total)]
    expected_mom = [one_cycle_mom()(i / total) for i in range(total)]
    assert learn.recorder.lrs == pytest.approx(expected_lr)
    assert learn.recorder.moms == pytest.approx(expected_mom)
    assert learn.recorder.lrs[0] == pytest.approx(1e-2 / 25)
    assert max(learn.recorder.moms) == pytest.approx(0.95) and min(learn.recorder.moms) < 0.86


def test_fit_one_cycle_cycles_sgd_momentum_and_flat_cos():
    learn = new_learner(opt_func=lambda groups, lr: SGD(groups, lr=lr, momentum=0.9))
    learn.fit_one_cycle(1, lr_max=0.1)
    assert learn.opt.param_groups[0]["momentum"] == pytest.approx(learn.recorder.moms[-1])
    assert learn.recorder.moms[0] == pytest.approx(0.95)
    learn.fit_flat_cos(2, lr=0.05)
    lrs = learn.recorder.lrs
    assert lrs[0] == lrs[len(lrs) // 2] == pytest.approx(0.05)
    assert lrs[-1] < lrs[-2] < lrs[-3] <= 0.05  # annealing over the last quarter


def test_discriminative_learning_rates_and_freeze():
    learn = new_learner()
    learn.freeze()
    body, head = learn.opt.param_groups
    before = weights(learn.model)
    learn.fit(1, lr=slice(1e-4, 1e-2))
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([1e-4, 1e-2])
    after = weights(learn.model)
    assert np.array_equal(before["0.weight"], after["0.weight"])       # frozen body
    assert not np.array_equal(before["2.weight"], after["2.weight"])   # trained head
    learn.unfreeze()
    learn.fit(1, lr=slice(1e-3))
    assert [g["lr"] for g in learn.opt.param_groups] == pytest.approx([1e-4, 1e-3])
    assert not np.array_equal(after["0.weight"], weights(learn.model)["0.weight"])


def test_fine_tune_trains_head_then_everything():
    learn = new_learner()
    learn.fine_tune(1, freeze_epochs=1)
    assert learn.frozen_to == 0 and all(p.requires_grad for p in learn.model.parameters())
    assert len(learn.recorder.values) == 1


def test_early_stopping_stops_when_the_monitor_stalls():
    class WorseEveryEpoch(Callback):
        order = 55  # after the Recorder, before the tracker

        def after_epoch(self):
            self.learner.recorder.values[-1][1] = 1.0 + self.learner.epoch

    learn = new_learner(cbs=[WorseEveryEpoch(), EarlyStoppingCallback(patience=2)])
    learn.fit(10)
    assert len(learn.recorder.values) == 3  # best at epoch 0, two epochs without improvement
    assert "Early stopping at epoch 2" in learn.stop_reason


def test_early_stopping_on_a_metric_that_should_rise():
    cb = EarlyStoppingCallback(monitor="accuracy", patience=1)
    assert cb.comp is np.greater
    with pytest.raises(ValueError, match="columns are"):
        new_learner(cbs=[EarlyStoppingCallback(monitor="acuracy")]).fit(1)


def test_save_model_keeps_the_best_and_loads_it_at_the_end(tmp_path):
    class ScriptedLoss(Callback):
        order = 55

        def after_epoch(self):
            self.learner.recorder.values[-1][1] = [3.0, 1.0, 2.0][self.learner.epoch]

    class Snapshot(Callback):
        order = 56

        def after_epoch(self):
            if self.learner.epoch == 1:
                self.best = weights(self.learner.model)

    snap = Snapshot()
    learn = new_learner(tmp_path, cbs=[ScriptedLoss(), snap, SaveModelCallback(fname="best")])
    learn.fit(3)
    assert (tmp_path / "models" / "best.safetensors").exists()
    assert learn.save_model.best == 1.0 and learn.save_model.best_epoch == 1
    assert_bytes_equal(weights(learn.model), snap.best)


def test_save_model_every_epoch_and_every_n_batches(tmp_path):
    learn = new_learner(tmp_path, cbs=[SaveModelCallback(every_epoch=True, fname="ep", every_n_batches=4)])
    learn.fit(2)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["ep_0.safetensors", "ep_1.safetensors", "ep_last.safetensors"]  # one file a checkpoint


def test_gradient_clip_bounds_the_norm():
    class Norm(Callback):
        order = 10  # after GradientClip (order 0) in before_step

        def before_step(self):
            grads = [p.grad.numpy() for p in self.learner.model.parameters() if p.grad is not None]
            self.norms.append(math.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)))

    norm = Norm()
    norm.norms = []
    learn = new_learner(cbs=[GradientClip(max_norm=0.05), norm])
    learn.fit(1, lr=0.1)
    assert max(norm.norms) <= 0.05 * (1 + 1e-5)
    assert learn.gradient_clip.last_norm > 0


def test_gradient_accumulation_equals_a_bigger_batch():
    small = new_learner(dls=make_dls(batch_size=8, shuffle=False),
                        opt_func=lambda g, lr: SGD(g, lr=lr), cbs=[GradientAccumulation(n_acc=32)])
    small.fit(1, lr=0.1)
    big = new_learner(dls=make_dls(batch_size=32, shuffle=False), opt_func=lambda g, lr: SGD(g, lr=lr))
    big.fit(1, lr=0.1)
    for key, value in weights(big.model).items():
        np.testing.assert_allclose(weights(small.model)[key], value, rtol=1e-5, atol=1e-6)


def test_csv_logger_writes_the_epoch_table(tmp_path):
    learn = new_learner(tmp_path, metrics=accuracy, cbs=[CSVLogger()])
    learn.fit(2)
    rows = learn.csv_logger.read()
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["valid_loss"]) == pytest.approx(learn.recorder.values[1][1], rel=1e-5)
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    learn.csv_logger.append = True
    learn.fit(1)
    assert len(learn.csv_logger.read()) == 3


def test_nan_loss_stops_training_with_a_clear_message():
    class PoisonInputs(Callback):
        def before_batch(self):
            if self.learner.training and self.learner.train_iter == 3:
                self.learner.xb = (self.learner.xb[0] * float("nan"),)

    learn = new_learner(cbs=[PoisonInputs()])
    with pytest.warns(RuntimeWarning, match=r"loss became nan at epoch 0, batch 3"):
        learn.fit(3)
    assert len(learn.recorder.losses) == 3  # stopped before the bad batch was recorded or stepped on
    assert all(np.isfinite(v).all() for v in weights(learn.model).values())
    assert "lower learning rate" in learn.stop_reason
