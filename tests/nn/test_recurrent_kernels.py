"""The compiled LSTM/GRU gate kernels (numba, the `fast` extra) and when they run.

tests/nn/test_recurrent.py runs every layer test on both paths (compiled and NumPy); this
file checks the kernels' own pieces: the float32 tanh, which path each dtype and array
takes, that the two paths agree in float32, and that a path gives identical results run
to run (reproducibility of a seeded training run).
"""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import Tensor, compiled
from easyfit.nn.functional import _recurrent_kernels as kernels
from easyfit.nn.recurrent import GRUSequence, LSTMSequence

numba = pytest.importorskip("numba")


def ulps(values, reference):
    """Distance of float32 `values` from the float64 `reference`, in float32 units in the last place."""
    spacing = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64)
    return np.abs(values.astype(np.float64) - reference) / spacing


def test_rational_tanh_is_within_two_float32_ulps_and_saturates():
    x = np.concatenate([np.linspace(-12, 12, 200_001), np.geomspace(1e-30, 1, 2_000),
                        -np.geomspace(1e-30, 1, 2_000), [0.0, 30.0, -30.0, 1e4, -1e4]]).astype(np.float32)
    reference = np.tanh(x.astype(np.float64))
    out = np.empty_like(x)[None]
    kernels.tanh_kernel(x[None], out)
    assert ulps(out[0], reference).max() <= 2
    assert np.abs(out).max() == 1.0
    np.testing.assert_array_equal(out[0][-4:], [1, -1, 1, -1])
    np.testing.assert_allclose(kernels.tanh_rational(x), reference, rtol=1e-7, atol=1e-30)


def test_float64_kernels_use_the_exact_tanh():
    x = np.linspace(-5, 5, 1001)[None]
    out = np.empty_like(x)
    kernels.tanh_kernel(x, out)
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-15, atol=0)   # libm's tanh, not the float32 fit


def test_which_path_runs():
    f32 = np.zeros((2, 3, 8), dtype=np.float32)
    assert kernels.use_compiled(f32)
    assert kernels.use_compiled(f32.astype(np.float64))
    assert not kernels.use_compiled(f32.astype(np.float16))   # float16: the NumPy path
    with compiled.numba_disabled():
        assert not kernels.use_compiled(f32)
    inputs = [Tensor(np.zeros(shape, dtype=np.float32)) for shape in ((3, 2, 8), (2, 2), (2, 2), (8, 2))]
    op = LSTMSequence()
    op(*inputs)
    assert op.compiled
    with compiled.numba_disabled():
        op = LSTMSequence()
        op(*inputs)
        assert not op.compiled


def test_float16_lstm_takes_the_numpy_path_and_runs():
    lstm = nn.LSTM(3, 4).to(np.float16)
    x = ef.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float16), requires_grad=True)
    output, _ = lstm(x)
    assert output.dtype == np.float16
    output.sum().backward()
    assert x.grad.dtype == np.float16 and np.isfinite(x.grad.numpy()).all()
    with compiled.numba_disabled():
        again, _ = lstm(x)
    np.testing.assert_array_equal(again.numpy(), output.numpy())


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_compiled_and_numpy_paths_agree_in_float32(kind, bidirectional):
    layer = getattr(nn, kind)(16, 32, num_layers=2, batch_first=True, bidirectional=bidirectional)
    x0 = np.random.default_rng(3).standard_normal((4, 9, 16)).astype(np.float32) * 2

    def run():
        x = ef.tensor(x0, requires_grad=True)
        output, _ = layer(x)
        (output * output).sum().backward()
        grads = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in layer.parameters()]
        layer.zero_grad()
        return output.numpy().copy(), grads

    output, grads = run()
    with compiled.numba_disabled():
        numpy_output, numpy_grads = run()
    np.testing.assert_allclose(output, numpy_output, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, numpy_grads):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_same_inputs_give_identical_results(kind):
    """The step kernels are deterministic: a seeded run repeats to the bit (exact resume)."""
    ef.manual_seed(0)
    layer = getattr(nn, kind)(8, 16, num_layers=2)
    x = ef.tensor(np.random.default_rng(1).standard_normal((6, 3, 8)).astype(np.float32), requires_grad=True)
    results = []
    for _ in range(2):
        output, _ = layer(x)
        output.sum().backward()
        results.append([output.numpy().copy(), x.grad.numpy().copy()] + [p.grad.numpy().copy()
                                                                           for p in layer.parameters()])
        x.grad = None
        layer.zero_grad()
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


def test_gru_kernel_adds_the_hidden_bias_once_and_keeps_it_for_backward():
    rng = np.random.default_rng(2)
    gates_x = Tensor(rng.standard_normal((3, 2, 6)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    weight = Tensor(rng.standard_normal((6, 2)), requires_grad=True)
    bias = Tensor(rng.standard_normal(6), requires_grad=True)
    assert ef.gradcheck(lambda *xs: GRUSequence()(*xs), [gates_x, h0, weight, bias])
    compiled_out = GRUSequence()(gates_x, h0, weight, bias)
    with compiled.numba_disabled():
        numpy_out = GRUSequence()(gates_x, h0, weight, bias)
    for mine, theirs in zip(compiled_out, numpy_out):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-13, atol=1e-13)


def test_environment_switch_turns_the_kernels_off(monkeypatch):
    inputs = [Tensor(np.zeros(shape, dtype=np.float32)) for shape in ((3, 2, 6), (2, 2), (6, 2), (6,))]
    monkeypatch.setenv("EASYFIT_NUMBA", "0")
    op = GRUSequence()
    op(*inputs)
    assert not op.compiled
    monkeypatch.setenv("EASYFIT_NUMBA", "1")
    op = GRUSequence()
    op(*inputs)
    assert op.compiled


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_run_on_lanes_the_same_on_any_number(kind, dtype, monkeypatch, lane_threads):
    """A batch of several row blocks (16 rows each) runs each block's whole time loop on a
    lane: one and two lanes agree bit for bit, in both directions, and the blocks agree
    with one whole-batch loop (the path tested against PyTorch) to rounding."""
    from easyfit.core import lanes, threads
    from easyfit.nn import recurrent
    if threads.get_num_threads() is None:
        pytest.skip("no OpenBLAS to set")
    layer = getattr(nn, kind)(12, 24, num_layers=2, bidirectional=True).to(dtype)
    x0 = np.random.default_rng(8).standard_normal((7, 40, 12)).astype(dtype)   # blocks of 16, 16, 8

    def run():
        x = ef.tensor(x0, requires_grad=True)
        output, state = layer(x)
        h_n = state[0] if kind == "LSTM" else state
        ((output * output).sum() + (h_n * h_n * h_n).sum()).backward()
        results = [output.numpy().copy(), x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in layer.parameters()]
        layer.zero_grad()
        return results

    by_lanes = {}
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        by_lanes[n] = run()
    assert len(lane_threads) == 2
    for one, two in zip(by_lanes[1], by_lanes[2]):
        np.testing.assert_array_equal(one, two)
    monkeypatch.setattr(recurrent, "_LANE_ROWS", 64)   # the whole batch as one block
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for blocks, whole in zip(by_lanes[2], run()):
        np.testing.assert_allclose(blocks, whole, rtol=tolerance, atol=tolerance)
