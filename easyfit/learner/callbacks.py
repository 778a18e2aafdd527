"""Built-in callbacks: stopping on NaN, early stopping, saving the best model, gradient
clipping and accumulation, and a CSV log of the epoch table."""
import csv
import math
import warnings

import numpy as np

from .callback import Callback, CancelFitException, CancelBatchException
from .parallel import batch_samples


class TerminateOnNaNCallback(Callback):
    """Stops training at the first non-finite training loss or gradient, before it reaches
    the weights.

    The loss is checked after the loss and before backward, the gradients before the
    optimizer's step, so a batch that would write NaN/inf into the weights never
    steps; `learn.stop_reason` and a RuntimeWarning say where and why, and whether the
    weights are still finite (an earlier step may have diverged them without a
    non-finite gradient, e.g. with an infinite learning rate). `diverged` is True after
    such a stop, so a script can refuse to use the model.
    """
    order = -9
    run_valid = False
    run_lr_find = False

    def __init__(self):
        self.diverged = False

    def before_fit(self):
        self.learner.stop_reason = None
        self.diverged = False

    def after_loss(self):
        loss = float(self.learner.loss.item())
        if not math.isfinite(loss):
            self._stop(f"the loss became {loss}")

    def before_step(self):
        learn = self.learner
        for name, p in learn.model.named_parameters():
            if p.grad is not None and not _all_finite(p.grad.array):
                self._stop(f"the gradient of {name} holds NaN or inf (the loss was {float(learn.loss.item()):.6g})")

    def _stop(self, what):
        learn = self.learner
        lrs = [group.get("lr") for group in learn.opt.param_groups] if learn.opt is not None else []
        if all(_all_finite(p.array) for p in learn.model.parameters()):
            weights = "The weights are those before this batch (all finite)."
        else:
            weights = ("The weights already hold NaN or inf: an earlier step diverged (the learning rate is too "
                       "high for this model).")
        learn.stop_reason = (f"Training stopped: {what} at epoch {learn.epoch}, batch {learn.iter} "
                             f"(learning rate {lrs[-1] if lrs else 'unknown'}). {weights} Try a lower learning "
                             "rate (learn.lr_find() suggests one), gradient clipping (GradientClip), or check the "
                             "inputs for NaN/inf.")
        self.diverged = True  # the Learner clears the abandoned batch's gradients
        warnings.warn(learn.stop_reason, RuntimeWarning, stacklevel=3)
        raise CancelFitException()


def _all_finite(array):
    """Whether every value of a NumPy/CuPy array is finite (integers always are)."""
    if array.dtype.kind not in "fc":
        return True
    if bool(array.dtype.type(0) * array.sum() == 0):  # one reduction: a NaN or inf makes the sum non-finite
        return True
    host = array.get() if hasattr(array, "get") else array  # the sum overflowed, or a value is not finite
    return bool(np.isfinite(host).all())


class TrackerCallback(Callback):
    """Base for callbacks that watch one column of the epoch table (`monitor`).

    `comp` decides what is better (np.less for losses, np.greater otherwise, by
    default); an improvement must beat the best by `min_delta`.
    """
    order = 60
    run_lr_find = False

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, reset_on_fit=True):
        if comp is None:
            comp = np.less if "loss" in monitor or "error" in monitor else np.greater
        self.monitor, self.comp, self.reset_on_fit = monitor, comp, reset_on_fit
        # value - min_delta must beat the best: for "lower is better" that means value < best - |min_delta|
        self.min_delta = -abs(min_delta) if comp is np.less else abs(min_delta)
        self.best = None

    def before_fit(self):
        names = self.learner.recorder.metric_names if hasattr(self.learner, "recorder") else None
        if names is None:
            raise ValueError(f"{type(self).__name__} needs the Recorder callback (it reads the epoch table)")
        columns = names[1:-1]
        if self.monitor not in columns:
            raise ValueError(f"{type(self).__name__}: monitor={self.monitor!r} is not a column of the epoch table; "
                             f"columns are {columns}")
        self._index = columns.index(self.monitor)
        if self.reset_on_fit or self.best is None:
            self.best = math.inf if self.comp is np.less else -math.inf

    def _improved(self):
        """Whether this epoch's value beats the best (and record it if so)."""
        value = self.learner.recorder.values[-1][self._index]
        self.last_value = value
        if value is None or not math.isfinite(value):
            return False
        if self.comp(value - self.min_delta, self.best):
            self.best = value
            return True
        return False

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]


class EarlyStoppingCallback(TrackerCallback):
    """Stops training when `monitor` has not improved for `patience` epochs."""

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, patience=1, reset_on_fit=True):
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        self.patience = patience
        self.wait = 0

    def before_fit(self):
        super().before_fit()
        self.wait = 0
        self.stopped_epoch = None

    def after_epoch(self):
        learn = self.learner
        if self._improved():
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = learn.epoch
            learn.stop_reason = (f"Early stopping at epoch {learn.epoch}: {self.monitor} has not improved on "
                                 f"{self.best:.6f} for {self.wait} epoch(s).")
            raise CancelFitException()

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], int(state["wait"])


class SaveModelCallback(TrackerCallback):
    """Saves the learner (`learn.save(fname)`) when `monitor` improves, and loads the best
    back at the end of training (unless `at_end`).

    `every_epoch=True` saves `fname_<epoch>` after every epoch instead; `at_end` saves
    once, after training. `every_n_batches=n` also writes a resumable checkpoint
    `fname_last` every n training batches (see `fit(..., resume=...)`).
    """
    order = 61

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, fname="model", every_epoch=False,
                 at_end=False, with_opt=True, every_n_batches=None, reset_on_fit=True):
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        self.fname, self.every_epoch, self.at_end, self.with_opt = fname, every_epoch, at_end, with_opt
        self.every_n_batches = every_n_batches
        self.saved = []

    def before_fit(self):
        super().before_fit()
        if self.reset_on_fit:
            self.saved, self.best_epoch = [], None

    def state_dict(self):
        return {"best": self.best, "best_epoch": getattr(self, "best_epoch", None),
                "saved": [str(path) for path in self.saved]}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state.get("best_epoch")
        self.saved = list(state.get("saved", []))

    def after_batch(self):
        learn = self.learner
        if self.every_n_batches and learn.training and learn.train_iter % self.every_n_batches == 0:
            learn.save(f"{self.fname}_last", with_opt=True)

    def after_epoch(self):
        learn = self.learner
        if self.at_end:
            return
        if self.every_epoch:
            self.saved.append(learn.save(f"{self.fname}_{learn.epoch}", with_opt=self.with_opt))
        elif self._improved():
            self.best_epoch = learn.epoch
            self.saved.append(learn.save(self.fname, with_opt=self.with_opt))

    def after_fit(self):
        learn = self.learner
        if self.at_end:
            self.saved.append(learn.save(self.fname, with_opt=self.with_opt))
        elif not self.every_epoch and self.saved:
            learn.load(self.fname, with_opt=self.with_opt, training_state=False)


class GradientClip(Callback):
    """Clips the gradients' global norm to `max_norm` before each step."""
    run_valid = False

    def __init__(self, max_norm=1.0, norm_type=2.0):
        self.max_norm, self.norm_type = max_norm, norm_type
        self.last_norm = None

    def before_step(self):
        from ..nn.utils import clip_grad_norm_
        params = [p for group in self.learner.opt.param_groups for p in group["params"] if p.grad is not None]
        if params:
            self.last_norm = float(clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type))


class GradientAccumulation(Callback):
    """Accumulates gradients over batches until `n_acc` items were seen, then steps.

    The loss is scaled by (batch items / n_acc) so the step uses the mean gradient over
    the accumulated items: training with batch size b and n_acc = k*b matches batch
    size k*b (for a loss that averages over items). In data-parallel training the items
    are counted over all processes (every process steps at the same batch).
    """
    order = -20
    run_valid = False

    def __init__(self, n_acc=32):
        self.n_acc = n_acc
        self.count = 0

    def before_fit(self):
        self.count = 0

    def after_loss(self):
        learn = self.learner
        batch_items = batch_samples(learn, int(learn.yb.shape[0]) if learn.yb is not None and learn.yb.ndim else 1)
        learn.loss_grad = learn.loss_grad * (batch_items / self.n_acc)
        self.count += batch_items

    def before_step(self):
        if self.count < self.n_acc:
            raise CancelBatchException()  # skip the step and zero_grad: gradients keep accumulating
        self.count = 0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])


class CSVLogger(Callback):
    """Appends the epoch table (the columns `Recorder` prints) to `path/fname` as CSV."""
    order = 60
    main_process_only = True  # data-parallel: rank 0 alone prints / writes
    run_lr_find = False

    def __init__(self, fname="history.csv", append=False):
        self.fname, self.append = fname, append
        self.path = None  # set when a fit starts: learn.path / fname

    def before_fit(self):
        path = self.path = self.learner.path / self.fname
        path.parent.mkdir(parents=True, exist_ok=True)
        write_header = not (self.append and path.exists() and path.stat().st_size > 0)
        self._file = open(path, "a" if self.append else "w", newline="")
        self._writer = csv.writer(self._file)
        if write_header:
            self._writer.writerow(self.learner.recorder.metric_names)
            self._file.flush()

    def after_epoch(self):
        log = self.learner.recorder.log
        if log:
            self._writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in log])
            self._file.flush()

    def after_fit(self):
        self._file.close()

    def read(self):
        """The logged rows as a list of dicts (column name -> string)."""
        if self.path is None:
            raise ValueError("CSVLogger.read: nothing logged yet (the logger has not been part of a fit)")
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))


class ReduceLROnPlateau(TrackerCallback):
    """Divides the learning rate by `factor` when `monitor` has not improved for `patience`
    epochs (fastai's callback), never below `min_lr`; `learn.opt`'s every group is changed.

    A schedule that sets the learning rate every batch (`fit_one_cycle`) overrides it:
    use it with `fit`.
    """
    order = TrackerCallback.order + 1

    def __init__(self, monitor="valid_loss", comp=None, min_delta=0.0, patience=1, factor=10.0, min_lr=0.0,
                 reset_on_fit=True):
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=reset_on_fit)
        if not factor > 1:
            raise ValueError(f"ReduceLROnPlateau: factor must be > 1 (the learning rate is divided by it), "
                             f"got {factor!r}")
        self.patience, self.factor, self.min_lr = patience, float(factor), float(min_lr)
        self.wait = 0
        self.reductions = []    # (epoch, new learning rates) of every reduction

    def before_fit(self):
        super().before_fit()
        if self.reset_on_fit:
            self.wait, self.reductions = 0, []

    def after_epoch(self):
        if self._improved():
            self.wait = 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        groups = self.learner.opt.param_groups
        old = [group["lr"] for group in groups]
        new = [max(lr / self.factor, self.min_lr) for lr in old]
        if new == old:
            return
        for group, lr in zip(groups, new):
            group["lr"] = lr
        self.reductions.append((self.learner.epoch, new))
        print(f"Epoch {self.learner.epoch}: reducing the learning rate to {new[-1]:.3g}", flush=True)

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "reductions": [[e, list(v)] for e, v in self.reductions]}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], int(state.get("wait", 0))
        self.reductions = [(e, list(v)) for e, v in state.get("reductions", [])]
