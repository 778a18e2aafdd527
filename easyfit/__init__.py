"""easyfit: deep-learning training with a fastai-like API on its own autograd engine.

The tensor API lives in `easyfit.core` and is re-exported here with PyTorch's names (NumPy's
keyword names are accepted where they mean the same; docs/from-pytorch.md):

>>> import easyfit as ef
>>> x = ef.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad
tensor([2., 4., 6.])
"""
__version__ = "0.1.0"

from .core import (Tensor, Function, tensor, as_tensor, is_tensor, from_numpy, zeros, ones, full, empty, arange,
                   linspace, eye, rand, randn, randint, randperm, multinomial, zeros_like, ones_like, full_like,
                   empty_like, rand_like, randn_like, randint_like, manual_seed, no_grad, enable_grad,
                   set_grad_enabled, is_grad_enabled, detect_anomaly, AnomalyError, grad, gradcheck, gradgradcheck,
                   exp, log, sqrt, abs, tanh, sigmoid, relu, sin, cos, pow, maximum, minimum, where, clamp, clip,
                   norm, eq, ne, lt, le, gt, ge, isnan, isinf, isfinite, equal, allclose, numel, mm, bmm, matmul,
                   einsum, pad, softmax, log_softmax, cumsum, prod, sum, mean, var, std, max, min, amax, amin, argmax,
                   argmin, sort, argsort, topk, reshape, view, transpose, permute, t, swapaxes, expand_dims,
                   unsqueeze, squeeze, expand, broadcast_to, repeat_interleave, tile, flip, roll, cat, concatenate,
                   stack, split, chunk, narrow, flatten, unflatten, clone, tril, triu, gather, scatter, scatter_add,
                   index_select, masked_fill, device, cuda, accelerator, float, double, half, float16, float32,
                   float64, long, int, short, int8, int16, int32, int64, uint8, bool, bool_, set_num_threads,
                   get_num_threads)
from .core.serialization import save, load
from . import data, nn, optim, serialization, utils
from .learner import Learner, load_learner
from . import onnx  # the onnx package itself loads only on use
from . import distributed  # registers Learner.distrib_ctx's context; MPI itself loads only under mpiexec
from .learner import export as _learner_export

# Learner.export_onnx writes through easyfit.onnx.export: the package root joins the two
# layers, since neither may import the other (DESIGN.md).
_learner_export.register_onnx_exporter(onnx.export)

__all__ = [
    "Tensor", "Function", "tensor", "as_tensor", "is_tensor", "from_numpy", "zeros", "ones", "full", "empty",
    "arange", "linspace", "eye", "rand", "randn", "randint", "randperm", "multinomial", "zeros_like", "ones_like",
    "full_like", "empty_like", "rand_like", "randn_like", "randint_like", "manual_seed", "no_grad", "enable_grad",
    "set_grad_enabled", "is_grad_enabled", "detect_anomaly", "AnomalyError", "grad", "gradcheck", "gradgradcheck",
    "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "sin", "cos", "pow", "maximum", "minimum", "where",
    "clamp", "clip", "norm", "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf", "isfinite", "equal", "allclose",
    "numel", "mm", "bmm", "matmul", "einsum", "pad", "softmax", "log_softmax", "cumsum", "prod", "sum", "mean", "var",
    "std", "max", "min", "amax", "amin", "argmax", "argmin", "sort", "argsort", "topk", "reshape", "view",
    "transpose", "permute", "t", "swapaxes", "expand_dims", "unsqueeze", "squeeze", "expand", "broadcast_to",
    "repeat_interleave", "tile", "flip", "roll", "cat", "concatenate", "stack", "split", "chunk", "narrow", "flatten",
    "unflatten", "clone", "tril", "triu", "gather", "scatter", "scatter_add", "index_select", "masked_fill", "device",
    "cuda", "accelerator", "float", "double", "half", "float16", "float32", "float64", "long", "int", "short", "int8",
    "int16", "int32", "int64", "uint8", "bool", "bool_", "set_num_threads", "get_num_threads", "save", "load", "data", "nn", "optim", "serialization",
    "utils", "Learner", "load_learner",
]


def __getattr__(name):  # PEP 562: only reached for names the module does not have
    if name == "bfloat16":  # rather than Python's "did you mean 'float16'?", which is another format
        raise AttributeError("module 'easyfit' has no attribute 'bfloat16': NumPy, which holds easyfit's arrays, "
                             "has no bfloat16; use float16 or float32 (easyfit.load widens bfloat16 files to float32)")
    raise AttributeError(f"module 'easyfit' has no attribute {name!r}")
