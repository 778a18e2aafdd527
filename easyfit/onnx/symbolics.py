"""The ONNX form of every easyfit op: one table from Function class to a symbolic function.

A symbolic function `symbolic(g, op, *inputs)` receives the graph builder `g` (see
export.GraphBuilder), the traced op instance (its attributes: axes, shapes, ...) and the
ONNX names of its inputs, adds nodes with `g.op(...)`, and returns the name of each
output. A new op gets its ONNX form by one entry in `SYMBOLICS`, or, when it has none,
an entry in `REFUSED` saying why; tests/onnx/test_coverage_and_refusal.py checks that every Function
subclass in easyfit is in one of the two. A user's own Function declares its form with
a static method of the same signature named `symbolic`.

Layers recorded whole (`WHOLE_MODULES`) map to one ONNX operator each: RNN, LSTM and GRU
to ONNX's own recurrent operators (gate order converted; the time loop stays inside the
operator, so the sequence length is dynamic), batch norm in eval mode to
BatchNormalization with the running statistics as initializers.
"""
import importlib
import math

import numpy as np

from ..core import functions as core_functions
from ..nn import recurrent
from ..nn.normalization import BatchNorm1d, BatchNorm2d
from ..nn.upsampling import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from .export import DynamicDim

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _in_dtype(g, i):
    return g.node.inputs[i].dtype


def _out_dtype(g, j=0):
    return g.node.outputs[j].dtype


def _ndim(g, i=0):
    return g.node.inputs[i].ndim


# ----- elementwise ------------------------------------------------------------------------------

def _unary(op_type):
    def symbolic(g, op, x):
        return g.op(op_type, x)
    symbolic.__name__ = f"unary_{op_type}"
    return symbolic


def _binary(op_type):
    """A broadcasting binary op; inputs are cast to the result's dtype (NumPy's promotion)."""
    def symbolic(g, op, a, b):
        out = _out_dtype(g)
        return g.op(op_type, g.cast(a, _in_dtype(g, 0), out), g.cast(b, _in_dtype(g, 1), out))
    symbolic.__name__ = f"binary_{op_type}"
    return symbolic


def _with_scalar(op_type, scalar_first=False):
    """x op c (or c op x) for an op that keeps its Python number c as an attribute."""
    def symbolic(g, op, x):
        c = g.constant(op.scalar, _in_dtype(g, 0))
        return g.op(op_type, c, x) if scalar_first else g.op(op_type, x, c)
    symbolic.__name__ = f"scalar_{op_type}"
    return symbolic


def _maximum(g, op, a, b):
    out = _out_dtype(g)
    return g.op("Min" if op.take_min else "Max", g.cast(a, _in_dtype(g, 0), out), g.cast(b, _in_dtype(g, 1), out))


_COMPARISONS = {"less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
                "greater_equal": "GreaterOrEqual", "equal": "Equal"}


def _compare(g, op, a, b):
    common = np.result_type(_in_dtype(g, 0), _in_dtype(g, 1))
    a, b = g.cast(a, _in_dtype(g, 0), common), g.cast(b, _in_dtype(g, 1), common)
    if op.name == "not_equal":
        return g.op("Not", g.op("Equal", a, b))
    if op.name not in _COMPARISONS:
        raise g.error(f"comparison {op.name!r} has no ONNX form")
    return g.op(_COMPARISONS[op.name], a, b)


def _cast(g, op, x):
    return g.cast(x, _in_dtype(g, 0), op.dtype) if np.dtype(op.dtype) != _in_dtype(g, 0) else g.op("Identity", x)


def _clip(g, op, x):
    dtype = _in_dtype(g, 0)
    low = g.constant(op.low, dtype) if op.low is not None else None
    high = g.constant(op.high, dtype) if op.high is not None else None
    return g.op("Clip", x, low, high)


def _where(g, op, a, b):
    out = _out_dtype(g)
    condition = g.array(lambda o: o.condition, dtype=np.bool_)
    return g.op("Where", condition, g.cast(a, _in_dtype(g, 0), out), g.cast(b, _in_dtype(g, 1), out))


def _tanh_grad(g, op, gy, y):
    one = g.constant(1, _in_dtype(g, 1))
    return g.op("Mul", gy, g.op("Sub", one, g.op("Mul", y, y)))


def _sigmoid_grad(g, op, gy, y):
    one = g.constant(1, _in_dtype(g, 1))
    return g.op("Mul", gy, g.op("Mul", y, g.op("Sub", one, y)))


def _erf(g, op, x):
    return g.op("Erf", x)


def _gelu(g, op, x):
    dtype = _in_dtype(g, 0)
    cdf = g.op("Erf", g.op("Mul", x, g.constant(1 / math.sqrt(2), dtype)))
    cdf = g.op("Mul", g.op("Add", cdf, g.constant(1, dtype)), g.constant(0.5, dtype))
    return g.op("Mul", x, cdf)


# ----- matmul, linear, einsum ------------------------------------------------------------------------

def _matmul(g, op, a, b):
    out = _out_dtype(g)
    return g.op("MatMul", g.cast(a, _in_dtype(g, 0), out), g.cast(b, _in_dtype(g, 1), out))


def _linear(g, op, x, weight, bias=None):
    if _ndim(g, 0) == 2:
        return g.op("Gemm", x, weight, bias, transB=1)
    y = g.op("MatMul", x, g.op("Transpose", weight, perm=[1, 0]))
    return g.op("Add", y, bias) if bias is not None else y


def _einsum(g, op, *inputs):
    out = _out_dtype(g)
    inputs = [g.cast(name, _in_dtype(g, i), out) for i, name in enumerate(inputs)]
    return g.op("Einsum", *inputs, equation=",".join(op.terms) + "->" + op.output_term)


# ----- shapes ---------------------------------------------------------------------------------------

def _reshape(g, op, x):
    entries = g.int_entries(lambda o: o.shape)
    input_dims = g.signatures.get(x, ())
    target, unresolved = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, DynamicDim):
            if i < len(input_dims) and input_dims[i] == entry.sizes:
                target.append(0)   # ONNX Reshape: 0 copies the input's size at this position
                continue
            unresolved.append(i)
        elif entry == 0:
            raise g.error("reshape to a zero-size axis is not exported")
        target.append(entry)
    if len(unresolved) == 1 and -1 not in [t for t in target if isinstance(t, int)]:
        target[unresolved[0]] = -1
    return g.op("Reshape", x, g.shape_vector(target, prefer=[x]))


def _transpose(g, op, x):
    ndim = _ndim(g)
    perm = list(reversed(range(ndim))) if op.axes is None else [a % ndim for a in op.axes]
    return g.op("Transpose", x, perm=perm)


def _broadcast_to(g, op, x):
    entries = g.int_entries(lambda o: o.shape)
    input_dims = g.signatures.get(x, ())
    offset = len(entries) - len(input_dims)
    target = []
    for i, entry in enumerate(entries):
        if isinstance(entry, DynamicDim) and i >= offset and input_dims[i - offset] == entry.sizes:
            entry = 1  # Expand broadcasts both ways: 1 keeps the input's own (dynamic) size
        target.append(entry)
    return g.op("Expand", x, g.shape_vector(target, prefer=[x]))


def _sum_to(g, op, x):
    shape = op.shape
    in_shape = g.node.inputs[0].shape
    lead = len(in_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, n in enumerate(shape) if n == 1 and in_shape[lead + i] != 1]
    y = g.reduce("ReduceSum", x, axes, keepdims=True) if axes else x
    return g.op("Reshape", y, g.ints(shape)) if lead else y


def _concatenate(g, op, *inputs):
    out = _out_dtype(g)
    inputs = [g.cast(name, _in_dtype(g, i), out) for i, name in enumerate(inputs)]
    return g.op("Concat", *inputs, axis=int(op.axis))


def _split(g, op, x):
    sizes = [[t.shape[op.axis] for t in trace.nodes[g.index].outputs] for trace in g.traces]
    if any(s != sizes[0] for s in sizes):
        raise g.error("the sizes of its pieces change with a dynamic axis; split a static axis")
    return g.op("Split", x, g.ints(sizes[0]), axis=int(op.axis), outputs=len(sizes[0]))


def _pad(g, op, x):
    widths = op.pad_width
    pads = [int(b) for b, _ in widths] + [int(a) for _, a in widths]
    return g.op("Pad", x, g.ints(pads), g.constant(op.constant_values, _in_dtype(g, 0)), mode="constant")


# ----- reductions ---------------------------------------------------------------------------------------

def _reduction(op_type):
    def symbolic(g, op, x):
        return g.reduce(op_type, x, op.axis, op.keepdims)
    return symbolic


def _max(g, op, x):
    return g.reduce("ReduceMin" if op.take_min else "ReduceMax", x, op.axis, op.keepdims)


def _argmax(g, op, x):
    op_type = "ArgMin" if op.take_min else "ArgMax"
    if op.axis is None:
        flat = g.op("Reshape", x, g.ints([-1]))
        y = g.op(op_type, flat, axis=0, keepdims=0)
        if op.keepdims:
            y = g.op("Reshape", y, g.ints([1] * _ndim(g)))
        return y
    return g.op(op_type, x, axis=int(op.axis), keepdims=int(bool(op.keepdims)))


def _logsumexp(g, op, x):
    return g.reduce("ReduceLogSumExp", x, op.axis, op.keepdims)


def _softmax(op_type):
    def symbolic(g, op, x):
        return g.op(op_type, x, axis=int(op.axis))
    return symbolic


# ----- indexing ------------------------------------------------------------------------------------------

def _is_index_array(item):
    return hasattr(item, "shape") and hasattr(item, "dtype") and not isinstance(item, np.generic)


def _index_tuple(op):
    index = op.index if isinstance(op.index, tuple) else (op.index,)
    return tuple(np.asarray(i) if isinstance(i, list) else i for i in index)


def _getitem(g, op, x):
    shape = g.node.inputs[0].shape
    index = _index_tuple(op)
    used = sum(1 for i in index if i is not None and i is not Ellipsis and not _is_index_array(i)) + \
        sum(i.ndim if i.dtype == np.bool_ else 1 for i in index if _is_index_array(i))
    has_ellipsis = any(item is Ellipsis for item in index)
    items = []
    for item in index:
        if item is Ellipsis:
            items.extend([slice(None)] * (len(shape) - used))
        else:
            items.append(item)
    if not has_ellipsis:
        items.extend([slice(None)] * (len(shape) - used))
    arrays = [(k, item) for k, item in enumerate(items) if _is_index_array(item)]

    # 1. The basic part (ints, slices, None), with each array item kept as full slices.
    starts, ends, steps, axes, squeeze, new_axes = [], [], [], [], [], []
    axis, out_axis = 0, 0
    for k, item in enumerate(items):
        if item is None:
            new_axes.append(out_axis)
            out_axis += 1
        elif _is_index_array(item):
            width = item.ndim if item.dtype == np.bool_ else 1
            axis += width
            out_axis += width
        elif isinstance(item, slice):
            if item != slice(None):
                step = 1 if item.step is None else int(item.step)
                start = item.start if item.start is not None else (0 if step > 0 else INT64_MAX)
                end = item.stop if item.stop is not None else (INT64_MAX if step > 0 else INT64_MIN)
                starts.append(int(start))
                ends.append(int(end))
                steps.append(step)
                axes.append(axis)
            axis += 1
            out_axis += 1
        else:  # an int
            i = int(item)
            starts.append(i)
            ends.append(i + 1 if i != -1 else INT64_MAX)
            steps.append(1)
            axes.append(axis)
            squeeze.append(axis)
            axis += 1
    y = x
    if axes:
        _check_static_slices(g, op)
        y = g.op("Slice", y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps))
    if squeeze:
        y = g.squeeze(y, squeeze)
    if new_axes:  # positions in the result (ONNX Unsqueeze's axes are output positions)
        y = g.unsqueeze(y, new_axes)
    if not arrays:
        return y
    # Positions of the array items in y (after the basic part).
    positions = []
    out = 0
    for item in items:
        if item is None:
            out += 1
        elif _is_index_array(item):
            positions.append(out)
            out += item.ndim if item.dtype == np.bool_ else 1
        elif isinstance(item, slice):
            out += 1
    getters = [(lambda r: (lambda o: _index_items(o)[r]))(r) for r in range(len(arrays))]
    if len(arrays) == 1:
        (_, item), position = arrays[0], positions[0]
        if item.dtype == np.bool_:
            mask = g.array(getters[0], dtype=np.bool_)
            rank = len(g.node.outputs[0].shape) + item.ndim - 1
            if item.ndim == 1:
                return g.op("Compress", y, mask, axis=position)
            if position == 0 and item.ndim == rank:
                return g.op("Compress", y, g.op("Reshape", mask, g.ints([-1])))
            raise g.error("a boolean mask over several axes that are not all the axes has no ONNX form")
        return g.op("Gather", y, g.array(getters[0], dtype=np.int64), axis=position)
    if any(item.dtype == np.bool_ for _, item in arrays):
        raise g.error("a boolean mask combined with other index arrays has no ONNX form")
    if positions != list(range(len(positions))):
        raise g.error("integer index arrays are exported when they index the leading axes together "
                      "(x[i, j], x[i, j, :])")
    indices = [g.array(getter, dtype=np.int64) for getter in getters]
    if len({item.shape for _, item in arrays}) > 1:
        # broadcast the index arrays against each other at run time: add zeros of the joint shape
        joint = indices[0]
        for name in indices[1:]:
            joint = g.op("Add", joint, name)
        zeros = g.op("Mul", joint, g.constant(0, np.int64))
        indices = [g.op("Add", name, zeros) for name in indices]
    stacked = [g.unsqueeze(name, [-1]) for name in indices]
    return g.op("GatherND", y, g.op("Concat", *stacked, axis=-1))


def _index_items(op):
    return [i for i in _index_tuple(op) if _is_index_array(i)]


def _check_static_slices(g, op):
    versions = g.variants(lambda o: tuple(i for i in _index_tuple(o) if not _is_index_array(i)))
    if any(v != versions[0] for v in versions):
        raise g.error("its slice bounds change with the size of a dynamic axis; use negative or open bounds "
                      "(x[:, :-1]) or make that axis static in dynamic_axes")


# ----- ops of the PyTorch tensor contract (layout, indexing, trigonometry, running sums) ----------------

def _view(g, op, x):
    return _reshape(g, op, x)


def _flip(g, op, x):
    ndim = _ndim(g)
    axes = list(range(ndim)) if op.dims is None else [int(d) % ndim for d in op.dims]
    if not axes:
        return g.op("Identity", x)
    n = len(axes)
    return g.op("Slice", x, g.ints([-1] * n), g.ints([INT64_MIN] * n), g.ints(axes), g.ints([-1] * n))


def _roll_axis(g, x, shift, axis, length):
    """np.roll along one static axis: the last `shift` entries moved to the front."""
    shift = int(shift) % length if length else 0
    if shift == 0:
        return x
    tail = g.op("Slice", x, g.ints([length - shift]), g.ints([length]), g.ints([axis]))
    head = g.op("Slice", x, g.ints([0]), g.ints([length - shift]), g.ints([axis]))
    return g.op("Concat", tail, head, axis=axis)


def _roll(g, op, x):
    shapes = [trace.nodes[g.index].inputs[0].shape for trace in g.traces]
    ndim = _ndim(g)
    if op.dims is None:
        if any(s != shapes[0] for s in shapes):
            raise g.error("a roll of the flattened tensor needs every axis static; give dims, or make the "
                          "axes static in dynamic_axes")
        flat = g.op("Reshape", x, g.ints([-1]))
        rolled = _roll_axis(g, flat, op.shifts, 0, int(np.prod(shapes[0])))
        return g.op("Reshape", rolled, g.ints(list(shapes[0])))
    shifts, dims = np.broadcast_arrays(np.asarray(op.shifts), np.asarray(op.dims))  # as np.roll pairs them
    y = x
    for shift, dim in zip(shifts.reshape(-1).tolist(), dims.reshape(-1).tolist()):
        dim = int(dim) % ndim
        if any(s[dim] != shapes[0][dim] for s in shapes):
            raise g.error(f"it rolls axis {dim}, which is dynamic; make that axis static in dynamic_axes")
        y = _roll_axis(g, y, shift, dim, shapes[0][dim])
    return y


def _cumsum(g, op, x):
    if op.axis is None:
        return g.op("CumSum", g.op("Reshape", x, g.ints([-1])), g.constant(0, np.int64))
    return g.op("CumSum", x, g.constant(int(op.axis) % _ndim(g), np.int64))


def _root_with_zero_slope(g, op, s):
    if op.exponent == 0.5:
        return g.op("Sqrt", s)
    return g.op("Pow", s, g.constant(op.exponent, _in_dtype(g, 0)))


def _softplus(g, op, x):
    """PyTorch's softplus: log(1 + exp(beta x)) / beta, x itself where beta x > threshold."""
    dtype = _in_dtype(g, 0)
    scaled = g.op("Mul", x, g.constant(op.beta, dtype))
    # log(1 + exp(z)) = relu(z) + log(1 + exp(-|z|)), exact and without overflow
    smooth = g.op("Add", g.op("Relu", scaled),
                  g.op("Log", g.op("Add", g.op("Exp", g.op("Neg", g.op("Abs", scaled))), g.constant(1, dtype))))
    smooth = g.op("Div", smooth, g.constant(op.beta, dtype))
    return g.op("Where", g.op("Greater", scaled, g.constant(op.threshold, dtype)), x, smooth)


def _triangle(g, op, x):
    return g.op("Trilu", x, g.constant(op.diagonal, np.int64), upper=int(op.upper))


def _argsort(g, op, x):
    """Sorting indices: ONNX TopK over the whole axis (its ties keep the lower index first,
    as easyfit's stable sort does)."""
    axis = int(op.axis)
    k = g.op("Gather", g.op("Shape", x), g.ints([axis]))
    return g.op("TopK", x, k, axis=axis, largest=int(op.descending), sorted=1, outputs=2)[1]


def _scatter_indices(g, count, getter):
    """The advanced index items (integer arrays) as one (..., count) index tensor of ScatterND."""
    indices = [g.array((lambda r: (lambda o: getter(o)[r]))(r), dtype=np.int64) for r in range(count)]
    joint = indices[0]
    for name in indices[1:]:
        joint = g.op("Add", joint, name)
    zeros = g.op("Mul", joint, g.constant(0, np.int64))
    return g.op("Concat", *[g.unsqueeze(g.op("Add", name, zeros), [-1]) for name in indices], axis=-1)


def _index_add(g, op, values):
    """zeros(shape) with values added at an index of integer arrays (scatter_add's forward):
    ScatterND with reduction add. Other indices only come from GetItem's backward."""
    index = op.index if isinstance(op.index, tuple) else (op.index,)
    if not index or not all(_is_index_array(i) and i.dtype != np.bool_ for i in index):
        raise g.error(_BACKWARD_ONLY)
    zeros = g.op("ConstantOfShape", g.shape_vector(g.int_entries(lambda o: o.shape)),
                 value=g.onnx.numpy_helper.from_array(np.zeros(1, _in_dtype(g, 0)), "value"))
    return g.op("ScatterND", zeros, _scatter_indices(g, len(index), lambda o: o.index), values, reduction="add")


def _scatter(g, op, x, src):
    """x with src written at the positions of an advanced index (scatter): ONNX ScatterND."""
    src = g.cast(src, _in_dtype(g, 1), _in_dtype(g, 0))
    return g.op("ScatterND", x, _scatter_indices(g, len(op.along), lambda o: o.along), src)


# ----- layers (fused ops) ----------------------------------------------------------------------------------

def _conv2d(g, op, x, weight, bias=None):
    kh, kw = g.node.inputs[1].shape[2:]
    (ph, pw), (sh, sw), (dh, dw) = op.padding, op.stride, op.dilation
    return g.op("Conv", x, weight, bias, kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
                dilations=[dh, dw], group=int(op.groups))


def _conv_transpose2d(g, op, x, weight):
    """Conv2dGradInput as a layer's forward (conv_transpose2d): ONNX ConvTranspose."""
    stride, padding, dilation, groups = op.params
    kh, kw = g.node.inputs[1].shape[2:]
    extra = []   # ONNX's output_padding, in every trace
    for trace in g.traces:
        node = trace.nodes[g.index]
        sizes, target = node.inputs[0].shape[2:], node.op.x_shape[2:]
        extra.append(tuple(target[i] - (stride[i] * (sizes[i] - 1) + dilation[i] * (k - 1) + 1 - 2 * padding[i])
                           for i, k in enumerate((kh, kw))))
    if any(e != extra[0] for e in extra):
        raise g.error("its output padding changes with a dynamic spatial axis; make that axis static")
    return g.op("ConvTranspose", x, weight, kernel_shape=[kh, kw], strides=list(stride),
                pads=[padding[0], padding[1], padding[0], padding[1]], dilations=list(dilation), group=int(groups),
                output_padding=list(extra[0]))


def _max_pool2d(g, op, x):
    w = op.g
    return g.op("MaxPool", x, kernel_shape=[w.kh, w.kw], strides=[w.sh, w.sw], pads=[w.ph, w.pw, w.ph, w.pw],
                dilations=[w.dh, w.dw])


def _avg_pool2d(g, op, x):
    w = op.g
    include_pad = int(np.ndim(op.divisor) == 0)
    return g.op("AveragePool", x, kernel_shape=[w.kh, w.kw], strides=[w.sh, w.sw],
                pads=[w.ph, w.pw, w.ph, w.pw], count_include_pad=include_pad)


def _layer_norm(g, op, x, *affine):
    shape = g.node.inputs[0].shape
    k, size = 0, 1
    while size < op.features:
        k += 1
        size *= shape[-k]
    dtype = _in_dtype(g, 0)
    normalized = shape[len(shape) - k:]
    scale = affine[0] if op.has_weight else g.constant(np.ones(normalized, dtype))
    bias = affine[-1] if op.has_bias else None
    return g.op("LayerNormalization", x, scale, bias, axis=-k, epsilon=float(op.eps))


def _batch_norm_train(g, op, x, *affine):
    """Batch statistics (a model exported with a layer kept in training mode)."""
    ndim = _ndim(g)
    dtype = _in_dtype(g, 0)
    axes = [0] + list(range(2, ndim))
    mean = g.reduce("ReduceMean", x, axes, keepdims=True)
    centered = g.op("Sub", x, mean)
    var = g.reduce("ReduceMean", g.op("Mul", centered, centered), axes, keepdims=True)
    y = g.op("Div", centered, g.op("Sqrt", g.op("Add", var, g.constant(op.eps, dtype))))
    per_channel = g.ints([1, -1] + [1] * (ndim - 2))
    if op.has_weight:
        y = g.op("Mul", y, g.op("Reshape", affine[0], per_channel))
    if op.has_bias:
        y = g.op("Add", y, g.op("Reshape", affine[-1], per_channel))
    return y


def _embedding(g, op, weight):
    return g.op("Gather", weight, g.array(lambda o: o.indices, dtype=np.int64), axis=0)


def _softmax_cross_entropy(g, op, logits, soft_target=None):
    dtype = _in_dtype(g, 0)
    rows_classes = g.node.inputs[0].shape
    classes = rows_classes[1]
    eps = float(op.label_smoothing)
    logp = g.op("LogSoftmax", logits, axis=1)
    weight = g.constant(op.weight, dtype) if op.weight is not None else None
    if soft_target is not None:
        q = soft_target
        if eps:
            q = g.op("Add", g.op("Mul", q, g.constant(1 - eps, dtype)), g.constant(eps / classes, dtype))
        if weight is not None:
            q = g.op("Mul", q, weight)
        loss = g.op("Neg", g.reduce("ReduceSum", g.op("Mul", q, logp), [1], keepdims=False))
        if op.reduction == "mean":
            return g.reduce("ReduceMean", loss, None, keepdims=False)
        return g.reduce("ReduceSum", loss, None, keepdims=False) if op.reduction == "sum" else loss
    target = g.array(lambda o: o.target, dtype=np.int64)
    valid = g.op("Not", g.op("Equal", target, g.constant(op.ignore_index, np.int64)))
    safe = g.op("Where", valid, target, g.constant(0, np.int64))
    picked = g.squeeze(g.op("GatherElements", logp, g.unsqueeze(safe, [1]), axis=1), [1])
    valid_f = g.op("Cast", valid, to=g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    w_target = g.op("Mul", g.op("Gather", weight, safe, axis=0), valid_f) if weight is not None else valid_f
    loss = g.op("Mul", g.op("Mul", picked, w_target), g.constant(-(1.0 - eps), dtype))
    if eps:
        smooth = g.op("Neg", g.op("MatMul", logp, weight) if weight is not None else
                      g.reduce("ReduceSum", logp, [1], keepdims=False))
        loss = g.op("Add", loss, g.op("Mul", g.op("Mul", smooth, valid_f), g.constant(eps / classes, dtype)))
    if op.reduction == "mean":
        return g.op("Div", g.reduce("ReduceSum", loss, None, keepdims=False),
                    g.reduce("ReduceSum", w_target, None, keepdims=False))
    return g.reduce("ReduceSum", loss, None, keepdims=False) if op.reduction == "sum" else loss


def _softplus_neg(g, x, dtype):
    """log(1 + exp(-x)) = relu(-x) + log(1 + exp(-|x|)), stable for any x."""
    negative = g.op("Relu", g.op("Neg", x))
    return g.op("Add", negative, g.op("Log", g.op("Add", g.op("Exp", g.op("Neg", g.op("Abs", x))),
                                                   g.constant(1, dtype))))


def _bce_with_logits(g, op, x, y):
    dtype = _in_dtype(g, 0)
    one = g.constant(1, dtype)
    loss_pos = g.op("Mul", g.op("Sub", one, y), x)
    softplus = _softplus_neg(g, x, dtype)
    if op.pos_weight is not None:
        factor = g.op("Add", one, g.op("Mul", g.constant(np.asarray(op.pos_weight) - 1, dtype), y))
        softplus = g.op("Mul", factor, softplus)
    return g.op("Add", loss_pos, softplus)


def _binary_cross_entropy(g, op, x, y):
    dtype = _in_dtype(g, 0)
    one, floor = g.constant(1, dtype), g.constant(-100, dtype)
    log_x = g.op("Max", g.op("Log", x), floor)
    log_1mx = g.op("Max", g.op("Log", g.op("Sub", one, x)), floor)
    return g.op("Neg", g.op("Add", g.op("Mul", y, log_x), g.op("Mul", g.op("Sub", one, y), log_1mx)))


# ----- layers recorded whole -----------------------------------------------------------------------------------

def _batch_norm_module(g, module, x):
    dtype = _in_dtype(g, 0)
    channels = module.num_features
    scale = g.param(module.weight) if module.weight is not None else g.constant(np.ones(channels, dtype))
    bias = g.param(module.bias) if module.bias is not None else g.constant(np.zeros(channels, dtype))
    return g.op("BatchNormalization", x, scale, bias, g.param(module.running_mean), g.param(module.running_var),
                epsilon=float(module.eps))


# PyTorch's (and easyfit's) gate blocks in the order ONNX wants them.
_GATE_ORDER = {"LSTM": [0, 3, 1, 2],   # i, f, g, o -> i, o, f, c
               "GRU": [1, 0, 2],       # r, z, n -> z, r, h
               "RNN_TANH": [0], "RNN_RELU": [0]}


def _recurrent_module(g, module, x, *states):
    if _ndim(g, 0) != 3:
        raise g.error("an unbatched (2-D) input to a recurrent layer is not exported; add a batch axis")
    mode, hidden = module.mode, module.hidden_size
    directions = 2 if module.bidirectional else 1
    op_type = {"LSTM": "LSTM", "GRU": "GRU"}.get(mode, "RNN")
    order = np.concatenate([np.arange(block * hidden, (block + 1) * hidden) for block in _GATE_ORDER[mode]])
    order = g.ints(order)
    h0 = states[0] if states else None
    c0 = states[1] if mode == "LSTM" and len(states) > 1 else None
    if module.batch_first:
        x = g.op("Transpose", x, perm=[1, 0, 2])
    attributes = {"hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"}
    if mode == "GRU":
        attributes["linear_before_reset"] = 1
    if op_type == "RNN":
        attributes["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * directions
    finals_h, finals_c = [], []
    layer_input = x
    for layer in range(module.num_layers):
        weights, recurrences, biases = [], [], []
        for direction in range(directions):
            w_ih, w_hh, b_ih, b_hh = module._layer_parameters(layer * directions + direction)
            weights.append(g.unsqueeze(g.op("Gather", g.param(w_ih), order, axis=0), [0]))
            recurrences.append(g.unsqueeze(g.op("Gather", g.param(w_hh), order, axis=0), [0]))
            if b_ih is not None:
                biases.append(g.unsqueeze(g.op("Concat", g.op("Gather", g.param(b_ih), order, axis=0),
                                                g.op("Gather", g.param(b_hh), order, axis=0), axis=0), [0]))
        join = (lambda parts: parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=0))
        layer_states = []
        for state in (h0, c0):
            if state is None:
                layer_states.append(None)
            else:
                layer_states.append(g.op("Slice", state, g.ints([layer * directions]),
                                         g.ints([(layer + 1) * directions]), g.ints([0])))
        inputs = [layer_input, join(weights), join(recurrences), join(biases) if biases else None, None,
                  layer_states[0]]
        if mode == "LSTM":
            inputs.append(layer_states[1])
        outputs = g.op(op_type, *inputs, outputs=3 if mode == "LSTM" else 2, **attributes)
        sequence = outputs[0]   # (T, directions, B, H)
        finals_h.append(outputs[1])
        if mode == "LSTM":
            finals_c.append(outputs[2])
        layer_input = g.op("Reshape", g.op("Transpose", sequence, perm=[0, 2, 1, 3]), g.ints([0, 0, -1]))
    output = layer_input
    if module.batch_first:
        output = g.op("Transpose", output, perm=[1, 0, 2])
    join = (lambda parts: parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=0))
    results = [output, join(finals_h)]
    if mode == "LSTM":
        results.append(join(finals_c))
    return results


def _upsample_scales(module, spatial_axes):
    factors = module.scale_factor if isinstance(module.scale_factor, (tuple, list)) else \
        [module.scale_factor] * spatial_axes
    return [float(f) for f in factors]


def _upsample_whole(module):
    """Upsample as one ONNX Resize when it is simple: a scale factor (so the spatial axes may
    be dynamic), nearest with whole-number factors, or (bi)linear. Else its gathers are traced."""
    if module.scale_factor is None or module.recompute_scale_factor:
        return False
    factors = module.scale_factor if isinstance(module.scale_factor, (tuple, list)) else [module.scale_factor]
    if module.mode == "nearest":
        return all(float(f) == int(f) and f >= 1 for f in factors)
    return module.mode in ("linear", "bilinear")


def _upsample_module(g, module, x):
    ndim = _ndim(g)
    if ndim not in (3, 4):
        raise g.error("Upsample exports 3-D (N, C, L) and 4-D (N, C, H, W) inputs")
    scales = g.constant(np.asarray([1.0, 1.0] + _upsample_scales(module, ndim - 2), np.float32))
    if module.mode == "nearest":   # PyTorch's nearest: source floor(i / scale)
        return g.op("Resize", x, None, scales, mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    transform = "align_corners" if module.align_corners else "pytorch_half_pixel"
    return g.op("Resize", x, None, scales, mode="linear", coordinate_transformation_mode=transform)


def _batch_norm_whole(module):
    return not module.training and module.track_running_stats


WHOLE_MODULES = {
    BatchNorm1d: _batch_norm_whole, BatchNorm2d: _batch_norm_whole,
    recurrent.RNN: lambda module: True, recurrent.LSTM: lambda module: True, recurrent.GRU: lambda module: True,
    Upsample: _upsample_whole, UpsamplingNearest2d: _upsample_whole, UpsamplingBilinear2d: _upsample_whole,
}
MODULE_SYMBOLICS = {
    BatchNorm1d: _batch_norm_module, BatchNorm2d: _batch_norm_module,
    recurrent.RNN: _recurrent_module, recurrent.LSTM: _recurrent_module, recurrent.GRU: _recurrent_module,
    Upsample: _upsample_module, UpsamplingNearest2d: _upsample_module, UpsamplingBilinear2d: _upsample_module,
}

# Packages re-export functions named like their modules (easyfit.core.tensor, easyfit.nn.functional.linear),
# which hide the modules as attributes: import the modules by their full names.
T, C = importlib.import_module("easyfit.core.tensor"), core_functions
layout_ops, indexing_ops, sorting_ops = (importlib.import_module(f"easyfit.core.{name}")
                                         for name in ("layout", "indexing", "sorting"))
activation_ops, conv_ops, embedding_ops, linear_ops, loss_ops, normalization_ops, pooling_ops = (
    importlib.import_module(f"easyfit.nn.functional.{name}")
    for name in ("activation", "conv", "embedding", "linear", "loss", "normalization", "pooling"))
SYMBOLICS = {
    T.Add: _binary("Add"), T.Sub: _binary("Sub"), T.Mul: _binary("Mul"), T.Div: _binary("Div"),
    T.Pow: _binary("Pow"), T.Neg: _unary("Neg"), T.Abs: _unary("Abs"), T.Log: _unary("Log"),
    T.Cast: _cast, T.ToDevice: _unary("Identity"), T.Clip: _clip, T.MatMul: _matmul,
    T.Reshape: _reshape, T.Transpose: _transpose, T.BroadcastTo: _broadcast_to, T.SumTo: _sum_to,
    T.Sum: _reduction("ReduceSum"), T.Mean: _reduction("ReduceMean"), T.Max: _max, T.GetItem: _getitem,
    T.Compare: _compare, T.ArgMax: _argmax,
    T.AddScalar: _with_scalar("Add"), T.RSubScalar: _with_scalar("Sub", scalar_first=True),
    T.MulScalar: _with_scalar("Mul"), T.DivScalar: _with_scalar("Div"),
    T.RDivScalar: _with_scalar("Div", scalar_first=True), T.PowScalar: _with_scalar("Pow"),
    T.RPowScalar: _with_scalar("Pow", scalar_first=True),
    C.Exp: _unary("Exp"), C.Sqrt: _unary("Sqrt"), C.Tanh: _unary("Tanh"), C.Sigmoid: _unary("Sigmoid"),
    C.ReLU: _unary("Relu"), C.TanhGrad: _tanh_grad, C.SigmoidGrad: _sigmoid_grad, C.Maximum: _maximum,
    C.Where: _where, C.Concatenate: _concatenate, C.Split: _split, C.Einsum: _einsum, C.Pad: _pad,
    C.Sin: _unary("Sin"), C.Cos: _unary("Cos"), C.CumSum: _cumsum, T.RootWithZeroSlope: _root_with_zero_slope,
    layout_ops.View: _view, layout_ops.Flip: _flip, layout_ops.Roll: _roll, layout_ops.Copy: _unary("Identity"),
    layout_ops.Triangle: _triangle, indexing_ops.Scatter: _scatter, T.IndexAdd: _index_add, sorting_ops.ArgSort: _argsort,
    activation_ops.Softplus: _softplus,
    linear_ops.Linear: _linear,
    activation_ops.Softmax: _softmax("Softmax"), activation_ops.LogSoftmax: _softmax("LogSoftmax"),
    activation_ops.LogSumExp: _logsumexp, activation_ops.Erf: _erf, activation_ops.GELU: _gelu,
    embedding_ops.EmbeddingLookup: _embedding,
    conv_ops.Conv2d: _conv2d, conv_ops.Conv2dGradInput: _conv_transpose2d,
    pooling_ops.MaxPool2d: _max_pool2d, pooling_ops.AvgPool2d: _avg_pool2d,
    normalization_ops.LayerNormFunction: _layer_norm, normalization_ops.BatchNormTrain: _batch_norm_train,
    loss_ops.SoftmaxCrossEntropy: _softmax_cross_entropy, loss_ops.BCEWithLogits: _bce_with_logits,
    loss_ops.BinaryCrossEntropy: _binary_cross_entropy,
}

_BACKWARD_ONLY = ("an op of gradient graphs (it computes a backward pass), which a model's forward pass "
                  "does not run; export the forward pass")
_INSIDE_RECURRENT = ("the time loop inside nn.RNN/LSTM/GRU, which export as whole layers (ONNX RNN/LSTM/GRU); "
                     "call the layer rather than the op")
REFUSED = {
    normalization_ops._NormalizeAffine: "a base class; its subclasses BatchNormTrain and LayerNormFunction "
                                        "are the ops",
    embedding_ops.EmbeddingGrad: _BACKWARD_ONLY,
    conv_ops.Conv2dGradWeight: _BACKWARD_ONLY,
    pooling_ops.MaxPool2dGrad: _BACKWARD_ONLY, pooling_ops.MaxPool2dGather: _BACKWARD_ONLY,
    pooling_ops.AvgPool2dGrad: _BACKWARD_ONLY,
    recurrent.LSTMSequence: _INSIDE_RECURRENT, recurrent.GRUSequence: _INSIDE_RECURRENT,
    recurrent.RNNSequence: _INSIDE_RECURRENT,
}

# Ops of layers above easyfit.onnx (which may not import them), refused by their qualified names.
REFUSED_BY_NAME = {
    "easyfit.distributed.sync_batchnorm.AllReduceSum":
        "a sum over the processes of a data-parallel run (SyncBatchNorm's batch statistics in training mode); "
        "an ONNX graph runs in one process: export the model in eval mode, where batch norm uses its "
        "running statistics",
}


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def symbolic_for(op):
    """The symbolic function of a traced op (a Function, or a layer recorded whole), or None."""
    cls = type(op)
    own = vars(cls).get("symbolic") or next((vars(base)["symbolic"] for base in cls.__mro__[1:]
                                             if "symbolic" in vars(base) and base not in SYMBOLICS), None)
    if own is not None:
        return own.__func__ if isinstance(own, staticmethod) else own
    return SYMBOLICS.get(cls) or MODULE_SYMBOLICS.get(cls)


def refusal_reason(op):
    reason = REFUSED.get(type(op)) or REFUSED_BY_NAME.get(_qualified_name(type(op)))
    if reason is not None:
        return f"it has no ONNX form: {reason}"
    return ("it has no ONNX form. A Function of your own can give one with a static method "
            "symbolic(g, op, *inputs) that adds ONNX nodes with g.op(...) and returns the output name(s); "
            "see docs/onnx.md")
