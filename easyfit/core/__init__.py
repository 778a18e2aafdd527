"""The autograd core: Tensor, ops with NumPy names, and the backward engine."""
from . import backend
from .allocator import tune_malloc
from .autograd import (no_grad, enable_grad, set_grad_enabled, is_grad_enabled, detect_anomaly,
                       is_anomaly_enabled, AnomalyError)
from .tensor import Tensor, Function, DEFAULT_FLOAT
from .functions import (exp, log, sqrt, abs, tanh, sigmoid, relu, maximum, minimum, where, reshape,
                        transpose, swapaxes, expand_dims, squeeze, broadcast_to, sum_to, concatenate,
                        stack, split, matmul, einsum, pad, sum, mean, var, max, min, argmax, argmin, clip)
from .creation import (tensor, from_numpy, zeros, ones, full, empty, arange, eye, rand, randn,
                       zeros_like, ones_like)
from .device import device
from .random import manual_seed, default_generator, get_rng_state, set_rng_state
from .gradients import grad, gradcheck, gradgradcheck
from . import cuda

from numpy import float16, float32, float64, int32, int64, bool_  # dtype names: easyfit.float32, ...

tune_malloc()
