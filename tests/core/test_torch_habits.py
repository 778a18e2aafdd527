"""A PyTorch habit on a tensor gets a pointer to easyfit's NumPy name, not a bare error;
torch.nn.functional's `dim=` works in easyfit.nn.functional."""
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
