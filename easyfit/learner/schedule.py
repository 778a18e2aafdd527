"""Schedules in the Learner: one-cycle, flat-then-cosine, and the learning-rate finder.

The curves are the optimizer package's pure schedule functions of training progress
(`easyfit.optim.schedule`); `ParamSchedulerCallback` applies them before every
training batch at `learn.pct_train`, so a resumed fit lands on the same values.
"""
import collections
import copy
import math

import numpy as np

from ..optim.schedule import (one_cycle_lr, one_cycle_mom, combine_scheds, SchedNo, SchedCos, sched_exp,
                              set_hyper)
from .callback import Callback, CancelFitException, CancelValidException, CancelBatchException
from .checkpoint import _rng_state, _set_rng_state


class ParamSchedulerCallback(Callback):
    """Sets hyper-parameters from schedules `f(pos)` before each training batch.

    `scheds` maps a hyper-parameter name (`lr`, `mom` — meaning `betas[0]` or `momentum`
    —, `weight_decay`...) to a schedule or a list of schedules, one per parameter group.
    """
    order = 1
    run_valid = False

    def __init__(self, scheds):
        self.scheds = dict(scheds)

    def before_batch(self):
        pos = self.learner.pct_train
        for name, sched in self.scheds.items():
            value = [f(pos) for f in sched] if isinstance(sched, (list, tuple)) else sched(pos)
            set_hyper(self.learner.opt, name, value)

    @property
    def name(self):
        return "param_scheduler"


def _has_momentum(opt):
    return all("betas" in g or "momentum" in g for g in opt.param_groups)


def fit_one_cycle(learn, n_epoch, lr_max=None, div=25., div_final=1e5, pct_start=0.25,
                  moms=(0.95, 0.85, 0.95), wd=None, cbs=None, reset_opt=False, resume=None):
    """fastai's 1cycle policy: the learning rate rises (cosine) from lr_max/div to lr_max over
    the first `pct_start` of training and anneals to lr_max/div_final; momentum moves the
    other way, moms[0] -> moms[1] -> moms[2]. `lr_max` may be a slice or one value per group.
    """
    if learn.opt is None or reset_opt:
        learn.create_opt()
    lr_max = learn.lr if lr_max is None else lr_max
    lrs = learn.lr_per_group(lr_max, "lr_max")
    scheds = {"lr": [one_cycle_lr(lr, div=div, div_final=div_final, pct_start=pct_start) for lr in lrs]}
    if moms is not None and _has_momentum(learn.opt):
        scheds["mom"] = one_cycle_mom(moms, pct_start=pct_start)
    learn.fit(n_epoch, cbs=[ParamSchedulerCallback(scheds)] + _listify(cbs), wd=wd, resume=resume)


def fit_flat_cos(learn, n_epoch, lr=None, div_final=1e5, pct_start=0.75, wd=None, cbs=None,
                 reset_opt=False, resume=None):
    """A constant learning rate for the first `pct_start` of training, then cosine annealing to lr/div_final."""
    if learn.opt is None or reset_opt:
        learn.create_opt()
    lrs = learn.lr_per_group(learn.lr if lr is None else lr)
    scheds = {"lr": [combine_scheds([pct_start, 1 - pct_start], [SchedNo(v, v), SchedCos(v, v / div_final)])
                     for v in lrs]}
    learn.fit(n_epoch, cbs=[ParamSchedulerCallback(scheds)] + _listify(cbs), wd=wd, resume=resume)


# ----- the learning-rate finder ---------------------------------------------------------------

class LRFinder(Callback):
    """Raises the learning rate geometrically from `start_lr` to `end_lr` over `num_it` batches,
    recording the smoothed loss; stops early when the loss diverges (> 4x the best) if
    `stop_div`. Non-finite losses are skipped: not recorded and not stepped on."""
    order = 1
    run_valid = False

    def __init__(self, start_lr=1e-7, end_lr=10, num_it=100, stop_div=True, beta=0.98):
        if not 0 < start_lr < end_lr:
            raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
        if num_it < 2:
            raise ValueError(f"lr_find: num_it must be at least 2, got {num_it}")
        self.start_lr, self.end_lr, self.num_it, self.stop_div, self.beta = start_lr, end_lr, num_it, stop_div, beta
        self.lrs, self.losses = [], []
        self.best_loss = math.inf
        self._smooth, self._count = 0.0, 0

    @property
    def name(self):
        return "lr_finder"

    def before_batch(self):
        self.lr = sched_exp(self.start_lr, self.end_lr, self.learner.train_iter / (self.num_it - 1))
        set_hyper(self.learner.opt, "lr", self.lr)

    def after_loss(self):
        loss = float(self.learner.loss.item())
        if not math.isfinite(loss):
            if self.stop_div:
                raise CancelFitException()
            raise CancelBatchException()  # neither recorded nor stepped on
        self._smooth = self.beta * self._smooth + (1 - self.beta) * loss
        self._count += 1
        smooth = self._smooth / (1 - self.beta ** self._count)
        self.lrs.append(self.lr)
        self.losses.append(smooth)
        self.best_loss = min(self.best_loss, smooth)
        if self.stop_div and smooth > 4 * self.best_loss:
            raise CancelFitException()

    def after_batch(self):
        if self.learner.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self):
        raise CancelValidException()


SuggestedLRs = collections.namedtuple("SuggestedLRs", ["valley", "slide", "minimum", "steep"])


def lr_find(learn, start_lr=1e-7, end_lr=10, num_it=100, stop_div=True):
    """Sweep the learning rate and suggest one; everything is put back as it was afterwards.

    Returns `SuggestedLRs(valley, slide, minimum, steep)` (fastai's four rules) and keeps
    the curve in `learn.recorder.lr_find_lrs` / `lr_find_losses`. Weights (byte for byte),
    optimizer, callbacks' state, random generators and data-loader positions are restored.
    """
    snapshot = _snapshot(learn)
    finder = LRFinder(start_lr, end_lr, num_it, stop_div)
    n_epoch = max(1, math.ceil(num_it / max(1, len(learn.dls.train))))
    learn.lr_finding = True
    try:
        with learn.removed_cbs([cb for cb in learn.cbs if not cb.run_lr_find]):
            learn.fit(n_epoch, cbs=[finder])
    finally:
        learn.lr_finding = False
        _restore(learn, snapshot)
    recorder = getattr(learn, "recorder", None)
    if recorder is not None:
        recorder.lr_find_lrs, recorder.lr_find_losses = list(finder.lrs), list(finder.losses)
    learn.lr_find_curve = (list(finder.lrs), list(finder.losses))
    return suggest_lrs(finder.lrs, finder.losses, num_it)


def _snapshot(learn):
    return {
        "model": {key: value.array.copy() for key, value in learn.model.state_dict().items()},
        "training": getattr(learn.model, "training", False),
        "opt": copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None,
        "opt_object": learn.opt,
        "callbacks": [(cb, copy.deepcopy(cb.state_dict())) for cb in learn.cbs],
        "rng": _rng_state(),
        "data": {split: dl.state_dict() for split, dl in _loaders(learn) if hasattr(dl, "state_dict")},
        "attrs": {name: getattr(learn, name) for name in ("n_epoch", "epoch", "iter", "n_iter", "train_iter",
                                                          "pct_train", "valid_results")},
        "grads": {id(p): p.grad for p in learn.model.parameters()},
    }


def _restore(learn, snapshot):
    learn.model.load_state_dict(snapshot["model"])
    if hasattr(learn.model, "train"):
        learn.model.train(snapshot["training"])
    if snapshot["opt"] is None:
        learn.opt = None
    else:
        # The same optimizer object gets its state back (as fastai does): a reference to
        # learn.opt taken before the sweep stays the learner's optimizer.
        learn.opt = snapshot["opt_object"]
        learn.opt.load_state_dict(snapshot["opt"])
        learn._apply_freeze()
    for cb, state in snapshot["callbacks"]:
        if state or type(cb).load_state_dict is not Callback.load_state_dict:
            cb.load_state_dict(state)
    _set_rng_state(snapshot["rng"])
    for split, dl in _loaders(learn):
        if split in snapshot["data"]:
            dl.load_state_dict(snapshot["data"][split])
    for name, value in snapshot["attrs"].items():
        setattr(learn, name, value)
    for p in learn.model.parameters():
        p.grad = snapshot["grads"].get(id(p))


def _loaders(learn):
    return [(split, getattr(learn.dls, split)) for split in ("train", "valid") if getattr(learn.dls, split, None) is not None]


# ----- suggestions (fastai's rules) -------------------------------------------------------------

def suggest_lrs(lrs, losses, num_it=100):
    """The four suggestions from a curve: the ends are trimmed as fastai does (first tenth, last 5)."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    skip_start, skip_end = num_it // 10, 5
    if len(lrs) - skip_start - skip_end >= 4:
        lrs, losses = lrs[skip_start:len(lrs) - skip_end], losses[skip_start:len(losses) - skip_end]
    if len(lrs) < 2:
        raise ValueError(f"lr_find: only {len(lrs)} finite loss values were recorded; the loss diverged at once. "
                         "Lower start_lr or check the data and model")
    return SuggestedLRs(valley=valley(lrs, losses), slide=slide(lrs, losses),
                        minimum=minimum(lrs, losses), steep=steep(lrs, losses))


def minimum(lrs, losses):
    """A tenth of the learning rate with the lowest loss."""
    return float(lrs[int(np.argmin(losses))]) / 10


def steep(lrs, losses):
    """The learning rate where the loss falls fastest (per unit of log learning rate)."""
    slopes = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    return float(lrs[int(np.argmin(slopes))])


def valley(lrs, losses):
    """fastai's default: the point 1/3 + 1/6 along the longest stretch of steadily falling loss."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return float(lrs[min(index, n - 1)])


def slide(lrs, losses, lr_diff=15, thresh=0.005, adjust_value=1.0):
    """fastai's interval slide rule: walk back from the end until the loss gradient flattens."""
    gradient = np.gradient(losses)
    lr_diff = min(lr_diff, len(losses) - 1)
    right = -1
    left = right - lr_diff
    local_min_lr = lrs[left]
    while left >= -len(losses) and abs(gradient[right] - gradient[left]) > thresh:
        local_min_lr = lrs[left]
        right -= 1
        left -= 1
    return float(local_min_lr) * adjust_value


def _listify(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
