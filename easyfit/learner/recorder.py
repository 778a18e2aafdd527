"""Recorder: what happened during training, per batch and per epoch, and its plots."""
import math
import time

from ..data.show import finish, in_notebook, pyplot
from .callback import Callback
from .parallel import batch_items


def _hyper(learn, names):
    """The value of the first hyper-parameter found among `names` in the last parameter group."""
    if learn.opt is None:
        return None
    group = learn.opt.param_groups[-1]
    for name in names:
        if name in group:
            value = group[name]
            return float(value[0]) if isinstance(value, (tuple, list)) else float(value)
    return None


def momentum_of(learn):
    """The momentum of the last parameter group: `betas[0]` (Adam-like) or `momentum` (SGD, RMSprop)."""
    return _hyper(learn, ("betas", "momentum"))


class Recorder(Callback):
    """Records per training batch `losses`, `smooth_losses`, `lrs`, `moms`, and per epoch `values`.

    `values[i]` is `[train_loss, valid_loss, *metrics]` for epoch i (train_loss is the
    exact mean over the epoch's items); `metric_names` names the printed columns
    (`epoch`, those values, `time`); `log` is the last printed row. `lr_find` leaves its
    curve in `lr_find_lrs` / `lr_find_losses` (smoothed, non-finite losses dropped).
    """
    order = 50

    def __init__(self, beta=0.98):
        self.beta = beta
        self.losses, self.smooth_losses, self.lrs, self.moms, self.values = [], [], [], [], []
        self.iters = []          # number of training batches at the end of each epoch
        self.lr_find_lrs, self.lr_find_losses = [], []
        self.log = []
        self.metric_names = []
        self._smooth, self._smooth_count = 0.0, 0
        self._train_total, self._train_count = 0.0, 0
        self._epoch_start = None

    @property
    def smooth_loss(self):
        """Exponentially smoothed (debiased) training loss, as fastai shows it."""
        if not self._smooth_count:
            return float("nan")
        return self._smooth / (1 - self.beta ** self._smooth_count)

    def before_fit(self):
        learn = self.learner
        self.losses, self.smooth_losses, self.lrs, self.moms, self.values, self.iters = [], [], [], [], [], []
        self._smooth, self._smooth_count = 0.0, 0
        self.metric_names = ["epoch", "train_loss", "valid_loss"] + [m.name for m in learn.metrics] + ["time"]

    def before_epoch(self):
        self._epoch_start = time.perf_counter()
        self._epoch_time_before = 0.0
        self._train_total, self._train_count = 0.0, 0

    def after_batch(self):
        learn = self.learner
        if not learn.training or learn.loss is None:
            return
        loss = float(learn.loss.item())
        self.losses.append(loss)
        if math.isfinite(loss):
            self._smooth = self.beta * self._smooth + (1 - self.beta) * loss
            self._smooth_count += 1
            count = batch_items(learn, learn.yb.numel() if learn.yb is not None and learn.yb.shape else 1)
            self._train_total += loss * count
            self._train_count += count
        self.smooth_losses.append(self.smooth_loss)
        self.lrs.append(_hyper(learn, ("lr",)))
        self.moms.append(momentum_of(learn))

    def after_epoch(self):
        learn = self.learner
        if learn.lr_finding:
            return
        train_loss = self._train_total / self._train_count if self._train_count else float("nan")
        results = learn.valid_results if learn.valid_results is not None else \
            [float("nan")] * (1 + len(learn.metrics))
        self.values.append([train_loss] + list(results))
        self.iters.append(len(self.losses))
        elapsed = self._epoch_time_before + (time.perf_counter() - self._epoch_start if self._epoch_start else 0.0)
        self.log = [learn.epoch, train_loss] + list(results) + [_format_time(elapsed)]

    # ----- checkpoints ----------------------------------------------------------------
    def state_dict(self):
        elapsed = (time.perf_counter() - self._epoch_start) if self._epoch_start else 0.0
        return {"losses": list(self.losses), "smooth_losses": list(self.smooth_losses), "lrs": list(self.lrs),
                "moms": list(self.moms), "values": [list(v) for v in self.values], "iters": list(self.iters),
                "smooth": self._smooth, "smooth_count": self._smooth_count,
                "train_total": self._train_total, "train_count": self._train_count,
                "epoch_time": getattr(self, "_epoch_time_before", 0.0) + elapsed,
                "lr_find_lrs": list(self.lr_find_lrs), "lr_find_losses": list(self.lr_find_losses)}

    def load_state_dict(self, state):
        self.losses, self.smooth_losses = list(state["losses"]), list(state["smooth_losses"])
        self.lrs, self.moms = list(state["lrs"]), list(state["moms"])
        self.values, self.iters = [list(v) for v in state["values"]], list(state["iters"])
        self._smooth, self._smooth_count = float(state["smooth"]), int(state["smooth_count"])
        self._train_total, self._train_count = float(state["train_total"]), int(state["train_count"])
        self._epoch_time_before = float(state.get("epoch_time", 0.0))
        self._epoch_start = time.perf_counter()
        self.lr_find_lrs = list(state.get("lr_find_lrs", []))
        self.lr_find_losses = list(state.get("lr_find_losses", []))

    # ----- plots ----------------------------------------------------------------------
    def plot_loss(self, path=None, skip_start=5, with_valid=True):
        """Training loss per batch (and validation loss per epoch); saved to `path` (PNG) or returned."""
        plt = _pyplot()
        fig, ax = plt.subplots()
        start = min(skip_start, max(len(self.losses) - 1, 0))
        ax.plot(range(start, len(self.losses)), self.losses[start:], label="train")
        if with_valid and self.values:
            ax.plot(self.iters, [v[1] for v in self.values], marker="o", label="valid")
        ax.set_xlabel("batch")
        ax.set_ylabel("loss")
        ax.legend()
        return _finish(plt, fig, path)

    def plot_sched(self, path=None):
        """Learning rate and momentum per training batch."""
        plt = _pyplot()
        with_moms = any(m is not None for m in self.moms)
        fig, axes = plt.subplots(1, 2 if with_moms else 1, figsize=(10 if with_moms else 5, 4), squeeze=False)
        axes[0][0].plot(self.lrs)
        axes[0][0].set_xlabel("batch")
        axes[0][0].set_ylabel("learning rate")
        if with_moms:
            axes[0][1].plot(self.moms)
            axes[0][1].set_xlabel("batch")
            axes[0][1].set_ylabel("momentum")
        return _finish(plt, fig, path)

    def plot_lr_find(self, path=None, suggestions=None):
        """The lr_find curve (loss against learning rate, log scale) with the suggestions marked."""
        if not self.lr_find_lrs:
            raise ValueError("plot_lr_find: no lr_find curve recorded; run learn.lr_find() first")
        plt = _pyplot()
        fig, ax = plt.subplots()
        ax.plot(self.lr_find_lrs, self.lr_find_losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        if suggestions is not None:
            for name, lr in suggestions._asdict().items():
                if lr is not None and math.isfinite(lr):
                    ax.axvline(lr, linestyle="--", alpha=0.5)
                    ax.annotate(name, (lr, ax.get_ylim()[1]), rotation=90, va="top", fontsize=8)
        return _finish(plt, fig, path)


# One place for plotting and notebook detection: easyfit.data.show (the lowest layer that draws).
_pyplot, _finish, _in_notebook = pyplot, finish, in_notebook


def _format_time(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
