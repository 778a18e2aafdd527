"""Tensor, Function (the op base class), and the ops that Tensor exposes as methods.

An op is a small `Function` subclass: `forward` works on raw arrays (NumPy or CuPy),
`backward` is written with Tensor ops, so running it with grad mode on (under
`create_graph=True`) records a graph of the backward pass and gives higher-order
gradients for free. Functions that are not Tensor methods live in `functions.py`.
"""
import builtins
import functools
import weakref

import numpy as np

from . import autograd
from .autograd import _grad_enabled, _anomaly_enabled, run_backward, user_frame_summary
from .backend import get_array_module, device_of, parse_device, to_device, scatter_add, is_array

DEFAULT_FLOAT = np.dtype(np.float32)

# PyTorch names that easyfit's tensors spell the NumPy way (DESIGN.md), and what to write
# instead: a PyTorch habit gets a pointer rather than a bare AttributeError or TypeError.
_TORCH_ATTRIBUTES = {
    "view": "x.reshape(shape)", "permute": "x.transpose(axes)", "unsqueeze": "ef.expand_dims(x, axis)",
    "t": "x.T", "dim": "x.ndim", "numel": "x.size", "grad_fn": "x.creator (the op that made x)",
    "clone": "x * 1 (recorded) or x.detach() (not recorded)", "exp": "ef.exp(x)", "log": "ef.log(x)",
    "sqrt": "ef.sqrt(x)", "tanh": "ef.tanh(x)", "sigmoid": "ef.sigmoid(x)", "relu": "ef.relu(x)",
    "abs": "abs(x)", "pow": "x ** p", "clamp": "x.clip(min, max)", "type": "x.astype(dtype)",
    "softmax": "easyfit.nn.functional.softmax(x, axis)",
    "log_softmax": "easyfit.nn.functional.log_softmax(x, axis)",
    "zero_": "x[...] = 0 under ef.no_grad()", "fill_": "x[...] = value under ef.no_grad()",
    "copy_": "x[...] = y under ef.no_grad()", "add_": "x += y under ef.no_grad()",
    "sub_": "x -= y under ef.no_grad()", "mul_": "x *= y under ef.no_grad()",
    "div_": "x /= y under ef.no_grad()", "clamp_": "x[...] = x.clip(min, max) under ef.no_grad()",
}
_TORCH_KEYWORDS = {"dim": "axis", "keepdim": "keepdims"}


def _numpy_keywords(method):
    """Let a reduction called with PyTorch's `dim=`/`keepdim=` say which NumPy names to use."""
    @functools.wraps(method)  # inspect.signature still shows the real arguments
    def checked(self, *args, **kwargs):
        if kwargs and any(k in _TORCH_KEYWORDS for k in kwargs):
            names = ", ".join(f"{_TORCH_KEYWORDS[k]}= (not {k}=)" for k in kwargs if k in _TORCH_KEYWORDS)
            raise TypeError(f"Tensor.{method.__name__}() takes NumPy's argument names: {names}")
        return method(self, *args, **kwargs)
    return checked


class Tensor:
    """An n-dimensional array that records the ops applied to it for backward.

    `array` is the underlying NumPy/CuPy array (the engine's own handle), `data` is
    PyTorch's: a Tensor sharing that storage, cut from the graph. `grad` is the
    accumulated gradient (a Tensor or None), `creator` the op that produced it (None
    for leaves).
    """
    __slots__ = ("array", "grad", "requires_grad", "creator", "output_index", "__weakref__")
    # NumPy arithmetic with a Tensor on the right defers to the Tensor's reflected operator.
    __array_ufunc__ = None

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
    def size(self):
        return self.array.size

    @property
    def device(self):
        return device_of(self.array)

    @property
    def is_leaf(self):
        return self.creator is None

    @property
    def T(self):
        return transpose(self)

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

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def long(self):
        return self.astype(np.int64)

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
    def __add__(self, other):
        return Add()(self, _operand(other, self))

    def __radd__(self, other):
        return Add()(_operand(other, self), self)

    def __sub__(self, other):
        return Sub()(self, _operand(other, self))

    def __rsub__(self, other):
        return Sub()(_operand(other, self), self)

    def __mul__(self, other):
        return Mul()(self, _operand(other, self))

    def __rmul__(self, other):
        return Mul()(_operand(other, self), self)

    def __truediv__(self, other):
        return Div()(self, _operand(other, self))

    def __rtruediv__(self, other):
        return Div()(_operand(other, self), self)

    def __pow__(self, other):
        return Pow()(self, _operand(other, self))

    def __rpow__(self, other):
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

    def __getattr__(self, name):  # only reached when normal lookup fails
        hint = _TORCH_ATTRIBUTES.get(name)
        if hint is None:
            raise AttributeError(f"'Tensor' object has no attribute {name!r}")
        raise AttributeError(f"'Tensor' object has no attribute {name!r}: easyfit's tensors use NumPy's "
                             f"names (PyTorch's for layers and optimizers); write {hint}")

    # ----- methods with NumPy names -----------------------------------------------
    @_numpy_keywords
    def sum(self, axis=None, keepdims=False):
        return sum(self, axis, keepdims)

    @_numpy_keywords
    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims)

    @_numpy_keywords
    def var(self, axis=None, keepdims=False, ddof=0):
        return var(self, axis, keepdims, ddof)

    @_numpy_keywords
    def std(self, axis=None, keepdims=False, ddof=0):
        return var(self, axis, keepdims, ddof) ** 0.5

    @_numpy_keywords
    def max(self, axis=None, keepdims=False):
        return max(self, axis, keepdims)

    @_numpy_keywords
    def min(self, axis=None, keepdims=False):
        return min(self, axis, keepdims)

    @_numpy_keywords
    def argmax(self, axis=None, keepdims=False):
        return argmax(self, axis, keepdims)

    @_numpy_keywords
    def argmin(self, axis=None, keepdims=False):
        return argmin(self, axis, keepdims)

    def clip(self, min=None, max=None):
        return clip(self, min, max)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return reshape(self, shape)

    def flatten(self):
        return reshape(self, (-1,))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return transpose(self, axes or None)

    def swapaxes(self, axis1, axis2):
        return swapaxes(self, axis1, axis2)

    def squeeze(self, axis=None):
        return squeeze(self, axis)


# ----- the op hook -------------------------------------------------------------------
# A tracer (easyfit.onnx) sees every op call through this hook: when set, Function.__call__
# hands it (fn, inputs) and returns what it returns. None when nothing traces, so the hot
# path pays one list lookup. Core knows nothing of what a tracer does with the calls.
_op_hook = [None]


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
        """Wrap raw arrays a user's backward returned and sum broadcast gradients."""
        result = []
        for x, g in zip(self.inputs, grads):
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
    if axis is None:
        return None
    if isinstance(axis, (list, tuple)):
        return tuple(sorted(a % ndim if ndim else a for a in axis))
    return (axis % ndim if ndim else axis,)


def _keepdims_shape(shape, axis):
    """The shape of a reduction over `axis` with keepdims=True."""
    if axis is None:
        return (1,) * len(shape)
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


# ----- elementwise arithmetic ------------------------------------------------------

class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, (-gy if self.needs_grad(1) else None)


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        return (gy * b if a.requires_grad else None,
                gy * a if b.requires_grad else None)


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        ga = gy / b if a.requires_grad else None
        gb = -gy * a / (b * b) if b.requires_grad else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, gy):
        return -gy


class Pow(Function):
    def forward(self, a, b):
        return a ** b

    def backward(self, gy):
        a, b = self.inputs
        ga = gy * b * a ** (b - 1) if a.requires_grad else None
        gb = gy * (a ** b) * log(a) if b.requires_grad else None
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


def transpose(x, axes=None):
    """Permute the axes (reversed when `axes` is None), as NumPy's transpose."""
    return Transpose(tuple(axes) if axes is not None else None)(x)


def swapaxes(x, axis1, axis2):
    """Exchange two axes."""
    axes = list(range(x.ndim))
    axis1, axis2 = axis1 % x.ndim, axis2 % x.ndim
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


def squeeze(x, axis=None):
    """Remove axes of length one (all of them, or the given `axis`)."""
    if axis is None:
        shape = tuple(n for n in x.shape if n != 1)
    else:
        axes = _normalize_axis(axis, x.ndim)
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (shape {x.shape})")
        shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
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
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy, shape)


def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (all axes when None)."""
    return Sum(_normalize_axis(axis, x.ndim), keepdims)(x)


class Mean(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        return a.mean(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = x.shape
        count = x.size // builtins.max(gy.size, 1) if x.size else 1
        if not self.keepdims:
            gy = reshape(gy, _keepdims_shape(shape, self.axis))
        return broadcast_to(gy * (1.0 / count if count else 0.0), shape)


def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (all axes when None)."""
    return Mean(_normalize_axis(axis, x.ndim), keepdims)(x)


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance with NumPy's default ddof=0 (PyTorch's default is ddof=1)."""
    axes = _normalize_axis(axis, x.ndim)
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    centered = x - mean(x, axis, keepdims=True)
    scale = 1.0 / (count - ddof) if count > ddof else float("nan")
    return sum(centered * centered, axis, keepdims) * scale


class Max(Function):
    """max/min over axes; the gradient is shared evenly between tied extremes."""
    save_outputs = True

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        if a.size == 0:
            raise ValueError(f"{'min' if self.take_min else 'max'} of an empty tensor")
        reduce = a.min if self.take_min else a.max
        return reduce(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        shape = _keepdims_shape(x.shape, self.axis)
        y = self.output().array.reshape(shape)
        mask = (x.array == y).astype(gy.dtype)
        mask /= mask.sum(axis=self.axis, keepdims=True)
        return broadcast_to(reshape(gy, shape), x.shape) * _wrap(mask)


def max(x, axis=None, keepdims=False):
    """Largest value over `axis`; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, False)(x)


def min(x, axis=None, keepdims=False):
    """Smallest value over `axis`; ties share the gradient equally."""
    return Max(_normalize_axis(axis, x.ndim), keepdims, True)(x)


class ArgMax(Function):
    """Index of the extreme value over one axis (or of the flattened array when axis is
    None); an integer result, so no gradient. An op, so that tracing sees it."""

    def __init__(self, axis, keepdims, take_min):
        self.axis, self.keepdims, self.take_min = axis, keepdims, take_min

    def forward(self, a):
        reduce = a.argmin if self.take_min else a.argmax
        return reduce(axis=self.axis, keepdims=self.keepdims)


def argmax(x, axis=None, keepdims=False):
    """Index of the largest value over `axis` (an int64 tensor, no gradient)."""
    return ArgMax(axis, keepdims, False)(x)


def argmin(x, axis=None, keepdims=False):
    """Index of the smallest value over `axis` (an int64 tensor, no gradient)."""
    return ArgMax(axis, keepdims, True)(x)


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
