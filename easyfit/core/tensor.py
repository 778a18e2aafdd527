"""Tensor and Function: the engine every op runs on.

An op is a small `Function` subclass: `forward` works on raw arrays (NumPy or CuPy),
`backward` is written with Tensor ops, so running it with grad mode on (under
`create_graph=True`) records a graph of the backward pass and gives higher-order
gradients for free. Tensor speaks PyTorch (DESIGN.md): its methods take PyTorch's names
and arguments, NumPy's keyword names being accepted where they mean the same
(spellings.py).

This module holds what every op needs: Function and the op hooks a tracer uses, the helpers
that turn data into arrays and Tensors, and Tensor's core (construction, dtype and device,
conversion, backward). Tensor's other methods come by family from mixin base classes, each
in the module that also holds that family's ops:

    arithmetic.py   + - * / ** @, unary -, abs, and the elementwise math methods (exp, clamp, ...)
    comparison.py   == != < <= > >=, eq/ne/lt/le/gt/ge, isnan, all/any, equal, allclose
    reductions.py   sum, mean, var, std, max/min, amax/amin, argmax/argmin, sort/argsort
    shapes.py       reshape, transpose, view, permute and the other shape methods; x[...]
    inplace.py      += -= *= /= and the *_ methods (add_, copy_, zero_, normal_, ...)

The families import Function and the helpers from here, so they load after those and
before Tensor; the op modules that import Tensor itself (functions, layout, indexing,
sorting, creation) load once it exists. Every name keeps its import path:
`from easyfit.core.tensor import Tensor, Add, reshape` works as it always has.
"""
import builtins
import operator
import weakref

import numpy as np

from .autograd import _grad_enabled, _anomaly_enabled, run_backward, user_frame_summary
from .backend import get_array_module, device_of, parse_device, to_device, is_array
from .devices import as_device

DEFAULT_FLOAT = np.dtype(np.float32)

# The module's names: its own, and the ops of the families below, importable from here as ever.
__all__ = [
    "Tensor", "Function", "DEFAULT_FLOAT", "set_op_hook", "set_write_hook", "Cast", "ToDevice", "BroadcastTo",
    "GetItem", "IndexAdd", "Reshape", "SumTo", "Transpose", "broadcast_to", "expand_dims", "reshape", "squeeze",
    "sum_to", "swapaxes", "transpose", "Abs", "Add", "AddScalar", "Clip", "Div", "DivScalar", "Log", "MatMul",
    "Mul", "MulScalar", "Neg", "Pow", "PowScalar", "RDivScalar", "RPowScalar", "RSubScalar", "Sub", "clip", "log",
    "matmul", "Compare", "ArgMax", "Max", "Mean", "RootWithZeroSlope", "Sum", "amax", "amin", "argmax", "argmin",
    "argsort", "max", "mean", "min", "root_with_zero_slope", "sort", "std", "sum", "var"
]


# ----- the op hook ------------------------------------------------------------------
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


# Python numbers as operands (arithmetic.py's scalar ops, functions.py).
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


# ----- Tensor -----------------------------------------------------------------------
# Each family module holds a family's ops and a mixin class with its Tensor methods. The
# modules import Function and the helpers above, so they load here, before Tensor exists.
from .shapes import (  # noqa: E402
    ShapeMethods, BroadcastTo, GetItem, IndexAdd, Reshape, SumTo, Transpose, broadcast_to, expand_dims, reshape,
    squeeze, sum_to, swapaxes, transpose)
from .arithmetic import (  # noqa: E402
    ArithmeticMethods, Abs, Add, AddScalar, Clip, Div, DivScalar, Log, MatMul, Mul, MulScalar, Neg, Pow, PowScalar,
    RDivScalar, RPowScalar, RSubScalar, Sub, clip, log, matmul)
from .comparison import ComparisonMethods, Compare  # noqa: E402
from .reductions import (  # noqa: E402
    ReductionMethods, ArgMax, Max, Mean, RootWithZeroSlope, Sum, amax, amin, argmax, argmin, argsort, max, mean, min,
    root_with_zero_slope, sort, std, sum, var)
from .inplace import InPlaceMethods  # noqa: E402


class Tensor(ArithmeticMethods, ComparisonMethods, ReductionMethods, ShapeMethods, InPlaceMethods):
    """An n-dimensional array that records the ops applied to it for backward.

    `array` is the underlying NumPy/CuPy array (the engine's own handle), `data` is
    PyTorch's: a Tensor sharing that storage, cut from the graph. `grad` is the
    accumulated gradient (a Tensor or None), `creator` (`grad_fn`) the op that produced
    it (None for leaves). A method that shares a function's name takes that function's
    arguments with the tensor first: `x.sum(dim=1)` is `easyfit.sum(x, dim=1)`.

    The class holds the core; its other methods come by family from its bases
    (ArithmeticMethods, ComparisonMethods, ...), which `help(Tensor)` lists in turn.
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


# creation imports Tensor (it loads once Tensor exists); Tensor.new_* call it.
from . import creation  # noqa: E402
