"""Tensor's arithmetic: the operators `+ - * / ** @`, unary `-` and `abs()`, their ops, and
the elementwise math methods (`x.exp()`, `x.clamp(...)`, `x.mm(y)`, ...).

Each op is a small Function (Add, MulScalar, MatMul, ...). ArithmeticMethods, a base class of
Tensor, holds the methods that call them. The math methods call the functions of the same
name in functions.py, which imports Tensor and so loads after it: they reach it through the
package (`core.functions`).
"""
import math

from .. import core  # the package: Tensor and the op modules that load after it, at call time
from .autograd import _grad_enabled
from .backend import get_array_module
from .shapes import expand_dims, reshape, swapaxes
from .tensor import Function, _PYTHON_NUMBERS, _constant, _operand, _wrap


class ArithmeticMethods:
    """Tensor's operators and elementwise math methods (`x + y`, `x @ w`, `x.exp()`, ...)."""
    __slots__ = ()

    # A Python int or float with a floating tensor takes the scalar ops (AddScalar, ...):
    # the number stays an attribute of the op, not a graph input, so backward neither
    # differentiates it nor sums a broadcast gradient for it. Its dtype is the tensor's
    # (PyTorch's rule: a float32 tensor times 0.5 stays float32).
    def __add__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return AddScalar(other)(self)
        return Add()(self, _operand(other, self))

    def __radd__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return AddScalar(other)(self)
        return Add()(_operand(other, self), self)

    def __sub__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return AddScalar(-other)(self)   # x + (-c) is x - c exactly in IEEE arithmetic
        return Sub()(self, _operand(other, self))

    def __rsub__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return RSubScalar(other)(self)
        return Sub()(_operand(other, self), self)

    def __mul__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return MulScalar(other)(self)
        return Mul()(self, _operand(other, self))

    def __rmul__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return MulScalar(other)(self)
        return Mul()(_operand(other, self), self)

    def __truediv__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return DivScalar(other)(self)
        return Div()(self, _operand(other, self))

    def __rtruediv__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return RDivScalar(other)(self)
        return Div()(_operand(other, self), self)

    def __pow__(self, other):
        if type(other) in _PYTHON_NUMBERS and self.array.dtype.kind in "fc":
            return PowScalar(other)(self)
        return Pow()(self, _operand(other, self))

    def __rpow__(self, other):
        if type(other) in _PYTHON_NUMBERS and other > 0 and self.array.dtype.kind in "fc":
            return RPowScalar(other)(self)
        return Pow()(_operand(other, self), self)

    def __matmul__(self, other):
        return MatMul()(self, _operand(other, self))

    def __rmatmul__(self, other):
        return MatMul()(_operand(other, self), self)

    def __neg__(self):
        return Neg()(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return Abs()(self)

    def neg(self):
        return Neg()(self)

    def pow(self, exponent):
        return self ** exponent

    def add(self, other, alpha=1):
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1):
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def abs(self):
        return Abs()(self)

    def matmul(self, other):
        return matmul(self, other)

    # ----- elementwise math -------------------------------------------------------
    def exp(self):
        return core.functions.exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return core.functions.sqrt(self)

    def tanh(self):
        return core.functions.tanh(self)

    def sigmoid(self):
        return core.functions.sigmoid(self)

    def relu(self):
        return core.functions.relu(self)

    def sin(self):
        return core.functions.sin(self)

    def cos(self):
        return core.functions.cos(self)

    def maximum(self, other):
        return core.functions.maximum(self, other)

    def minimum(self, other):
        return core.functions.minimum(self, other)

    def clamp(self, min=None, max=None):
        return core.functions.clamp(self, min, max)

    def clip(self, min=None, max=None):
        return core.functions.clamp(self, min, max)

    def mm(self, other):
        return core.functions.mm(self, other)

    def bmm(self, other):
        return core.functions.bmm(self, other)


# ----- elementwise arithmetic -------------------------------------------------------

# Without create_graph (grad mode off in backward), the backward of these hot ops works on
# the arrays directly: no op is recorded, so dispatching a Tensor op would only add cost.

class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        a, b = self.inputs
        return (gy if a.requires_grad else None), (gy if b.requires_grad else None)


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        a, b = self.inputs
        gb = None
        if b.requires_grad:
            gb = -gy if _grad_enabled[0] else _wrap(-gy.array)
        return (gy if a.requires_grad else None), gb


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        if not _grad_enabled[0]:
            return (_wrap(gy.array * b.array) if a.requires_grad else None,
                    _wrap(gy.array * a.array) if b.requires_grad else None)
        return (gy * b if a.requires_grad else None,
                gy * a if b.requires_grad else None)


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        if not _grad_enabled[0]:
            ga = _wrap(gy.array / b.array) if a.requires_grad else None
            gb = None
            if b.requires_grad:
                gb = -gy.array * a.array
                gb /= b.array * b.array
                gb = _wrap(gb)
            return ga, gb
        ga = gy / b if a.requires_grad else None
        gb = -gy * a / (b * b) if b.requires_grad else None
        return ga, gb


# ----- arithmetic with a Python number ----------------------------------------------
# The number c is an attribute, not an input: one input, no broadcast-gradient reduction,
# no gradient computed for c. Without create_graph, backward works on the arrays directly
# (no op recorded, no Tensor op dispatched); under it, backward is written with ops so it
# can be differentiated again.

class AddScalar(Function):
    """x + c (and x - c, as x + (-c))."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return a + _constant(self.scalar, a)

    def backward(self, gy):
        return gy


class RSubScalar(Function):
    """c - x."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return _constant(self.scalar, a) - a

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(-gy.array)
        return -gy


class MulScalar(Function):
    """x * c."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return a * _constant(self.scalar, a)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(gy.array * _constant(self.scalar, gy.array))
        return gy * self.scalar


class DivScalar(Function):
    """x / c."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return a / _constant(self.scalar, a)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(gy.array / _constant(self.scalar, gy.array))
        return gy / self.scalar


class RDivScalar(Function):
    """c / x; its gradient -gy * c / x**2."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return _constant(self.scalar, a) / a

    def backward(self, gy):
        x = self.inputs[0]
        if not _grad_enabled[0]:
            xa = x.array
            g = gy.array * _constant(-self.scalar, xa)
            g /= xa * xa
            return _wrap(g)
        return gy * -self.scalar / (x * x)


class PowScalar(Function):
    """x ** c; its gradient gy * c * x ** (c - 1), and 0 for c == 0 (as in PyTorch)."""

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return a ** self.scalar   # NumPy's own fast paths for 2, 0.5, -1 take the Python number

    def backward(self, gy):
        c, x = self.scalar, self.inputs[0]
        if c == 0:
            return _wrap(get_array_module(gy.array).zeros_like(gy.array))
        if not _grad_enabled[0]:
            xa = x.array
            g = xa * _constant(c, xa) if c == 2 else (xa ** _constant(c - 1, xa)) * _constant(c, xa)
            g *= gy.array
            return _wrap(g)
        return gy * (x ** (c - 1) * c)


class RPowScalar(Function):
    """c ** x for c > 0; its gradient gy * c ** x * log(c)."""
    save_outputs = True

    def __init__(self, scalar):
        self.scalar = scalar

    def forward(self, a):
        return _constant(self.scalar, a) ** a

    def backward(self, gy):
        log_c = math.log(self.scalar)
        if not _grad_enabled[0]:
            g = gy.array * self.output().array
            g *= _constant(log_c, g)
            return _wrap(g)
        return gy * self.output() * log_c


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, gy):
        return -gy if _grad_enabled[0] else _wrap(-gy.array)


class Pow(Function):
    def forward(self, a, b):
        return a ** b

    def backward(self, gy):
        # PyTorch's subgradients where the formulas meet 0 * inf: x ** 0 has slope 0 at
        # x == 0 (not NaN), and the exponent's slope is 0 where the base is 0 and b >= 0.
        a, b = self.inputs
        ga = gb = None
        if a.requires_grad:
            zero_exponent = _wrap((b.array == 0).astype(gy.dtype))
            ga = gy * b * a ** (b - 1 + zero_exponent)
        if b.requires_grad:
            zero_base = _wrap(((a.array == 0) & (b.array >= 0)).astype(gy.dtype))
            gb = gy * (a ** b) * log(a + zero_base)
        return ga, gb


class Abs(Function):
    def forward(self, a):
        return abs(a)

    def backward(self, gy):
        a = self.inputs[0]
        return gy * _wrap(get_array_module(a.array).sign(a.array))


class Log(Function):
    def forward(self, a):
        return get_array_module(a).log(a)

    def backward(self, gy):
        return gy / self.inputs[0]


def log(x):
    """Elementwise natural logarithm."""
    return Log()(x)


class Clip(Function):
    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, a):
        return get_array_module(a).clip(a, self.low, self.high)

    def backward(self, gy):
        a = self.inputs[0].array
        inside = True
        if self.low is not None:
            inside = a >= self.low
        if self.high is not None:
            inside = inside & (a <= self.high)
        return gy * _wrap(inside.astype(gy.dtype))


def clip(x, min=None, max=None):
    """Clamp to [min, max]; the gradient flows where the input lies inside."""
    return Clip(min, max)(x)


# ----- matmul -----------------------------------------------------------------------

class MatMul(Function):
    def forward(self, a, b):
        return a @ b

    def backward(self, gy):
        a, b = self.inputs
        if a.ndim == 2 and b.ndim == 2:
            return (gy @ b.T if a.requires_grad else None,
                    a.T @ gy if b.requires_grad else None)
        # 1-D operands act as a row (a) or column (b) vector, as in NumPy.
        a2 = a if a.ndim > 1 else reshape(a, (1, -1))
        b2 = b if b.ndim > 1 else reshape(b, (-1, 1))
        g2 = gy
        if a.ndim == 1:
            g2 = expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = expand_dims(g2, -1)
        ga = gb = None
        if a.requires_grad:
            ga = g2 @ swapaxes(b2, -1, -2)
            if a.ndim == 1:
                ga = reshape(ga, ga.shape[:-2] + ga.shape[-1:])
        if b.requires_grad:
            gb = swapaxes(a2, -1, -2) @ g2
            if b.ndim == 1:
                gb = reshape(gb, gb.shape[:-1])
        return ga, gb  # batch axes that were broadcast are summed away by the engine


def matmul(a, b):
    """Matrix product with NumPy's rules for 1-D and batched (stacked) operands."""
    return MatMul()(a, b)
