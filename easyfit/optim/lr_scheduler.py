"""PyTorch's learning-rate scheduler classes, so that a torch training loop runs unchanged.

`scheduler.step()` once per epoch (or per batch for `OneCycleLR`), after `optimizer.step()`,
sets each parameter group's `lr` to the value PyTorch's scheduler of the same name gives
at that step. The values are computed in closed form from the step count, so a scheduler
restored with `load_state_dict` continues exactly. For schedules as functions of
training progress (fastai style), see `easyfit.optim.ParamScheduler`.

>>> import easyfit as ef
>>> from easyfit.optim import SGD
>>> from easyfit.optim.lr_scheduler import StepLR
>>> opt = SGD([ef.zeros(1, requires_grad=True)], lr=0.1)
>>> scheduler = StepLR(opt, step_size=2, gamma=0.5)
>>> for epoch in range(4):
...     opt.step()
...     scheduler.step()
>>> scheduler.get_last_lr()
[0.025]
"""
import bisect
import math
import numbers

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR",
           "CosineAnnealingLR", "OneCycleLR"]


class LRScheduler:
    """Base class: subclasses define `lr_at(epoch, base_lr, group_index)`.

    As in PyTorch, the constructor records each group's starting `lr` as `initial_lr`
    and applies step 0; `last_epoch` counts the `step()` calls since.
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__}: expected an easyfit optimizer, got {type(optimizer).__name__}")
        _check_int(type(self).__name__, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        for index, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: resuming with last_epoch={last_epoch} needs 'initial_lr' "
                               f"in parameter group {index} (set by a scheduler made with last_epoch=-1)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self.step()

    def lr_at(self, epoch, base_lr, group_index):
        raise NotImplementedError

    def step(self):
        """Advance one step and set every group's learning rate for it."""
        self.last_epoch += 1
        for index, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr_at(self.last_epoch, self.base_lrs[index], index)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates set by the last `step()` (one per parameter group)."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer (and functions, which a checkpoint cannot hold)."""
        return {key: value for key, value in vars(self).items() if key != "optimizer" and not callable(value)
                and not (isinstance(value, list) and any(callable(item) for item in value))}

    def load_state_dict(self, state_dict):
        """Restore the position saved by `state_dict()`; the next `step()` continues from it."""
        vars(self).update(state_dict)


def _check_int(owner, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def _per_group(value, optimizer, name, owner):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(optimizer.param_groups)
    if len(values) != len(optimizer.param_groups):
        raise ValueError(f"{owner}: {len(values)} values of {name} but the optimizer has "
                         f"{len(optimizer.param_groups)} parameter groups")
    return values


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch); `lr_lambda` is a function or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group(lr_lambda, optimizer, "lr_lambda", "LambdaLR")
        if not all(callable(f) for f in self.lr_lambdas):
            raise TypeError(f"LambdaLR: lr_lambda must be a function of the epoch, got {lr_lambda!r}")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        return base_lr * self.lr_lambdas[group_index](epoch)


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_int("StepLR", "step_size", step_size, 1)
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        return base_lr * self.gamma ** (epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = initial_lr * gamma ** (number of milestones reached)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        return base_lr * self.gamma ** epoch


class LinearLR(LRScheduler):
    """The factor on initial_lr moves linearly from start_factor to end_factor over total_iters steps."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], got "
                             f"{start_factor!r} and {end_factor!r}")
        _check_int("LinearLR", "total_iters", total_iters, 0)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, int(total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        done = min(epoch, self.total_iters) / self.total_iters if self.total_iters else 1.0
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        self.T_max, self.eta_min = int(T_max), eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr, group_index):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """PyTorch's 1cycle policy, stepped once per batch: the rate warms up from
    max_lr / div_factor to max_lr over `pct_start` of `total_steps`, then anneals to
    max_lr / div_factor / final_div_factor; momentum (SGD's `momentum`, Adam's `betas[0]`)
    moves the other way between max_momentum and base_momentum. `three_phase` adds
    PyTorch's third phase (back to the start rate, then down to the minimum).
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or both epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        _check_int("OneCycleLR", "total_steps", total_steps, 1)
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.total_steps, self.anneal_strategy, self.cycle_momentum = int(total_steps), anneal_strategy, cycle_momentum
        warm_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self.phases = [(warm_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (2 * warm_end, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                           (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self.phases = [(warm_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        groups = optimizer.param_groups
        if cycle_momentum and not all("betas" in g or "momentum" in g for g in groups):
            raise ValueError(f"OneCycleLR: cycle_momentum=True but {type(optimizer).__name__} has no momentum "
                             f"('momentum' or 'betas'); pass cycle_momentum=False")
        per_group = {name: _per_group(value, optimizer, name, "OneCycleLR") for name, value in
                     (("max_lr", max_lr), ("base_momentum", base_momentum), ("max_momentum", max_momentum))}
        if last_epoch == -1:  # resuming keeps the values the first scheduler stored in the groups
            for index, group in enumerate(groups):
                group["max_lr"] = per_group["max_lr"][index]
                group["initial_lr"] = group["max_lr"] / div_factor
                group["min_lr"] = group["initial_lr"] / final_div_factor
                if cycle_momentum:
                    group["base_momentum"] = per_group["base_momentum"][index]
                    group["max_momentum"] = per_group["max_momentum"][index]
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase(self, step):
        start = 0.0
        for index, phase in enumerate(self.phases):
            end = phase[0]
            if step <= end or index == len(self.phases) - 1:
                return phase, (step - start) / (end - start)
            start = end

    def lr_at(self, epoch, base_lr, group_index):
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {epoch} times, but total_steps is {self.total_steps}")
        group = self.optimizer.param_groups[group_index]
        (_, lr_from, lr_to, mom_from, mom_to), pct = self._phase(epoch)
        if self.cycle_momentum:
            momentum = self._anneal(group[mom_from], group[mom_to], pct)
            if "betas" in group:
                group["betas"] = (momentum,) + tuple(group["betas"][1:])
            else:
                group["momentum"] = momentum
        return self._anneal(group[lr_from], group[lr_to], pct)
