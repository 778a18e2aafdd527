"""easyfit.nn.init distributions and easyfit.nn.utils gradient clipping."""
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.nn import init
from easyfit.nn.utils import clip_grad_norm_, clip_grad_value_


def test_fans_and_gains():
    assert init.calculate_fan_in_and_fan_out(ef.zeros(16, 8, 3, 3)) == (72, 144)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="softsign"):
        init.calculate_gain("softsign")
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        init.xavier_uniform_(ef.zeros(5))


def test_uniform_bounds():
    w = ef.zeros(400, 300)
    init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / 300)
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.99 * bound
    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / 700)
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.99 * bound
    assert w.dtype == np.float32


def test_normal_stds():
    w = ef.zeros(500, 400)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    init.xavier_normal_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 900), rel=0.02)
    init.normal_(w, 1.0, 0.5)
    assert w.numpy().mean() == pytest.approx(1.0, abs=0.01)
    init.trunc_normal_(w, std=1.0, a=-1.0, b=1.0)
    assert np.abs(w.numpy()).max() <= 1.0


def test_constant_fills_and_seeding():
    w = ef.zeros(3, 2)
    assert init.ones_(w) is w and np.all(w.numpy() == 1)
    init.constant_(w, 0.25)
    assert np.all(w.numpy() == 0.25)
    init.zeros_(w)
    assert np.all(w.numpy() == 0)
    ef.manual_seed(5)
    a = nn.Linear(4, 3).weight.numpy().copy()
    ef.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Linear(4, 3).weight.numpy())


def grads_of(values):
    params = []
    for v in values:
        p = nn.Parameter(np.zeros(len(v), dtype=np.float32))
        p.grad = ef.tensor(np.asarray(v, dtype=np.float32))
        params.append(p)
    return params


def test_clip_grad_norm_scales_jointly_and_returns_total_norm():
    params = grads_of([[3.0, 0.0], [0.0, 4.0]])
    total = clip_grad_norm_(params, 1.0)
    assert float(total) == pytest.approx(5.0)
    np.testing.assert_allclose(params[0].grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(params[1].grad.numpy(), [0.0, 0.8], rtol=1e-5)
    untouched = grads_of([[0.3, 0.4]])
    clip_grad_norm_(untouched, 1.0)
    np.testing.assert_allclose(untouched[0].grad.numpy(), [0.3, 0.4])


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    values = [np.random.default_rng(i).standard_normal(5).astype(np.float32) for i in range(3)]
    for norm_type in (2.0, 1.0, math.inf):
        ours = grads_of(values)
        theirs = [torch.zeros(5, requires_grad=True) for _ in values]
        for p, v in zip(theirs, values):
            p.grad = torch.tensor(v)
        total = clip_grad_norm_(ours, 0.5, norm_type=norm_type)
        expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type=norm_type)
        assert float(total) == pytest.approx(float(expected), rel=1e-5)
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5)


def test_clip_grad_norm_scales_a_shared_gradient_once():
    params = grads_of([[3.0, 4.0]])
    twin = nn.Parameter(np.zeros(2, dtype=np.float32))
    twin.grad = params[0].grad
    clip_grad_norm_(params + [twin], 1.0)
    np.testing.assert_allclose(twin.grad.numpy(), [0.6, 0.8], rtol=1e-5)


def test_clip_grad_norm_nonfinite():
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_(grads_of([[np.inf, 1.0]]), 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    params = grads_of([[-3.0, 0.5, 2.0]])
    clip_grad_value_(params, 1.0)
    np.testing.assert_allclose(params[0].grad.numpy(), [-1.0, 0.5, 1.0])


def test_clipping_a_read_only_gradient_replaces_it():
    p = nn.Parameter(np.zeros((2, 2), dtype=np.float32))
    (p * 3.0).sum().backward()  # the engine may hand back a broadcast (read-only) view
    clip_grad_value_([p], 1.0)
    clip_grad_norm_([p], 1.0)
    np.testing.assert_allclose(p.grad.numpy(), np.full((2, 2), 0.5), rtol=1e-5)
