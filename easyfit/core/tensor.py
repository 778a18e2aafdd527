"""Tensor, Function (the op base class), and the arithmetic, shape and reduction ops.

An op is a small `Function` subclass: `forward` works on raw arrays (NumPy or CuPy),
`backward` is written with Tensor ops, so running it with grad mode on (under
`create_graph=True`) records a graph of the backward pass and gives higher-order
gradients for free. Tensor speaks PyTorch (DESIGN.md): its methods take PyTorch's names
and arguments, NumPy's keyword names being accepted where they mean the same
(spellings.py). Other op families live in their own modules (functions, layout,
indexing, sorting, creation), which Tensor's methods call.
"""
import builtins
import math
import operator
import weakref

import numpy as np

from . import autograd
from .autograd import _grad_enabled, _anomaly_enabled, run_backward, user_frame_summary
from .backend import get_array_module, device_of, parse_device, to_device, scatter_add, is_array
from .devices import as_device
from .random import default_generator
from .spellings import numpy_spellings

DEFAULT_FLOAT = np.dtype(np.float32)

class Tensor:
    """An n-dimensional array that records the ops applied to it for backward.

    `array` is the underlying NumPy/CuPy array (the engine's own handle), `data` is
    PyTorch's: a Tensor sharing that storage, cut from the graph. `grad` is the
    accumulated gradient (a Tensor or None), `creator` (`grad_fn`) the op that produced
    it (None for leaves). A method that shares a function's name takes that function's
    arguments with the tensor first: `x.sum(dim=1)` is `easyfit.sum(x, dim=1)`.
    """
    __slots__ = ("array", "grad", "requires_grad", "creator", "output_index", "__weakref__")

    def __init__(self, data, requires_grad=False):
        if not is_array(data):
            data = _to_array(data, None)
        self.array = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None
        self.output_index = 0
        if requires_grad and data.dtype.kind not in "fc":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {data.dtype}")

    # ----- properties -------------------------------------------------------------
    @property
    def data(self):
        """PyTorch's `.data`: a Tensor sharing this tensor's storage, outside the graph.

        Its in-place changes reach this tensor; assigning `t.data = other` replaces the
        storage (shape and dtype may change), as in PyTorch.
        """
        return _wrap(self.array)

    @data.setter
    def data(self, value):
        if isinstance(value, Tensor):
            value = value.array
        elif not is_array(value):
            raise TypeError(f"tensor.data must be set to a Tensor or an array, got {type(value).__name__}")
        self.array = value

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def device(self):
        """'cpu' or 'cuda:N' (a string with PyTorch's `.type` and `.index`)."""
        return as_device(device_of(self.array))

    @property
    def is_leaf(self):
        return self.creator is None

    @property
    def T(self):
        return transpose(self)

    @property
    def mT(self):
        """The last two dimensions swapped (a batch of matrices transposed)."""
        return swapaxes(self, -2, -1)

    @property
    def grad_fn(self):
        """The op that produced this tensor (None for a leaf): PyTorch's name for `creator`."""
        return self.creator

    def size(self, dim=None):
        """The shape (a tuple), or the length of dimension `dim`."""
        return tuple(self.array.shape) if dim is None else self.array.shape[dim]

    def numel(self):
        """The number of elements."""
        return self.array.size

    nelement = numel

    def dim(self):
        """The number of dimensions."""
        return self.array.ndim

    def element_size(self):
        """Bytes per element."""
        return self.array.itemsize

    def __len__(self):
        if self.array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __repr__(self):
        body = np.array2string(self.numpy_cpu(), separator=", ", prefix="tensor(")
        extras = []
        if self.array.dtype != DEFAULT_FLOAT:
            extras.append(f"dtype={self.array.dtype}")
        if not isinstance(self.array, np.ndarray):
            extras.append(f"device='{self.device}'")
        if self.creator is not None:
            extras.append(f"grad_fn={type(self.creator).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    __hash__ = object.__hash__

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __bool__(self):
        if self.array.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.array.size} elements is ambiguous")
        return bool(self.array)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.array.dtype.kind not in "iu" or self.array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        array = self.numpy_cpu()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        """NumPy meets a Tensor. `ndarray += tensor` writes into the ndarray (it stays an
        ndarray, as with PyTorch); `ndarray + tensor` and `np.float32(2) * tensor` go to
        Tensor's own operators and give a Tensor (a float32 tensor stays float32)."""
        if out is not None:
            if any(isinstance(o, Tensor) for o in out):
                return NotImplemented
            arrays = [x.numpy_cpu() if isinstance(x, Tensor) else x for x in inputs]
            return getattr(ufunc, method)(*arrays, out=out, **kwargs)
        function = _UFUNC_OPERATORS.get(ufunc.__name__)
        if method != "__call__" or function is None or kwargs:
            return NotImplemented
        reference = next(x for x in inputs if isinstance(x, Tensor))
        return function(*[_operand(x, reference) for x in inputs])

    def __format__(self, spec):
        """`f"{loss:.3f}"` formats a one-element tensor as its number."""
        if self.array.size == 1:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"format spec {spec!r} needs a one-element tensor, got shape {self.shape}")
        return str(self)

    # ----- conversion -------------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array: the same memory on the CPU (no copy)."""
        if isinstance(self.array, np.ndarray):
            return self.array
        raise TypeError(f"tensor is on {self.device}: call .cpu() before .numpy()")

    def numpy_cpu(self):
        return self.array if isinstance(self.array, np.ndarray) else self.array.get()

    def item(self):
        if self.array.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.array.shape}")
        return self.array.reshape(()).item()

    def tolist(self):
        return self.numpy_cpu().tolist()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.array)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.array.dtype.kind not in "fc":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.array.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, device=None, dtype=None):
        """Moved and/or cast, as PyTorch's `to`: `x.to('cuda')`, `x.to(ef.double)`,
        `x.to('cuda', ef.half)`, `x.to(other)` (other's device and dtype)."""
        if isinstance(device, Tensor):
            device, dtype = device.device, device.dtype
        elif device is not None and not isinstance(device, str):
            device, dtype = None, device  # a dtype given first, as x.to(torch.float64)
        out = self
        if device is not None:
            device = parse_device(device)
            if device != self.device:
                out = ToDevice(device)(out)
        if dtype is not None:
            out = out.astype(dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def astype(self, dtype):
        dtype = np.dtype(dtype)
        if dtype == self.array.dtype:
            return self
        return Cast(dtype)(self)

    def type(self, dtype=None):
        """Without an argument, the type's name ('easyfit.FloatTensor'); with one, a cast."""
        if dtype is None:
            return f"easyfit.{_TYPE_NAMES.get(self.array.dtype, str(self.array.dtype))}Tensor"
        return self.astype(dtype)

    def type_as(self, other):
        return self.astype(other.dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def half(self):
        return self.astype(np.float16)

    def long(self):
        return self.astype(np.int64)

    def int(self):
        return self.astype(np.int32)

    def short(self):
        return self.astype(np.int16)

    def byte(self):
        return self.astype(np.uint8)

    def bool(self):
        return self.astype(np.bool_)

    def is_floating_point(self):
        return self.array.dtype.kind == "f"

    def equal(self, other):
        """True when both tensors have the same shape and elements."""
        return self.shape == other.shape and bool((self.array == other.array).all())

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        xp = get_array_module(self.array)
        return bool(xp.allclose(self.array, _operand(other, self).array, rtol=rtol, atol=atol, equal_nan=equal_nan))

    # ----- autograd ---------------------------------------------------------------
    def backward(self, grad=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        `grad` defaults to 1 for a one-element tensor. The graph's buffers are freed
        afterwards unless `retain_graph` (default: `create_graph`) is true.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad and has no grad_fn; "
                               "create the inputs with requires_grad=True")
        if grad is None:
            if self.array.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for one-element outputs; this tensor "
                                   f"has shape {self.array.shape}: pass grad= to backward()")
            grad = Tensor(get_array_module(self.array).ones_like(self.array))
        elif not isinstance(grad, Tensor):
            grad = Tensor(_to_array(grad, self.array.dtype, like=self.array))
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has shape {self.shape}")
        if retain_graph is None:
            retain_graph = create_graph
        run_backward([self], [grad], retain_graph, create_graph)

    # ----- operators --------------------------------------------------------------
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

    def __pos__(self):
        return self

    def __abs__(self):
        return Abs()(self)

    def __getitem__(self, index):
        return GetItem(_normalize_index(index))(self)

    def __setitem__(self, index, value):
        if self.creator is not None or (self.requires_grad and _grad_enabled[0]):
            raise RuntimeError("in-place assignment to a tensor that is part of a graph (or requires grad) "
                               "would corrupt its gradient; assign under easyfit.no_grad() to a leaf, "
                               "assign to tensor.array, or build a new tensor")
        self.array[_normalize_index(index)] = value.array if isinstance(value, Tensor) else value

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

    # ----- reductions (PyTorch's dim/keepdim; NumPy's axis/keepdims accepted) --------
    # Each method calls the function of the same name: they share the spelling rules.
    def sum(self, *args, **kwargs):
        return sum(self, *args, **kwargs)

    def mean(self, *args, **kwargs):
        return mean(self, *args, **kwargs)

    def var(self, *args, **kwargs):
        return var(self, *args, **kwargs)

    def std(self, *args, **kwargs):
        return std(self, *args, **kwargs)

    def max(self, *args, **kwargs):
        return max(self, *args, **kwargs)

    def min(self, *args, **kwargs):
        return min(self, *args, **kwargs)

    def argmax(self, *args, **kwargs):
        return argmax(self, *args, **kwargs)

    def argmin(self, *args, **kwargs):
        return argmin(self, *args, **kwargs)

    def prod(self, *args, **kwargs):
        return functions.prod(self, *args, **kwargs)

    def norm(self, *args, **kwargs):
        return functions.norm(self, *args, **kwargs)

    def cumsum(self, *args, **kwargs):
        return functions.cumsum(self, *args, **kwargs)

    def softmax(self, *args, **kwargs):
        return functions.softmax(self, *args, **kwargs)

    def log_softmax(self, *args, **kwargs):
        return functions.log_softmax(self, *args, **kwargs)

    # ----- elementwise math -------------------------------------------------------
    def exp(self):
        return functions.exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return functions.sqrt(self)

    def tanh(self):
        return functions.tanh(self)

    def sigmoid(self):
        return functions.sigmoid(self)

    def relu(self):
        return functions.relu(self)

    def abs(self):
        return Abs()(self)

    def sin(self):
        return functions.sin(self)

    def cos(self):
        return functions.cos(self)

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

    def maximum(self, other):
        return functions.maximum(self, other)

    def minimum(self, other):
        return functions.minimum(self, other)

    def clamp(self, min=None, max=None):
        return functions.clamp(self, min, max)

    def clip(self, min=None, max=None):
        return functions.clamp(self, min, max)

    def matmul(self, other):
        return matmul(self, other)

    def mm(self, other):
        return functions.mm(self, other)

    def bmm(self, other):
        return functions.bmm(self, other)

    # ----- shapes -----------------------------------------------------------------
    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def view(self, *shape):
        """The same memory in a new shape (an error where only a copy could do it: use reshape)."""
        return layout.view(self, *shape)

    def view_as(self, other):
        return layout.view(self, other.shape)

    def reshape_as(self, other):
        return reshape(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """Dims start_dim..end_dim merged into one (all of them by default)."""
        return layout.flatten(self, start_dim, end_dim)

    def unflatten(self, dim, sizes):
        return layout.unflatten(self, dim, sizes)

    def transpose(self, *dims, **kwargs):
        """Two dims: swapped (PyTorch); a full permutation: reordered (NumPy); none: reversed."""
        return transpose(self, *dims, **kwargs)

    def permute(self, *dims):
        return layout.permute(self, *dims)

    def t(self):
        return layout.t(self)

    def swapaxes(self, axis0, axis1):
        return swapaxes(self, axis0, axis1)

    def squeeze(self, *args, **kwargs):
        return squeeze(self, *args, **kwargs)

    def unsqueeze(self, *args, **kwargs):
        return layout.unsqueeze(self, *args, **kwargs)

    def expand(self, *sizes):
        return layout.expand(self, *sizes)

    def expand_as(self, other):
        return layout.expand_as(self, other)

    def broadcast_to(self, shape):
        return broadcast_to(self, shape)

    def repeat(self, *sizes, **kwargs):
        """PyTorch's repeat: the tensor tiled `sizes` times; `x.repeat(r, axis=d)` is NumPy's (each element)."""
        return layout.repeat(self, *sizes, **kwargs)

    def repeat_interleave(self, *args, **kwargs):
        return layout.repeat_interleave(self, *args, **kwargs)

    def tile(self, *dims):
        return layout.tile(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    def flip(self, *dims, **kwargs):
        return layout.flip(self, *((layout._sizes(dims),) if dims else ()), **kwargs)

    def roll(self, *args, **kwargs):
        return layout.roll(self, *args, **kwargs)

    def split(self, *args, **kwargs):
        return layout.split(self, *args, **kwargs)

    def chunk(self, *args, **kwargs):
        return layout.chunk(self, *args, **kwargs)

    def narrow(self, *args, **kwargs):
        return layout.narrow(self, *args, **kwargs)

    def contiguous(self):
        return layout.contiguous(self)

    def is_contiguous(self):
        """Whether the array is stored in C order (conv and pooling outputs are channels-last: False)."""
        return bool(self.array.flags.c_contiguous)

    def clone(self):
        return layout.clone(self)

    def tril(self, diagonal=0):
        return layout.tril(self, diagonal)

    def triu(self, diagonal=0):
        return layout.triu(self, diagonal)

    # ----- indexing and sorting ---------------------------------------------------
    def gather(self, dim, index):
        return indexing.gather(self, dim, index)

    def scatter(self, dim, index, src=None, *, value=None):
        return indexing.scatter(self, dim, index, src, value=value)

    def scatter_add(self, dim, index, src):
        return indexing.scatter_add(self, dim, index, src)

    def index_select(self, dim, index):
        return indexing.index_select(self, dim, index)

    def masked_fill(self, mask, value):
        return indexing.masked_fill(self, mask, value)

    def sort(self, *args, **kwargs):
        return sort(self, *args, **kwargs)

    def argsort(self, *args, **kwargs):
        return argsort(self, *args, **kwargs)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return sorting.topk(self, k, dim, largest, sorted)

    # ----- creation like this tensor (dtype and device default to this one's) -----
    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return creation.tensor(data, dtype or self.dtype, device or self.device, requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return creation.zeros(*size, dtype=dtype or self.dtype, device=device or self.device,
                              requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return creation.ones(*size, dtype=dtype or self.dtype, device=device or self.device,
                             requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return creation.empty(*size, dtype=dtype or self.dtype, device=device or self.device,
                              requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return creation.full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                             requires_grad=requires_grad)

    # ----- in place (PyTorch's *_ methods) ------------------------------------------
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
                isinstance(o, Tensor) and o.requires_grad for o in operands)):
            raise RuntimeError(
                f"{name}() on a leaf tensor that requires grad (shape {self.shape}), or with an operand that "
                f"does, outside easyfit.no_grad(): the change would not be differentiable; do it under "
                f"`with easyfit.no_grad():` (as an optimizer step does) or on x.data")
        result = compute()
        if _write_hook[0] is not None:
            _write_hook[0](name, self, operands)
        values = result.array if isinstance(result, Tensor) else result
        if isinstance(values, np.ndarray) and not isinstance(self.array, np.ndarray):
            values = to_device(values, self.device)  # NumPy values into a CUDA tensor
        try:
            get_array_module(self.array).copyto(self.array, values, casting="same_kind")
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}() on a tensor of shape {self.shape} {self.array.dtype}: {error}") from None
        return self


# ----- the op hook -------------------------------------------------------------------
# A tracer (easyfit.onnx) sees every op call through this hook: when set, Function.__call__
# hands it (fn, inputs) and returns what it returns. None when nothing traces, so the hot
# path pays one list lookup. Core knows nothing of what a tracer does with the calls.
_op_hook = [None]
# ... and every in-place write (Tensor._write), which records no op: the tracer refuses a
# write into a tensor its graph reads, since the graph would compute the value before it.
_write_hook = [None]


def set_write_hook(hook):
    """Install `hook(method_name, tensor, operands)`, called by each in-place method before
    it writes (None removes it). Returns the hook that was installed before."""
    previous = _write_hook[0]
    _write_hook[0] = hook
    return previous


def set_op_hook(hook):
    """Install `hook(fn, inputs)` to run in place of every op call (None removes it).

    The hook runs the op itself (with the hook removed while it does) and returns the
    op's result, or returns NotImplemented to let the call run as usual (a tracer does
    so for ops of other threads, such as a data loader's). Returns the hook that was
    installed before, to restore it afterwards.
    """
    previous = _op_hook[0]
    _op_hook[0] = hook
    return previous


class Function:
    """Base class of every op, and the extension point for a user's own.

    Subclass it, define `forward(*arrays)` returning an array (or a tuple of arrays)
    and `backward(*output_grads)` returning one gradient per input (a Tensor or None),
    written with Tensor ops so that it can be differentiated again. Inputs are
    available in backward as `self.inputs`; outputs as `self.output(i)` when the class
    sets `save_outputs = True`. Call it with `MyOp.apply(x, y, **params)`; params go to
    `__init__`. ONNX export (easyfit.onnx) takes its ONNX form from a static method
    `symbolic(g, op, *inputs)` when the class defines one (docs/onnx.md).
    """
    save_outputs = False

    @classmethod
    def apply(cls, *inputs, **params):
        reference = next((x.array for x in inputs if isinstance(x, Tensor)), None)
        inputs = [x if isinstance(x, Tensor) else Tensor(_to_array(x, None, like=reference)) for x in inputs]
        return cls(**params)(*inputs)

    n_outputs = 1

    def __call__(self, *inputs):
        # The hot path of every op: kept flat and free of avoidable calls.
        if _op_hook[0] is not None:
            result = _op_hook[0](self, inputs)
            if result is not NotImplemented:
                return result
        try:
            if len(inputs) == 2:
                outputs = self.forward(inputs[0].array, inputs[1].array)
            elif len(inputs) == 1:
                outputs = self.forward(inputs[0].array)
            else:
                outputs = self.forward(*[x.array for x in inputs])
        except (ValueError, TypeError, IndexError) as error:
            raise _op_error(self, inputs, error) from None
        if type(outputs) is tuple:
            return self._finish_many(inputs, outputs)
        y = Tensor.__new__(Tensor)
        y.array = outputs if type(outputs) is np.ndarray or is_array(outputs) else np.asarray(outputs)
        y.grad = None
        y.output_index = 0
        if _grad_enabled[0]:
            generation = -1
            for x in inputs:
                if x.requires_grad:
                    creator = x.creator
                    if creator is None:
                        if generation < 0:
                            generation = 0
                    elif creator.generation > generation:
                        generation = creator.generation
            # An integer or boolean result (a comparison, an argmax) carries no gradient:
            # it gets no creator, so it does not hold the graph alive.
            if generation >= 0 and y.array.dtype.kind in "fc":
                self.inputs = inputs
                self.generation = generation + 1
                if self.save_outputs:
                    self.saved_outputs = (weakref.ref(y),)
                    self.saved_output_arrays = (y.array,)
                if _anomaly_enabled[0]:
                    self.source = user_frame_summary()
                y.requires_grad = True
                y.creator = self
                return y
        y.requires_grad = False
        y.creator = None
        return y

    def _finish_many(self, inputs, arrays):
        outputs = [_wrap(a) for a in arrays]
        if _grad_enabled[0] and any(x.requires_grad for x in inputs):
            self.inputs = inputs
            self.generation = 1 + builtins.max(
                [x.creator.generation if x.creator is not None else 0 for x in inputs if x.requires_grad])
            self.n_outputs = len(outputs)
            self.output_meta = [(y.array.shape, y.array.dtype) for y in outputs]
            if self.save_outputs:
                self.saved_outputs = tuple(weakref.ref(y) for y in outputs)
                self.saved_output_arrays = tuple(arrays)
            if _anomaly_enabled[0]:
                self.source = user_frame_summary()
            for index, y in enumerate(outputs):
                y.requires_grad = y.array.dtype.kind in "fc"
                y.creator = self
                y.output_index = index
        return tuple(outputs)

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must define forward(*arrays)")

    def backward(self, *output_grads):
        raise NotImplementedError(f"{type(self).__name__} must define backward(*output_grads)")

    def output(self, index=0):
        """Output `index` for use in backward: the live tensor (graph-connected for
        higher-order gradients) or, once the caller dropped it, a constant."""
        y = self.saved_outputs[index]()
        return y if y is not None else Tensor(self.saved_output_arrays[index])

    def needs_grad(self, index):
        return self.inputs[index].requires_grad

    def backward_inputs(self, output_grads):
        """Run backward and return one gradient per input, reduced to its shape."""
        if self.n_outputs == 1:
            grads = self.backward(output_grads[0])
        else:
            grads = self.backward(*[
                g if g is not None else Tensor(get_array_module(self.inputs[0].array).zeros(shape, dtype))
                for g, (shape, dtype) in zip(output_grads, self.output_meta)])
        if type(grads) is not tuple:
            grads = tuple(grads) if isinstance(grads, list) else (grads,)
        inputs = self.inputs
        if len(grads) != len(inputs):
            raise RuntimeError(f"{type(self).__name__}.backward returned {len(grads)} gradients "
                               f"for {len(inputs)} inputs")
        for x, g in zip(inputs, grads):
            if g is not None and (type(g) is not Tensor or g.array.shape != x.array.shape):
                return self._conform(grads)
        return grads

    def _conform(self, grads):
        """Wrap raw arrays a user's backward returned and sum broadcast gradients (of the
        inputs that need them: a constant's gradient is dropped, not reduced)."""
        result = []
        for x, g in zip(self.inputs, grads):
            if g is not None and not x.requires_grad:
                g = None
            if g is not None:
                if not isinstance(g, Tensor):
                    g = Tensor(_to_array(g, x.array.dtype, like=x.array))
                if g.array.shape != x.array.shape:
                    g = sum_to(g, x.array.shape)
            result.append(g)
        return result

    def release(self):
        """Drop saved tensors and arrays after backward (the graph is then spent)."""
        self.__dict__.clear()
        self.inputs = None


# ----- helpers ----------------------------------------------------------------------

# The NumPy ufuncs that a Tensor answers with its own operator (Tensor.__array_ufunc__).
_UFUNC_OPERATORS = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "divide": operator.truediv,
    "true_divide": operator.truediv, "power": operator.pow, "matmul": operator.matmul, "negative": operator.neg,
    "equal": operator.eq, "not_equal": operator.ne, "less": operator.lt, "less_equal": operator.le,
    "greater": operator.gt, "greater_equal": operator.ge,
}

_TYPE_NAMES = {np.dtype(k): v for k, v in [
    (np.float32, "Float"), (np.float64, "Double"), (np.float16, "Half"), (np.int64, "Long"), (np.int32, "Int"),
    (np.int16, "Short"), (np.int8, "Char"), (np.uint8, "Byte"), (np.bool_, "Bool")]}


def _drawn(like, values):
    """Random values drawn on the CPU in float64, as a tensor of like's dtype and device."""
    return Tensor(to_device(values.astype(like.dtype), like.device))


def _wrap(array):
    t = Tensor.__new__(Tensor)
    if not is_array(array):
        array = np.asarray(array)
    t.array = array
    t.grad = None
    t.requires_grad = False
    t.creator = None
    t.output_index = 0
    return t


def _to_array(data, dtype, like=None):
    """Convert array-like data to an array; Python floats default to float32."""
    if isinstance(data, Tensor):
        data = data.array
    if is_array(data):
        array = data if dtype is None else data.astype(dtype, copy=False)
    else:
        array = np.asarray(data, dtype=dtype)
        if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
            array = array.astype(DEFAULT_FLOAT)
    if like is not None and not isinstance(like, np.ndarray):
        array = to_device(array, device_of(like))
    return array


def _operand(other, reference):
    """Turn the other operand of a binary op into a Tensor.

    Python and NumPy scalars take the float dtype of the tensor, so they never
    promote a float32 tensor to float64.
    """
    if isinstance(other, Tensor):
        return other
    data = reference.array
    if isinstance(other, (int, float, bool, np.generic)):
        kind = data.dtype.kind
        if kind in "fc":
            dtype = data.dtype
        elif isinstance(other, (float, np.floating)):
            dtype = DEFAULT_FLOAT      # then NumPy's rules apply: int tensor * 0.5 is float64
        elif kind in "iu" or isinstance(other, (bool, np.bool_)):
            dtype = data.dtype
        else:
            dtype = np.int64           # bool tensor with an int
        if isinstance(data, np.ndarray):
            return _wrap(np.array(other, dtype=dtype))
        return _wrap(get_array_module(data).asarray(other, dtype=dtype))
    return Tensor(_to_array(other, None, like=data))


def _compare(ufunc, a, b):
    return Compare(ufunc.__name__)(a, _operand(b, a))


class Compare(Function):
    """An elementwise comparison (`name` is the ufunc: 'less', 'equal', ...); a boolean
    result, so no gradient. An op, so that tracing (ONNX export) sees it."""

    def __init__(self, name):
        self.name = name

    def forward(self, a, b):
        return getattr(get_array_module(a), self.name)(a, b)


def _normalize_index(index):
    """Replace Tensors inside an index by their arrays."""
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(i.array if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic_index(index):
    """True for indices made of ints, slices, None and Ellipsis (never repeat elements)."""
    items = index if isinstance(index, tuple) else (index,)
    for i in items:
        if not (i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer))):
            return False
    return True


def _op_error(fn, inputs, error):
    shapes = " and ".join(str(tuple(x.shape)) for x in inputs)
    message = (f"{type(fn).__name__}: {error} (input shapes {shapes}); "
               f"the op was called at {user_frame_summary()}")
    try:
        return type(error)(message)
    except Exception:
        return ValueError(message)


def _normalize_axis(axis, ndim):
    """Sorted non-negative axes; None, and PyTorch's empty dim=() or [], mean every axis."""
    if axis is None:
        return None
    if isinstance(axis, (list, tuple)):
        if not axis:
            return None
        return tuple(sorted(a % ndim if ndim else a for a in axis))
    return (axis % ndim if ndim else axis,)


def _keepdims_shape(shape, axis):
    """The shape of a reduction over `axis` with keepdims=True."""
    if axis is None:
        return (1,) * len(shape)
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


# ----- elementwise arithmetic ------------------------------------------------------

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


# ----- arithmetic with a Python number ---------------------------------------------
# The number c is an attribute, not an input: one input, no broadcast-gradient reduction,
# no gradient computed for c. Without create_graph, backward works on the arrays directly
# (no op recorded, no Tensor op dispatched); under it, backward is written with ops so it
# can be differentiated again.

_PYTHON_NUMBERS = (float, int)
_constants = {}


def _constant(value, like):
    """`value` for arithmetic with the array `like`: a cached 0-d NumPy array of like's dtype
    (NumPy multiplies by one about twice as fast as by a Python float, and the result is the
    same: NEP 50 casts a Python number to the array's dtype), or the number itself for CuPy."""
    if type(like) is not np.ndarray:
        return value
    key = (value, like.dtype)
    constant = _constants.get(key)
    if constant is None:
        constant = np.array(value, dtype=like.dtype)
        if value == 0 or value != value:   # 0.0 and -0.0 (and NaNs) share a key: not cached
            return constant
        if len(_constants) > 1024:
            _constants.clear()
        _constants[key] = constant
    return constant


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


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, a):
        return a.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.inputs[0].dtype)


class ToDevice(Function):
    def __init__(self, device):
        self.device = device

    def forward(self, a):
        return to_device(a, self.device)

    def backward(self, gy):
        return ToDevice(self.inputs[0].device)(gy)


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


# ----- matmul -------------------------------------------------------------------------

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


def expand_dims(x, axis):
    """Insert a size-1 axis at `axis` (an int or a tuple of ints)."""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = x.ndim + len(axes)
    axes = sorted(a % ndim for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


# ----- shape ops ----------------------------------------------------------------------

class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        return a.reshape(self.shape)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return _wrap(gy.array.reshape(self.inputs[0].array.shape))
        return reshape(gy, self.inputs[0].shape)


def reshape(x, shape):
    """The same elements in a new shape (a view when NumPy can make one)."""
    if isinstance(shape, int):
        shape = (shape,)
    return Reshape(tuple(shape))(x)


class Transpose(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return transpose(gy)
        inverse = tuple(np.argsort([a % len(self.axes) for a in self.axes]))
        return transpose(gy, inverse)


def transpose(x, *dims, axes=None):
    """Two dims swap them (PyTorch's transpose(x, 0, 1)); a full permutation, as a tuple or as
    three or more ints, reorders the axes (NumPy's transpose); none reverses them."""
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        axes = dims[0]
    elif len(dims) == 2:
        return swapaxes(x, *dims)
    elif dims:
        axes = dims
    return Transpose(tuple(axes) if axes is not None else None)(x)


def swapaxes(x, axis1, axis2):
    """Exchange two axes."""
    axes = list(range(x.ndim))
    axis1, axis2 = axis1 % x.ndim, axis2 % x.ndim
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


def _numpy_squeeze(x, axis=None):
    """NumPy's squeeze: naming an axis whose size is not 1 is an error."""
    if axis is not None:
        for a in _normalize_axis(axis, x.ndim):
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (shape {x.shape})")
    return squeeze(x, axis)


@numpy_spellings(numpy=_numpy_squeeze)
def squeeze(x, dim=None):
    """Remove axes of length one: all of them, or those among `dim` (others are left, as in PyTorch)."""
    if dim is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        dims = _normalize_axis(dim, x.ndim)
        shape = tuple(n for i, n in enumerate(x.shape) if i not in dims or n != 1)
    return reshape(x, shape)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        return get_array_module(a).broadcast_to(a, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.inputs[0].shape)


def broadcast_to(x, shape):
    """A read-only view of x broadcast to `shape`; backward sums over the broadcast axes."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return BroadcastTo(shape)(x)


class SumTo(Function):
    """Sum over broadcast axes so that the result has `shape` (the inverse of broadcasting)."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        shape = self.shape
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1)
        y = a.sum(axis=axes, keepdims=True) if axes else a
        if lead:
            y = y.reshape(shape)
        return y

    def backward(self, gy):
        return broadcast_to(gy, self.inputs[0].shape)


def sum_to(x, shape):
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return SumTo(shape)(x)


# ----- reductions ---------------------------------------------------------------------

class Sum(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        return a.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        shape = self.inputs[0].shape
        if not _grad_enabled[0]:   # a read-only broadcast view: the consumers never write into it
            g = gy.array if self.keepdims else gy.array.reshape(_keepdims_shape(shape, self.axis))
            return _wrap(get_array_module(g).broadcast_to(g, shape))
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy, shape)


@numpy_spellings
def sum(x, dim=None, keepdim=False, *, dtype=None):
    """Sum over `dim` (all dimensions when None)."""
    if dtype is not None:
        x = x.astype(dtype)
    return Sum(_normalize_axis(dim, x.ndim), keepdim)(x)


class Mean(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        return a.mean(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = x.shape
        count = x.array.size // builtins.max(gy.array.size, 1) if x.array.size else 1
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy * (1.0 / count if count else 0.0), shape)


@numpy_spellings
def mean(x, dim=None, keepdim=False, *, dtype=None):
    """Mean over `dim` (all dimensions when None)."""
    if dtype is not None:
        x = x.astype(dtype)
    return Mean(_normalize_axis(dim, x.ndim), keepdim)(x)


def _variance(x, dim, keepdim, correction):
    axes = _normalize_axis(dim, x.ndim)
    count = x.array.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    centered = x - mean(x, dim, True)
    scale = 1.0 / (count - correction) if count > correction else float("nan")
    return sum(centered * centered, dim, keepdim) * scale


def _correction(unbiased, correction):
    if unbiased is not None and correction is not None:
        raise TypeError("var/std: give unbiased= or correction=, not both")
    return correction if correction is not None else (0 if unbiased is False else 1)


def _numpy_var(x, axis=None, keepdims=False, ddof=0):
    """NumPy's var (named axis=): ddof=0 unless given."""
    return _variance(x, axis, keepdims, ddof)


def _numpy_std(x, axis=None, keepdims=False, ddof=0):
    """NumPy's std (named axis=): ddof=0 unless given."""
    return _variance(x, axis, keepdims, ddof) ** 0.5


@numpy_spellings(numpy=_numpy_var)
def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over `dim` with PyTorch's default correction=1 (n - 1); `axis=` gives NumPy's ddof=0."""
    return _variance(x, dim, keepdim, _correction(unbiased, correction))


@numpy_spellings(numpy=_numpy_std)
def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation over `dim` (PyTorch's correction=1 by default; `axis=` gives NumPy's ddof=0).

    Equal values give a zero gradient, as in PyTorch (not NaN)."""
    return root_with_zero_slope(_variance(x, dim, keepdim, _correction(unbiased, correction)), 0.5)


class RootWithZeroSlope(Function):
    """s ** exponent for s >= 0 whose gradient at s == 0 is 0 (a root's slope there is inf).

    std and norm end in such a root; PyTorch gives equal values and zero vectors a zero
    gradient there, so a constant input never turns the gradients to NaN.
    """

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, s):
        return s ** self.exponent

    def backward(self, gy):
        s = self.inputs[0]
        positive = _wrap((s.array > 0).astype(gy.dtype))
        safe = s + (1 - positive)  # 1 where s == 0, so no inf is formed at any order
        return gy * positive * safe ** (self.exponent - 1) * self.exponent


def root_with_zero_slope(s, exponent):
    return RootWithZeroSlope(exponent)(s)


class Max(Function):
    """max/min over axes; the gradient is shared evenly between tied extremes."""
    save_outputs = True

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        if a.size == 0 and (self.axis is None or 0 in [a.shape[k] for k in np.atleast_1d(self.axis)]):
            # as in NumPy: reducing a zero-size axis has no identity; other axes of an empty tensor do
            raise ValueError(f"{'min' if self.take_min else 'max'} over a zero-size axis of an empty tensor")
        reduce = a.min if self.take_min else a.max
        return reduce(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = _keepdims_shape(x.shape, self.axis)
        y = self.output().array.reshape(shape)
        mask = (x.array == y).astype(gy.dtype)
        mask /= mask.sum(axis=self.axis, keepdims=True)
        return broadcast_to(reshape(gy, shape), x.shape) * _wrap(mask)


def _numpy_max(x, axis=None, keepdims=False):
    """NumPy's max (named axis=): the values only; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, False)(x)


def _numpy_min(x, axis=None, keepdims=False):
    """NumPy's min (named axis=): the values only; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, True)(x)


@numpy_spellings(numpy=_numpy_max)
def max(x, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) along it; with a tensor, the elementwise maximum."""
    if isinstance(dim, Tensor):
        return functions.maximum(x, dim)
    if dim is None:
        return Max(None, False, False)(x)
    return sorting.extreme_along(x, dim, keepdim, take_min=False)


@numpy_spellings(numpy=_numpy_min)
def min(x, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) along it; with a tensor, the elementwise minimum."""
    if isinstance(dim, Tensor):
        return functions.minimum(x, dim)
    if dim is None:
        return Max(None, False, True)(x)
    return sorting.extreme_along(x, dim, keepdim, take_min=True)


def amax(x, dim=None, keepdim=False):
    """The largest values over `dim` (a tuple allowed); ties share the gradient equally."""
    return Max(_normalize_axis(dim, x.ndim), keepdim, False)(x)


def amin(x, dim=None, keepdim=False):
    """The smallest values over `dim` (a tuple allowed); ties share the gradient equally."""
    return Max(_normalize_axis(dim, x.ndim), keepdim, True)(x)


class ArgMax(Function):
    """Index of the extreme value over one axis (or of the flattened array when axis is
    None); an integer result, so no gradient. An op, so that tracing sees it."""

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        reduce = a.argmin if self.take_min else a.argmax
        return reduce(axis=self.axis, keepdims=self.keepdims)


@numpy_spellings
def argmax(x, dim=None, keepdim=False):
    """Index of the largest value over `dim` (of the flattened tensor when None; int64, no gradient)."""
    return ArgMax(dim, keepdim, False)(x)


@numpy_spellings
def argmin(x, dim=None, keepdim=False):
    """Index of the smallest value over `dim` (of the flattened tensor when None; int64, no gradient)."""
    return ArgMax(dim, keepdim, True)(x)


def _numpy_sort(x, axis=-1):
    """NumPy's sort (named axis=): the sorted values only."""
    return sorting.sort(x, axis).values


@numpy_spellings(numpy=_numpy_sort)
def sort(x, dim=-1, descending=False, stable=False):
    """Sorted along `dim`: PyTorch's (values, indices); `axis=` gives NumPy's sorted values."""
    return sorting.sort(x, dim, descending, stable)


@numpy_spellings
def argsort(x, dim=-1, descending=False, stable=False):
    """Indices that sort x along `dim` (ties keep their order)."""
    return sorting.argsort(x, dim, descending, stable)


# ----- indexing -----------------------------------------------------------------------

class GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, a):
        return a[self.index]

    def backward(self, gy):
        x = self.inputs[0]
        return IndexAdd(self.index, x.shape)(gy)


class IndexAdd(Function):
    """zeros(shape) with `values` added at `index` (repeated indices accumulate)."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def forward(self, values):
        xp = get_array_module(values)
        out = xp.zeros(self.shape, dtype=values.dtype)
        if _is_basic_index(self.index):
            out[self.index] = values
        else:
            scatter_add(out, self.index, values)
        return out

    def backward(self, gy):
        return GetItem(self.index)(gy)


# Op families that Tensor's methods call. They import Function and Tensor from this
# module, so they are loaded here, once both exist.
from . import creation, functions, indexing, layout, sorting  # noqa: E402
