"""easyfit.nn.init against torch.nn.init: fans, gains and bounds computed by PyTorch, and the
distributions checked statistically on large tensors with fixed seeds."""
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit.nn import init

SHAPES = [(30, 20), (16, 8, 3, 3), (10, 4, 5), (7, 3, 2, 2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_equal_torchs(shape):
    torch = pytest.importorskip("torch")
    assert init.calculate_fan_in_and_fan_out(ef.zeros(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    assert init._calculate_fan_in_and_fan_out(ef.zeros(*shape)) == init.calculate_fan_in_and_fan_out(ef.zeros(*shape))


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv1d", None), ("conv_transpose2d", None), ("sigmoid", None), ("tanh", None),
    ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)])
def test_gains_equal_torchs(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(torch.nn.init.calculate_gain(nonlinearity, param))


def sample(fill, shape=(400, 500), seed=0):
    tensor = ef.zeros(*shape, dtype=np.float64)
    generator = np.random.default_rng(seed)
    assert fill(tensor, generator) is tensor
    return tensor.numpy()


def assert_moments(values, mean, std):
    """The sample mean within 5 standard errors, the std within 2%."""
    count = values.size
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(count)
    assert values.std() == pytest.approx(std, rel=0.02)


def test_uniform_and_normal():
    values = sample(lambda t, g: init.uniform_(t, -2.0, 3.0, generator=g))
    assert values.min() >= -2.0 and values.max() <= 3.0
    assert_moments(values, 0.5, 5 / math.sqrt(12))
    assert_moments(sample(lambda t, g: init.normal_(t, 1.5, 0.3, generator=g)), 1.5, 0.3)


@pytest.mark.parametrize("kwargs", [dict(), dict(a=0.2), dict(mode="fan_out", nonlinearity="relu"),
                                    dict(a=math.sqrt(5))], ids=str)
def test_kaiming_matches_torchs_bound_and_std(kwargs):
    torch = pytest.importorskip("torch")
    shape = (200, 100, 3, 3)
    theirs = torch.nn.init.kaiming_uniform_(torch.zeros(shape, dtype=torch.float64), **kwargs).numpy()
    ours = sample(lambda t, g: init.kaiming_uniform_(t, generator=g, **kwargs), shape)
    bound = theirs.std() * math.sqrt(3)  # U(-b, b) has std b / sqrt(3)
    assert np.abs(ours).max() <= bound * 1.01 and np.abs(ours).max() >= bound * 0.99
    assert ours.std() == pytest.approx(theirs.std(), rel=0.01)
    theirs = torch.nn.init.kaiming_normal_(torch.zeros(shape, dtype=torch.float64), **kwargs).numpy()
    ours = sample(lambda t, g: init.kaiming_normal_(t, generator=g, **kwargs), shape)
    fan = init.calculate_fan_in_and_fan_out(ef.zeros(*shape))[1 if kwargs.get("mode") == "fan_out" else 0]
    expected = init.calculate_gain(kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0)) / math.sqrt(fan)
    assert_moments(ours, 0.0, expected)
    assert theirs.std() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier_matches_torch(gain):
    torch = pytest.importorskip("torch")
    shape = (300, 200, 2)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    ours = sample(lambda t, g: init.xavier_uniform_(t, gain=gain, generator=g), shape)
    assert bound * 0.99 <= np.abs(ours).max() <= bound
    assert_moments(ours, 0.0, bound / math.sqrt(3))
    assert_moments(sample(lambda t, g: init.xavier_normal_(t, gain, generator=g), shape), 0.0,
                   gain * math.sqrt(2 / (fan_in + fan_out)))


def test_trunc_normal_stays_in_bounds_with_torchs_moments():
    torch = pytest.importorskip("torch")
    ours = sample(lambda t, g: init.trunc_normal_(t, mean=0.5, std=1.0, a=-0.5, b=2.0, generator=g))
    theirs = torch.nn.init.trunc_normal_(torch.zeros(400, 500, dtype=torch.float64), mean=0.5, std=1.0, a=-0.5,
                                         b=2.0).numpy()
    assert ours.min() >= -0.5 and ours.max() <= 2.0
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.01)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(ef.zeros(3), a=1.0, b=0.0)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 2, 3)])
def test_orthogonal(shape):
    torch = pytest.importorskip("torch")
    w = sample(lambda t, g: init.orthogonal_(t, gain=2.0, generator=g), shape).reshape(shape[0], -1)
    rows, cols = w.shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-10)
    theirs = torch.nn.init.orthogonal_(torch.zeros(shape, dtype=torch.float64), gain=2.0).reshape(rows, -1).numpy()
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), np.linalg.svd(theirs, compute_uv=False))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(ef.zeros(4))


def test_eye_dirac_sparse_constant_like_torch():
    torch = pytest.importorskip("torch")
    for shape in [(3, 5), (5, 3)]:
        np.testing.assert_array_equal(init.eye_(ef.zeros(*shape)).numpy(), torch.nn.init.eye_(torch.zeros(shape)))
    for shape, groups in [((4, 4, 3, 3), 1), ((6, 2, 3), 2), ((4, 6, 3, 3, 3), 2), ((6, 3, 2, 2), 3)]:
        np.testing.assert_array_equal(init.dirac_(ef.zeros(*shape), groups).numpy(),
                                      torch.nn.init.dirac_(torch.zeros(shape), groups).numpy())
    values = init.sparse_(ef.zeros(50, 40), sparsity=0.3, std=0.05).numpy()
    assert all(int((values[:, c] == 0).sum()) == 15 for c in range(40))
    assert values[values != 0].std() == pytest.approx(0.05, rel=0.1)
    assert np.all(init.constant_(ef.zeros(2, 2), val=0.5).numpy() == 0.5)


def test_seeded_draws_repeat_and_generator_is_checked():
    ef.manual_seed(3)
    first = init.normal_(ef.zeros(5)).numpy().copy()
    ef.manual_seed(3)
    np.testing.assert_array_equal(init.normal_(ef.zeros(5)).numpy(), first)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        init.uniform_(ef.zeros(3), generator=42)
