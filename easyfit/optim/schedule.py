"""Learning-rate and momentum schedules as pure functions of training progress.

Progress `pos` runs from 0 (the first batch) to 1 (the end of training), so a schedule
does not depend on the number of epochs or batches. Following fastai:

- `sched_lin(start, end, pos)`, `sched_cos`, `sched_exp`, `sched_no`, `sched_poly`
  are the elementary annealing curves;
- `SchedLin(start, end)` etc. bind start and end, giving a schedule: a callable
  `f(pos)`;
- `combine_scheds(pcts, scheds)` runs schedules one after the other, each over its
  share of training;
- `one_cycle_lr` / `one_cycle_mom` are fastai's `fit_one_cycle` curves
  (`combined_cos`); `cosine`, `linear_warmup`, `step_decay` are the other usual ones.

`ParamScheduler` applies schedules to an optimizer's parameter groups from a plain
training loop; the Learner applies the same functions from a callback.

>>> sched = one_cycle_lr(1e-2)
>>> round(sched(0.0), 6), round(sched(0.25), 6), round(sched(1.0), 12)
(0.0004, 0.01, 1e-07)
"""
import bisect
import math
import numbers


# ----- annealing curves ------------------------------------------------------------------

def sched_lin(start, end, pos):
    """Linear from `start` (pos 0) to `end` (pos 1)."""
    return start + pos * (end - start)


def sched_cos(start, end, pos):
    """Half a cosine from `start` to `end`: flat at both ends, steepest in the middle."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def sched_exp(start, end, pos):
    """Geometric from `start` to `end` (both > 0): a straight line on a log scale."""
    return start * (end / start) ** pos


def sched_no(start, end, pos):
    """Constant `start` (end is ignored)."""
    return start


def sched_poly(start, end, pos, power):
    """Polynomial: `start + pos**power * (end - start)` (fastai's sched_poly)."""
    return start + pos ** power * (end - start)


class Annealer:
    """A schedule `f(pos)`: a curve bound to its start and end values, printable as itself."""
    __slots__ = ("curve", "start", "end", "name", "extra")

    def __init__(self, curve, start, end, name, *extra):
        for label, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}: {label} must be a number, got {value!r}")
        self.curve, self.start, self.end, self.name, self.extra = curve, start, end, name, extra

    def __call__(self, pos):
        return self.curve(self.start, self.end, pos, *self.extra)

    def __repr__(self):
        extra = "".join(f", {value!r}" for value in self.extra)
        return f"{self.name}({self.start!r}, {self.end!r}{extra})"


def SchedLin(start, end):
    """Linear schedule from `start` to `end`."""
    return Annealer(sched_lin, start, end, "SchedLin")


def SchedCos(start, end):
    """Cosine schedule from `start` to `end`."""
    return Annealer(sched_cos, start, end, "SchedCos")


def SchedExp(start, end):
    """Exponential schedule from `start` to `end` (both must be > 0)."""
    if not (isinstance(start, numbers.Real) and isinstance(end, numbers.Real)) or start <= 0 or end <= 0:
        raise ValueError(f"SchedExp: start and end must be > 0, got start={start!r}, end={end!r}")
    return Annealer(sched_exp, start, end, "SchedExp")


def SchedNo(start, end=None):
    """A constant schedule at `start`."""
    return Annealer(sched_no, start, start if end is None else end, "SchedNo")


def SchedPoly(start, end, power):
    """Polynomial schedule `start + pos**power * (end - start)`."""
    return Annealer(sched_poly, start, end, "SchedPoly", power)


# ----- combining ----------------------------------------------------------------------------

class CombinedSchedule:
    """Schedules run one after another; schedule i covers the fraction pcts[i] of training."""

    def __init__(self, pcts, scheds):
        pcts = list(pcts)
        scheds = list(scheds)
        if len(pcts) != len(scheds) or not pcts:
            raise ValueError(f"combine_scheds: needs one fraction per schedule, got {len(pcts)} fractions "
                             f"and {len(scheds)} schedules")
        for value in pcts:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"combine_scheds: fractions must be numbers >= 0, got {pcts!r}")
        if abs(sum(pcts) - 1.0) > 1e-6:
            raise ValueError(f"combine_scheds: fractions must add up to 1, got {pcts!r} (sum {sum(pcts)!r})")
        for sched in scheds:
            if not callable(sched):
                raise TypeError(f"combine_scheds: each schedule must be a function of pos, got {sched!r}")
        self.pcts, self.scheds = pcts, scheds
        self.bounds = [0.0]
        for value in pcts:
            self.bounds.append(self.bounds[-1] + value)

    def __call__(self, pos):
        bounds = self.bounds
        # The last phase whose start is <= pos, skipping phases of zero length.
        index = min(bisect.bisect_right(bounds, pos) - 1, len(self.scheds) - 1)
        index = max(index, 0)
        while index > 0 and self.pcts[index] == 0:
            index -= 1
        while self.pcts[index] == 0 and index < len(self.scheds) - 1:
            index += 1
        width = self.pcts[index]
        inner = (pos - bounds[index]) / width
        return self.scheds[index](min(max(inner, 0.0), 1.0))

    def __repr__(self):
        return f"combine_scheds({self.pcts!r}, {self.scheds!r})"


def combine_scheds(pcts, scheds):
    """One schedule from several: `scheds[i]` runs over the fraction `pcts[i]` of training
    (pcts add up to 1), its own progress going from 0 to 1 within that fraction.

    >>> warm_then_decay = combine_scheds([0.1, 0.9], [SchedLin(0.0, 1.0), SchedCos(1.0, 0.0)])
    >>> warm_then_decay(0.05), warm_then_decay(0.1), warm_then_decay(1.0)
    (0.5, 1.0, 0.0)
    """
    return CombinedSchedule(pcts, scheds)


def combined_cos(pct, start, middle, end):
    """Cosine from `start` to `middle` over the fraction `pct`, then cosine to `end`."""
    return combine_scheds([pct, 1 - pct], [SchedCos(start, middle), SchedCos(middle, end)])


# ----- the usual schedules ------------------------------------------------------------------

def one_cycle_lr(lr_max, div=25.0, div_final=1e5, pct_start=0.25):
    """fastai's one-cycle learning rate: lr_max/div up to lr_max (cosine, first pct_start of
    training), then down to lr_max/div_final."""
    _check_positive("one_cycle_lr", lr_max=lr_max, div=div, div_final=div_final)
    _check_fraction("one_cycle_lr", pct_start)
    return combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)


def one_cycle_mom(moms=(0.95, 0.85, 0.95), pct_start=0.25):
    """fastai's one-cycle momentum: high while the learning rate is low, and back."""
    if len(moms) != 3:
        raise ValueError(f"one_cycle_mom: moms must be (start, middle, end), got {moms!r}")
    _check_fraction("one_cycle_mom", pct_start)
    return combined_cos(pct_start, *moms)


def cosine(lr_max, lr_min=0.0):
    """Cosine annealing from lr_max to lr_min over the whole of training."""
    return SchedCos(lr_max, lr_min)


def linear_warmup(sched, pct_warmup, start=0.0):
    """Ramp linearly from `start` to `sched(0)` over the fraction `pct_warmup`, then follow
    `sched` over the rest of training (its progress rescaled to 0..1).

    >>> lr = linear_warmup(cosine(1.0), 0.2)
    >>> lr(0.1), lr(0.2), lr(1.0)
    (0.5, 1.0, 0.0)
    """
    _check_fraction("linear_warmup", pct_warmup)
    if pct_warmup == 0:
        return sched
    return combine_scheds([pct_warmup, 1 - pct_warmup], [SchedLin(start, sched(0.0)), sched])


class StepDecay:
    """`start` multiplied by `gamma` at each milestone (fractions of training)."""

    def __init__(self, start, milestones, gamma=0.1):
        milestones = list(milestones)
        if milestones != sorted(milestones) or any(not 0 <= m <= 1 for m in milestones):
            raise ValueError(f"step_decay: milestones must be increasing fractions in [0, 1], got {milestones!r}")
        _check_positive("step_decay", gamma=gamma)
        self.start, self.milestones, self.gamma = start, milestones, gamma

    def __call__(self, pos):
        return self.start * self.gamma ** bisect.bisect_right(self.milestones, pos)

    def __repr__(self):
        return f"step_decay({self.start!r}, {self.milestones!r}, gamma={self.gamma!r})"


def step_decay(start, milestones, gamma=0.1):
    """Piecewise constant: `start`, times `gamma` from each milestone on.

    >>> lr = step_decay(0.1, [0.5, 0.75])
    >>> lr(0.0), lr(0.5), round(lr(0.9), 6)
    (0.1, 0.010000000000000002, 0.001)
    """
    return StepDecay(start, milestones, gamma)


def _check_positive(where, **values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"{where}: {name} must be > 0, got {value!r}")


def _check_fraction(where, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{where}: the fraction must be in [0, 1], got {value!r}")


# ----- applying schedules to an optimizer -------------------------------------------------------

def set_hyper(optimizer, name, value):
    """Set hyper-parameter `name` in every parameter group (value: a number, or one per group).

    `name='mom'` is the momentum whatever the optimizer calls it: `betas[0]` for Adam,
    `momentum` for SGD and RMSprop.
    """
    groups = optimizer.param_groups
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(groups)
    if len(values) != len(groups):
        raise ValueError(f"set_hyper: {len(values)} values for {name!r} but the optimizer has {len(groups)} "
                         f"parameter groups")
    for group, item in zip(groups, values):
        if name == "mom":
            if "betas" in group:
                group["betas"] = (item, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = item
            else:
                raise KeyError(f"set_hyper: {type(optimizer).__name__} has no momentum (no 'betas' or 'momentum')")
        else:
            if name not in group:
                raise KeyError(f"set_hyper: {type(optimizer).__name__}'s parameter groups have no {name!r}; "
                               f"they have {sorted(k for k in group if k != 'params')}")
            group[name] = item


class ParamScheduler:
    """Apply schedules to an optimizer's hyper-parameters, once per batch, in a plain loop.

    Each keyword names a hyper-parameter (`lr`, `mom`, `weight_decay`, ...) and gives a
    schedule `f(pos)`, or a list with one schedule per parameter group. Progress is
    `batch / total_steps`: the constructor sets the values for batch 0, each `step()`
    (after `optimizer.step()`) those of the next batch.

    >>> import easyfit as ef
    >>> from easyfit.optim import SGD
    >>> w = ef.tensor([1.0], requires_grad=True)
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> sched = ParamScheduler(opt, total_steps=100, lr=one_cycle_lr(0.1), mom=one_cycle_mom())
    >>> for batch in range(100):
    ...     (w * w).sum().backward()
    ...     opt.step(); opt.zero_grad(); sched.step()
    >>> opt.param_groups[0]["momentum"]
    0.95
    """

    def __init__(self, optimizer, total_steps, **scheds):
        if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1:
            raise ValueError(f"ParamScheduler: total_steps must be an integer >= 1, got {total_steps!r}")
        if not scheds:
            raise ValueError("ParamScheduler: give at least one schedule, e.g. lr=one_cycle_lr(1e-3)")
        for name, sched in scheds.items():
            for item in (sched if isinstance(sched, (list, tuple)) else [sched]):
                if not callable(item):
                    raise TypeError(f"ParamScheduler: the schedule for {name!r} must be a function of pos, got {item!r}")
        self.optimizer, self.total_steps, self.scheds = optimizer, int(total_steps), scheds
        self.step_count = 0
        self.apply()

    @property
    def pos(self):
        return min(self.step_count / self.total_steps, 1.0)

    def values(self, pos=None):
        """The hyper-parameter values at progress `pos` (default: now)."""
        pos = self.pos if pos is None else pos
        return {name: ([item(pos) for item in sched] if isinstance(sched, (list, tuple)) else sched(pos))
                for name, sched in self.scheds.items()}

    def apply(self):
        for name, value in self.values().items():
            set_hyper(self.optimizer, name, value)

    def step(self):
        """Move to the next batch and set its values."""
        self.step_count += 1
        self.apply()

    def state_dict(self):
        return {"step_count": self.step_count, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict):
        self.step_count = int(state_dict["step_count"])
        self.total_steps = int(state_dict["total_steps"])
        self.apply()
