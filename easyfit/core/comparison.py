"""Tensor's comparisons: `== != < <= > >=` and their names as methods (`eq, ne, lt, le, gt, ge`),
`isnan`, `isinf`, `isfinite`, `all`, `any`, `equal` and `allclose`.

Comparisons give boolean tensors and carry no gradient. Each operator runs a Compare op rather
than the bare NumPy ufunc, so that tracing (ONNX export) sees it.
"""
import numpy as np

from .backend import get_array_module
from .spellings import numpy_spellings
from .tensor import Function, _operand, _wrap


class ComparisonMethods:
    """Tensor's comparisons and tests (`x < y`, `x.eq(y)`, `x.isnan()`, `x.all()`, ...)."""
    __slots__ = ()

    # Comparisons give boolean tensors and carry no gradient.
    def __eq__(self, other):
        return _compare(np.equal, self, other)

    def __ne__(self, other):
        return _compare(np.not_equal, self, other)

    def __lt__(self, other):
        return _compare(np.less, self, other)

    def __le__(self, other):
        return _compare(np.less_equal, self, other)

    def __gt__(self, other):
        return _compare(np.greater, self, other)

    def __ge__(self, other):
        return _compare(np.greater_equal, self, other)

    # Defining __eq__ would leave tensors unhashable: they hash by identity, as in PyTorch.
    __hash__ = object.__hash__

    # ----- comparisons as methods -------------------------------------------------
    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def isnan(self):
        return _wrap(get_array_module(self.array).isnan(self.array))

    def isinf(self):
        return _wrap(get_array_module(self.array).isinf(self.array))

    def isfinite(self):
        return _wrap(get_array_module(self.array).isfinite(self.array))

    @numpy_spellings
    def all(self, dim=None, keepdim=False):
        return _wrap(get_array_module(self.array).all(self.array, axis=dim, keepdims=keepdim))

    @numpy_spellings
    def any(self, dim=None, keepdim=False):
        return _wrap(get_array_module(self.array).any(self.array, axis=dim, keepdims=keepdim))

    def equal(self, other):
        """True when both tensors have the same shape and elements."""
        return self.shape == other.shape and bool((self.array == other.array).all())

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        xp = get_array_module(self.array)
        return bool(xp.allclose(self.array, _operand(other, self).array, rtol=rtol, atol=atol, equal_nan=equal_nan))


def _compare(ufunc, a, b):
    return Compare(ufunc.__name__)(a, _operand(b, a))


class Compare(Function):
    """An elementwise comparison (`name` is the ufunc: 'less', 'equal', ...); a boolean
    result, so no gradient. An op, so that tracing (ONNX export) sees it."""

    def __init__(self, name):
        self.name = name

    def forward(self, a, b):
        return getattr(get_array_module(a), self.name)(a, b)
