"""The Learner: a model, its data, loss, optimizer and callbacks, trained in one call.

The training loop is a handful of small methods, each phase run by `_with_events`
between its `before_`/`after_` events; callbacks change what happens by reading and
writing the Learner's attributes (`xb`, `yb`, `pred`, `loss`, `opt`...) from their
hooks. Hooks are looked up once, when callbacks are added or removed, so an event
that no callback defines costs one empty loop.

Attributes during `fit`: `n_epoch`, `epoch`, `dl` (the loader being iterated),
`n_iter` (its batches), `iter` (batch index), `train_iter` (training batches done since
the start of the fit), `pct_train` (fraction of the fit's training done), `training`,
`xb` (a tuple of the model's inputs), `yb` (the target), `pred`, `loss` (the batch loss,
detached), `loss_grad` (the tensor backward starts from).
"""
import contextlib
import numbers
import warnings
from pathlib import Path

import numpy as np

from ..core import no_grad
from ..core.tensor import Tensor
from ..optim import Adam
from .callback import (EVENTS, Callback, event_hooks, CancelFitException, CancelEpochException,
                       CancelTrainException, CancelValidException, CancelBatchException,
                       CancelBackwardException, CancelStepException)
from .errors import LossError, BatchError, check_loss_inputs
from .metrics import as_metric
from .recorder import Recorder
from .progress import ProgressCallback
from .callbacks import TerminateOnNaNCallback
from . import checkpoint as _checkpoint
from . import parallel as _parallel
from . import decoding as _decoding

_BATCH_EVENTS = ("before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
                 "before_step", "after_step", "after_batch")


def default_splitter(model):
    """Parameter groups for freeze/unfreeze and discriminative learning rates.

    A model with two or more children (a `Sequential` body + head) gives two groups: the
    parameters of all children but the last (the body), and the last child's (the
    head); any other model gives one group.
    """
    children = list(model.children()) if hasattr(model, "children") else []
    if len(children) >= 2:
        head = list(children[-1].parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in model.parameters() if id(p) not in head_ids]
        if body and head:
            return [body, head]
    return [list(model.parameters())]


class Learner:
    """Trains `model` on `dls` (a DataLoaders with `.train` and `.valid`).

    `loss_func(pred, target) -> scalar Tensor`; `opt_func(param_groups, lr=...)` builds
    the optimizer (Adam by default; `wd` is passed as `weight_decay`); `metrics` are
    functions `(pred, target) -> scalar` or `Metric`s, computed over the whole
    validation set; `cbs` callback instances added to the defaults (`TerminateOnNaN`,
    `Recorder`, `ProgressCallback`); checkpoints go to `path/model_dir`.
    `splitter(model) -> [params, ...]` makes the parameter groups (see `default_splitter`);
    with `train_bn` normalisation layers stay trainable when frozen.
    """
    parallel = None  # the data-parallel run this learner takes part in, inside distrib_ctx (see parallel.py)

    def __init__(self, dls, model, loss_func, opt_func=Adam, lr=1e-3, metrics=None, cbs=None, wd=None,
                 path=".", model_dir="models", splitter=None, train_bn=True, default_cbs=True):
        if isinstance(loss_func, type):
            raise TypeError(f"Learner: loss_func is the class {loss_func.__name__}, not a loss; instantiate it: "
                            f"loss_func={loss_func.__name__}()")
        if loss_func is None or not callable(loss_func):
            raise TypeError(f"Learner: loss_func must be callable (pred, target) -> loss, got {loss_func!r}")
        if not callable(model):
            raise TypeError(f"Learner: model must be callable (an easyfit.nn.Module), got {type(model).__name__}")
        self.dls = dls
        self.model = model
        self.loss_func = loss_func
        self.opt_func = opt_func
        self.lr = _check_lr(lr, "lr")
        self.wd = wd
        self.metrics = [as_metric(m) for m in _listify(metrics)]
        self.path = Path(path)
        self.model_dir = model_dir
        self.splitter = splitter or default_splitter
        self.train_bn = train_bn
        self.opt = None
        self.cbs = []
        self.frozen_to = 0
        self.training = False
        self.in_fit = False
        self.lr_finding = False
        self.n_epoch, self.epoch, self.iter, self.n_iter, self.train_iter, self.pct_train = 1, 0, 0, 0, 0, 0.0
        self.xb, self.yb, self.pred, self.loss, self.loss_grad = (), None, None, None, None
        self.valid_results = None
        self._loss_checked = False
        self._hooks_train = self._hooks_valid = self._hooks = {}
        self._resume = None
        self._epoch_stage = 0       # 0 training, 1 validating, 2 epoch done (for checkpoints)
        self._batches_done = 0      # training batches finished in this epoch
        self._batch_done = True     # False while a batch is between its start and its step
        self._build_hooks()
        if default_cbs:
            self.add_cbs([TerminateOnNaNCallback(), Recorder(), ProgressCallback()])
        self.add_cbs(cbs)

    # ----- callbacks ------------------------------------------------------------------
    def add_cb(self, cb):
        """Register a callback instance (its event names are checked now); returns it."""
        if isinstance(cb, type):
            raise TypeError(f"Learner: pass callback instances, not classes: use {cb.__name__}() in cbs")
        if not isinstance(cb, Callback):
            raise TypeError(f"Learner: a callback must be an instance of a Callback subclass, got {cb!r}")
        event_hooks(cb)  # raises on a name that only looks like an event
        name = cb.name
        existing = getattr(self, name, None)
        if isinstance(existing, Callback):
            raise ValueError(f"Learner: a callback named {name!r} ({type(existing).__name__}) is already registered; "
                             f"remove it first (learn.remove_cb(learn.{name}))")
        if existing is not None or name in dir(type(self)):
            raise ValueError(f"Learner: callback {type(cb).__name__} is named {name!r}, which is a Learner attribute; "
                             "override its `name` property")
        cb.learner = self
        setattr(self, name, cb)
        self.cbs.append(cb)
        self._build_hooks()
        return cb

    def add_cbs(self, cbs):
        for cb in _listify(cbs):
            self.add_cb(cb)

    def remove_cb(self, cb):
        if cb not in self.cbs:
            raise ValueError(f"Learner.remove_cb: {cb!r} is not registered")
        self.cbs.remove(cb)
        if getattr(self, cb.name, None) is cb:
            delattr(self, cb.name)
        cb.learner = None
        self._build_hooks()

    def remove_cbs(self, cbs):
        for cb in list(cbs):
            self.remove_cb(cb)

    @contextlib.contextmanager
    def added_cbs(self, cbs):
        cbs = _listify(cbs)
        added = []
        try:
            for cb in cbs:
                added.append(self.add_cb(cb))
            yield
        finally:
            self.remove_cbs(added)

    @contextlib.contextmanager
    def removed_cbs(self, cbs):
        cbs = list(cbs)
        positions = [(self.cbs.index(cb), cb) for cb in cbs]
        self.remove_cbs(cbs)
        try:
            yield
        finally:
            for position, cb in sorted(positions, key=lambda item: item[0]):
                cb.learner = self
                setattr(self, cb.name, cb)
                self.cbs.insert(position, cb)
            self._build_hooks()

    def _build_hooks(self):
        """Per event, the bound hooks of callbacks that define it, sorted by `order`."""
        ordered = sorted(self.cbs, key=lambda cb: cb.order)  # stable: equal orders keep insertion order
        train, valid = {}, {}
        for event in EVENTS:
            train[event], valid[event] = [], []
        main_process = _parallel.is_main_process(self)
        for cb in ordered:
            if cb.main_process_only and not main_process:
                continue  # data-parallel training: only rank 0 prints and writes
            for event, hook in event_hooks(cb).items():
                batch_level = event in _BATCH_EVENTS
                if not batch_level or cb.run_train:
                    train[event].append(hook)
                if not batch_level or cb.run_valid:
                    valid[event].append(hook)
        self._hooks_train, self._hooks_valid = train, valid
        self._hooks = train if self.training else valid

    def __call__(self, event):
        """Run every hook registered for `event`."""
        for hook in self._hooks[event]:
            hook()

    def _with_events(self, body, phase, cancel):
        try:
            self("before_" + phase)
            body()
        except cancel:
            pass
        self("after_" + phase)

    # ----- optimizer and parameter groups -----------------------------------------------
    def param_groups(self):
        groups = [list(g) for g in self.splitter(self.model)]
        if not groups or not any(groups):
            raise ValueError(f"Learner: the splitter returned no parameters for {type(self.model).__name__}")
        return groups

    def create_opt(self):
        """Build the optimizer over the splitter's parameter groups (all groups, even frozen ones)."""
        kwargs = {"lr": self._single_lr(self.lr)}
        if self.wd is not None:
            kwargs["weight_decay"] = self.wd
        self.opt = self.opt_func([{"params": g} for g in self.param_groups()], **kwargs)
        if isinstance(self.lr, (slice, list, tuple, np.ndarray)):
            self.set_hyper("lr", self.lr_per_group(self.lr))
        self._apply_freeze()
        return self.opt

    def _single_lr(self, lr):
        if isinstance(lr, slice):
            return lr.stop
        if isinstance(lr, (list, tuple, np.ndarray)):
            return float(lr[-1])
        return lr

    def lr_per_group(self, lr, name="lr"):
        """One learning rate per parameter group from a number, a list, or a slice.

        `slice(hi)`: the last group gets hi, the others hi/10; `slice(lo, hi)`: rates
        spread geometrically from lo (first group) to hi (last) — fastai's convention.
        """
        n = len(self.opt.param_groups) if self.opt is not None else len(self.param_groups())
        _check_lr(lr, name)
        if isinstance(lr, slice):
            if lr.stop is None:
                raise ValueError(f"Learner: a learning-rate slice needs a stop value, got {lr}")
            if lr.start is None:
                return [lr.stop / 10] * (n - 1) + [lr.stop]
            if n == 1:
                return [lr.stop]
            return [float(lr.start * (lr.stop / lr.start) ** (i / (n - 1))) for i in range(n)]
        if isinstance(lr, (list, tuple, np.ndarray)):
            if len(lr) != n:
                raise ValueError(f"Learner: got {len(lr)} learning rates for {n} parameter groups")
            return [float(v) for v in lr]
        return [float(lr)] * n

    def set_hyper(self, name, values):
        """Set hyper-parameter `name` in every optimizer group (one value, or one per group)."""
        if not isinstance(values, (list, tuple, np.ndarray)):
            values = [values] * len(self.opt.param_groups)
        for group, value in zip(self.opt.param_groups, values):
            group[name] = value

    def freeze_to(self, n):
        """Train only parameter groups n.. (normalisation layers stay trainable with train_bn)."""
        self.frozen_to = n
        if self.opt is None:
            self.create_opt()
        else:
            self._apply_freeze()

    def freeze(self):
        """Train only the last parameter group (the head)."""
        self.freeze_to(-1)

    def unfreeze(self):
        self.freeze_to(0)

    def _apply_freeze(self):
        groups = [g["params"] for g in self.opt.param_groups]
        frozen = set(range(len(groups))[:self.frozen_to]) if self.frozen_to else set()
        keep = _norm_params(self.model) if self.train_bn else set()
        for index, params in enumerate(groups):
            for p in params:
                trainable = index not in frozen or id(p) in keep
                p.requires_grad = trainable
                if not trainable:
                    p.grad = None

    # ----- fitting ----------------------------------------------------------------------
    def fit(self, n_epoch, lr=None, cbs=None, wd=None, reset_opt=False, resume=None):
        """Train for `n_epoch` epochs at a constant learning rate (`lr` may be a slice).

        `resume=name` continues this same call from the checkpoint `save(name)` wrote
        during it (even mid-epoch): the weights end byte-identical to an uninterrupted run.
        """
        if not isinstance(n_epoch, (int, np.integer)) or n_epoch < 0:
            raise ValueError(f"fit: n_epoch must be a non-negative integer, got {n_epoch!r}")
        if n_epoch == 0:
            warnings.warn("fit: n_epoch is 0, so nothing is trained (no callback runs, the weights, optimizer "
                          "and data stay as they are)", UserWarning, stacklevel=2)
            return
        _check_training_batches(self.dls, "lr_find" if self.lr_finding else "fit")
        with self.added_cbs(cbs):
            if reset_opt or self.opt is None:
                self.create_opt()
            if wd is not None:
                self.set_hyper("weight_decay", wd)
            if lr is not None:
                self.set_hyper("lr", self.lr_per_group(lr))
            self.n_epoch = int(n_epoch)
            self.epoch, self.iter, self.train_iter, self.pct_train = 0, 0, 0, 0.0
            self._clear_grads()  # gradients left from before (a resumed fit restores its own below)
            self._resume = _checkpoint.start_resume(self, resume, n_epoch) if resume is not None else None
            self.in_fit = True
            try:
                self._with_events(self._do_fit, "fit", CancelFitException)
            finally:
                self.in_fit = False
                self._resume = None
                self.training = False
                self._hooks = self._hooks_valid

    def fit_one_cycle(self, n_epoch, lr_max=None, div=25., div_final=1e5, pct_start=0.25,
                      moms=(0.95, 0.85, 0.95), wd=None, cbs=None, reset_opt=False, resume=None):
        """fastai's one-cycle policy: see `easyfit.learner.schedule.fit_one_cycle`."""
        from .schedule import fit_one_cycle
        fit_one_cycle(self, n_epoch, lr_max=lr_max, div=div, div_final=div_final, pct_start=pct_start, wd=wd,
                      moms=moms, cbs=cbs, reset_opt=reset_opt, resume=resume)

    def fit_flat_cos(self, n_epoch, lr=None, div_final=1e5, pct_start=0.75, wd=None, cbs=None,
                     reset_opt=False, resume=None):
        """Flat learning rate, then cosine annealing: see `easyfit.learner.schedule.fit_flat_cos`."""
        from .schedule import fit_flat_cos
        fit_flat_cos(self, n_epoch, lr=lr, div_final=div_final, pct_start=pct_start, wd=wd, cbs=cbs,
                     reset_opt=reset_opt, resume=resume)

    def fine_tune(self, epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=100, pct_start=0.3, div=5.0, **kwargs):
        """Train the head with the body frozen, then everything with discriminative rates."""
        self.freeze()
        if freeze_epochs:   # fine_tune(..., freeze_epochs=0) skips the frozen phase (without fit(0)'s warning)
            self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, **kwargs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, **kwargs)

    def lr_find(self, start_lr=1e-7, end_lr=10, num_it=100, stop_div=True):
        """Exponential learning-rate sweep: see `easyfit.learner.schedule.lr_find`."""
        from .schedule import lr_find
        return lr_find(self, start_lr=start_lr, end_lr=end_lr, num_it=num_it, stop_div=stop_div)

    def _do_fit(self):
        start = self._resume.start_epoch if self._resume is not None else 0
        self._train_batches_total = self.n_epoch * len(self.dls.train)
        if self._resume is not None:
            self._resume.restore_if_due(self, "fit")
        for epoch in range(start, self.n_epoch):
            self.epoch = epoch
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def _do_epoch(self):
        self._epoch_stage = 0
        resume = self._resume if (self._resume is not None and self._resume.epoch == self.epoch) else None
        if resume is None or resume.stage == 0:
            self._do_epoch_train()
        elif resume is not None:
            resume.restore_if_due(self, "epoch")
        self._epoch_stage = 1
        self._do_epoch_validate()
        self._epoch_stage = 2

    def _do_epoch_train(self):
        self.dl = self.dls.train
        self._set_training(True)
        try:
            self._with_events(self._all_batches, "train", CancelTrainException)
        finally:
            self._set_training(False)

    def _set_training(self, training):
        self.training = training
        self._hooks = self._hooks_train if training else self._hooks_valid
        if hasattr(self.model, "train"):
            self.model.train(training)

    def _do_epoch_validate(self, dl=None):
        dl = dl if dl is not None else self.dls.valid
        if dl is None:
            self.valid_results = None
            return
        self.dl = dl
        self._set_training(False)
        for metric in self.metrics:
            metric.reset()
        self._valid_loss_total, self._valid_count = 0.0, 0
        self.valid_results = None
        with no_grad():
            self._with_events(self._all_batches, "validate", CancelValidException)
        if self._valid_count:
            self.valid_results = [self._valid_loss_total / self._valid_count] + [m.value for m in self.metrics]

    def _all_batches(self):
        self.n_iter = len(self.dl)
        start = 0
        if self.training and self._resume is not None and self._resume.epoch == self.epoch:
            start = self._resume.restore_if_due(self, "train")
        if self.training:
            self._batches_done = start
            if start and start >= self.n_iter:
                # resumed from a checkpoint taken after the epoch's last batch: nothing is left to
                # train, and iterating would start the loader's next epoch (one batch too many)
                return
        iterator = iter(self.dl)
        try:
            for index in range(start, self.n_iter + 1):
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                except (CancelFitException, CancelEpochException, CancelTrainException, CancelValidException):
                    raise
                except Exception as error:
                    split = "training" if self.training else "validation"
                    raise BatchError(f"the {split} data loader failed producing batch {index} (epoch {self.epoch}): "
                                     f"{type(error).__name__}: {error}", index) from error
                self.iter = index
                self._one_batch(batch)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _one_batch(self, batch):
        self._split_batch(batch)
        if self.training:
            self.pct_train = self.train_iter / self._train_batches_total if self._train_batches_total else 0.0
        self._batch_done = False
        try:
            self("before_batch")
            self._do_one_batch()
        except CancelBatchException:
            pass
        except BaseException:
            # an abandoned batch (error, Ctrl-C, cancelled fit) must not hand its gradients to a later step
            if self.training:
                self._clear_grads()
            raise
        finally:
            self._batch_done = True
        if self.training:
            self.train_iter += 1
            self._batches_done = self.iter + 1
        self("after_batch")

    def _split_batch(self, batch):
        if isinstance(batch, Tensor):
            self.xb, self.yb = (batch,), None
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            self.xb, self.yb = tuple(batch[:-1]), batch[-1]
        elif isinstance(batch, (tuple, list)) and len(batch) == 1:
            self.xb, self.yb = tuple(batch), None
        else:
            raise BatchError(f"batch {self.iter} (epoch {self.epoch}) is a {type(batch).__name__}; the Learner "
                             "expects (inputs..., target) tuples of Tensors from the data loader", self.iter)

    def _do_one_batch(self):
        if not self._loss_checked:
            _check_devices(self.model, self.xb, self.yb)
        self.pred = self.model(*self.xb)
        self("after_pred")
        if self.yb is None:
            return
        self.loss_grad = self._compute_loss(self.pred, self.yb)
        self.loss = self.loss_grad.detach()
        self("after_loss")
        if not self.training:
            self._accumulate_valid()
            return
        self._with_events(self._backward, "backward", CancelBackwardException)
        self._with_events(self._step, "step", CancelStepException)
        self.opt.zero_grad()

    def _clear_grads(self):
        for p in self.model.parameters():
            p.grad = None

    def _backward(self):
        self.loss_grad.backward()

    def _step(self):
        self.opt.step()

    def _compute_loss(self, pred, target):
        if not self._loss_checked:
            check_loss_inputs(self.loss_func, pred, target)
        try:
            loss = self.loss_func(pred, target)
        except Exception as error:
            raise LossError(f"{_name_of(self.loss_func)} failed on the model's output of shape "
                            f"{_shape(pred)} (dtype {_dtype(pred)}) and targets of shape {_shape(target)} "
                            f"(dtype {_dtype(target)}): {type(error).__name__}: {error}") from error
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise LossError(f"{_name_of(self.loss_func)} returned {_shape(loss) if isinstance(loss, Tensor) else type(loss).__name__} "
                            f"for output {_shape(pred)} and targets {_shape(target)}; training needs a scalar "
                            "loss Tensor (use reduction='mean')")
        self._loss_checked = True
        return loss

    def _accumulate_valid(self):
        count = int(np.prod(self.yb.shape)) if self.yb.shape else 1
        loss = float(self.loss.item())
        self._valid_loss_total += loss * count
        self._valid_count += count
        for metric in self.metrics:
            metric.accumulate(self.pred, self.yb, loss)

    # ----- evaluation -------------------------------------------------------------------
    def validate(self, dl=None, cbs=None):
        """[valid_loss, *metrics] over the whole of `dl` (the validation loader by default)."""
        with self.added_cbs(cbs), self._evaluation_context():
            self._do_epoch_validate(dl)
        if self.valid_results is None:
            raise ValueError("validate: the loader yielded no (input, target) batches")
        return list(self.valid_results)

    @contextlib.contextmanager
    def _evaluation_context(self):
        was_training = getattr(self.model, "training", False)
        saved = (self.dl if hasattr(self, "dl") else None, self.iter, self.n_iter)
        try:
            yield
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)
            self.dl, self.iter, self.n_iter = saved

    def get_preds(self, dl=None, with_input=False, with_loss=False, with_decoded=False, act=None):
        """Predictions and targets over a loader: `(preds, targets)` plus, when asked,
        inputs first and decoded predictions and per-item losses after:
        `(inputs, preds, targets, decoded, losses)`.

        `preds` have the loss's activation applied (softmax for cross-entropy, sigmoid
        for BCE-with-logits; `act` overrides it). Targets are None for loaders that
        yield inputs only. Results are NumPy arrays.
        """
        gather = _GatherPreds(with_input)
        with self.added_cbs([gather]), self._evaluation_context():
            self._do_epoch_validate(dl)
        if not gather.preds:
            raise ValueError("get_preds: the loader yielded no batches")
        raw = np.concatenate(gather.preds)
        activation = act if act is not None else _decoding.activation_for(self.loss_func)
        preds = _decoding.to_numpy(activation(Tensor(raw))) if activation is not None else raw
        targets = np.concatenate(gather.targets) if gather.targets else None
        result = []
        if with_input:
            result.append(_concat_inputs(gather.inputs))
        result += [preds, targets]
        if with_decoded:
            result.append(_decoding.decode(self.loss_func, preds))
        if with_loss:
            if targets is None:
                raise ValueError("get_preds(with_loss=True): the loader yields no targets")
            result.append(_decoding.per_item_losses(self.loss_func, raw, targets))
        return tuple(result)

    def predict(self, item):
        """(decoded label, class index or decoded value, probabilities) for one input item.

        One item only (a file path, a text, one array): several raise a ValueError that
        points to `learn.dls.test_dl(items)` and `learn.get_preds(dl=...)`.
        """
        _decoding.check_one_item(self, item)
        x = _decoding.prepare_item(self, item)
        device = _model_device(self.model)
        batch = Tensor(x).to(device) if device != "cpu" else Tensor(x)
        was_training = getattr(self.model, "training", False)
        try:
            if hasattr(self.model, "eval"):
                self.model.eval()
            with no_grad():
                out = self.model(batch)
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)
        activation = _decoding.activation_for(self.loss_func)
        probs = _decoding.to_numpy(activation(out) if activation is not None else out)[0]
        decoded = _decoding.decode(self.loss_func, probs[None])[0]
        if np.ndim(decoded) == 0:
            decoded = decoded.item()
        return _decoding.label_of(self, decoded), decoded, probs

    def summary(self):
        """The model's layers with their output shapes (for one batch of the data), parameter
        counts and whether they train, then the totals; prints as a table (fastai's summary)."""
        from .summary import model_summary
        return model_summary(self)

    def show_results(self, n=9, dl=None, file=None, path=None, ncols=None):
        """The first `n` items of a loader (the validation one by default) with target and prediction.

        Image inputs are drawn (matplotlib, the `plot` extra): each titled
        "target / prediction" and its file name when the data has files; the figure is
        saved to `path` or returned. Other inputs give a printed table: target,
        prediction, confidence.
        """
        from .interpret import loader_items
        dl = dl if dl is not None else self.dls.valid
        inputs, preds, targets, decoded = self.get_preds(dl, with_input=True, with_decoded=True)
        count = min(n, len(preds))
        if _looks_like_images(inputs):
            from ..data.show import displayable_images, show_images
            images = displayable_images(inputs[:count], getattr(dl, "batch_tfms", ()))
            files = loader_items(dl)
            titles = []
            for i in range(count):
                target = _decoding.label_of(self, targets[i]) if targets is not None else "-"
                title = f"{target} / {_decoding.label_of(self, decoded[i])}"
                if files is not None and len(files) == len(preds):
                    title += f"\n{Path(files[i]).name}"
                titles.append(title)
            return show_images(images, titles, path=path, ncols=ncols)
        lines = [f"{'item':>6}  {'target':>14}  {'prediction':>14}  {'confidence':>10}"]
        for i in range(count):
            target = _decoding.label_of(self, targets[i]) if targets is not None else "-"
            label = _decoding.label_of(self, decoded[i])
            confidence = float(np.max(preds[i])) if preds.ndim > 1 else float(preds[i])
            mark = "" if targets is None or np.array_equal(targets[i], decoded[i]) else "  x"
            lines.append(f"{i:>6}  {str(target):>14}  {str(label):>14}  {confidence:>10.4f}{mark}")
        print("\n".join(lines), file=file)

    # ----- data-parallel training --------------------------------------------------------
    def distrib_ctx(self, **options):
        """`with learn.distrib_ctx(): learn.fit(...)` trains data-parallel over the processes of `mpiexec`.

        Each process takes its share of every batch (the loaders' batch size is per
        process), gradients are averaged before each step, validation metrics cover
        the whole validation set in every process, and only rank 0 prints, logs and
        saves. A plain `python script.py` is a world of one and trains as usual. See
        `easyfit.distributed.DataParallel` for the options and docs/distributed.md.
        """
        return _parallel.data_parallel_context(self, **options)

    # ----- checkpoints and export --------------------------------------------------------
    def save(self, name, with_opt=True):
        """Checkpoint everything training depends on to one file, `path/model_dir/name.safetensors`.

        Model, optimizer, where the running fit is (epoch, batch; usable mid-epoch),
        callbacks' state, random generators and data-loader positions. Atomic: an
        interrupted save leaves the previous checkpoint readable. Returns the file path.
        """
        return _checkpoint.save_learner(self, name, with_opt=with_opt)

    def load(self, name, with_opt=True, strict=True, training_state=True):
        """Restore what `save(name)` wrote: model, optimizer and, with `training_state`,
        callbacks' state, random generators and data-loader positions."""
        _checkpoint.load_learner_state(self, name, with_opt=with_opt, strict=strict, training_state=training_state)
        return self

    def export(self, path="export.safetensors"):
        """Write the model for inference: weights + a JSON description (no pickle). See load_learner."""
        from .export import export_learner
        if not _parallel.is_main_process(self):
            return path  # data-parallel: rank 0 writes the file
        return export_learner(self, path)

    def export_onnx(self, path="model.onnx", example=None, **export_kwargs):
        """Write the model as an ONNX file for onnxruntime (see easyfit.onnx.export).

        `example` is an input batch (default: the first validation batch). The graph's input
        is the model's input, already preprocessed; metadata_props hold what a deployer
        needs: the classes or vocabulary, the input normalization, the input layout and the
        easyfit version. Returns the path written.
        """
        from .export import export_learner_onnx
        return export_learner_onnx(self, path, example, **export_kwargs)

    def __repr__(self):
        return (f"Learner(model={type(self.model).__name__}, loss_func={_name_of(self.loss_func)}, "
                f"opt_func={_name_of(self.opt_func)}, lr={self.lr}, metrics={[m.name for m in self.metrics]}, "
                f"cbs={[type(cb).__name__ for cb in self.cbs]})")


class _GatherPreds(Callback):
    """Collects raw predictions, targets and (optionally) inputs during get_preds."""
    order = 100
    run_train = False

    def __init__(self, with_input):
        self.with_input = with_input
        self.preds, self.targets, self.inputs = [], [], []

    def after_pred(self):
        learn = self.learner
        self.preds.append(_decoding.to_numpy(learn.pred))
        if learn.yb is not None:
            self.targets.append(_decoding.to_numpy(learn.yb))
        if self.with_input:
            self.inputs.append(tuple(_decoding.to_numpy(x) for x in learn.xb))

    @property
    def name(self):
        return "gather_preds"


def _concat_inputs(inputs):
    if len(inputs[0]) == 1:
        return np.concatenate([batch[0] for batch in inputs])
    return tuple(np.concatenate([batch[i] for batch in inputs]) for i in range(len(inputs[0])))


def _looks_like_images(inputs):
    """Whether a get_preds input array is a batch of images (N, C, H, W) with 1 or 3 channels."""
    return isinstance(inputs, np.ndarray) and inputs.ndim == 4 and inputs.shape[1] in (1, 3) \
        and inputs.dtype.kind == "f"

def _check_training_batches(dls, caller):
    """Training on a loader without batches would 'finish' with zero steps: say so instead."""
    train = getattr(dls, "train", None)
    if train is None:
        raise ValueError(f"{caller}: there is no training data loader (dls.train is None); a learner from "
                         "load_learner is for inference: build one with DataLoaders to train")
    if len(train) == 0:
        dataset = getattr(train, "dataset", None)
        size = f"{len(dataset)} samples" if dataset is not None and hasattr(dataset, "__len__") else "no samples"
        raise ValueError(f"{caller}: the training data loader yields no batches (its dataset has {size}, "
                         f"batch_size={getattr(train, 'batch_size', '?')}, drop_last={getattr(train, 'drop_last', '?')}); "
                         "nothing would be trained. Use more data, a smaller batch size, or drop_last=False")


def _norm_params(model):
    """ids of parameters of normalisation layers (kept trainable when frozen, as in fastai)."""
    keep = set()
    if not hasattr(model, "modules"):
        return keep
    for module in model.modules():
        if type(module).__name__ in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm",
                                     "GroupNorm"):
            keep.update(id(p) for p in module.parameters())
    return keep


def _check_devices(model, inputs, target):
    """Before the first batch: inputs and parameters on different devices is a setup mistake."""
    device = _model_device(model)
    for name, value in [(f"input {i}", x) for i, x in enumerate(inputs)] + [("target", target)]:
        if isinstance(value, Tensor) and value.device != device:
            raise BatchError(f"the model's parameters are on {device} but the batch's {name} is on {value.device}; "
                             f"send the data there too: DataLoaders(..., device='{device}') or dls.to('{device}')")


def _model_device(model):
    for p in (model.parameters() if hasattr(model, "parameters") else ()):
        return p.device
    return "cpu"


def _check_lr(lr, name):
    """A learning rate is a number, a slice of numbers, or one number per group; a string is refused."""
    values = [lr.start, lr.stop] if isinstance(lr, slice) else \
        list(lr) if isinstance(lr, (list, tuple, np.ndarray)) else [lr]
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"{name} must be a number (or a slice or list of numbers), got {lr!r} "
                            f"({type(lr).__name__}){'; write it without quotes' if isinstance(value, str) else ''}")
    return lr


def _listify(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _name_of(obj):
    if hasattr(obj, "__name__"):
        return obj.__name__
    func = getattr(obj, "func", None)
    if func is not None and hasattr(func, "__name__"):
        return func.__name__
    return type(obj).__name__


def _shape(x):
    return tuple(x.shape) if hasattr(x, "shape") else type(x).__name__


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else type(x).__name__
