"""Elementwise math, softmax, joining and einsum: the ops Tensor's math methods call.

Each op is one small Function subclass plus a lowercase function; backward is written
with Tensor ops, so every function here supports higher-order gradients. Names and
arguments are PyTorch's; NumPy's keyword names are accepted (spellings.py).
"""
import builtins

import numpy as np

from .autograd import _grad_enabled, KeepsStandIns
from .backend import get_array_module, to_device
from .spellings import numpy_spellings
from .tensor import (Function, Tensor, _constant, _operand, _wrap, _to_array, Clip, reshape, expand_dims, transpose, sum,
                     broadcast_to, matmul, max)
# Also importable from here, as before the split into families (layers import them from here).
from .tensor import Log, log, mean, swapaxes, root_with_zero_slope  # noqa: F401


def _as_tensor(x, like=None):
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return _operand(x, like)
    return Tensor(_to_array(x, None))


# ----- unary elementwise --------------------------------------------------------------

class Exp(Function):
    save_outputs = True

    def forward(self, a):
        return get_array_module(a).exp(a)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(gy.array * self.saved_output_arrays[0])
        return gy * self.output()


def exp(x):
    """Elementwise e ** x."""
    return Exp()(x)


class Sqrt(Function):
    save_outputs = True

    def forward(self, a):
        return get_array_module(a).sqrt(a)

    def backward(self, gy):
        return gy / (self.output() * 2.0)


def sqrt(x):
    """Elementwise square root."""
    return Sqrt()(x)


def abs(x):
    """Elementwise absolute value (its gradient at 0 is 0)."""
    return x.__abs__()


class Tanh(Function):
    save_outputs = True

    def forward(self, a):
        return get_array_module(a).tanh(a)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(TanhGrad.forward(None, gy.array, self.saved_output_arrays[0]))
        return TanhGrad()(gy, self.output())


class TanhGrad(Function):
    """gy * (1 - y^2) for y = tanh(x), fused: one op instead of three in backward."""

    def forward(self, gy, y):
        out = _constant(1, y) - y * y
        out *= gy
        return out

    def backward(self, g):
        gy, y = self.inputs
        g_gy = TanhGrad()(g, y) if gy.requires_grad else None
        g_y = g * gy * y * -2.0 if y.requires_grad else None
        return g_gy, g_y


def tanh(x):
    """Elementwise hyperbolic tangent."""
    return Tanh()(x)


class Sigmoid(Function):
    save_outputs = True

    def forward(self, a):
        # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) and never overflows.
        xp = get_array_module(a)
        y = xp.tanh(a * a.dtype.type(0.5))
        y += 1
        y *= 0.5
        return y

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(SigmoidGrad.forward(None, gy.array, self.saved_output_arrays[0]))
        return SigmoidGrad()(gy, self.output())


class SigmoidGrad(Function):
    """gy * y * (1 - y) for y = sigmoid(x), fused into one op."""

    def forward(self, gy, y):
        out = _constant(1, y) - y
        out *= y
        out *= gy
        return out

    def backward(self, g):
        gy, y = self.inputs
        g_gy = SigmoidGrad()(g, y) if gy.requires_grad else None
        g_y = g * gy * (1.0 - 2.0 * y) if y.requires_grad else None
        return g_gy, g_y


def sigmoid(x):
    """Elementwise logistic function 1 / (1 + exp(-x)), computed without overflow."""
    return Sigmoid()(x)


class ReLU(KeepsStandIns, Function):
    """max(x, 0). Backward needs only where the output is positive (y > 0 exactly where
    x > 0), so the node keeps its output, as PyTorch does, and a stand-in for x: the
    input (a conv or batch-norm output) is freed right after the forward pass."""
    save_outputs = True

    def forward(self, a):
        return get_array_module(a).maximum(a, 0)

    def backward(self, gy):
        x = self.saved_output_arrays[0]
        if _grad_enabled[0]:  # create_graph: the gradient must stay differentiable in gy
            return gy * _wrap((x > 0).astype(gy.dtype))
        # The mask is written straight into the result (in x's memory order: channels-last
        # activations stay so) and multiplied in place: one allocation and two passes
        # instead of a float mask, a product and an op (1M floats: 0.30 ms, was 0.47 + op).
        xp = get_array_module(x)
        gx = xp.empty_like(x, dtype=gy.dtype)
        xp.greater(x, 0, out=gx)
        gx *= gy.array
        return _wrap(gx)


def relu(x):
    """Elementwise max(x, 0) (its gradient at 0 is 0, as in PyTorch)."""
    return ReLU()(x)


class Sin(Function):
    def forward(self, a):
        return get_array_module(a).sin(a)

    def backward(self, gy):
        return gy * cos(self.inputs[0])


def sin(x):
    """Elementwise sine."""
    return Sin()(x)


class Cos(Function):
    def forward(self, a):
        return get_array_module(a).cos(a)

    def backward(self, gy):
        return gy * -sin(self.inputs[0])


def cos(x):
    """Elementwise cosine."""
    return Cos()(x)


def pow(x, exponent):
    """x ** exponent, elementwise (either may be a tensor or a number)."""
    return x ** exponent if isinstance(x, Tensor) else _as_tensor(exponent).__rpow__(x)


class Softmax(Function):
    save_outputs = True

    def __init__(self, axis):
        self.axis = axis

    def forward(self, a):
        xp = get_array_module(a)
        y = a - a.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        return y

    def backward(self, gy):
        y = self.output()
        return y * (gy - sum(gy * y, self.axis, True))


@numpy_spellings
def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along `dim`, shifted by the maximum so it cannot overflow."""
    return Softmax(dim % x.ndim)(x)


class LogSoftmax(Function):
    save_outputs = True

    def __init__(self, axis):
        self.axis = axis

    def forward(self, a):
        xp = get_array_module(a)
        shifted = a - a.max(axis=self.axis, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return shifted

    def backward(self, gy):
        return gy - exp(self.output()) * sum(gy, self.axis, True)


@numpy_spellings
def log_softmax(x, dim=-1):
    """log(softmax(x)) along `dim`, computed stably (no log of a rounded zero)."""
    return LogSoftmax(dim % x.ndim)(x)


class CumSum(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, a):
        return get_array_module(a).cumsum(a, axis=self.axis)

    def backward(self, gy):
        return _flip(CumSum(self.axis)(_flip(gy, self.axis)), self.axis)


def _flip(x, axis):
    return x[(slice(None),) * axis + (slice(None, None, -1),)]


@numpy_spellings
def cumsum(x, dim=None):
    """Running sums along `dim` (over the flattened tensor when None, as NumPy's cumsum)."""
    if dim is None:
        x, dim = reshape(x, (-1,)), 0
    return CumSum(dim % builtins.max(x.ndim, 1))(x)


@numpy_spellings
def prod(x, dim=None, keepdim=False):
    """Product over `dim` (all entries when None). Halves are multiplied pairwise (log2(n)
    products), so gradients of every order are exact, zeros included, without a division."""
    if dim is None:
        out = prod(reshape(x, (-1,)), 0)
        return reshape(out, (1,) * x.ndim) if keepdim else out
    dim = dim % builtins.max(x.ndim, 1)
    if x.shape[dim] == 0:
        return sum(x, dim, keepdim) + 1
    while x.shape[dim] > 1:
        half = x.shape[dim] // 2
        pairs = _along(x, dim, 0, half) * _along(x, dim, half, 2 * half)
        x = cat([pairs, _along(x, dim, 2 * half, 2 * half + 1)], dim) if x.shape[dim] % 2 else pairs
    return x if keepdim else reshape(x, x.shape[:dim] + x.shape[dim + 1:])


def _along(x, dim, start, stop):
    return x[(slice(None),) * dim + (slice(start, stop),)]


def clamp(x, min=None, max=None):
    """x limited to [min, max] (either may be None, a number or a tensor); NumPy's clip."""
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x if max is None else minimum(x, max)
        return out if min is None else maximum(out, min)
    if min is None and max is None:
        raise ValueError("clamp: give min, max or both")
    return Clip(min, max)(x)


@numpy_spellings
def norm(x, p="fro", dim=None, keepdim=False):
    """The p-norm over `dim` (all entries when None): p=2 ('fro'), 1, inf, or any number."""
    if p in ("fro", 2, 2.0):  # the norm of zeros has slope 0, as in PyTorch
        return root_with_zero_slope(sum(x * x, dim, keepdim), 0.5)
    if p in (1, 1.0):
        return sum(abs(x), dim, keepdim)
    if p in (float("inf"), "inf"):
        return max(abs(x), dim, keepdim) if dim is None else max(abs(x), dim, keepdim).values
    if isinstance(p, (int, float)) and p > 0:
        return root_with_zero_slope(sum(abs(x) ** p, dim, keepdim), 1.0 / p)
    raise ValueError(f"norm: p must be 'fro', inf or a positive number, got {p!r}")


def eq(a, b):
    """Elementwise a == b (a bool tensor, no gradient)."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) == b


def ne(a, b):
    """Elementwise a != b."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) != b


def lt(a, b):
    """Elementwise a < b."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) < b


def le(a, b):
    """Elementwise a <= b."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) <= b


def gt(a, b):
    """Elementwise a > b."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) > b


def ge(a, b):
    """Elementwise a >= b."""
    return _as_tensor(a, b if isinstance(b, Tensor) else None) >= b


def isnan(x):
    """Where x is NaN (a bool tensor)."""
    return x.isnan()


def isinf(x):
    """Where x is +inf or -inf (a bool tensor)."""
    return x.isinf()


def isfinite(x):
    """Where x is neither NaN nor infinite (a bool tensor)."""
    return x.isfinite()


def equal(a, b):
    """True when a and b have the same shape and elements."""
    return a.equal(b)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when every element of a is close to b's (NumPy's and PyTorch's test)."""
    return a.allclose(b, rtol, atol, equal_nan)


def numel(x):
    """The number of elements of x."""
    return x.numel()


def mm(a, b):
    """The product of two matrices (2-D only; matmul broadcasts)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mm expects two 2-D tensors, got shapes {a.shape} and {b.shape}; use matmul")
    return matmul(a, b)


def bmm(a, b):
    """Batched matrix product of two 3-D tensors with the same batch size."""
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm expects (b, n, m) and (b, m, p) tensors, got shapes {a.shape} and {b.shape}")
    return matmul(a, b)


# ----- binary elementwise -------------------------------------------------------------

class Maximum(Function):
    """Elementwise max; ties share the gradient evenly (as PyTorch does)."""

    def __init__(self, take_min=False):
        self.take_min = take_min

    def forward(self, a, b):
        xp = get_array_module(a)
        return xp.minimum(a, b) if self.take_min else xp.maximum(a, b)

    def backward(self, gy):
        a, b = self.inputs
        xp = get_array_module(a.array)
        wins = (a.array < b.array) if self.take_min else (a.array > b.array)
        share = wins + 0.5 * (a.array == b.array)
        share = xp.broadcast_to(share, gy.shape).astype(gy.dtype)
        ga = gy * _wrap(share) if a.requires_grad else None
        gb = gy * _wrap(1 - share) if b.requires_grad else None
        return ga, gb


def maximum(a, b):
    """Elementwise larger of a and b, broadcasting; on ties each gets half the gradient."""
    a, b = _pair(a, b)
    return Maximum(False)(a, b)


def minimum(a, b):
    """Elementwise smaller of a and b, broadcasting; on ties each gets half the gradient."""
    a, b = _pair(a, b)
    return Maximum(True)(a, b)


def _pair(a, b):
    if isinstance(a, Tensor):
        return a, _operand(b, a)
    if isinstance(b, Tensor):
        return _operand(a, b), b
    return _as_tensor(a), _as_tensor(b)


class Where(KeepsStandIns, Function):
    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, gy):
        a, b = self.inputs
        xp = get_array_module(gy.array)
        mask = xp.broadcast_to(self.condition, gy.shape)
        ga = gy * _wrap(mask.astype(gy.dtype)) if a.requires_grad else None
        gb = gy * _wrap((~mask).astype(gy.dtype)) if b.requires_grad else None
        return ga, gb


def where(condition, x, y):
    """Elements of x where condition holds, else of y; no gradient flows to condition."""
    condition = condition.array if isinstance(condition, Tensor) else condition
    x, y = _pair(x, y)
    condition = to_device(_to_array(condition, np.bool_), x.device)
    return Where(condition)(x, y)


# ----- joining and splitting ---------------------------------------------------------

class Concatenate(KeepsStandIns, Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *arrays):
        return get_array_module(arrays[0]).concatenate(arrays, axis=self.axis)

    def backward(self, gy):
        sizes = [x.shape[self.axis] for x in self.inputs]
        return Split(np.cumsum(sizes)[:-1].tolist(), self.axis)(gy)


@numpy_spellings
def cat(tensors, dim=0):
    """Join tensors along an existing dimension (NumPy's concatenate, which is the same function)."""
    tensors = [_as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    dim = dim % tensors[0].ndim if tensors[0].ndim else dim
    return Concatenate(dim)(*tensors)


concatenate = cat


@numpy_spellings
def stack(tensors, dim=0):
    """Join tensors of equal shape along a new dimension."""
    tensors = [_as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return cat([expand_dims(t, dim) for t in tensors], dim=dim)


class Split(Function):
    """Cut at the given indices (or into a number of equal sections) along one axis."""

    def __init__(self, indices_or_sections, axis):
        self.indices_or_sections, self.axis = indices_or_sections, axis

    def forward(self, a):
        return tuple(get_array_module(a).split(a, self.indices_or_sections, axis=self.axis))

    def backward(self, *grads):
        return Concatenate(self.axis)(*grads)


# ----- einsum ---------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _explicit_subscripts(subscripts, shapes):
    """Rewrite 'ij,jk' or '...ij,...jk->...ik' as explicit subscripts without ellipses."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        inputs, output = subscripts.split("->")
    else:
        inputs, output = subscripts, None
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operand subscripts for {len(shapes)} operands")
    used = set(subscripts)
    spare = [c for c in _LETTERS if c not in used]
    ellipsis_ndim = 0
    for term, shape in zip(terms, shapes):
        if "..." in term:
            ellipsis_ndim = builtins.max(ellipsis_ndim, len(shape) - len(term.replace("...", "")))
    ellipsis = "".join(spare[:ellipsis_ndim])
    expanded = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            count = len(shape) - len(term.replace("...", ""))
            term = term.replace("...", ellipsis[len(ellipsis) - count:] if count else "")
        expanded.append(term)
    if output is None:
        counts = {}
        for term in expanded:
            for c in term:
                counts[c] = counts.get(c, 0) + 1
        output = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ellipsis))
    else:
        output = output.replace("...", ellipsis)
    return expanded, output


class Einsum(Function):
    def __init__(self, terms, output):
        self.terms, self.output_term = terms, output

    def forward(self, *arrays):
        spec = ",".join(self.terms) + "->" + self.output_term
        return get_array_module(arrays[0]).einsum(spec, *arrays)

    def backward(self, gy):
        grads = []
        for i, (x, term) in enumerate(zip(self.inputs, self.terms)):
            if not x.requires_grad:
                grads.append(None)
                continue
            if len(set(term)) != len(term):
                raise NotImplementedError(
                    f"einsum: the gradient for an operand with a repeated subscript ({term!r}, a diagonal) "
                    "is not supported; take the diagonal explicitly first")
            others = [(t, s) for j, (t, s) in enumerate(zip(self.inputs, self.terms)) if j != i]
            available = set(self.output_term).union(*[set(s) for _, s in others])
            present = "".join(c for c in term if c in available)
            g = Einsum([self.output_term] + [s for _, s in others], present)(gy, *[t for t, _ in others])
            if present != term:
                # Letters only this operand had were summed away: broadcast back along them.
                shape = tuple(x.shape[k] if c in available else 1 for k, c in enumerate(term))
                order = [present.index(c) for c in term if c in available]
                g = transpose(g, order) if order != sorted(order) else g
                g = broadcast_to(reshape(g, shape), x.shape)
            grads.append(g)
        return tuple(grads)


def einsum(subscripts, *operands):
    """Einstein summation over tensors, with NumPy's subscripts (e.g. 'bij,bjk->bik')."""
    operands = [_as_tensor(t) for t in operands]
    terms, output = _explicit_subscripts(subscripts, [t.shape for t in operands])
    for term, t in zip(terms, operands):
        if len(term) != t.ndim:
            raise ValueError(f"einsum: subscripts {term!r} do not match an operand of shape {t.shape}")
    return Einsum(terms, output)(*operands)


# ----- padding ------------------------------------------------------------------------

class Pad(KeepsStandIns, Function):
    def __init__(self, pad_width, constant_values):
        self.pad_width, self.constant_values = pad_width, constant_values

    def forward(self, a):
        if not self.pad_width:  # a 0-d array has no axis to pad: NumPy returns it unchanged
            return a.copy()
        return get_array_module(a).pad(a, self.pad_width, mode="constant",
                                       constant_values=self.constant_values)

    def backward(self, gy):
        index = tuple(slice(before, gy.shape[k] - after) for k, (before, after) in enumerate(self.pad_width))
        return gy[index]


def pad(x, pad_width, mode="constant", constant_values=0):
    """NumPy's pad; `mode='constant'` (the mode whose gradient is a plain crop)."""
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported; only mode='constant' is differentiable here")
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    if (widths < 0).any():
        raise ValueError(f"pad: pad_width must be non-negative, got {pad_width!r}")
    return Pad(tuple((int(b), int(a)) for b, a in widths), constant_values)(x)
