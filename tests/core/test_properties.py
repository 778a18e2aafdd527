"""Property-based tests of the core ops (hypothesis): random shapes, including 0-size
axes and 0-d scalars, broadcasting pairs, both float dtypes, reductions over axis tuples
and advanced indexing with repeats.

Forward is checked against NumPy; gradients against PyTorch where it is installed, and
against finite differences in float64 otherwise; second derivatives for the smooth ops.
The default profile keeps the file to well under a minute; CI (`CI=true`) runs the
longer `ci` profile.
"""
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import easyfit as ef  # noqa: E402

try:
    import torch
except ImportError:  # gradients then go to finite differences
    torch = None

settings.register_profile("default", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")

DTYPES = st.sampled_from([np.float32, np.float64])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _values(dtype, shape, low=-3.0, high=3.0):
    low, high = float(np.float32(low)), float(np.float32(high))  # bounds a float32 can hold exactly
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, width=32, allow_nan=False,
                                                       allow_infinity=False))


def _grads_easyfit(fn, arrays, seed):
    xs = [ef.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    out.backward(ef.tensor(seed))
    return out.numpy(), [x.grad.numpy() if x.grad is not None else np.zeros_like(a)
                         for x, a in zip(xs, arrays)]


def _grads_torch(fn, arrays, seed):
    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    out.backward(torch.tensor(seed))
    return out.detach().numpy(), [x.grad.numpy() if x.grad is not None else np.zeros_like(a)
                                  for x, a in zip(xs, arrays)]


def _check(fn, numpy_fn, arrays, torch_fn=None):
    """Forward against NumPy; gradients against PyTorch, or finite differences in float64."""
    dtype = arrays[0].dtype.type
    expected = np.asarray(numpy_fn(*arrays))
    out = fn(*[ef.tensor(a) for a in arrays])
    assert out.shape == expected.shape, (out.shape, expected.shape)
    assert out.dtype == expected.dtype, (out.dtype, expected.dtype)
    np.testing.assert_allclose(out.numpy(), expected, **TOLERANCE[dtype])
    seed = np.random.default_rng(0).uniform(0.5, 1.5, size=expected.shape).astype(dtype)
    if torch is not None:
        ours, our_grads = _grads_easyfit(fn, arrays, seed)
        theirs, their_grads = _grads_torch(torch_fn or fn, arrays, seed)
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])
        for g, h in zip(our_grads, their_grads):
            assert g.shape == h.shape
            np.testing.assert_allclose(g, h, **TOLERANCE[dtype])
    elif all(a.size for a in arrays):
        inputs = [ef.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
        assert ef.gradcheck(fn, inputs)


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1.0)),
    "maximum": (ef.maximum, np.maximum),
    "minimum": (ef.minimum, np.minimum),
    "where": (lambda a, b: ef.where(a > b, a, b * 2.0), lambda a, b: np.where(a > b, a, b * 2.0)),
}


@pytest.mark.parametrize("name", list(BINARY))
@given(data=st.data(), dtype=DTYPES)
def test_binary_ops_broadcast_like_numpy(name, data, dtype):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0,
                                                         max_side=4)).input_shapes
    arrays = [data.draw(_values(dtype, shape)) for shape in shapes]
    fn, numpy_fn = BINARY[name]
    torch_fn = None
    if name in ("maximum", "minimum") and torch is not None:
        torch_fn = getattr(torch, name)
    elif name == "where" and torch is not None:
        torch_fn = lambda a, b: torch.where(a > b, a, b * 2.0)  # noqa: E731
    _check(fn, numpy_fn, arrays, torch_fn)


UNARY = {  # name -> (easyfit function, NumPy function, value range, torch function or None: the same code)
    "exp": (ef.exp, np.exp, (-3, 3), "exp"),
    "log": (ef.log, np.log, (0.1, 5), "log"),
    "sqrt": (ef.sqrt, np.sqrt, (0.1, 5), "sqrt"),
    "tanh": (ef.tanh, np.tanh, (-3, 3), "tanh"),
    "sigmoid": (ef.sigmoid, lambda a: 1 / (1 + np.exp(-a)), (-3, 3), "sigmoid"),
    "relu": (ef.relu, lambda a: np.maximum(a, 0), (-3, 3), "relu"),
    "abs": (abs, np.abs, (-3, 3), None),
    "neg": (lambda a: -a, np.negative, (-3, 3), None),
    "sin": (ef.sin, np.sin, (-3, 3), "sin"),
    "cos": (ef.cos, np.cos, (-3, 3), "cos"),
    "square by pow": (lambda a: a ** 2, np.square, (-3, 3), None),
    "scalar ops": (lambda a: (a * 0.5 + 1.0) / 2.0 - 0.25, lambda a: (a * 0.5 + 1.0) / 2.0 - 0.25, (-3, 3), None),
}


@pytest.mark.parametrize("name", list(UNARY))
@given(data=st.data(), dtype=DTYPES, shape=SHAPES)
def test_unary_ops_match_numpy(name, data, dtype, shape):
    fn, numpy_fn, (low, high), torch_name = UNARY[name]
    array = data.draw(_values(dtype, shape, low, high))
    torch_fn = getattr(torch, torch_name) if torch is not None and torch_name else None
    _check(fn, lambda a: numpy_fn(a).astype(dtype), [array], torch_fn)


def _axes(data, ndim):
    """None, one axis (maybe negative), or a tuple of distinct axes."""
    if ndim == 0:
        return None
    kind = data.draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return data.draw(st.integers(-ndim, ndim - 1))
    return tuple(data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True)))


REDUCTIONS = {
    "sum": (lambda x, dim, keep: x.sum(dim=dim, keepdim=keep), np.sum),
    "sum over dim=() (PyTorch: every axis)": (lambda x, dim, keep: x.sum(dim=() if dim is None else dim,
                                                                          keepdim=keep), np.sum),
    "mean": (lambda x, dim, keep: x.mean(dim=dim, keepdim=keep), np.mean),
    "amax": (lambda x, dim, keep: ef.amax(x, dim=() if dim is None else dim, keepdim=keep), np.max),
    "amin": (lambda x, dim, keep: ef.amin(x, dim=() if dim is None else dim, keepdim=keep), np.min),
    "var (NumPy spelling)": (lambda x, dim, keep: x.var(axis=dim, keepdims=keep), np.var),
}


@pytest.mark.filterwarnings("ignore:var\\(\\). degrees of freedom")
@pytest.mark.parametrize("name", list(REDUCTIONS))
@given(data=st.data(), dtype=DTYPES, shape=SHAPES)
def test_reductions_over_axis_tuples(name, data, dtype, shape):
    fn, numpy_fn = REDUCTIONS[name]
    array = data.draw(_values(dtype, shape))
    dim = _axes(data, array.ndim)
    keep = data.draw(st.booleans())
    reduced = range(array.ndim) if dim is None else ([dim] if isinstance(dim, int) else dim)
    empty = any(array.shape[a] == 0 for a in reduced) or (dim is None and array.size == 0)
    if name in ("amax", "amin") and empty:
        with pytest.raises((ValueError, IndexError, RuntimeError)):
            fn(ef.tensor(array), dim, keep)
        return
    if name in ("mean", "var (NumPy spelling)") and empty:
        return  # NumPy's mean of nothing is NaN with a warning; PyTorch agrees, nothing to learn here
    if name == "var (NumPy spelling)" and torch is not None:
        torch_fn = lambda x: x.var(dim=dim, keepdim=keep, correction=0)  # noqa: E731
    elif name in ("amax", "amin") and torch is not None:
        torch_fn = lambda x: getattr(torch, name)(x, dim=() if dim is None else dim, keepdim=keep)  # noqa: E731
    else:
        torch_fn = None
    _check(lambda x: fn(x, dim, keep), lambda a: numpy_fn(a, axis=dim, keepdims=keep).astype(dtype),
           [array], torch_fn)


@given(data=st.data(), dtype=DTYPES)
def test_integer_array_indexing_accumulates_repeats(data, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    array = data.draw(_values(dtype, shape))
    index = np.asarray(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=0, max_size=8)),
                       dtype=np.int64)
    _check(lambda x: x[ef.tensor(index)], lambda a: a[index], [array],
           (lambda x: x[torch.tensor(index)]) if torch is not None else None)


@given(data=st.data(), dtype=DTYPES)
def test_boolean_mask_indexing(data, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    array = data.draw(_values(dtype, shape))
    mask = data.draw(hnp.arrays(np.bool_, shape))
    _check(lambda x: x[ef.tensor(mask)], lambda a: a[mask], [array],
           (lambda x: x[torch.tensor(mask)]) if torch is not None else None)


@given(data=st.data())
def test_second_derivatives_match_pytorch(data):
    """d/dx of (d/dx sum(f(x) * w)) for smooth compositions, against PyTorch or finite differences."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    array = data.draw(_values(np.float64, shape, -2, 2))
    weight = data.draw(_values(np.float64, shape, 0.5, 1.5))

    def first_derivative(module, x):
        y = (module.tanh(x) * x + module.sin(x) * module.exp(x * 0.3) + x ** 3 * 0.1).sum()
        return module.autograd.grad(y, x, create_graph=True)[0] if module is torch else \
            ef.grad(y, x, create_graph=True)[0]

    x = ef.tensor(array, requires_grad=True)
    ours = ef.grad((first_derivative(ef, x) * ef.tensor(weight)).sum(), x)[0].numpy()
    if torch is not None:
        tx = torch.tensor(array, requires_grad=True)
        theirs = torch.autograd.grad((first_derivative(torch, tx) * torch.tensor(weight)).sum(), tx)[0].numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    else:
        assert ef.gradgradcheck(lambda t: (first_derivative(ef, t) * ef.tensor(weight)).sum(), [x])


# ----- layers: random geometry, weights copied from PyTorch, outputs and every gradient -----

def _layer_case(data):
    """A random layer with PyTorch's twin and an input of a shape it accepts."""
    kind = data.draw(st.sampled_from(["Linear", "Conv2d", "BatchNorm2d", "LayerNorm", "MaxPool2d", "AvgPool2d",
                                      "Embedding", "LSTM"]))
    batch = data.draw(st.integers(1, 3))
    if kind == "Linear":
        features_in, features_out = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
        lead = data.draw(st.lists(st.integers(0, 3), max_size=2))
        return kind, (features_in, features_out), {"bias": data.draw(st.booleans())}, tuple(lead) + (features_in,)
    if kind == "Conv2d":
        groups = data.draw(st.integers(1, 2))
        channels_in, channels_out = groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
        kernel = data.draw(st.integers(1, 3))
        options = {"stride": data.draw(st.integers(1, 2)), "padding": data.draw(st.integers(0, 1)),
                   "dilation": data.draw(st.integers(1, 2)), "groups": groups, "bias": data.draw(st.booleans())}
        reach = options["dilation"] * (kernel - 1) + 1 - 2 * options["padding"]
        size = data.draw(st.integers(max(reach, 1), max(reach, 1) + 3))
        return kind, (channels_in, channels_out, kernel), options, (batch, channels_in, size, size + 1)
    if kind == "BatchNorm2d":
        channels = data.draw(st.integers(1, 3))
        return kind, (channels,), {}, (batch + 1, channels, data.draw(st.integers(1, 3)), 2)
    if kind == "LayerNorm":
        shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        return kind, (shape,), {}, (batch,) + shape
    if kind in ("MaxPool2d", "AvgPool2d"):
        kernel = data.draw(st.integers(1, 3))
        stride = data.draw(st.integers(1, 3))
        size = data.draw(st.integers(kernel, kernel + 3))
        return kind, (kernel,), {"stride": stride}, (batch, 2, size, size)
    if kind == "Embedding":
        return kind, (6, 3), {}, (batch, data.draw(st.integers(0, 4)))
    layers = data.draw(st.integers(1, 2))
    return kind, (3, 4), {"num_layers": layers, "batch_first": True,
                          "bidirectional": data.draw(st.booleans())}, (batch, data.draw(st.integers(1, 4)), 3)


@pytest.mark.skipif(torch is None, reason="the layer comparison needs PyTorch")
@given(data=st.data())
def test_layers_match_pytorch_on_random_geometry(data):
    kind, args, options, shape = _layer_case(data)
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(*args, **options).double()
    ours = getattr(ef.nn, kind)(*args, **options)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours.to(dtype=ef.float64)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    if kind == "Embedding":
        array = rng.integers(0, args[0], size=shape)
        our_in, their_in = ef.tensor(array), torch.tensor(array)
    else:
        array = rng.standard_normal(shape)
        our_in, their_in = ef.tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)
    our_out, their_out = ours(our_in), theirs(their_in)
    if kind == "LSTM":
        our_out, their_out = our_out[0], their_out[0]
    np.testing.assert_allclose(our_out.detach().numpy(), their_out.detach().numpy(), rtol=1e-9, atol=1e-11)
    seed = rng.uniform(0.5, 1.5, size=tuple(their_out.shape))
    our_out.backward(ef.tensor(seed))
    their_out.backward(torch.tensor(seed))
    if kind != "Embedding":
        np.testing.assert_allclose(our_in.grad.numpy(), their_in.grad.numpy(), rtol=1e-9, atol=1e-11)
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        expected = their_params[name].grad
        got = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        np.testing.assert_allclose(got, expected.numpy() if expected is not None else 0.0, rtol=1e-9, atol=1e-11,
                                   err_msg=f"{kind}{args} {options}: gradient of {name}")
