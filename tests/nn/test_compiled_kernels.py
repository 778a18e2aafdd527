"""The normalization and pooling kernels on both paths: compiled (numba, the `fast` extra)
and NumPy (`numba_disabled()`, also what runs without numba or on CuPy arrays). Each path
is checked against PyTorch, finite differences and second derivatives."""
import contextlib

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import compiled
from easyfit.nn import functional as F
from easyfit.nn.functional import normalization

torch = pytest.importorskip("torch")


@pytest.fixture(params=["numba", "numpy"])
def kernel_path(request):
    """Runs the test once on each path; the compiled one is skipped when numba is absent."""
    if request.param == "numba":
        pytest.importorskip("numba")
        assert compiled.numba_enabled()
        yield "numba"
    else:
        with compiled.numba_disabled():
            yield "numpy"


def check(fn, *inputs, atol=1e-5):
    """gradcheck of fn, then of its backward as a function of (inputs, output gradient):
    every first and second derivative against finite differences, in float64."""
    assert ef.gradcheck(fn, list(inputs), atol=atol)
    seed = ef.tensor(np.random.default_rng(9).standard_normal(fn(*inputs).shape), requires_grad=True)

    def backward_of(*args):
        *xs, grad_out = args
        grads = ef.grad(fn(*xs), list(xs), grad_outputs=grad_out, create_graph=True, allow_unused=True)
        return [g if g is not None else ef.zeros(x.shape, dtype=np.float64) for g, x in zip(grads, xs)]
    assert ef.gradcheck(backward_of, list(inputs) + [seed], atol=atol)


def randn(*shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_layer_norm_step(x, weight, bias, grad_out, normalized_shape):
    xt = torch.tensor(x, requires_grad=True)
    wt = None if weight is None else torch.tensor(weight, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    y = torch.nn.functional.layer_norm(xt, normalized_shape, wt, bt)
    y.backward(torch.tensor(grad_out))
    return [y.detach().numpy(), xt.grad.numpy()] + [None if t is None else t.grad.numpy() for t in (wt, bt)]


@pytest.mark.parametrize("affine", ["weight and bias", "weight only", "none"])
@pytest.mark.parametrize("shape, normalized_shape", [((64, 256), (256,)), ((3, 7, 5), (7, 5)), ((2, 1), (1,))])
def test_layer_norm_against_torch(kernel_path, affine, shape, normalized_shape):
    x = randn(*shape) * 3 + 1
    weight = randn(*normalized_shape, seed=2) * 0.5 + 1 if affine != "none" else None
    bias = randn(*normalized_shape, seed=3) if affine == "weight and bias" else None
    grad_out = randn(*shape, seed=4)
    expected = torch_layer_norm_step(x, weight, bias, grad_out, normalized_shape)
    xe = ef.tensor(x, requires_grad=True)
    we = None if weight is None else ef.tensor(weight, requires_grad=True)
    be = None if bias is None else ef.tensor(bias, requires_grad=True)
    y = F.layer_norm(xe, normalized_shape, we, be)
    y.backward(ef.tensor(grad_out))
    got = [y.numpy(), xe.grad.numpy()] + [None if t is None else t.grad.numpy() for t in (we, be)]
    for ours, theirs, name in zip(got, expected, ["y", "gx", "gw", "gb"]):
        if theirs is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4, err_msg=name)
    # gradients arrive in the inputs' shapes and own their memory
    assert xe.grad.shape == xe.shape and xe.grad.numpy().base is None


def test_layer_norm_paths_agree_on_large_means_and_many_rows(kernel_path):
    """A mean that dwarfs the spread (1000 +- 1) and more rows than one gradient flush."""
    x = randn(300, 33) + 1000
    grad_out = randn(300, 33, seed=5)
    expected = torch_layer_norm_step(x.astype(np.float64), np.ones(33), np.zeros(33),
                                     grad_out.astype(np.float64), (33,))
    layer = nn.LayerNorm(33)
    xe = ef.tensor(x, requires_grad=True)
    layer(xe).backward(ef.tensor(grad_out))
    np.testing.assert_allclose(xe.grad.numpy(), expected[1], atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(layer.weight.grad.numpy(), expected[2], atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(layer.bias.grad.numpy(), expected[3], atol=1e-4, rtol=1e-4)


def test_layer_norm_with_a_broadcast_output_gradient(kernel_path):
    """The gradient of a sum arrives as a broadcast (stride 0) array."""
    x = ef.tensor(randn(4, 6), requires_grad=True)
    F.layer_norm(x, (6,)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.zeros((4, 6)), atol=1e-5)  # d(sum of xhat)/dx is 0


def test_layer_norm_only_parameter_gradients(kernel_path):
    layer = nn.LayerNorm(5)
    x = ef.tensor(randn(3, 5))            # no gradient for x
    layer(x).backward(ef.tensor(randn(3, 5, seed=2)))
    xt = torch.tensor(randn(3, 5))
    theirs = torch.nn.LayerNorm(5)
    theirs(xt).backward(torch.tensor(randn(3, 5, seed=2)))
    np.testing.assert_allclose(layer.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(layer.bias.grad.numpy(), theirs.bias.grad.numpy(), atol=1e-5)


def t64(*shape, seed=0, shift=0.0):
    return ef.tensor(randn(*shape, seed=seed, dtype=np.float64) + shift, requires_grad=True)


def test_layer_norm_finite_differences_and_second_derivatives(kernel_path):
    check(lambda x, w, b: F.layer_norm(x, (2, 3), w, b), t64(2, 2, 3), t64(2, 3, seed=1, shift=1), t64(2, 3, seed=2))
    check(lambda x: F.layer_norm(x, 4), t64(3, 4))


def test_compiled_path_is_taken_only_where_it_applies():
    pytest.importorskip("numba")
    x = np.zeros((2, 3), np.float32)
    assert normalization._compiled_applies(x)
    assert not normalization._compiled_applies(x.astype(np.float16))
    with compiled.numba_disabled():
        assert not normalization._compiled_applies(x)


def channels_last(x):
    """The same NCHW array stored as NHWC in memory, as a conv's output is."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(3, 2), stride=1),
    dict(kernel_size=3, stride=2, dilation=2), dict(kernel_size=2, stride=3),
], ids=str)
@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_max_pool2d_against_torch(kernel_path, kwargs, layout):
    """Nine channels: a conv-like (channels-last) input takes the compiled path; ReLU-like
    zeros make ties (the first maximum wins, as in PyTorch)."""
    x = np.maximum(randn(3, 9, 9, 8), 0)
    x = channels_last(x) if layout == "channels-last" else x
    grad_out = None
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, **kwargs)
    grad_out = randn(*yt.shape, seed=3)
    yt.backward(torch.tensor(grad_out))
    for gradient_layout in ("channels-first", "channels-last"):
        xe = ef.tensor(x, requires_grad=True)
        ye = F.max_pool2d(xe, **kwargs)
        np.testing.assert_array_equal(ye.numpy(), yt.detach().numpy())
        ye.backward(ef.tensor(grad_out if gradient_layout == "channels-first" else channels_last(grad_out)))
        np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), atol=1e-6)
        with ef.no_grad():
            np.testing.assert_array_equal(F.max_pool2d(ef.tensor(x), **kwargs).numpy(), yt.detach().numpy())


def test_max_pool2d_nan_wins_its_window(kernel_path):
    x = randn(1, 8, 4, 4)
    x[0, 3, 1, 2] = np.nan
    x = channels_last(x)
    ours = F.max_pool2d(ef.tensor(x), 2).numpy()
    theirs = torch.nn.functional.max_pool2d(torch.tensor(x), 2).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(ours[~np.isnan(ours)], theirs[~np.isnan(theirs)])


def test_max_pool2d_finite_differences_and_second_derivatives(kernel_path):
    # distinct values (a unique max per window), stored channels-last with 8 channels
    x = np.random.default_rng(0).permutation(2 * 8 * 5 * 5).reshape(2, 5, 5, 8) / 10.0
    x_nhwc = ef.tensor(x, dtype=np.float64, requires_grad=True)
    check(lambda x: F.max_pool2d(ef.transpose(x, (0, 3, 1, 2)), 2), x_nhwc)
    check(lambda x: F.max_pool2d(ef.transpose(x, (0, 3, 1, 2)), 3, stride=2, padding=1), x_nhwc)


def test_compiled_pool_path_is_taken_only_where_it_applies():
    from easyfit.nn.functional import pooling
    pytest.importorskip("numba")
    assert pooling._compiled_pool_applies(np.zeros((2, 4, 4, 8), np.float32))
    assert not pooling._compiled_pool_applies(np.zeros((16, 4, 4, 1), np.float32))  # one-channel images
    assert not pooling._compiled_pool_applies(np.zeros((2, 4, 4, 8), np.float16))
    with compiled.numba_disabled():
        assert not pooling._compiled_pool_applies(np.zeros((2, 4, 4, 8), np.float32))


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 3), (4, 3, 7)], ids=str)
@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_against_torch(kernel_path, shape, layout, affine):
    """Both memory layouts (planes of a channel; rows of channels), with a mean that dwarfs
    the spread in one channel, and the running statistics."""
    x = randn(*shape) * 2 + 1
    x[:, 1] += 1000
    if layout == "channels-last":
        if len(shape) != 4:
            pytest.skip("channels-last storage is a 4-D layout")
        x = channels_last(x)
    grad_out = randn(*shape, seed=4)
    theirs = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(3, affine=affine)
    ours = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
    initial = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(grad_out))
    for gradient_layout in ("channels-first", "channels-last") if len(shape) == 4 else ("channels-first",):
        ours.load_state_dict(initial)
        xe = ef.tensor(x, requires_grad=True)
        ye = ours(xe)
        np.testing.assert_allclose(ye.numpy(), yt.detach().numpy(), atol=2e-3, rtol=1e-3)
        ye.backward(ef.tensor(grad_out if gradient_layout == "channels-first" else channels_last(grad_out)))
        np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), atol=2e-3, rtol=1e-3)
        if affine:
            np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=2e-3, rtol=1e-3)
            np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), atol=1e-3, rtol=1e-4)
            ours.weight.grad = ours.bias.grad = None
        np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-4)


def test_batch_norm_output_keeps_the_input_layout(kernel_path):
    x = channels_last(randn(2, 16, 4, 4))
    y = nn.BatchNorm2d(16)(ef.tensor(x)).numpy()
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous      # channels-last in, channels-last out
    y = nn.BatchNorm2d(16)(ef.tensor(np.ascontiguousarray(x))).numpy()
    assert y.flags.c_contiguous


def test_batch_norm_finite_differences_and_second_derivatives(kernel_path):
    def train_norm(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True)
    check(train_norm, t64(4, 3, 2, 2), t64(3, seed=1, shift=1), t64(3, seed=2))
    check(lambda x: F.batch_norm(x, None, None, training=True), t64(5, 3))
    x_nhwc = t64(2, 4, 5, 3)   # stored channels-last, as a conv's output
    check(lambda x, w, b: train_norm(ef.transpose(x, (0, 3, 1, 2)), w, b), x_nhwc, t64(3, seed=1, shift=1),
          t64(3, seed=2))
