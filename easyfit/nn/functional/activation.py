"""Activations and the softmax family (softmax, log_softmax, logsumexp), GELU and erf."""
import math

import numpy as np

from ...core.backend import get_array_module
from ...core.functions import LogSoftmax, Softmax, exp, relu as _relu, sigmoid, tanh, where
from ...core.tensor import Function, reshape, sum, Tensor
from ._arguments import _axis


def softmax(x, axis=-1, *, dim=None):
    """exp(x) / sum(exp(x)) along `axis` (or PyTorch's `dim`), shifted by the maximum so it cannot overflow."""
    return Softmax(_axis(axis, dim, -1, "softmax") % x.ndim)(x)


def log_softmax(x, axis=-1, *, dim=None):
    """log(softmax(x)) along `axis` (or PyTorch's `dim`), computed stably (no log of a rounded zero)."""
    return LogSoftmax(_axis(axis, dim, -1, "log_softmax") % x.ndim)(x)


class LogSumExp(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        xp = get_array_module(a)
        m = a.max(axis=self.axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        y = xp.log(xp.exp(a - m).sum(axis=self.axis, keepdims=True)) + m
        return y if self.keepdims else y.squeeze(axis=self.axis)

    def backward(self, gy):
        x = self.inputs[0]
        if not self.keepdims:
            gy = reshape(gy, tuple(1 if i in self.axis else n for i, n in enumerate(x.shape)))
        return gy * _softmax_over(x, self.axis)


def _softmax_over(x, axes):
    """Softmax over several axes at once (used by logsumexp's gradient)."""
    if len(axes) == 1:
        return softmax(x, axes[0])
    shifted = x - Tensor(x.array.max(axis=axes, keepdims=True))
    e = exp(shifted)
    return e / sum(e, axis=axes, keepdims=True)


def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """log(sum(exp(x))) over `axis`, computed without overflow (PyTorch's dim/keepdim also accepted)."""
    axis = _axis(axis, dim, None, "logsumexp")
    keepdims = _axis(keepdims, keepdim, False, "logsumexp")
    axes = tuple(range(x.ndim)) if axis is None else tuple(sorted(
        a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))))
    return LogSumExp(axes, keepdims)(x)


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): NumPy has no erf and SciPy is not a dependency.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


_exact_erf = np.frompyfunc(math.erf, 1, 1)


def _erf_array(a):
    """erf: exact (the C library's) for NumPy float64, where models are checked against
    PyTorch to 1e-12; otherwise a polynomial good to 1.5e-7, below float32's resolution of
    the results that matter (GELU's CDF), at a fraction of the cost."""
    if isinstance(a, np.ndarray) and a.dtype == np.float64:
        return _exact_erf(a).astype(np.float64)
    xp = get_array_module(a)
    sign = xp.sign(a)
    z = xp.abs(a)
    t = 1.0 / (1.0 + _ERF_P * z)
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return (sign * (1.0 - poly * xp.exp(-z * z))).astype(a.dtype, copy=False)


class Erf(Function):
    def forward(self, a):
        return _erf_array(a)

    def backward(self, gy):
        x = self.inputs[0]
        return gy * (exp(-(x * x)) * (2.0 / math.sqrt(math.pi)))


def erf(x):
    """The error function: exact in float64 on the CPU, to about 1.5e-7 otherwise."""
    return Erf()(x)


class GELU(Function):
    """x * Phi(x), Phi the standard normal CDF (PyTorch's approximate='none')."""

    def forward(self, a):
        cdf = _erf_array(a * a.dtype.type(1 / math.sqrt(2)))
        cdf += 1
        cdf *= 0.5
        cdf *= a
        return cdf

    def backward(self, gy):
        x = self.inputs[0]
        cdf = (erf(x * (1 / math.sqrt(2))) + 1.0) * 0.5
        pdf = exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
        return gy * (cdf + x * pdf)


def gelu(x, approximate="none"):
    """GELU; approximate='tanh' gives the tanh approximation, as in PyTorch."""
    if approximate == "none":
        return GELU()(x)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * 0.5 * (tanh(inner) + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def relu(x, inplace=False):
    """max(x, 0) elementwise. `inplace` is accepted so PyTorch code runs; the result is always new."""
    return _relu(x)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x."""
    return where(x > 0, x, x * negative_slope)  # a traced comparison: ONNX export follows it


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return x * sigmoid(x)


class Softplus(Function):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (PyTorch's)."""

    def __init__(self, beta, threshold):
        self.beta, self.threshold = beta, threshold

    def forward(self, a):
        xp = get_array_module(a)
        scaled = a * self.beta
        return xp.where(scaled > self.threshold, a, xp.logaddexp(0, scaled) / self.beta)

    def backward(self, gy):
        # sigmoid(beta * x): 0.5 at x == 0, so a weight initialised at 0 still trains.
        x = self.inputs[0]
        linear = (x.array * self.beta) > self.threshold
        return where(linear, gy, gy * sigmoid(x * self.beta))


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta without overflow; linear where beta * x > threshold (PyTorch's)."""
    return Softplus(beta, threshold)(x)


