"""Tensor's in-place changes: augmented assignment (`+= -= *= /=`) and PyTorch's `*_` methods
(`add_`, `mul_`, `clamp_`, `copy_`, `zero_`, `normal_`, ...).

easyfit records no in-place op. Augmented assignment updates the array in place where nothing
is recorded (under no_grad, as an optimizer step) and otherwise rebinds the name to an
out-of-place result; each `*_` method computes its result out of place and writes it into the
tensor's memory, refusing a tensor whose gradient the write would make wrong. A tracer sees
every write through set_write_hook (tensor.py).
"""
import builtins

import numpy as np

from .. import core  # the package: Tensor and the op modules that load after it, at call time
from .arithmetic import Add, Div, Mul, Sub
from .autograd import _grad_enabled
from .backend import get_array_module, to_device
from .random import default_generator
from .tensor import _operand, _write_hook


class InPlaceMethods:
    """Tensor's in-place methods (`x += y`, `x.add_(y)`, `x.zero_()`, `x.normal_()`, ...)."""
    __slots__ = ()

    # Augmented assignment follows PyTorch: `p -= lr * p.grad` under no_grad updates p's
    # array in place (an optimizer step written by hand). Where the op must be recorded
    # for backward, it runs out of place instead and the name is rebound to the result
    # (correct gradients; other references keep the old value), since easyfit records no
    # in-place ops; a leaf that requires grad refuses, as in PyTorch.
    def __iadd__(self, other):
        return self._augmented(other, Add, "+=", "add")

    def __isub__(self, other):
        return self._augmented(other, Sub, "-=", "subtract")

    def __imul__(self, other):
        return self._augmented(other, Mul, "*=", "multiply")

    def __itruediv__(self, other):
        return self._augmented(other, Div, "/=", "true_divide")

    def _augmented(self, other, function, op, ufunc_name):
        other = _operand(other, self)
        if _grad_enabled[0] and (self.requires_grad or other.requires_grad):
            if self.creator is None and self.requires_grad:
                raise RuntimeError(
                    f"in-place {op} on a leaf tensor that requires grad (shape {self.shape}) would not be "
                    f"differentiable; update it under easyfit.no_grad() (as an optimizer step does) or "
                    f"change its .array")
            return function()(self, other)
        if self.creator is not None:
            return function()(self, other)  # its array may be saved for a graph's backward: keep it
        ufunc = getattr(get_array_module(self.array), ufunc_name)
        try:
            ufunc(self.array, other.array, out=self.array, casting="same_kind")
        except ValueError as error:
            raise ValueError(f"in-place {op} on a tensor of shape {self.shape} {self.array.dtype} with an "
                             f"operand of shape {other.shape} {other.array.dtype}: {error}") from error
        return self

    # Each computes its result out of place and writes it into this tensor's memory, so
    # `.data` views and parameters see the change. easyfit records no in-place op, so,
    # as PyTorch does for a leaf, a tensor in a graph refuses (see _write).
    def add_(self, other, alpha=1):
        return self._write("add_", lambda: self.add(other, alpha), other)

    def sub_(self, other, alpha=1):
        return self._write("sub_", lambda: self.sub(other, alpha), other)

    def mul_(self, other):
        return self._write("mul_", lambda: self * other, other)

    def div_(self, other):
        return self._write("div_", lambda: self / other, other)

    def pow_(self, exponent):
        return self._write("pow_", lambda: self ** exponent, exponent)

    def neg_(self):
        return self._write("neg_", lambda: -self)

    def abs_(self):
        return self._write("abs_", lambda: abs(self))

    def exp_(self):
        return self._write("exp_", lambda: self.exp())

    def log_(self):
        return self._write("log_", lambda: self.log())

    def sqrt_(self):
        return self._write("sqrt_", lambda: self.sqrt())

    def relu_(self):
        return self._write("relu_", lambda: self.relu())

    def sigmoid_(self):
        return self._write("sigmoid_", lambda: self.sigmoid())

    def tanh_(self):
        return self._write("tanh_", lambda: self.tanh())

    def clamp_(self, min=None, max=None):
        return self._write("clamp_", lambda: self.clamp(min, max), min, max)

    clip_ = clamp_

    def addcmul_(self, tensor1, tensor2, value=1):
        return self._write("addcmul_", lambda: self + value * tensor1 * tensor2, tensor1, tensor2)

    def addcdiv_(self, tensor1, tensor2, value=1):
        return self._write("addcdiv_", lambda: self + value * tensor1 / tensor2, tensor1, tensor2)

    def lerp_(self, end, weight):
        return self._write("lerp_", lambda: self + weight * (end - self), end, weight)

    def masked_fill_(self, mask, value):
        return self._write("masked_fill_", lambda: self.masked_fill(mask, value), value)

    def scatter_(self, dim, index, src=None, *, value=None):
        return self._write("scatter_", lambda: self.scatter(dim, index, src, value=value), src)

    def scatter_add_(self, dim, index, src):
        return self._write("scatter_add_", lambda: self.scatter_add(dim, index, src), src)

    def copy_(self, src):
        """Copy src's values (broadcast, cast and moved to this tensor's device) into this tensor."""
        return self._write("copy_", lambda: _operand(src, self).to(self.device), src)

    def fill_(self, value):
        return self._write("fill_", lambda: _operand(value, self), value)

    def zero_(self):
        return self._write("zero_", lambda: _operand(0, self))

    def normal_(self, mean=0.0, std=1.0):
        """Fill with draws from N(mean, std**2), from the generator that manual_seed seeds."""
        return self._write("normal_", lambda: _drawn(self, default_generator().normal(mean, std, self.shape)))

    def uniform_(self, a=0.0, b=1.0):
        """Fill with draws from U[a, b), from the generator that manual_seed seeds."""
        return self._write("uniform_", lambda: _drawn(self, default_generator().uniform(a, b, self.shape)))

    def _write(self, name, compute, *operands):
        """Run `compute` (the out-of-place result) and write it into this tensor's memory."""
        if self.creator is not None:
            raise RuntimeError(
                f"{name}() on a tensor computed in a graph (by {type(self.creator).__name__}): easyfit records "
                f"no in-place ops, so its gradient would be wrong; write the out-of-place form (y = y * 2 "
                f"rather than y.mul_(2)), or change y.data, which is outside the graph")
        if _grad_enabled[0] and (self.requires_grad or builtins.any(
                isinstance(o, core.Tensor) and o.requires_grad for o in operands)):
            raise RuntimeError(
                f"{name}() on a leaf tensor that requires grad (shape {self.shape}), or with an operand that "
                f"does, outside easyfit.no_grad(): the change would not be differentiable; do it under "
                f"`with easyfit.no_grad():` (as an optimizer step does) or on x.data")
        result = compute()
        if _write_hook[0] is not None:
            _write_hook[0](name, self, operands)
        values = result.array if isinstance(result, core.Tensor) else result
        if isinstance(values, np.ndarray) and not isinstance(self.array, np.ndarray):
            values = to_device(values, self.device)  # NumPy values into a CUDA tensor
        try:
            get_array_module(self.array).copyto(self.array, values, casting="same_kind")
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}() on a tensor of shape {self.shape} {self.array.dtype}: {error}") from None
        return self


def _drawn(like, values):
    """Random values drawn on the CPU in float64, as a tensor of like's dtype and device."""
    return core.Tensor(to_device(values.astype(like.dtype), like.device))
