"""`easyfit.onnx.load`: an ONNX graph as a trainable easyfit module.

Each ONNX node runs as easyfit ops (differentiable), in graph order. Floating-point
initializers become Parameters, laid out as sub-modules along the dots of their names
(`layer1.0.conv1.weight`), so `state_dict()` keys equal the initializer names and a
model exported from easyfit takes its original state_dict back; BatchNormalization's
mean and variance become buffers. Constants (Constant nodes, integer initializers) stay
constants. An operator without an easyfit form is refused when loading, by name.
"""
import numpy as np

from ..core.functions import (concatenate, einsum, exp, log, maximum, minimum, pad, relu, sigmoid, sqrt, tanh,
                              where, matmul)
from ..core.functions import cos, cumsum, sin
from ..core.indexing import Scatter
from ..core.layout import split, tril, triu
from ..core.sorting import topk
from ..core.tensor import clip, expand_dims
from ..core.backend import to_device
from ..core.tensor import IndexAdd, Tensor, reshape, transpose, broadcast_to, sum as reduce_sum, mean as reduce_mean, \
    max as reduce_max, min as reduce_min, argmax, argmin
from ..nn import functional as F
from ..nn.module import Module, Parameter
from ..nn.recurrent import LSTMSequence, GRUSequence, RNNSequence
from .export import _onnx


class OnnxImportError(ValueError):
    """The ONNX model uses something easyfit cannot build; the message names the node."""


class _Node:
    __slots__ = ("op_type", "name", "inputs", "outputs", "attributes")

    def __init__(self, op_type, name, inputs, outputs, attributes):
        self.op_type, self.name, self.inputs, self.outputs, self.attributes = op_type, name, inputs, outputs, attributes


class OnnxModule(Module):
    """Runs an imported ONNX graph with easyfit ops; its initializers are trainable.

    `forward(*inputs)` takes the graph's inputs in order and returns its output (a tuple
    when the graph has several). Training mode affects Dropout and BatchNormalization as
    in easyfit's layers.
    """

    def __init__(self, graph_inputs, graph_outputs, nodes, constants, parameters, buffers):
        super().__init__()
        self._graph = (tuple(graph_inputs), tuple(graph_outputs), tuple(nodes))
        self._constants = dict(constants)
        self._paths = {}
        for name, array in parameters.items():
            self._place(name, Parameter(array), buffer=False)
        for name, array in buffers.items():
            self._place(name, Tensor(array), buffer=True)

    def _place(self, name, value, buffer):
        parts = [_attribute_name(p) for p in name.split(".")]
        owner = self
        for part in parts[:-1]:
            child = vars(owner).get(part)
            if not isinstance(child, Module):
                child = Module()
                setattr(owner, part, child)
            owner = child
        if buffer:
            owner.register_buffer(parts[-1], value)
        else:
            setattr(owner, parts[-1], value)
        self._paths[name] = parts

    def _initializer(self, name):
        owner = self
        for part in self._paths[name]:
            owner = getattr(owner, part)
        return owner

    def forward(self, *inputs):
        graph_inputs, graph_outputs, nodes = self._graph
        if len(inputs) != len(graph_inputs):
            raise TypeError(f"this ONNX model takes {len(graph_inputs)} inputs ({', '.join(graph_inputs)}), "
                            f"got {len(inputs)}")
        values = {}
        for name, x in zip(graph_inputs, inputs):
            values[name] = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
        for name, parts in self._paths.items():
            values[name] = self._initializer(name)
        device = values[graph_inputs[0]].device if graph_inputs else "cpu"
        for name, array in self._constants.items():
            values[name] = Tensor(to_device(array, device))
        for node in nodes:
            args = [values[i] if i else None for i in node.inputs]
            try:
                result = OPS[node.op_type](self, node, *args)
            except (ValueError, TypeError, IndexError) as error:
                raise type(error)(f"ONNX node {node.name!r} ({node.op_type}): {error}") from error
            result = result if isinstance(result, (tuple, list)) else (result,)
            for name, value in zip(node.outputs, result):
                if name:
                    values[name] = value
        outputs = tuple(values[name] for name in graph_outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def _attribute_name(part):
    """A name part that does not hide a Module method (an initializer called 'eval' ...)."""
    return f"{part}_" if hasattr(Module, part) or part.startswith("_") else part


def load(path):
    """An ONNX model file (or ModelProto) as a trainable `OnnxModule`."""
    onnx = _onnx()
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    graph = proto.graph
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    graph_inputs = [i.name for i in graph.input if i.name not in initializers]
    graph_outputs = [o.name for o in graph.output]
    nodes, constants = [], {}
    buffer_names = set()
    unknown = []
    for node in graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            unknown.append(f"{node.op_type} (domain {node.domain}, node {node.name!r})")
            continue
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_value(onnx, attributes, node)
            continue
        if node.op_type not in OPS:
            unknown.append(f"{node.op_type} (node {node.name!r})")
            continue
        if node.op_type == "BatchNormalization":
            buffer_names.update(node.input[3:5])
        nodes.append(_Node(node.op_type, node.name or node.output[0], list(node.input), list(node.output),
                           attributes))
    if unknown:
        raise OnnxImportError(f"easyfit.onnx.load: no easyfit form for the operator(s) {', '.join(unknown[:8])}")
    parameters, buffers = {}, {}
    for name, array in initializers.items():
        if array.dtype.kind != "f":
            constants[name] = array
        elif name in buffer_names:
            buffers[name] = array.copy()
        else:
            parameters[name] = array.copy()
    module = OnnxModule(graph_inputs, graph_outputs, nodes, constants, parameters, buffers)
    module.metadata = {p.key: p.value for p in proto.metadata_props}
    return module


def _constant_value(onnx, attributes, node):
    if "value" in attributes:
        return onnx.numpy_helper.to_array(attributes["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64), ("value_floats", np.float32),
                       ("value_ints", np.int64)):
        if key in attributes:
            return np.asarray(attributes[key], dtype=dtype)
    raise OnnxImportError(f"easyfit.onnx.load: Constant node {node.name!r} has no value easyfit reads")


# ----- the operators ----------------------------------------------------------------------------

def _ints(t):
    return [int(v) for v in np.asarray(t.numpy_cpu()).reshape(-1)]


def _np_dtype(onnx_type):
    import onnx
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


def _reduce(function):
    """Reduce axes come as an input (opset 18+, ReduceSum 13+) or as the `axes` attribute."""
    def op(m, node, x, axes_input=None):
        axes = _ints(axes_input) if axes_input is not None else list(node.attributes.get("axes") or [])
        if not axes:
            if node.attributes.get("noop_with_empty_axes", 0):
                return x
            axes = None
        return function(x, axis=tuple(axes) if axes else None, keepdims=bool(node.attributes.get("keepdims", 1)))
    return op


def _reduce_log_sum_exp(x, axis, keepdims):
    return F.logsumexp(x, axis=axis, keepdims=keepdims)


def _reshape(m, node, x, shape):
    target = _ints(shape)
    if not node.attributes.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return reshape(x, tuple(target))


def _flatten(m, node, x):
    axis = node.attributes.get("axis", 1) % max(x.ndim, 1)
    rows = int(np.prod(x.shape[:axis])) if axis else 1
    return reshape(x, (rows, -1))


def _transpose(m, node, x):
    """ONNX's perm is a full permutation; without one the axes are reversed."""
    perm = node.attributes.get("perm")
    return transpose(x, tuple(perm)) if perm is not None else transpose(x)


def _squeeze(m, node, x, axes=None):
    axes = _ints(axes) if axes is not None else node.attributes.get("axes")
    if not axes:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    axes = {a % x.ndim for a in axes}
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def _unsqueeze(m, node, x, axes=None):
    axes = _ints(axes) if axes is not None else list(node.attributes["axes"])
    return expand_dims(x, tuple(axes))


def _slice(m, node, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        # ONNX clamps out-of-range bounds; Python slices do the same for ints of any size,
        # except that "end = INT64_MIN with a negative step" must mean "before the start".
        end = None if (step < 0 and end < -size) else end
        index[axis % x.ndim] = slice(start, end, step)
    return x[tuple(index)]


def _gather(m, node, x, indices):
    axis = node.attributes.get("axis", 0) % x.ndim
    index = indices.numpy_cpu().astype(np.int64)
    return x[(slice(None),) * axis + (index,)]


def _gather_elements(m, node, x, indices):
    axis = node.attributes.get("axis", 0) % x.ndim
    index = indices.numpy_cpu().astype(np.int64)
    grids = list(np.indices(index.shape, sparse=True))
    grids[axis] = index
    return x[tuple(grids)]


def _gather_nd(m, node, x, indices):
    if node.attributes.get("batch_dims", 0):
        raise ValueError("GatherND with batch_dims is not supported")
    index = indices.numpy_cpu().astype(np.int64)
    return x[tuple(index[..., k] for k in range(index.shape[-1]))]


def _compress(m, node, x, condition):
    mask = condition.numpy_cpu().astype(bool)
    axis = node.attributes.get("axis")
    if axis is None:
        flat = reshape(x, (-1,))
        return flat[np.nonzero(mask[:flat.shape[0]])[0]]
    axis %= x.ndim
    return x[(slice(None),) * axis + (np.nonzero(mask)[0],)]


def _split(m, node, x, sizes=None):
    axis = node.attributes.get("axis", 0) % x.ndim
    if sizes is not None:
        sizes = _ints(sizes)
    elif "split" in node.attributes:
        sizes = list(node.attributes["split"])
    else:
        parts = node.attributes.get("num_outputs", len(node.outputs))
        return tuple(split(x, parts, axis=axis))
    return tuple(split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _cast(m, node, x):
    return x.astype(_np_dtype(node.attributes["to"]))


def _clip(m, node, x, low=None, high=None):
    low = float(low.item()) if low is not None else node.attributes.get("min")
    high = float(high.item()) if high is not None else node.attributes.get("max")
    return clip(x, low, high)


def _gemm(m, node, a, b, c=None):
    alpha, beta = node.attributes.get("alpha", 1.0), node.attributes.get("beta", 1.0)
    if node.attributes.get("transA", 0):
        a = transpose(a)
    if node.attributes.get("transB", 0) and alpha == 1.0 and a.ndim == 2:
        y = F.linear(a, b, c if c is not None and beta == 1.0 and c.ndim == 1 else None)
        if c is not None and not (beta == 1.0 and c.ndim == 1):
            y = y + c * beta
        return y
    if node.attributes.get("transB", 0):
        b = transpose(b)
    y = matmul(a, b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


def _pair_attribute(node, name, default):
    value = node.attributes.get(name)
    return tuple(value) if value else default


def _conv(m, node, x, weight, bias=None):
    if x.ndim != 4:
        raise ValueError("only 2-D convolutions (4-D inputs) are supported")
    pads = _symmetric_pads(node)
    if node.attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("auto_pad is not supported; export with explicit pads")
    return F.conv2d(x, weight, bias, stride=_pair_attribute(node, "strides", (1, 1)), padding=pads,
                    dilation=_pair_attribute(node, "dilations", (1, 1)), groups=node.attributes.get("group", 1))


def _conv_transpose(m, node, x, weight, bias=None):
    if x.ndim != 4:
        raise ValueError("only 2-D transposed convolutions (4-D inputs) are supported")
    if node.attributes.get("output_shape"):
        raise ValueError("output_shape is not supported; export with pads and output_padding")
    return F.conv_transpose2d(x, weight, bias, stride=_pair_attribute(node, "strides", (1, 1)),
                              padding=_symmetric_pads(node),
                              output_padding=_pair_attribute(node, "output_padding", (0, 0)),
                              groups=node.attributes.get("group", 1),
                              dilation=_pair_attribute(node, "dilations", (1, 1)))


def _symmetric_pads(node):
    pads = node.attributes.get("pads") or [0, 0, 0, 0]
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"asymmetric pads {list(pads)} are not supported")
    return (pads[0], pads[1])


def _max_pool(m, node, x):
    if node.attributes.get("ceil_mode", 0) or len(node.outputs) > 1 and node.outputs[1]:
        raise ValueError("ceil_mode and the indices output are not supported")
    kernel = tuple(node.attributes["kernel_shape"])
    return F.max_pool2d(x, kernel, stride=_pair_attribute(node, "strides", (1, 1)), padding=_symmetric_pads(node),
                        dilation=_pair_attribute(node, "dilations", (1, 1)))


def _average_pool(m, node, x):
    if node.attributes.get("ceil_mode", 0):
        raise ValueError("ceil_mode is not supported")
    kernel = tuple(node.attributes["kernel_shape"])
    return F.avg_pool2d(x, kernel, stride=_pair_attribute(node, "strides", (1, 1)), padding=_symmetric_pads(node),
                        count_include_pad=bool(node.attributes.get("count_include_pad", 0)))


def _global_average_pool(m, node, x):
    return reduce_mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


def _batch_normalization(m, node, x, scale, bias, mean, var):
    if len([o for o in node.outputs if o]) > 1:
        raise ValueError("the training outputs of BatchNormalization are not supported")
    momentum = 1.0 - node.attributes.get("momentum", 0.9)   # ONNX keeps momentum * running + ...
    return F.batch_norm(x, mean, var, scale, bias, training=m.training, momentum=momentum,
                        eps=node.attributes.get("epsilon", 1e-5))


def _layer_normalization(m, node, x, scale, bias=None):
    axis = node.attributes.get("axis", -1) % x.ndim
    if len([o for o in node.outputs if o]) > 1:
        raise ValueError("the mean/inv_std_dev outputs of LayerNormalization are not supported")
    shape = x.shape[axis:]
    scale = reshape(scale, shape) if scale.shape != shape else scale
    bias = reshape(bias, shape) if bias is not None and bias.shape != shape else bias
    return F.layer_norm(x, shape, scale, bias, eps=node.attributes.get("epsilon", 1e-5))


def _softmax(function):
    def op(m, node, x):
        return function(x, axis=node.attributes.get("axis", -1))
    return op


def _dropout(m, node, x, ratio=None, training_mode=None):
    p = float(ratio.item()) if ratio is not None else node.attributes.get("ratio", 0.5)
    return F.dropout(x, p, m.training)


def _where(m, node, condition, a, b):
    return where(condition, a, b)


def _compare(name):
    def op(m, node, a, b):
        return getattr(a, name)(b)
    return op


def _not(m, node, x):
    return x == False  # noqa: E712  (an elementwise comparison, traced)


def _pow(m, node, a, b):
    return a ** b.astype(a.dtype) if b.dtype != a.dtype else a ** b


def _shape(m, node, x):
    start, end = node.attributes.get("start", 0), node.attributes.get("end")
    return Tensor(np.asarray(x.shape[start:end], dtype=np.int64))


def _constant_of_shape(m, node, shape):
    value = node.attributes.get("value")
    import onnx
    fill = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return Tensor(np.full(tuple(_ints(shape)), fill.reshape(-1)[0], dtype=fill.dtype))


def _range(m, node, start, limit, delta):
    return Tensor(np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype))


def _expand(m, node, x, shape):
    target = _ints(shape)
    full = np.broadcast_shapes(tuple(x.shape), tuple(target))
    return broadcast_to(x, full)


def _einsum(m, node, *inputs):
    equation = node.attributes["equation"]
    return einsum(equation.decode() if isinstance(equation, bytes) else equation, *inputs)


def _variadic(function):
    def op(m, node, *inputs):
        out = inputs[0]
        for other in inputs[1:]:
            out = function(out, other)
        return out
    return op


def _arg(function):
    def op(m, node, x):
        if node.attributes.get("select_last_index", 0):
            raise ValueError("select_last_index is not supported")
        return function(x, axis=node.attributes.get("axis", 0), keepdims=bool(node.attributes.get("keepdims", 1)))
    return op


def _pad(m, node, x, pads, value=None, axes=None):
    widths = _ints(pads)
    mode = node.attributes.get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise ValueError(f"Pad mode {mode!r} is not supported")
    ndim = x.ndim
    axes = _ints(axes) if axes is not None else list(range(ndim))
    half = len(widths) // 2
    pad_width = [(0, 0)] * ndim
    for k, axis in enumerate(axes):
        pad_width[axis % ndim] = (widths[k], widths[k + half])
    if any(b < 0 or a < 0 for b, a in pad_width):
        raise ValueError("negative pads are not supported")
    return pad(x, pad_width, constant_values=float(value.item()) if value is not None else 0.0)


def _leaky_relu(m, node, x):
    return F.leaky_relu(x, node.attributes.get("alpha", 0.01))


def _gelu(m, node, x):
    approximate = node.attributes.get("approximate", b"none")
    return F.gelu(x, approximate.decode() if isinstance(approximate, bytes) else approximate)


def _softplus(m, node, x):
    return F.softplus(x)


def _text(value, default):
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else value


def _trilu(m, node, x, k=None):
    diagonal = _ints(k)[0] if k is not None else 0
    return triu(x, diagonal) if node.attributes.get("upper", 1) else tril(x, diagonal)


def _cumsum(m, node, x, axis):
    if node.attributes.get("exclusive", 0) or node.attributes.get("reverse", 0):
        raise ValueError("CumSum with exclusive or reverse is not supported")
    return cumsum(x, _ints(axis)[0] % x.ndim)


def _topk(m, node, x, k):
    if not node.attributes.get("sorted", 1):
        raise ValueError("TopK with sorted=0 is not supported")
    values, indices = topk(x, _ints(k)[0], node.attributes.get("axis", -1) % x.ndim,
                           largest=bool(node.attributes.get("largest", 1)))
    return values, indices


def _scatter_nd(m, node, x, indices, updates):
    index = to_device(indices.numpy_cpu().astype(np.int64), x.device)
    along = tuple(index[..., k] for k in range(index.shape[-1]))
    reduction = _text(node.attributes.get("reduction"), "none")
    if reduction == "add":
        return x + IndexAdd(along, tuple(x.shape))(updates)
    if reduction != "none":
        raise ValueError(f"ScatterND with reduction {reduction!r} is not supported")
    return Scatter(along)(x, updates)


def _resize(m, node, x, roi=None, scales=None, sizes=None):
    """The Resize forms PyTorch's interpolate has: nearest (asymmetric, floor) and linear
    (pytorch_half_pixel, half_pixel or align_corners), by scales or to sizes."""
    mode = _text(node.attributes.get("mode"), "nearest")
    transform = _text(node.attributes.get("coordinate_transformation_mode"), "half_pixel")
    spatial = x.ndim - 2
    if scales is not None and scales.shape[0]:
        factors = [float(f) for f in np.asarray(scales.numpy_cpu()).reshape(-1)]
        if factors[:2] != [1.0, 1.0]:
            raise ValueError("Resize of the batch or channel axis is not supported")
        size, scale_factor = None, factors[2:]
    elif sizes is not None:
        size, scale_factor = _ints(sizes)[2:], None
    else:
        raise ValueError("Resize needs scales or sizes")
    if mode == "nearest":
        if transform != "asymmetric" or _text(node.attributes.get("nearest_mode"), "round_prefer_floor") != "floor":
            raise ValueError("Resize nearest is supported with asymmetric coordinates and nearest_mode floor "
                             "(PyTorch's nearest)")
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode="nearest")
    if mode == "linear" and transform in ("pytorch_half_pixel", "half_pixel", "align_corners"):
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode="bilinear" if spatial == 2 else "linear",
                             align_corners=transform == "align_corners")
    raise ValueError(f"Resize with mode {mode!r} and coordinate_transformation_mode {transform!r} is not supported")


# ONNX's gate blocks in easyfit's order (the inverse of the exporter's conversion).
_EASYFIT_ORDER = {"LSTM": [0, 2, 3, 1],   # ONNX i, o, f, c -> i, f, g, o
                  "GRU": [1, 0, 2],       # ONNX z, r, h -> r, z, n
                  "RNN": [0]}


def _recurrent(op_type):
    def op(m, node, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, peepholes=None):
        attributes = node.attributes
        if sequence_lens is not None or peepholes is not None:
            raise ValueError("sequence_lens and peepholes are not supported")
        if attributes.get("layout", 0):
            raise ValueError("layout=1 is not supported")
        if op_type == "GRU" and not attributes.get("linear_before_reset", 0):
            raise ValueError("GRU with linear_before_reset=0 is not supported (PyTorch's GRU uses 1)")
        if attributes.get("clip") is not None or attributes.get("input_forget", 0):
            raise ValueError("clip and input_forget are not supported")
        direction = attributes.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        hidden = attributes["hidden_size"]
        gates = len(_EASYFIT_ORDER[op_type])
        order = np.concatenate([np.arange(k * hidden, (k + 1) * hidden) for k in _EASYFIT_ORDER[op_type]])
        activations = [a.decode() if isinstance(a, bytes) else a for a in attributes.get("activations", [])]
        if op_type == "RNN":
            kinds = {a.lower() for a in activations} or {"tanh"}
            if not kinds <= {"tanh", "relu"} or len(kinds) > 1:
                raise ValueError(f"RNN activations {activations} are not supported (Tanh or Relu)")
            nonlinearity = kinds.pop()
        elif activations:
            expected = ["Sigmoid", "Tanh", "Tanh"] if op_type == "LSTM" else ["Sigmoid", "Tanh"]
            if [a for a in activations] != expected * (len(activations) // len(expected)):
                raise ValueError(f"{op_type} activations {activations} are not supported")
        reverse_flags = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
        batch = x.shape[1]
        sequences, finals_h, finals_c = [], [], []
        for d, reverse in enumerate(reverse_flags):
            w_ih, w_hh = w[d][order], r[d][order]
            b_ih = b[d][:gates * hidden][order] if b is not None else None
            b_hh = b[d][gates * hidden:][order] if b is not None else None
            zeros = Tensor(to_device(np.zeros((batch, hidden), dtype=x.dtype), x.device))
            h0 = initial_h[d] if initial_h is not None else zeros
            if op_type == "LSTM":
                c0 = initial_c[d] if initial_c is not None else zeros
                gates_x = F.linear(x, w_ih, b_ih + b_hh if b is not None else None)
                hidden_states, h_n, c_n = LSTMSequence(reverse)(gates_x, h0, c0, w_hh)
                finals_c.append(c_n)
            elif op_type == "GRU":
                gates_x = F.linear(x, w_ih, b_ih)
                bias_hh = b_hh if b_hh is not None else \
                    Tensor(to_device(np.zeros(gates * hidden, dtype=x.dtype), x.device))
                hidden_states, h_n = GRUSequence(reverse)(gates_x, h0, w_hh, bias_hh)
            else:
                gates_x = F.linear(x, w_ih, b_ih + b_hh if b is not None else None)
                hidden_states, h_n = RNNSequence(nonlinearity, reverse)(gates_x, h0, w_hh)
            sequences.append(expand_dims(hidden_states, 1))
            finals_h.append(expand_dims(h_n, 0))
        y = sequences[0] if len(sequences) == 1 else concatenate(sequences, axis=1)
        y_h = finals_h[0] if len(finals_h) == 1 else concatenate(finals_h, axis=0)
        if op_type == "LSTM":
            y_c = concatenate([expand_dims(c, 0) for c in finals_c], axis=0)
            return y, y_h, y_c
        return y, y_h
    return op


def _binary(function):
    def op(m, node, a, b):
        return function(a, b)
    return op


OPS = {
    "Add": _binary(lambda a, b: a + b), "Sub": _binary(lambda a, b: a - b), "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: a / b), "Pow": _pow, "MatMul": _binary(matmul),
    "Neg": lambda m, n, x: -x, "Abs": lambda m, n, x: abs(x), "Log": lambda m, n, x: log(x),
    "Exp": lambda m, n, x: exp(x), "Sqrt": lambda m, n, x: sqrt(x), "Tanh": lambda m, n, x: tanh(x),
    "Sigmoid": lambda m, n, x: sigmoid(x), "Relu": lambda m, n, x: relu(x), "Erf": lambda m, n, x: F.erf(x),
    "Identity": lambda m, n, x: x, "LeakyRelu": _leaky_relu, "Gelu": _gelu, "Softplus": _softplus,
    "Max": _variadic(maximum), "Min": _variadic(minimum), "Sum": _variadic(lambda a, b: a + b),
    "Where": _where, "Equal": _compare("__eq__"), "Less": _compare("__lt__"), "Greater": _compare("__gt__"),
    "LessOrEqual": _compare("__le__"), "GreaterOrEqual": _compare("__ge__"), "Not": _not,
    "Cast": _cast, "Clip": _clip, "Gemm": _gemm, "Einsum": _einsum,
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose,
    "Expand": _expand, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Concat": lambda m, n, *xs: concatenate(
        xs, axis=n.attributes["axis"]), "Split": _split, "Slice": _slice, "Gather": _gather,
    "GatherElements": _gather_elements, "GatherND": _gather_nd, "Compress": _compress, "Pad": _pad,
    "ReduceSum": _reduce(reduce_sum), "ReduceMean": _reduce(reduce_mean), "ReduceMax": _reduce(reduce_max),
    "ReduceMin": _reduce(reduce_min), "ReduceLogSumExp": _reduce(_reduce_log_sum_exp),
    "ArgMax": _arg(argmax), "ArgMin": _arg(argmin),
    "Softmax": _softmax(F.softmax), "LogSoftmax": _softmax(F.log_softmax),
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _max_pool, "AveragePool": _average_pool, "GlobalAveragePool": _global_average_pool,
    "BatchNormalization": _batch_normalization, "LayerNormalization": _layer_normalization, "Dropout": _dropout,
    "Shape": _shape, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "LSTM": _recurrent("LSTM"), "GRU": _recurrent("GRU"), "RNN": _recurrent("RNN"),
    "Sin": lambda m, n, x: sin(x), "Cos": lambda m, n, x: cos(x), "CumSum": _cumsum, "TopK": _topk,
    "ScatterND": _scatter_nd, "Resize": _resize, "Trilu": _trilu,
}
