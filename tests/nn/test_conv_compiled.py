"""conv2d's compiled loops (numba) and its NumPy path: both against PyTorch, against each
other and against finite differences, first and second derivatives."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import compiled
from easyfit.nn import functional as F
from easyfit.nn.functional import _conv_kernels as kernels
from easyfit.nn.functional import conv as conv_functional

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

PATHS = ["numba", "numpy"]

CASES = {
    "dense widening (col2im)": (6, 10, dict(kernel_size=3, padding=1)),
    "dense narrowing (input gradient by conv)": (10, 6, dict(kernel_size=3, padding=1)),
    "dense stride 2 dilation 2": (6, 8, dict(kernel_size=(3, 2), stride=2, padding=(2, 1), dilation=2)),
    "grouped block-diagonal": (8, 8, dict(kernel_size=3, padding=1, groups=4)),
    "grouped per group": (24, 24, dict(kernel_size=3, padding=1, groups=2, bias=False)),
    "grouped widening, 2x4 kernel dilated": (6, 9, dict(kernel_size=(2, 4), padding=(1, 2), dilation=(2, 1),
                                                          groups=3)),
    "grouped 5x5 no padding": (8, 4, dict(kernel_size=5, groups=2)),
    "grouped stride 2": (8, 8, dict(kernel_size=3, stride=2, padding=1, groups=4)),
    "grouped padding wider than the kernel": (8, 8, dict(kernel_size=3, padding=3, groups=2)),
    "grouped, groups wider than the plane kernels'": (66, 6, dict(kernel_size=3, padding=1, groups=2)),
    "depthwise": (6, 6, dict(kernel_size=3, padding=1, groups=6)),
    "depthwise stride 2 no bias": (6, 6, dict(kernel_size=3, stride=2, padding=1, groups=6, bias=False)),
    "depthwise dilation, padding wider than the kernel": (4, 4, dict(kernel_size=(3, 2), dilation=2, padding=(3, 2),
                                                                     groups=4)),
    "depthwise 5x5 no padding": (5, 5, dict(kernel_size=5, groups=5)),
    "depthwise row stride 2, column dilation 2": (4, 4, dict(kernel_size=3, stride=(2, 1), padding=(1, 2),
                                                             dilation=(1, 2), groups=4)),
    "first layer, 3 channels": (3, 8, dict(kernel_size=3, padding=1)),
}


def _run(path, layer, x_array, seed, channels_last):
    """Forward and backward of `layer` on x (its memory (N, H, W, C) when channels_last)."""
    if channels_last:
        x = ef.tensor(np.ascontiguousarray(x_array.transpose(0, 2, 3, 1)), requires_grad=True)
        x_in = ef.transpose(x, (0, 3, 1, 2))
    else:
        x = ef.tensor(x_array, requires_grad=True)
        x_in = x
    for p in layer.parameters():
        p.grad = None
    if path == "numpy":
        with compiled.numba_disabled():
            y = layer(x_in)
            y.backward(ef.tensor(seed))
    else:
        y = layer(x_in)
        y.backward(ef.tensor(seed))
    gx = x.grad.numpy().transpose(0, 3, 1, 2) if channels_last else x.grad.numpy()
    return y.numpy(), gx, {name: p.grad.numpy().copy() for name, p in layer.named_parameters()}


@pytest.mark.parametrize("planes", [False, True], ids=["window kernels", "plane kernels"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["input stored NCHW", "input stored NHWC"])
@pytest.mark.parametrize("case", list(CASES))
def test_both_paths_match_pytorch_and_each_other(case, channels_last, planes, monkeypatch):
    if planes and "depthwise" not in case and "grouped" not in case:
        pytest.skip("the plane kernels are the depthwise and grouped convs'")
    monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", 2000)  # several batch chunks
    monkeypatch.setattr(conv_functional, "_DEPTHWISE_PLANES", planes)
    monkeypatch.setattr(conv_functional, "_GROUPED_PLANES", planes)
    cin, cout, kwargs = CASES[case]
    theirs = torch.nn.Conv2d(cin, cout, **kwargs)
    ours = nn.Conv2d(cin, cout, **kwargs)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, cin, 11, 9)).astype(np.float32)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)
    seed = rng.standard_normal(tuple(y_t.shape)).astype(np.float32)
    y_t.backward(torch.tensor(seed))
    results = {path: _run(path, ours, x, seed, channels_last) for path in PATHS}
    for path, (y, gx, grads) in results.items():
        np.testing.assert_allclose(y, y_t.detach().numpy(), atol=1e-4, rtol=1e-4, err_msg=path)
        np.testing.assert_allclose(gx, x_t.grad.numpy(), atol=1e-4, rtol=1e-4, err_msg=path)
        for name, p in theirs.named_parameters():
            np.testing.assert_allclose(grads[name], p.grad.numpy(), atol=1e-4, rtol=1e-4, err_msg=f"{path} {name}")
    (y_a, gx_a, _), (y_b, gx_b, _) = results["numba"], results["numpy"]
    np.testing.assert_allclose(y_a, y_b, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, atol=1e-5, rtol=1e-5)


def _t(*shape, seed=0):
    return ef.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=np.float64, requires_grad=True)


def _check(fn, *inputs):
    """First derivatives, then the backward itself (every second derivative) by gradcheck."""
    assert ef.gradcheck(fn, list(inputs))
    out = fn(*inputs)
    grad_out = ef.tensor(np.random.default_rng(9).standard_normal(out.shape), requires_grad=True)

    def backward_of(*args):
        *xs, g = args
        grads = ef.grad(fn(*xs), list(xs), grad_outputs=g, create_graph=True, allow_unused=True)
        return [d if d is not None else ef.zeros(x.shape, dtype=np.float64) for d, x in zip(grads, xs)]
    assert ef.gradcheck(backward_of, list(inputs) + [grad_out])


@pytest.mark.parametrize("planes", [False, True], ids=["window kernels", "plane kernels"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kwargs, cin, cout", [
    (dict(padding=1, groups=3), 3, 3),                      # depthwise, planes
    (dict(stride=2, padding=1, dilation=1, groups=2), 2, 2),
    (dict(padding=1), 2, 4),                                # dense, col2im
    (dict(stride=2, padding=1, groups=2), 4, 4),            # grouped, col2im
    (dict(padding=1, groups=2), 4, 6),                      # grouped, planes
    (dict(padding=(2, 1), dilation=(2, 1), groups=2), 4, 4),  # grouped, planes
], ids=str)
def test_gradients_and_second_derivatives(path, kwargs, cin, cout, planes, monkeypatch):
    monkeypatch.setattr(conv_functional, "_DEPTHWISE_PLANES", planes)
    monkeypatch.setattr(conv_functional, "_GROUPED_PLANES", planes)
    x, w, b = _t(2, cin, 5, 4), _t(cout, cin // kwargs.get("groups", 1), 3, 3, seed=1), _t(cout, seed=2)
    fn = lambda x, w, b: F.conv2d(x, w, b, **kwargs)  # noqa: E731
    if path == "numpy":
        with compiled.numba_disabled():
            _check(fn, x, w, b)
    else:
        _check(fn, x, w, b)


@pytest.mark.parametrize("channels, groups", [(5, 5), (6, 3)], ids=["depthwise", "grouped"])
@pytest.mark.parametrize("frozen", ["input", "weight", "bias"])
def test_planes_with_one_gradient_not_needed(frozen, channels, groups):
    """The plane kernels skip the gradients nobody asked for and still give the others."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, channels, 9, 8)).astype(np.float32)
    theirs = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
    ours = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    x_t, x_e = torch.tensor(x, requires_grad=frozen != "input"), ef.tensor(x, requires_grad=frozen != "input")
    if frozen != "input":
        getattr(theirs, frozen).requires_grad_(False)
        getattr(ours, frozen).requires_grad = False
    seed = rng.standard_normal((2, channels, 9, 8)).astype(np.float32)
    theirs(x_t).backward(torch.tensor(seed))
    ours(x_e).backward(ef.tensor(seed))
    if frozen != "input":
        np.testing.assert_allclose(x_e.grad.numpy(), x_t.grad.numpy(), atol=1e-5)
    else:
        assert x_e.grad is None
    for name in ("weight", "bias"):
        if name == frozen:
            assert getattr(ours, name).grad is None
        else:
            np.testing.assert_allclose(getattr(ours, name).grad.numpy(), getattr(theirs, name).grad.numpy(),
                                       atol=1e-4, rtol=1e-5)


def test_group_major_window_matrices_equal_the_numpy_code():
    """im2col and col2im with group-major columns (a grouped conv's layout), compiled and NumPy."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 6, 6)).astype(np.float32)  # (N, Hp, Wp, C) with C = 3 groups of 2
    g = conv_functional._ConvGeometry(5, 4, (3, 2), (1, 2), (1, 1), (1, 1), groups=3)
    windows = conv_functional._windows(x, g)[1:3]  # (2, OH, OW, KH, KW, C)
    expected = windows.reshape(2, g.oh, g.ow, 3, 2, 3, 2).transpose(0, 1, 2, 5, 3, 4, 6).reshape(2 * g.oh * g.ow, -1)
    cols = conv_functional._WindowMatrices(x, g, 2, groups=3)(1, 3)
    np.testing.assert_array_equal(cols, expected)
    with compiled.numba_disabled():
        np.testing.assert_array_equal(conv_functional._WindowMatrices(x, g, 2, groups=3)(1, 3), expected)
    # col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)>, in both paths
    c = rng.standard_normal(cols.shape).astype(np.float32)
    for disabled in (False, True):
        target = np.zeros((2,) + x.shape[1:], np.float32)
        if disabled:
            with compiled.numba_disabled():
                conv_functional._col2im_add(target, c, g, groups=3)
        else:
            conv_functional._col2im_add(target, c, g, groups=3)
        np.testing.assert_allclose((target * x[1:3]).sum(), (expected * c).sum(), rtol=1e-5)


@pytest.mark.parametrize("groups, cin, cout", [(1, 4, 6), (1, 1, 4), (2, 8, 8), (4, 4, 4), (2, 12, 12)], ids=str)
def test_float16_takes_the_numpy_path(groups, cin, cout):
    """numba has no float16: a float16 conv (dense, first layer, grouped, depthwise) runs
    the NumPy path with numba on, and agrees with float32."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, cin, 6, 5)).astype(np.float16)
    w = rng.standard_normal((cout, cin // groups, 3, 3)).astype(np.float16)
    results = []
    for dtype in (np.float16, np.float32):
        xt, wt = ef.tensor(x.astype(dtype), requires_grad=True), ef.tensor(w.astype(dtype), requires_grad=True)
        y = F.conv2d(xt, wt, padding=1, groups=groups)
        y.backward(ef.ones(y.shape, dtype=dtype))
        assert y.dtype == dtype and xt.grad.dtype == dtype and wt.grad.dtype == dtype
        results.append([y.numpy(), xt.grad.numpy(), wt.grad.numpy()])
    for half, single in zip(*results):
        np.testing.assert_allclose(half.astype(np.float32), single, atol=0.1, rtol=0.02)


def test_the_compiled_paths_are_taken(monkeypatch):
    """With numba on (and the plane kernels chosen), a depthwise conv of an (N, C, H, W)
    input runs plane by plane; with numba off, it does not."""
    monkeypatch.setattr(conv_functional, "_DEPTHWISE_PLANES", True)
    x, w = _t(2, 3, 5, 5), _t(3, 1, 3, 3, seed=1)
    fn = conv_functional.Conv2d((1, 1), (1, 1), (1, 1), 3)
    fn(x, w)
    assert fn.planes
    with compiled.numba_disabled():
        fn = conv_functional.Conv2d((1, 1), (1, 1), (1, 1), 3)
        fn(x, w)
        assert not fn.planes


def test_grouped_planes_weight_gradient_with_inf_outside_a_windows_reach():
    """An inf in the input's last column is outside every window of the kernel's first
    column offset: that offset's weight gradient stays finite, as in PyTorch."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    x[0, 1, 2, 4] = np.inf
    theirs = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    ours = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    seed = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    theirs(torch.tensor(x)).backward(torch.tensor(seed))
    ours(ef.tensor(x)).backward(ef.tensor(seed))
    expected = theirs.weight.grad.numpy()
    assert np.isfinite(expected[:2, :, :, 0]).all()
    np.testing.assert_allclose(ours.weight.grad.numpy(), expected, rtol=1e-4, atol=1e-4)
@pytest.mark.parametrize("stride, padding, cin, expected", [
    (1, 1, 8, True), (2, 1, 8, False), (1, 3, 8, False), (1, 1, 66, False),
], ids=["stride 1", "stride 2", "padding past the kernel's reach", "groups of 33 channels"])
def test_grouped_convs_by_planes_where_chosen(stride, padding, cin, expected):
    """A grouped conv runs plane by plane at stride 1, padding within the kernel's reach and
    groups of at most 32 input channels, with numba on; never with numba off."""
    x, w = _t(2, cin, 5, 5), _t(4, cin // 2, 3, 3, seed=1)
    fn = conv_functional.Conv2d((stride, stride), (padding, padding), (1, 1), 2)
    fn(x, w)
    assert fn.grouped_planes == expected
    with compiled.numba_disabled():
        fn = conv_functional.Conv2d((1, 1), (1, 1), (1, 1), 2)
        fn(x, w)
        assert not fn.grouped_planes


@pytest.mark.parametrize("shape", [(2, 12, 32, 32), (2, 12, 7, 5), (2, 3, 32, 32)])
def test_channels_last_copy_equals_the_transpose(shape):
    """The copy into channels-last order, including the skewed route for 4 KB planes."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    n, c, h, w = shape
    out = np.zeros((n, h + 2, w + 4, c), np.float32)
    conv_functional._copy_channels_last(x, out, 1, 2)
    expected = np.zeros_like(out)
    expected[:, 1:h + 1, 2:w + 2] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, expected)


def test_kernels_equal_the_numpy_window_code():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7, 6)).astype(np.float32)
    g = conv_functional._ConvGeometry(7, 6, (3, 2), (2, 1), (1, 2), (1, 2))
    xpad = conv_functional._pad_channels_last(conv_functional._channels_last(x), g.ph, g.pw)
    rows = g.oh * g.ow
    cols = np.empty((2 * rows, g.kh * g.kw * 5), np.float32)
    kernels.im2col(xpad, cols, 1, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow, 1)
    np.testing.assert_array_equal(cols, conv_functional._windows(xpad, g)[1:3].reshape(2 * rows, -1))
    target, expected = np.zeros((2,) + xpad.shape[1:], np.float32), np.zeros((2,) + xpad.shape[1:], np.float32)
    kernels.col2im_add(target, cols, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow, 1)
    with compiled.numba_disabled():
        conv_functional._col2im_add(expected, cols, g)
    np.testing.assert_allclose(target, expected, atol=1e-6)
