"""The autograd core: Tensor, its ops (PyTorch's names, NumPy's accepted), and the backward engine."""
from . import backend
from .allocator import tune_malloc
from .autograd import (no_grad, enable_grad, set_grad_enabled, is_grad_enabled, detect_anomaly,
                       is_anomaly_enabled, AnomalyError)
from .tensor import (Tensor, Function, DEFAULT_FLOAT, reshape, transpose, swapaxes, expand_dims, squeeze,
                     broadcast_to, sum_to, matmul, sum, mean, var, std, max, min, amax, amin, argmax, argmin, sort,
                     argsort, log)
from .functions import (exp, sqrt, abs, tanh, sigmoid, relu, sin, cos, pow, maximum, minimum, where, clamp, norm, eq,
                        ne, lt, le, gt, ge, isnan, isinf, isfinite, equal, allclose, numel, mm, bmm, softmax,
                        log_softmax, cumsum, prod, cat, concatenate, stack, einsum, pad)
from .layout import (view, unsqueeze, expand, permute, t, repeat, tile, repeat_interleave, flip, roll, split,
                     chunk, narrow, flatten, unflatten, clone, tril, triu)
from .indexing import gather, scatter, scatter_add, index_select, masked_fill
from .sorting import topk
from .creation import (tensor, as_tensor, is_tensor, from_numpy, zeros, ones, full, empty, arange, linspace, eye,
                       rand, randn, randint, randperm, multinomial, zeros_like, ones_like, full_like, empty_like,
                       rand_like, randn_like, randint_like)
from .random import manual_seed, default_generator, get_rng_state, set_rng_state
from .gradients import grad, gradcheck, gradgradcheck
from .dtypes import (float, double, half, float16, float32, float64, long, int, short, int8, int16, int32, int64,
                     uint8, bool, bool_)
from .devices import device
from .threads import set_num_threads, get_num_threads
from . import cuda, accelerator

clip = clamp  # NumPy's name for clamp

tune_malloc()
