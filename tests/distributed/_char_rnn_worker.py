"""The char-RNN recipe trained data-parallel: run by the distributed tests under `mpiexec -n 2`,
and imported by them for the one-process reference at the global batch.

    python _char_rnn_worker.py train TEXT OUT          2 epochs; saves 'mid' in the middle of epoch 1
    python _char_rnn_worker.py resume TEXT OUT NAME    continue the same fit from checkpoint NAME

Every rank writes OUT/rank<r>.npz (final weights) and OUT/rank<r>.json (recorded values).
"""
import json
import sys
from pathlib import Path

import numpy as np

import easyfit as ef
from easyfit import distributed
from easyfit.learner import Callback

from recipes import char_rnn

EPOCHS, LR = 2, 1e-2
MID_ITER = 30  # the global training batch after which 'mid' is saved: in epoch 1, with a carried state
WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "then", "slept")


def write_text(path):
    """A small deterministic text (about 4,000 characters) with some structure to learn."""
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) + "." for _ in range(160)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(text, batch_size):
    # no dropout: one process's dropout masks cannot be split between processes
    return char_rnn.Config(data=str(text), bs=batch_size, bptt=16, emb_size=8, hidden_size=16, num_layers=2,
                           dropout=0.0, epochs=EPOCHS, lr=LR, chunk_chars=400, valid_pct=0.2, max_chars=None)


def make_learner(text, batch_size, path):
    # each rank draws different initial weights: distrib_ctx must start them all from rank 0's
    ef.manual_seed(distributed.rank())
    learn = char_rnn.build_learner(config(text, batch_size), Path(path))
    learn.remove_cb(learn.progress)
    return learn


class SaveAt(Callback):
    """Save checkpoint `name` after global training batch `at` (mid-epoch: the recurrent state is carried)."""

    def __init__(self, name, at):
        self.checkpoint_name, self.at = name, at

    def after_batch(self):
        if self.learner.training and self.learner.train_iter == self.at:
            self.learner.save(self.checkpoint_name)


def weights(learn):
    return {k: v.numpy().copy() for k, v in learn.model.state_dict().items()}


def main(mode, text, out, name=None):
    out = Path(out)
    learn = make_learner(text, batch_size=4, path=out)
    with learn.distrib_ctx():
        if mode == "train":
            learn.fit_one_cycle(EPOCHS, lr_max=LR, cbs=[SaveAt("mid", MID_ITER)])
        elif mode == "resume":
            learn.fit_one_cycle(EPOCHS, lr_max=LR, resume=name)
        valid = learn.validate()
    rank = distributed.rank()
    np.savez(out / f"rank{rank}.npz", **weights(learn))
    (out / f"rank{rank}.json").write_text(json.dumps({"values": learn.recorder.values, "validate": valid,
                                                      "losses": learn.recorder.losses}))


if __name__ == "__main__":
    main(*sys.argv[1:])
