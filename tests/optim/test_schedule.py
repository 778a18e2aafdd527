"""Schedules: values at known points, fastai's one-cycle shape, applying them to optimizers."""
import doctest
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit.optim import SGD, Adam, RMSprop, schedule
from easyfit.optim.schedule import (sched_lin, sched_cos, sched_exp, sched_no, sched_poly, SchedLin, SchedCos,
                                    SchedExp, SchedNo, SchedPoly, combine_scheds, combined_cos, one_cycle_lr,
                                    one_cycle_mom, cosine, linear_warmup, step_decay, set_hyper, ParamScheduler)


def test_elementary_curves_at_known_points():
    assert sched_lin(0.0, 10.0, 0.3) == pytest.approx(3.0)
    assert sched_lin(5.0, 1.0, 1.0) == 1.0
    assert sched_cos(0.0, 10.0, 0.0) == 0.0
    assert sched_cos(0.0, 10.0, 0.5) == pytest.approx(5.0)
    assert sched_cos(0.0, 10.0, 0.25) == pytest.approx(10 * (1 - math.cos(math.pi / 4)) / 2)
    assert sched_cos(0.0, 10.0, 1.0) == pytest.approx(10.0)
    assert sched_exp(1.0, 100.0, 0.5) == pytest.approx(10.0)
    assert sched_exp(1e-7, 10.0, 0.0) == 1e-7 and sched_exp(1e-7, 10.0, 1.0) == pytest.approx(10.0)
    assert sched_no(3.0, 7.0, 0.9) == 3.0
    assert sched_poly(1.0, 0.0, 0.5, 2) == pytest.approx(0.75)


def test_bound_schedules_print_and_evaluate():
    assert SchedLin(0, 1)(0.25) == 0.25
    assert SchedCos(1.0, 0.0)(0.5) == pytest.approx(0.5)
    assert SchedExp(1e-3, 1e-1)(0.5) == pytest.approx(1e-2)
    assert SchedNo(2.0)(0.7) == 2.0
    assert SchedPoly(1.0, 0.0, 0.5)(0.25) == pytest.approx(0.5)
    assert repr(SchedCos(1.0, 0.0)) == "SchedCos(1.0, 0.0)"
    with pytest.raises(ValueError, match=r"SchedExp: start and end must be > 0, got start=0.0"):
        SchedExp(0.0, 1.0)
    with pytest.raises(TypeError, match="SchedLin: start must be a number, got 'a'"):
        SchedLin("a", 1.0)


def test_combine_scheds_splits_progress():
    f = combine_scheds([0.3, 0.7], [SchedLin(0.0, 1.0), SchedLin(1.0, 0.0)])
    assert f(0.0) == 0.0
    assert f(0.15) == pytest.approx(0.5)
    assert f(0.3) == pytest.approx(1.0)
    assert f(0.65) == pytest.approx(0.5)
    assert f(1.0) == pytest.approx(0.0)
    three = combine_scheds([0.5, 0.0, 0.5], [SchedNo(1.0), SchedNo(2.0), SchedNo(3.0)])
    assert [three(p) for p in (0.0, 0.49, 0.5, 1.0)] == [1.0, 1.0, 3.0, 3.0]
    assert combine_scheds([1.0, 0.0], [SchedLin(0, 1), SchedNo(5)])(1.0) == 1.0
    with pytest.raises(ValueError, match="add up to 1"):
        combine_scheds([0.3, 0.3], [SchedNo(1), SchedNo(2)])
    with pytest.raises(ValueError, match="one fraction per schedule, got 1 fractions and 2"):
        combine_scheds([1.0], [SchedNo(1), SchedNo(2)])


def test_one_cycle_matches_fastai_defaults_and_shape():
    lr = one_cycle_lr(1e-2)  # fastai: div=25, div_final=1e5, pct_start=0.25
    assert lr(0.0) == pytest.approx(1e-2 / 25)
    assert lr(0.25) == pytest.approx(1e-2)
    assert lr(1.0) == pytest.approx(1e-2 / 1e5)
    # half-way through each phase the cosine is at the mean of its ends
    assert lr(0.125) == pytest.approx((1e-2 / 25 + 1e-2) / 2)
    assert lr(0.625) == pytest.approx((1e-2 + 1e-7) / 2)
    positions = np.linspace(0, 1, 401)
    values = np.array([lr(p) for p in positions])
    peak = values.argmax()
    assert positions[peak] == pytest.approx(0.25)
    assert np.all(np.diff(values[:peak + 1]) > 0) and np.all(np.diff(values[peak:]) < 0)
    mom = one_cycle_mom()
    assert (mom(0.0), mom(0.25), mom(1.0)) == (pytest.approx(0.95), pytest.approx(0.85), pytest.approx(0.95))
    assert combined_cos(0.5, 1.0, 3.0, 2.0)(0.75) == pytest.approx(2.5)
    assert one_cycle_lr(1.0, div=10, div_final=100, pct_start=0.5)(0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one_cycle_lr: lr_max must be > 0, got -1"):
        one_cycle_lr(-1)
    with pytest.raises(ValueError, match=r"one_cycle_mom: the fraction must be in \[0, 1\], got 1.5"):
        one_cycle_mom(pct_start=1.5)


def test_cosine_warmup_and_step_decay():
    assert cosine(1.0)(0.5) == pytest.approx(0.5)
    assert cosine(1.0, 0.1)(1.0) == pytest.approx(0.1)
    warm = linear_warmup(cosine(2.0, 0.0), 0.1, start=0.2)
    assert warm(0.0) == pytest.approx(0.2)
    assert warm(0.05) == pytest.approx(1.1)
    assert warm(0.1) == pytest.approx(2.0)
    assert warm(0.55) == pytest.approx(1.0)
    assert warm(1.0) == pytest.approx(0.0)
    assert linear_warmup(SchedNo(3.0), 0.0)(0.0) == 3.0
    decay = step_decay(1.0, [0.3, 0.6], gamma=0.5)
    assert [decay(p) for p in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="milestones must be increasing"):
        step_decay(1.0, [0.6, 0.3])


def test_set_hyper_maps_mom_to_each_optimizer():
    w = ef.tensor([1.0], requires_grad=True)
    adam, sgd, rms = Adam([w]), SGD([w], momentum=0.9), RMSprop([w])
    set_hyper(adam, "mom", 0.8)
    set_hyper(sgd, "mom", 0.7)
    set_hyper(rms, "mom", 0.6)
    assert adam.param_groups[0]["betas"] == (0.8, 0.999)
    assert sgd.param_groups[0]["momentum"] == 0.7 and rms.param_groups[0]["momentum"] == 0.6
    with pytest.raises(KeyError, match="no 'beta'"):
        set_hyper(adam, "beta", 0.1)
    with pytest.raises(ValueError, match="2 values for 'lr' but the optimizer has 1"):
        set_hyper(adam, "lr", [0.1, 0.2])


def test_param_scheduler_follows_the_schedule_in_a_loop():
    w = ef.tensor([1.0, -1.0], requires_grad=True)
    b = ef.tensor([0.5], requires_grad=True)
    opt = Adam([{"params": [w]}, {"params": [b]}])
    lrs = [one_cycle_lr(1e-2), one_cycle_lr(1e-3)]
    sched = ParamScheduler(opt, total_steps=40, lr=lrs, mom=one_cycle_mom())
    seen = []
    for step in range(40):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"], opt.param_groups[0]["betas"][0]))
        ((w * w).sum() + (b * b).sum()).backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    assert seen[0] == (pytest.approx(4e-4), pytest.approx(4e-5), pytest.approx(0.95))
    assert seen[10] == (pytest.approx(1e-2), pytest.approx(1e-3), pytest.approx(0.85))
    assert seen[39][0] == pytest.approx(lrs[0](39 / 40))
    resumed = ParamScheduler(opt, total_steps=40, lr=lrs, mom=one_cycle_mom())
    resumed.load_state_dict({"step_count": 10, "total_steps": 40})
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1, got 0"):
        ParamScheduler(opt, total_steps=0, lr=cosine(1.0))
    with pytest.raises(TypeError, match="the schedule for 'lr' must be a function of pos, got 0.1"):
        ParamScheduler(opt, total_steps=10, lr=0.1)


def test_module_doctests():
    result = doctest.testmod(schedule)
    assert result.attempted > 5 and result.failed == 0
