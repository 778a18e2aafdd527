"""Adagrad, Adadelta and LBFGS against torch.optim, step for step."""
import numpy as np
import pytest

import easyfit as ef
from easyfit.optim import Adagrad, Adadelta, LBFGS

from test_optimizers import run_easyfit, run_torch, assert_same_history, make_arrays, train


CASES = [
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01)),
    (Adagrad, dict(lr=0.05, initial_accumulator_value=0.3, eps=1e-6)),
    (Adadelta, dict()),
    (Adadelta, dict(lr=0.5, rho=0.7, eps=1e-4, weight_decay=0.02)),
]


@pytest.mark.parametrize("cls, kwargs", CASES, ids=[f"{c.__name__}-{k}" for c, k in CASES])
def test_matches_torch(cls, kwargs):
    torch = pytest.importorskip("torch")
    ours = run_easyfit(cls, kwargs, steps=12)
    theirs = run_torch(torch, cls.__name__, kwargs, steps=12)
    assert_same_history(ours, theirs)
    assert not np.allclose(ours[-1][0], make_arrays()[0])


@pytest.mark.parametrize("cls, kwargs", [(Adagrad, dict(lr=0.1, lr_decay=0.01)), (Adadelta, dict(rho=0.8))])
def test_state_dict_round_trip_and_torch_names(cls, kwargs, tmp_path):
    torch = pytest.importorskip("torch")
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    opt = cls(params, **kwargs)
    train(opt, params, 3, 0)
    ef.save({"opt": opt.state_dict()}, tmp_path / "opt.safetensors")
    train(opt, params, 3, 3)
    resumed = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    opt2 = cls(resumed, **kwargs)
    train(opt2, resumed, 3, 0)
    opt2.load_state_dict(ef.load(tmp_path / "opt.safetensors")["opt"])
    train(opt2, resumed, 3, 3)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.array, b.array)
    tparams = [torch.tensor(a, requires_grad=True) for a in make_arrays()]
    theirs = getattr(torch.optim, cls.__name__)(tparams, **kwargs)
    for p in tparams:
        p.grad = torch.ones_like(p)
    theirs.step()
    assert set(opt.state_dict()["state"][0]) == set(theirs.state_dict()["state"][0])
    assert set(opt.state_dict()["param_groups"][0]) <= set(theirs.state_dict()["param_groups"][0])


@pytest.mark.parametrize("make, message", [
    (lambda p: Adagrad(p, lr_decay=-1), "Adagrad: lr_decay must be >= 0.0, got -1"),
    (lambda p: Adagrad(p, initial_accumulator_value=-0.1), "initial_accumulator_value must be >= 0.0"),
    (lambda p: Adadelta(p, rho=1.5), r"Adadelta: rho must be in \[0.0, 1.0\], got 1.5"),
    (lambda p: LBFGS(p, line_search_fn="backtracking"), "line_search_fn must be None or 'strong_wolfe'"),
    (lambda p: LBFGS(p, history_size=0), "history_size must be an integer >= 1, got 0"),
    (lambda p: LBFGS([dict(params=p[:1]), dict(params=p[1:])]), "doesn't support per-parameter options"),
])
def test_arguments_are_validated(make, message):
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    with pytest.raises((ValueError, TypeError), match=message):
        make(params)


# ----- LBFGS ---------------------------------------------------------------------------

def regression_problem(dtype):
    """A small tanh network fitted to a smooth target: curved enough for the line search to work."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 3)).astype(dtype)
    y = np.sin(x @ np.array([[1.0], [-0.5], [0.3]])).astype(dtype)
    weights = [rng.standard_normal((3, 8)).astype(dtype) * 0.5, np.zeros(8, dtype),
               rng.standard_normal((8, 1)).astype(dtype) * 0.5, np.zeros(1, dtype)]
    return x, y, weights


def lbfgs_easyfit(dtype, steps, **kwargs):
    x, y, weights = regression_problem(dtype)
    params = [ef.tensor(w, requires_grad=True) for w in weights]
    opt = LBFGS(params, **kwargs)
    xt, yt = ef.tensor(x), ef.tensor(y)

    def closure():
        opt.zero_grad()
        hidden = ef.tanh(xt @ params[0] + params[1])
        loss = ((hidden @ params[2] + params[3] - yt) ** 2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(steps)]
    return losses, [p.array.copy() for p in params], opt


def lbfgs_torch(torch, dtype, steps, **kwargs):
    x, y, weights = regression_problem(dtype)
    params = [torch.tensor(w, requires_grad=True) for w in weights]
    opt = torch.optim.LBFGS(params, **kwargs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        hidden = torch.tanh(xt @ params[0] + params[1])
        loss = ((hidden @ params[2] + params[3] - yt) ** 2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(steps)]
    return losses, [p.detach().numpy().copy() for p in params], opt


# float32 runs round differently in the model's own ops (tanh, matmul) by an ulp, which the
# iterations amplify (1e-7 at first, about 1e-5 after 12 iterations): fewer steps there.
@pytest.mark.parametrize("dtype, rtol, steps", [(np.float64, 1e-8, 4), (np.float32, 1e-4, 2)])
@pytest.mark.parametrize("kwargs", [
    dict(lr=0.5, max_iter=5),
    dict(lr=1, max_iter=6, line_search_fn="strong_wolfe"),
    dict(lr=0.8, max_iter=4, history_size=3, line_search_fn="strong_wolfe"),
    dict(lr=0.3, max_iter=3, history_size=2),
    dict(lr=2.0, max_iter=10, max_eval=7, line_search_fn="strong_wolfe"),
    dict(lr=1, max_iter=8, tolerance_change=1e-3, line_search_fn="strong_wolfe"),
], ids=["fixed", "wolfe", "wolfe-short-history", "fixed-short-history", "wolfe-few-evaluations",
        "wolfe-tolerance-change"])
def test_lbfgs_follows_torch(dtype, rtol, steps, kwargs):
    torch = pytest.importorskip("torch")
    ours, our_params, opt = lbfgs_easyfit(dtype, steps, **kwargs)
    theirs, their_params, topt = lbfgs_torch(torch, dtype, steps, **kwargs)
    np.testing.assert_allclose(ours, theirs, rtol=rtol)
    for a, b in zip(our_params, their_params):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    assert ours[-1] < 0.6 * ours[0]  # it did optimise
    ours_state = next(iter(opt.state.values()))
    theirs_state = next(iter(topt.state.values()))
    assert ours_state["func_evals"] == theirs_state["func_evals"]
    assert ours_state["n_iter"] == theirs_state["n_iter"]


def test_lbfgs_reaches_the_minimum_of_a_quadratic():
    a = np.diag([1.0, 10.0, 100.0])
    w = ef.tensor(np.ones(3), requires_grad=True)
    opt = LBFGS([w], line_search_fn="strong_wolfe", max_iter=50, tolerance_grad=1e-10)
    target = ef.tensor(np.array([1.0, -2.0, 3.0]))
    matrix = ef.tensor(a)

    def closure():
        opt.zero_grad()
        diff = w - target
        loss = (diff * (diff @ matrix)).sum() * 0.5
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(w.array, [1.0, -2.0, 3.0], atol=1e-6)


def test_lbfgs_needs_a_closure_and_returns_its_first_loss():
    w = ef.tensor(np.array([2.0]), requires_grad=True)
    opt = LBFGS([w], max_iter=3)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    calls = []

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    with ef.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 4.0 and calls[0] == 4.0 and len(calls) == 3


def test_lbfgs_state_dict_resumes_exactly(tmp_path):
    def make():
        x, y, weights = regression_problem(np.float64)
        params = [ef.tensor(w, requires_grad=True) for w in weights]
        opt = LBFGS(params, lr=1, max_iter=3, history_size=4, line_search_fn="strong_wolfe")
        xt, yt = ef.tensor(x), ef.tensor(y)

        def closure():
            opt.zero_grad()
            loss = ((ef.tanh(xt @ params[0] + params[1]) @ params[2] + params[3] - yt) ** 2).mean()
            loss.backward()
            return loss
        return params, opt, closure

    params, opt, closure = make()
    for _ in range(2):
        opt.step(closure)
    ef.save({"model": {str(i): p for i, p in enumerate(params)}, "opt": opt.state_dict()},
            tmp_path / "ckpt.safetensors")
    for _ in range(2):
        opt.step(closure)
    checkpoint = ef.load(tmp_path / "ckpt.safetensors")
    params2, opt2, closure2 = make()
    for i, p in enumerate(params2):
        p.array[...] = np.asarray(checkpoint["model"][str(i)])
    opt2.load_state_dict(checkpoint["opt"])
    for _ in range(2):
        opt2.step(closure2)
    for a, b in zip(params, params2):
        np.testing.assert_array_equal(a.array, b.array)


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", {}), ("AdamW", {}),
                                          ("RMSprop", {}), ("Adagrad", {}), ("Adadelta", {}), ("LBFGS", {})])
def test_step_with_closure_returns_its_loss_like_torch(name, kwargs):
    """PyTorch's contract: step(closure) calls the closure with gradients on and returns its loss."""
    torch = pytest.importorskip("torch")
    import easyfit.optim
    start = np.array([1.5, -0.5])
    results = []
    for framework, make, optim in ((ef, lambda a: ef.tensor(a, requires_grad=True), easyfit.optim),
                                   (torch, lambda a: torch.tensor(a, requires_grad=True), torch.optim)):
        w = make(start)
        opt = getattr(optim, name)([w], **kwargs)

        def closure():
            opt.zero_grad()
            loss = ((w - 1.0) ** 2).sum() + (w * w * w).sum() * 0.1
            loss.backward()
            return loss

        with framework.no_grad():
            losses = [opt.step(closure).item() for _ in range(3)]
        results.append((losses, w.detach().numpy().copy()))
    (ours, our_w), (theirs, their_w) = results
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(our_w, their_w, rtol=1e-10)
