"""Gradients where an op is not smooth: at 0, at ties, and on constant inputs.

Finite differences cannot decide these points (the one-sided slopes differ), so PyTorch's
choice is the reference: a parameter initialised exactly at a kink must train as it would
in PyTorch (softplus at 0 has slope 0.5, not 0), and a constant input must give the zero
gradient PyTorch gives, never NaN (std of equal values, x ** 0 at 0, the norm of zeros).
"""
import numpy as np
import pytest

import easyfit as ef
from easyfit.nn import functional as F

torch = pytest.importorskip("torch")
tF = torch.nn.functional

# Inputs that sit on the kinks: zeros, exact ties, and values equal to a clamp bound.
AT_ZERO = np.array([-1.0, 0.0, 0.0, 2.0])
TIES = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
CONSTANT = np.full((2, 3), 1.5)
ZEROS = np.zeros((2, 3))

# name -> (easyfit function, torch function, input)
CASES = {
    "relu at 0": (ef.relu, torch.relu, AT_ZERO),
    "abs at 0": (abs, abs, AT_ZERO),
    "sign-free sqrt(x*x + 0) at 1": (lambda x: ef.sqrt(x * x), lambda x: torch.sqrt(x * x), TIES),
    "clamp at its bounds": (lambda x: ef.clamp(x, 0.0, 2.0), lambda x: torch.clamp(x, 0.0, 2.0), AT_ZERO),
    "clip (NumPy spelling) at its bounds": (lambda x: ef.clip(x, 0.0, 2.0), lambda x: torch.clamp(x, 0.0, 2.0),
                                            AT_ZERO),
    "maximum at ties": (lambda x: ef.maximum(x, x[:, 1:2]), lambda x: torch.maximum(x, x[:, 1:2]), TIES),
    "minimum at ties": (lambda x: ef.minimum(x, x[:, 1:2]), lambda x: torch.minimum(x, x[:, 1:2]), TIES),
    "max of all, tied": (lambda x: x.max(), lambda x: x.max(), TIES),
    "min of all, tied": (lambda x: x.min(), lambda x: x.min(), TIES),
    "max over dim, tied (values)": (lambda x: x.max(dim=1)[0], lambda x: x.max(dim=1)[0], TIES),
    "min over dim, tied (values)": (lambda x: x.min(dim=1)[0], lambda x: x.min(dim=1)[0], TIES),
    "amax over dim, tied": (lambda x: ef.amax(x, dim=1), lambda x: torch.amax(x, dim=1), TIES),
    "softplus at 0": (F.softplus, tF.softplus, AT_ZERO),
    "leaky_relu at 0": (F.leaky_relu, tF.leaky_relu, AT_ZERO),
    "silu at 0": (F.silu, tF.silu, AT_ZERO),
    "softplus with beta and threshold": (lambda x: F.softplus(x * 15, beta=2.0, threshold=5.0),
                                         lambda x: tF.softplus(x * 15, beta=2.0, threshold=5.0), AT_ZERO),
    "gelu at 0": (F.gelu, tF.gelu, AT_ZERO),
    "std of equal values": (lambda x: x.std(), lambda x: x.std(), CONSTANT),
    "std over dim of equal values": (lambda x: x.std(dim=1), lambda x: x.std(dim=1), CONSTANT),
    "var of equal values": (lambda x: x.var(), lambda x: x.var(), CONSTANT),
    "x ** 0 at 0": (lambda x: x ** 0, lambda x: x ** 0, AT_ZERO),
    "x ** 0.0 at 0": (lambda x: x ** 0.0, lambda x: x ** 0.0, AT_ZERO),
    "pow(x, 2) at 0": (lambda x: x.pow(2), lambda x: x.pow(2), AT_ZERO),
    "x ** 1 at 0": (lambda x: x ** 1, lambda x: x ** 1, AT_ZERO),
    "norm of zeros": (lambda x: x.norm(), lambda x: x.norm(), ZEROS),
    "norm over dim of zeros": (lambda x: x.norm(dim=1), lambda x: x.norm(dim=1), ZEROS),
    "layer_norm of a constant row": (lambda x: F.layer_norm(x, (3,)), lambda x: tF.layer_norm(x, (3,)), CONSTANT),
    "log_softmax of equal values": (lambda x: F.log_softmax(x, dim=1), lambda x: tF.log_softmax(x, dim=1),
                                    CONSTANT),
}


def _gradients(framework, fn, array, seed):
    if framework == "torch":
        x = torch.tensor(array, dtype=torch.float64, requires_grad=True)
        out = fn(x)
        out.backward(torch.tensor(seed, dtype=torch.float64))
        return out.detach().numpy(), x.grad.numpy()
    x = ef.tensor(array, dtype=ef.float64, requires_grad=True)
    out = fn(x)
    out.backward(ef.tensor(seed, dtype=ef.float64))
    return out.numpy(), x.grad.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_at_kinks_and_constants_matches_pytorch(name):
    fn, torch_fn, array = CASES[name]
    out_shape = torch_fn(torch.tensor(array, dtype=torch.float64)).shape
    seed = np.random.default_rng(0).uniform(0.5, 1.5, size=tuple(out_shape))
    ours_out, ours_grad = _gradients("easyfit", fn, array, seed)
    torch_out, torch_grad = _gradients("torch", torch_fn, array, seed)
    np.testing.assert_allclose(ours_out, torch_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours_grad, torch_grad, rtol=1e-10, atol=1e-12, equal_nan=False,
                               err_msg=f"{name}: gradient differs from PyTorch's")


def test_a_parameter_at_zero_trains_through_softplus():
    """The issue's report: softplus had zero slope at exactly 0, so this weight never moved."""
    w = ef.nn.Parameter(ef.zeros(3))
    opt = ef.optim.SGD([w], lr=0.1)
    F.softplus(w).sum().backward()
    opt.step()
    np.testing.assert_allclose(w.numpy(), -0.05, rtol=1e-6)
