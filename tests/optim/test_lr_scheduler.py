"""easyfit.optim.lr_scheduler against PyTorch's schedulers: the same learning rates (and
momenta, for OneCycleLR) step for step, with one and two parameter groups; exact resume."""
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import optim
from easyfit.optim import lr_scheduler

CASES = [
    ("StepLR", dict(step_size=3, gamma=0.5), 10),
    ("MultiStepLR", dict(milestones=[6, 2, 9], gamma=0.3), 12),
    ("ExponentialLR", dict(gamma=0.9), 8),
    ("LinearLR", dict(start_factor=0.25, end_factor=1.0, total_iters=4), 8),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=6), 9),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001), 15),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 1.0 / (1 + epoch)), 6),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=20), 20),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], epochs=3, steps_per_epoch=5, pct_start=0.4, anneal_strategy="linear",
                        div_factor=10.0, final_div_factor=100.0), 15),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=17, three_phase=True, base_momentum=0.8, max_momentum=0.9), 17),
]


def _groups(lib, two_groups):
    params = [lib.zeros(3, requires_grad=True), lib.zeros(2, requires_grad=True)]
    if two_groups:
        return [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}]
    return params


def _trace(lib, optimizer_name, scheduler_name, kwargs, steps, two_groups):
    module = lib.optim
    make = {"SGD": lambda p: module.SGD(p, lr=0.1, momentum=0.9), "Adam": lambda p: module.Adam(p, lr=0.1)}
    opt = make[optimizer_name](_groups(lib, two_groups))
    if isinstance(kwargs.get("max_lr"), list) and not two_groups:
        kwargs = dict(kwargs, max_lr=kwargs["max_lr"][0])
    scheduler = getattr(module.lr_scheduler, scheduler_name)(opt, **kwargs)
    rows = []
    for _ in range(steps):
        opt.step()
        rows.append([(g["lr"], g["betas"][0] if "betas" in g else g["momentum"]) for g in opt.param_groups])
        scheduler.step()
    return np.array(rows), scheduler.get_last_lr()


@pytest.mark.parametrize("two_groups", [False, True], ids=["1 group", "2 groups"])
@pytest.mark.parametrize("optimizer_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name, kwargs, steps", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_learning_rates_and_momenta_match_pytorch(name, kwargs, steps, optimizer_name, two_groups):
    torch = pytest.importorskip("torch")
    ours, our_last = _trace(ef, optimizer_name, name, kwargs, steps, two_groups)
    theirs, their_last = _trace(torch, optimizer_name, name, kwargs, steps, two_groups)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(our_last, their_last, rtol=1e-9, atol=1e-12)


def test_step_lr_in_closed_form_without_torch():
    opt = optim.SGD([ef.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    np.testing.assert_allclose(seen, [0.2, 0.2, 0.1, 0.1, 0.05, 0.05])


def test_cosine_reaches_eta_min_at_t_max():
    opt = optim.Adam([ef.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    for _ in range(4):
        scheduler.step()
    assert math.isclose(scheduler.get_last_lr()[0], 0.1)


def test_one_cycle_cycles_adam_beta1_and_refuses_extra_steps():
    opt = optim.Adam([ef.zeros(1, requires_grad=True)], lr=1.0, betas=(0.9, 0.99))
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert opt.param_groups[0]["betas"] == (0.95, 0.99)       # starts at max_momentum
    assert math.isclose(opt.param_groups[0]["lr"], 1.0 / 25)  # max_lr / div_factor
    for _ in range(10):
        scheduler.step()
    with pytest.raises(ValueError, match="stepped 11 times, but total_steps is 10"):
        scheduler.step()


def test_state_dict_resumes_exactly():
    def run(resume_at=None):
        opt = optim.SGD([ef.zeros(1, requires_grad=True)], lr=0.3, momentum=0.9)
        scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=12)
        lrs = []
        for step in range(12):
            if step == resume_at:
                state, opt_state = scheduler.state_dict(), opt.state_dict()
                opt = optim.SGD([ef.zeros(1, requires_grad=True)], lr=0.3, momentum=0.9)
                opt.load_state_dict(opt_state)
                scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=12)
                scheduler.load_state_dict(state)
                opt.param_groups[0]["lr"] = scheduler.get_last_lr()[0]
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
        return lrs
    assert run(resume_at=5) == run()


def test_bad_arguments_name_the_scheduler_and_value():
    opt = optim.SGD([ef.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"StepLR: step_size must be an integer >= 1, got 0"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match=r"LinearLR: total_iters must be an integer >= 0, got -1"):
        lr_scheduler.LinearLR(opt, total_iters=-1)
    with pytest.raises(ValueError, match="OneCycleLR: give total_steps"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="OneCycleLR: cycle_momentum=True but _NoMomentum has no momentum"):
        lr_scheduler.OneCycleLR(_NoMomentum(), max_lr=0.1, total_steps=5)
    with pytest.raises(ValueError, match="LambdaLR: 2 values of lr_lambda but the optimizer has 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])


class _NoMomentum:
    """An optimizer-like object whose parameter groups have no momentum."""
    param_groups = [{"lr": 0.1}]


def test_module_doctest():
    import doctest
    result = doctest.testmod(lr_scheduler)
    assert result.attempted >= 5 and result.failed == 0
