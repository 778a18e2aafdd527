"""easyfit: deep-learning training with a fastai-like API on its own autograd engine.

The tensor API lives in `easyfit.core` and is re-exported here:

>>> import easyfit as ef
>>> x = ef.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad
tensor([2., 4., 6.])
"""
__version__ = "0.1.0"

from .core import (Tensor, Function, tensor, from_numpy, zeros, ones, full, empty, arange, eye, rand,
                   randn, zeros_like, ones_like, manual_seed, no_grad, enable_grad, set_grad_enabled,
                   is_grad_enabled, detect_anomaly, AnomalyError, grad, gradcheck, gradgradcheck, exp, log,
                   sqrt, abs, tanh, sigmoid, relu, maximum, minimum, where, reshape, transpose, swapaxes,
                   expand_dims, squeeze, broadcast_to, concatenate, stack, split, matmul, einsum, pad, sum,
                   mean, var, max, min, argmax, argmin, clip, cuda, float16, float32, float64, int32,
                   int64, bool_)
from .core.serialization import save, load
from .learner import Learner, load_learner
from . import distributed  # registers Learner.distrib_ctx's context; MPI itself loads only under mpiexec

__all__ = [
    "Tensor", "Function", "tensor", "from_numpy", "zeros", "ones", "full", "empty", "arange", "eye", "rand",
    "randn", "zeros_like", "ones_like", "manual_seed", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "detect_anomaly", "AnomalyError", "grad", "gradcheck", "gradgradcheck", "exp", "log",
    "sqrt", "abs", "tanh", "sigmoid", "relu", "maximum", "minimum", "where", "reshape", "transpose", "swapaxes",
    "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack", "split", "matmul", "einsum", "pad", "sum",
    "mean", "var", "max", "min", "argmax", "argmin", "clip", "cuda", "float16", "float32", "float64", "int32",
    "int64", "bool_", "save", "load", "Learner", "load_learner",
]

# torch.* names that easyfit spells the NumPy way, with what to write instead.
_TORCH_FUNCTIONS = {
    "cat": "ef.concatenate(tensors, axis)", "clamp": "ef.clip(x, min, max)",
    "unsqueeze": "ef.expand_dims(x, axis)", "permute": "ef.transpose(x, axes)",
    "softmax": "easyfit.nn.functional.softmax(x, axis)", "numel": "x.size",
    "device": "a string, 'cpu' or 'cuda' ('cuda:N'), wherever a device is asked for",
    "flatten": "x.reshape(-1), or easyfit.nn.functional.flatten(x, start_axis)",
}


def __getattr__(name):  # PEP 562: only reached for names the module does not have
    hint = _TORCH_FUNCTIONS.get(name)
    if hint is None:
        raise AttributeError(f"module 'easyfit' has no attribute {name!r}")
    raise AttributeError(f"module 'easyfit' has no attribute {name!r}: easyfit's tensor functions use "
                         f"NumPy's names (PyTorch's for layers and optimizers); write {hint}")
