"""Python numbers as operands: `x * 0.5`, `1 - p`, `h / math.sqrt(d)`, `2 ** x`.

They take the scalar ops (one graph input, the number an attribute), keep the tensor's
dtype as PyTorch does, and give PyTorch's values and gradients, first and second order.
"""
import math

import numpy as np
import pytest

import easyfit as ef

SCALAR_FORMS = {
    "x + c": lambda x, c: x + c,
    "c + x": lambda x, c: c + x,
    "x - c": lambda x, c: x - c,
    "c - x": lambda x, c: c - x,
    "x * c": lambda x, c: x * c,
    "c * x": lambda x, c: c * x,
    "x / c": lambda x, c: x / c,
    "c / x": lambda x, c: c / x,
    "x ** c": lambda x, c: x ** c,
    "c ** x": lambda x, c: c ** x,
}


@pytest.mark.parametrize("form", SCALAR_FORMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("scalar", [0.1, 3])
def test_a_python_number_keeps_the_tensors_dtype(form, dtype, scalar):
    x = ef.tensor(np.array([0.5, 1.5, 2.0], dtype=dtype), requires_grad=True)
    y = SCALAR_FORMS[form](x, scalar)
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("form", SCALAR_FORMS)
def test_the_number_is_no_graph_input(form):
    x = ef.tensor(np.array([0.5, 1.5], np.float32), requires_grad=True)
    y = SCALAR_FORMS[form](x, 0.7)
    assert type(y.grad_fn).__name__.endswith("Scalar")
    assert len(y.grad_fn.inputs) == 1 and y.grad_fn.inputs[0] is x


def test_an_int_tensor_keeps_numpy_promotion_and_tensor_operands_keep_their_ops():
    i = ef.tensor(np.array([1, 2, 3], np.int64))
    assert (i * 2).dtype == np.int64
    assert (i + 1).numpy().tolist() == [2, 3, 4]
    x = ef.tensor(np.ones(2, np.float32), requires_grad=True)
    assert type((x * ef.tensor(2.0)).grad_fn).__name__ == "Mul"
    assert type((x * np.float32(2.0)).grad_fn).__name__ == "Mul"   # NumPy scalars: the general path


def test_zero_exponent_has_zero_gradient_even_at_zero():
    x = ef.tensor(np.array([0.0, 2.0], np.float32), requires_grad=True)
    (x ** 0).sum().backward()
    assert x.grad.numpy().tolist() == [0.0, 0.0]


def test_scalar_constants_are_cached_per_dtype_but_signed_zero_is_not_shared():
    x = ef.tensor(np.array([-0.0, 1.0], np.float32))
    assert math.copysign(1, (x * -0.0).numpy()[1]) == -1.0
    assert math.copysign(1, (x * 0.0).numpy()[1]) == 1.0
    assert math.copysign(1, (x + 0.0).numpy()[0]) == 1.0     # -0 + 0 = +0
    assert math.copysign(1, (x - 0.0).numpy()[0]) == -1.0    # -0 - 0 = -0
    assert (ef.tensor(np.ones(2, np.float64)) * 0.1).numpy()[0] == 0.1


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("form", SCALAR_FORMS)
@pytest.mark.parametrize("scalar", [0.3, 2, -1.5])
def test_float32_values_and_gradients_match_pytorch(form, scalar):
    if form == "c ** x" and scalar <= 0:
        pytest.skip("a non-positive base takes the general Pow op")
    rng = np.random.default_rng(0)
    a = (np.abs(rng.standard_normal((4, 5))) + 0.5).astype(np.float32)
    seed = rng.standard_normal((4, 5)).astype(np.float32)
    x, tx = ef.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, ty = SCALAR_FORMS[form](x, scalar), SCALAR_FORMS[form](tx, scalar)
    assert ty.dtype == torch.float32 and y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-7)
    (y * ef.tensor(seed)).sum().backward()
    (ty * torch.tensor(seed)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("form", SCALAR_FORMS)
def test_second_derivatives_match_pytorch(form):
    a = np.array([0.7, 1.3, 2.1])
    x, tx = ef.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y = SCALAR_FORMS[form](x, 1.7)
    ty = SCALAR_FORMS[form](tx, 1.7)
    (g,) = ef.grad((y * y).sum(), [x], create_graph=True)
    (tg,) = torch.autograd.grad((ty * ty).sum(), [tx], create_graph=True)
    np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), rtol=1e-12)
    (gg,) = ef.grad(g.sum(), [x])
    (tgg,) = torch.autograd.grad(tg.sum(), [tx])
    np.testing.assert_allclose(gg.numpy(), tgg.numpy(), rtol=1e-12)

