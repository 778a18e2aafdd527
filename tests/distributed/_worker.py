"""Run by the distributed tests under `mpiexec -n 2` (and imported by them for the one-process reference).

    python _worker.py train OUT      train 2 epochs, save 'mid' after epoch 0 and 'final' at the end
    python _worker.py resume OUT NAME   continue the same fit from checkpoint NAME
    python _worker.py accumulate OUT one epoch with GradientAccumulation(n_acc=40)
    python _worker.py lr_find OUT    the learning-rate finder (writes OUT/lr_find<r>.json)
    python _worker.py fail OUT       rank 1 raises during its third training batch

Every rank writes OUT/rank<r>.npz (final weights) and OUT/rank<r>.json (recorded values).
"""
import json
import sys
from pathlib import Path

import numpy as np

import easyfit as ef
from easyfit import distributed, nn
from easyfit.data import ArrayDataset, DataLoader, DataLoaders
from easyfit.learner import Callback, F1Score, GradientAccumulation, Learner, TensorBoardCallback, accuracy

N_TRAIN, N_VALID, N_FEATURES, N_CLASSES = 101, 37, 6, 3  # uneven: the last global batches are short


def spread(pred, target):
    """A whole-set function (gathered, not averaged): standard deviation of the top class score."""
    return float(np.asarray(pred.numpy()).max(axis=-1).std())


def make_learner(batch_size, path):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=1.5, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=N_TRAIN + N_VALID)
    x = (centers[y] + rng.normal(size=(len(y), N_FEATURES))).astype(np.float32)
    train = DataLoader(ArrayDataset(x[:N_TRAIN], y[:N_TRAIN]), batch_size=batch_size, shuffle=True, seed=3,
                       num_workers=0)
    valid = DataLoader(ArrayDataset(x[N_TRAIN:], y[N_TRAIN:]), batch_size=batch_size, num_workers=0)
    # each rank draws different initial weights: distrib_ctx must start them all from rank 0's
    # (the one-process reference, rank 0 of a world of one, draws rank 0's)
    ef.manual_seed(distributed.rank())
    # no bias before the BatchNorm: its true gradient is 0, and Adam would amplify rounding noise there
    model = nn.Sequential(nn.Linear(N_FEATURES, 16, bias=False), distributed.SyncBatchNorm(16), nn.ReLU(),
                          nn.Linear(16, N_CLASSES))
    return Learner(DataLoaders(train, valid), model, nn.CrossEntropyLoss(), lr=1e-2,
                   metrics=[accuracy, F1Score(), spread], path=path)


class SaveAfterFirstEpoch(Callback):
    def __init__(self, name):
        self.checkpoint_name = name

    def after_epoch(self):
        if self.learner.epoch == 0:
            self.learner.save(self.checkpoint_name)


class FailInRank1(Callback):
    def before_batch(self):
        if distributed.rank() == 1 and self.learner.training and self.learner.iter == 2:
            raise RuntimeError("boom in rank 1")


def weights(learn):
    return {k: v.numpy().copy() for k, v in learn.model.state_dict().items()}


def write_results(learn, out, valid):
    rank = distributed.rank()
    np.savez(out / f"rank{rank}.npz", **weights(learn))
    (out / f"rank{rank}.json").write_text(json.dumps({"values": learn.recorder.values, "validate": valid,
                                                      "losses": learn.recorder.losses}))


def main(mode, out, name=None):
    out = Path(out)
    learn = make_learner(batch_size=8, path=out)
    with learn.distrib_ctx():
        if mode == "train":
            learn.fit_one_cycle(2, lr_max=1e-2, cbs=[SaveAfterFirstEpoch("mid"), TensorBoardCallback(str(out / "tb"))])
            learn.save("final")
        elif mode == "resume":
            learn.fit_one_cycle(2, lr_max=1e-2, resume=name)
        elif mode == "accumulate":
            learn.fit(1, cbs=[GradientAccumulation(n_acc=40)])
        elif mode == "lr_find":
            found = learn.lr_find(num_it=30)
            (out / f"lr_find{distributed.rank()}.json").write_text(json.dumps(
                {"suggestions": list(found), "losses": learn.recorder.lr_find_losses}))
        elif mode == "fail":
            learn.fit_one_cycle(2, lr_max=1e-2, cbs=[FailInRank1()])
        valid = learn.validate()
    write_results(learn, out, valid)


if __name__ == "__main__":
    main(*sys.argv[1:])
