"""A PyTorch habit on a tensor gets a pointer to easyfit's NumPy name, not a bare error;
torch.nn.functional's `dim=`, `pad`, `one_hot` and `relu(inplace=)` work in
easyfit.nn.functional."""
import inspect
import re

import numpy as np
import pytest

import easyfit as ef
import easyfit.nn.functional as F


@pytest.mark.parametrize("name, hint", [("view", "x.reshape"), ("permute", "x.transpose"),
                                        ("unsqueeze", "ef.expand_dims"), ("dim", "x.ndim"), ("zero_", "x[...] = 0"),
                                        ("add_", "x += y under ef.no_grad()"), ("clamp", "x.clip"),
                                        ("grad_fn", "x.creator")])
def test_pytorch_tensor_attributes_point_to_the_numpy_name(name, hint):
    x = ef.ones(2, 3)
    with pytest.raises(AttributeError, match=f"no attribute '{name}': .*NumPy's names.*{re.escape(hint)}"):
        getattr(x, name)
    assert not hasattr(x, name)


def test_unknown_attributes_stay_plain_attribute_errors():
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'no_such_thing'$"):
        ef.ones(2).no_such_thing


@pytest.mark.parametrize("method", ["sum", "mean", "var", "std", "max", "min", "argmax", "argmin"])
def test_reductions_called_with_dim_name_the_numpy_keyword(method):
    x = ef.ones(2, 3)
    with pytest.raises(TypeError, match=rf"Tensor\.{method}\(\) takes NumPy's argument names: axis= \(not dim=\)"):
        getattr(x, method)(dim=1)
    with pytest.raises(TypeError, match=r"keepdims= \(not keepdim=\)"):
        getattr(x, method)(axis=1, keepdim=True)
    assert getattr(x, method)(axis=1).shape == (2,)
    assert "axis" in inspect.signature(getattr(ef.Tensor, method)).parameters


def test_torch_module_function_names_point_to_easyfit_names():
    with pytest.raises(AttributeError, match=r"no attribute 'cat': .*ef\.concatenate"):
        ef.cat
    with pytest.raises(AttributeError, match=r"^module 'easyfit' has no attribute 'no_such_thing'$"):
        ef.no_such_thing


def test_functional_accepts_torch_dim_names():
    x = ef.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    np.testing.assert_array_equal(F.softmax(x, dim=1).numpy(), F.softmax(x, axis=1).numpy())
    np.testing.assert_array_equal(F.log_softmax(x, dim=0).numpy(), F.log_softmax(x, 0).numpy())
    np.testing.assert_array_equal(F.logsumexp(x, dim=2, keepdim=True).numpy(),
                                  F.logsumexp(x, axis=2, keepdims=True).numpy())
    assert F.flatten(x, start_dim=0, end_dim=1).shape == (6, 4)
    with pytest.raises(TypeError, match="both axis=1 and dim=2"):
        F.softmax(x, axis=1, dim=2)


@pytest.mark.parametrize("widths", [(1, 2), (1, 2, 0, 3), (0, 0, 2, 1, 1, 1)])
def test_functional_pad_takes_pytorch_order_and_is_differentiable(widths):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4)).astype(np.float64)
    out = F.pad(ef.tensor(x), widths, value=0.5).numpy()
    expected = np.pad(x, [(0, 0)] * (3 - len(widths) // 2) + [tuple(widths[i:i + 2]) for i in
                                                                range(len(widths) - 2, -1, -2)],
                      constant_values=0.5)
    np.testing.assert_array_equal(out, expected)
    assert ef.gradcheck(lambda t: F.pad(t, widths), [ef.tensor(x, requires_grad=True)])
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(out, torch.nn.functional.pad(torch.tensor(x), widths, value=0.5).numpy())


def test_functional_pad_refuses_odd_or_too_many_widths():
    with pytest.raises(ValueError, match="even number of widths"):
        F.pad(ef.ones(2, 2), (1, 2, 3))
    with pytest.raises(ValueError, match="at most two per axis of the 1-d input"):
        F.pad(ef.ones(2), (1, 1, 1, 1))


def test_one_hot_as_pytorch():
    labels = np.array([[0, 3], [2, 1]])
    out = F.one_hot(ef.tensor(labels))
    assert out.shape == (2, 2, 4) and out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy().argmax(-1), labels)
    assert F.one_hot(ef.tensor(labels), 6).shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\)"):
        F.one_hot(ef.tensor(labels), 3)
    with pytest.raises(TypeError, match="integer class indices"):
        F.one_hot(ef.tensor([0.0, 1.0]))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(out.numpy(), torch.nn.functional.one_hot(torch.tensor(labels)).numpy())


def test_relu_accepts_inplace_and_returns_a_new_tensor():
    x = ef.tensor([-1.0, 2.0])
    y = F.relu(x, inplace=True)
    np.testing.assert_array_equal(y.numpy(), [0.0, 2.0])
    np.testing.assert_array_equal(x.numpy(), [-1.0, 2.0])
