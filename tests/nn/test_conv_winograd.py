"""Winograd F(2x2, 3x3) convolutions: the transforms against their matrices, the conv
against PyTorch and against im2col, first and second derivatives, and when it is used."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import compiled
from easyfit.nn import functional as F
from easyfit.nn.functional import _winograd as winograd
from easyfit.nn.functional import conv as conv_functional

pytest.importorskip("numba")


def test_transforms_equal_their_matrices():
    rng = np.random.default_rng(0)
    xpad = rng.standard_normal((2, 6, 8, 5))           # 2 x 3 tiles of 4x4, 2 apart
    v = np.empty((16, 2 * 2 * 3, 5))
    winograd.input_tiles(xpad, v, 0, 2, 3)
    tiles = np.stack([xpad[b, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
                      for b in range(2) for ty in range(2) for tx in range(3)])   # (tiles, 4, 4, C)
    expected = np.einsum("ia,tabc,jb->ijtc", winograd._B_T, tiles, winograd._B_T)
    np.testing.assert_allclose(v, expected.reshape(16, -1, 5), atol=1e-12)

    w = rng.standard_normal((4, 5, 3, 3))
    expected = np.einsum("ia,ocab,jb->ijco", winograd._G, w, winograd._G).reshape(16, 5, 4)
    np.testing.assert_allclose(winograd.transformed_weight(w, np.float64), expected, atol=1e-12)
    du = rng.standard_normal((16, 5, 4))
    gw = np.empty((4, 5, 3, 3))
    winograd.weight_tiles_adjoint(du, gw)
    np.testing.assert_allclose(gw, np.einsum("ia,ijco,jb->ocab", winograd._G, du.reshape(4, 4, 5, 4), winograd._G),
                               atol=1e-12)

    m = rng.standard_normal((16, 2 * 2 * 3, 4))          # one image of 2 x 3 tiles: 4 x 6 outputs
    out = np.full((2 * 4 * 5, 4), np.nan)                # OW 5: the last tile column keeps one output
    winograd.output_tiles(m, out, 0, 2, 3, 4, 5)
    blocks = np.einsum("ia,abtc,jb->tijc", winograd._A_T, m.reshape(4, 4, -1, 4), winograd._A_T)
    full = blocks.reshape(2, 2, 3, 2, 2, 4).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, 6, 4)[:, :, :5]
    np.testing.assert_allclose(out.reshape(2, 4, 5, 4), full, atol=1e-12)

    # the weight gradient's transform of the output gradient is output_tiles' adjoint
    gy = rng.standard_normal(out.shape)
    dm = np.empty_like(m)
    winograd.output_tiles_adjoint(gy, dm, 0, 2, 3, 4, 5)
    np.testing.assert_allclose((out * gy).sum(), (m * dm).sum(), rtol=1e-12)


CASES = {
    "even output": (16, 24, (2, 16, 8, 10), 1),
    "odd output, several chunks": (20, 16, (3, 20, 11, 9), 1),
    "no padding": (16, 16, (2, 16, 9, 8), 0),
    "padding 2": (16, 16, (2, 16, 7, 6), 2),
    "padding (1, 0)": (16, 18, (2, 16, 8, 7), (1, 0)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_matches_pytorch_and_im2col(case, monkeypatch):
    torch = pytest.importorskip("torch")
    cin, cout, shape, padding = CASES[case]
    monkeypatch.setattr(winograd, "_CHUNK_FLOATS", 4000)     # one image per chunk
    theirs = torch.nn.Conv2d(cin, cout, 3, padding=padding)
    ours = nn.Conv2d(cin, cout, 3, padding=padding)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)
    seed = rng.standard_normal(tuple(y_t.shape)).astype(np.float32)
    y_t.backward(torch.tensor(seed))
    results = {}
    for use in (True, False):
        monkeypatch.setattr(winograd, "_MIN_CHANNELS", 16 if use else 10 ** 9)
        calls, weight_calls = [], []
        monkeypatch.setattr(winograd, "conv_forward", lambda *a, f=winograd.conv_forward: calls.append(1) or f(*a))
        monkeypatch.setattr(winograd, "weight_gradient",
                            lambda *a, f=winograd.weight_gradient: weight_calls.append(1) or f(*a))
        x_e = ef.tensor(x, requires_grad=True)
        for p in ours.parameters():
            p.grad = None
        y = ours(x_e)
        y.backward(ef.tensor(seed))
        assert len(calls) == (2 if use else 0)                # forward and the input gradient
        assert len(weight_calls) == (1 if use else 0)
        results[use] = (y.numpy(), x_e.grad.numpy(), ours.weight.grad.numpy())
        np.testing.assert_allclose(results[use][0], y_t.detach().numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(results[use][1], x_t.grad.numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(results[use][2], theirs.weight.grad.numpy(), atol=1e-3, rtol=1e-4)
    for by_tiles, by_windows in zip(results[True], results[False]):
        np.testing.assert_allclose(by_tiles, by_windows, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", [1, 0])
def test_gradients_and_second_derivatives(padding, monkeypatch):
    monkeypatch.setattr(winograd, "_MIN_CHANNELS", 2)
    calls = []
    monkeypatch.setattr(winograd, "conv_forward", lambda *a, f=winograd.conv_forward: calls.append(1) or f(*a))
    rng = np.random.default_rng(2)

    def t(*shape):
        return ef.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    x, w, b = t(2, 3, 5, 6), t(2, 3, 3, 3), t(2)
    fn = lambda x, w, b: F.conv2d(x, w, b, padding=padding)  # noqa: E731
    assert ef.gradcheck(fn, [x, w, b])
    grad_out = ef.tensor(rng.standard_normal(fn(x, w, b).shape), requires_grad=True)

    def backward_of(x, w, b, g):
        return list(ef.grad(fn(x, w, b), [x, w, b], grad_outputs=g, create_graph=True))
    assert ef.gradcheck(backward_of, [x, w, b, grad_out])
    assert calls


def test_used_only_where_it_applies():
    g = conv_functional._ConvGeometry(8, 8, (3, 3), (1, 1), (1, 1), (1, 1))
    xpad = np.zeros((1, 10, 10, 32), np.float32)
    assert winograd.applies(xpad, (32, 32, 3, 3), g)
    assert not winograd.applies(xpad, (8, 32, 3, 3), g)                       # thin output
    assert not winograd.applies(xpad.astype(np.float16), (32, 32, 3, 3), g)   # no float16 kernels
    assert not winograd.applies(xpad, (32, 32, 3, 3), conv_functional._ConvGeometry(
        8, 8, (3, 3), (2, 2), (1, 1), (1, 1)))                                 # stride 2
    with compiled.numba_disabled():
        assert not winograd.applies(xpad, (32, 32, 3, 3), g)
