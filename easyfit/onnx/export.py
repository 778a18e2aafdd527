"""`easyfit.onnx.export`: trace a model's forward pass and write it as an ONNX graph.

How dynamic axes stay dynamic: the model is traced once with the example inputs and once
more per dynamic axis name with that axis one longer (the example's first slice repeated).
The traces must record the same ops; an op attribute or constant that differs between
them depends on the size of a dynamic axis (a shape that user code read, such as
`x.reshape(x.shape[0], -1)`), and is rebuilt in the graph from the runtime shape of a
value that has a dimension of the same size in every trace (Shape, Gather, Concat), or
written as Reshape's 0/-1. Anything that cannot be rebuilt that way is refused rather
than frozen to the example's size.
"""
import os

import numpy as np

from ..core.autograd import no_grad
from ..core.backend import get_array_module, to_device
from ..core.serialization import write_bytes_atomically
from ..core.tensor import Tensor, _to_array
from ..nn.tracing import Trace, flatten_tensors


class ExportError(ValueError):
    """The model cannot be written as ONNX; the message names the op and the source line."""


def _onnx():
    """The onnx package, imported on first use (the `onnx` extra), for export and import alike."""
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (the importer reads initializers with it)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("easyfit.onnx needs the onnx package: pip install 'easyfit[onnx]'") from error
    return onnx


# Newest opset each onnxruntime release runs (its release notes); newer releases run at least the last.
_ORT_OPSETS = [((1, 16), 19), ((1, 17), 20), ((1, 18), 21), ((1, 20), 21), ((1, 21), 22), ((1, 22), 23)]
MIN_OPSET = 17


def default_opset():
    """The newest opset that both the installed onnx and onnxruntime know (at least 17)."""
    onnx = _onnx()
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime
        version = tuple(int(p) for p in onnxruntime.__version__.split(".")[:2])
        runtime = MIN_OPSET
        for release, opset in _ORT_OPSETS:
            if version >= release:
                runtime = opset
        newest = min(newest, runtime)
    except ImportError:
        newest = min(newest, 21)
    return max(MIN_OPSET, newest)


class DynamicDim:
    """A dimension whose size depends on dynamic axes: its size in each trace."""
    __slots__ = ("sizes",)

    def __init__(self, sizes):
        self.sizes = tuple(sizes)

    def __repr__(self):
        return f"DynamicDim{self.sizes}"


class GraphBuilder:
    """What a symbolic function writes the graph with (`g`): ops, constants, shapes.

    `g.op(op_type, *inputs, outputs=1, **attributes)` adds a node and returns the name of
    its output (a list of names when outputs > 1); `g.constant(array)` adds an initializer.
    `g.node` is the traced call being converted (its `inputs` and `outputs` are the
    Tensors of the example pass, for shapes and dtypes).
    """

    def __init__(self, onnx, opset, traces):
        self.onnx = onnx
        self.opset = opset
        self.traces = traces
        self.nodes = []
        self.initializers = []
        self.initializer_names = set()
        self.used_names = set()
        self.signatures = {}     # value name -> per-dimension size tuples over the traces
        self.search_order = []   # value names with signatures, in graph order
        self.index = None
        self.node = None
        self.scope = ""
        self._dim_cache = {}
        self._constant_cache = {}

    # ----- naming ---------------------------------------------------------------------
    def fresh(self, base):
        base = base.replace(" ", "_")
        name, n = base, 0
        while name in self.used_names:
            n += 1
            name = f"{base}_{n}"
        self.used_names.add(name)
        return name

    def _prefix(self):
        return f"{self.scope}/" if self.scope else ""

    # ----- writing ----------------------------------------------------------------------
    def op(self, op_type, *inputs, outputs=1, domain="", **attributes):
        """Add one node; returns its output name (or a list of names when outputs > 1)."""
        node_name = self.fresh(self._prefix() + op_type)
        names = [self.fresh(f"{node_name}:{i}") for i in range(outputs)]
        attributes = {k: v for k, v in attributes.items() if v is not None}
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # omitted trailing optional inputs are left out
            inputs.pop()
        self.nodes.append(self.onnx.helper.make_node(op_type, [i if i is not None else "" for i in inputs], names,
                                                     name=node_name, domain=domain or None, **attributes))
        return names[0] if outputs == 1 else names

    def constant(self, value, dtype=None, name=None):
        """`value` (an array or a number) as `dtype` in the graph; returns its name.

        With `name` (a parameter or buffer's state_dict key) it is an initializer; otherwise
        a Constant node, so that an importer tells weights (initializers) from constants.
        """
        array = np.asarray(value if not isinstance(value, Tensor) else value.numpy_cpu())
        if dtype is not None:
            array = array.astype(dtype)
        array = np.ascontiguousarray(array)
        if name is not None:
            self.used_names.add(name)
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            self.initializer_names.add(name)
            return name
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._constant_cache:
            return self._constant_cache[key]
        node_name = self.fresh(self._prefix() + "Constant")
        out = self.fresh(node_name + ":0")
        self.nodes.append(self.onnx.helper.make_node(
            "Constant", [], [out], name=node_name, value=self.onnx.numpy_helper.from_array(array, out)))
        if key is not None:
            self._constant_cache[key] = out
        return out

    def ints(self, values):
        """A 1-D int64 constant."""
        return self.constant(np.asarray(list(values), dtype=np.int64).reshape(-1))

    def cast(self, name, from_dtype, to_dtype):
        """`name` cast to `to_dtype` (no node when the dtypes agree)."""
        if np.dtype(from_dtype) == np.dtype(to_dtype):
            return name
        return self.op("Cast", name, to=onnx_dtype(self.onnx, to_dtype))

    def reduce(self, op_type, x, axes, keepdims):
        """A Reduce* node over `axes` (None: all); axes are an input from opset 18 (13 for ReduceSum)."""
        axes_as_input = op_type == "ReduceSum" or self.opset >= 18
        if axes is None:
            return self.op(op_type, x, keepdims=int(keepdims))
        axes = [int(a) for a in axes]
        if axes_as_input:
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x, axes):
        return self.op("Unsqueeze", x, self.ints(axes))

    def squeeze(self, x, axes):
        return self.op("Squeeze", x, self.ints(axes))

    # ----- dynamic sizes ----------------------------------------------------------------
    def variants(self, getter):
        """getter(op) for the current node's op in every trace (the example's first)."""
        return [getter(trace.nodes[self.index].op) for trace in self.traces]

    def int_entries(self, getter):
        """The ints getter(op) returns, each an int where all traces agree, else a DynamicDim."""
        versions = self.variants(lambda op: tuple(int(v) for v in getter(op)))
        if len({len(v) for v in versions}) != 1:
            raise self.error("its number of dimensions depends on the size of a dynamic axis")
        return [v[0] if len(set(v)) == 1 else DynamicDim(v) for v in zip(*versions)]

    def register_value(self, name, shapes):
        """Record the per-trace shapes of a value, so that its dimensions can be read at run time."""
        if len({len(s) for s in shapes}) != 1:
            return
        self.signatures[name] = tuple(tuple(s[d] for s in shapes) for d in range(len(shapes[0])))
        self.search_order.append(name)

    def dim(self, dynamic, prefer=()):
        """A 1-element int64 tensor holding the size `dynamic` (a DynamicDim) at run time."""
        sizes = dynamic.sizes
        if sizes in self._dim_cache and not prefer:
            return self._dim_cache[sizes]
        candidates = [n for n in prefer if n in self.signatures] + self.search_order
        for name in candidates:
            for d, signature in enumerate(self.signatures[name]):
                if signature == sizes:
                    out = self.op("Shape", name, start=d, end=d + 1)
                    self._dim_cache.setdefault(sizes, out)
                    return out
        # A product of two dimensions (two axes flattened into one), or a dimension times a constant.
        for name in candidates:
            signature = self.signatures[name]
            for d1 in range(len(signature)):
                for d2 in range(d1 + 1, len(signature)):
                    if tuple(a * b for a, b in zip(signature[d1], signature[d2])) == sizes:
                        out = self.op("Mul", self.op("Shape", name, start=d1, end=d1 + 1),
                                      self.op("Shape", name, start=d2, end=d2 + 1))
                        self._dim_cache[sizes] = out
                        return out
                if signature[d1][0] and all(s % signature[d1][0] == 0 for s in sizes):
                    factor = sizes[0] // signature[d1][0]
                    if factor > 1 and tuple(factor * s for s in signature[d1]) == sizes:
                        out = self.op("Mul", self.op("Shape", name, start=d1, end=d1 + 1), self.ints([factor]))
                        self._dim_cache[sizes] = out
                        return out
        raise self.error(f"it uses a size that depends on a dynamic axis ({list(sizes)} in the traced passes) "
                         f"and that no tensor of the graph has as a dimension; mark that axis static with "
                         f"dynamic_axes")

    def shape_vector(self, entries, prefer=()):
        """A 1-D int64 tensor from entries that are ints, DynamicDims or 1-element tensor names."""
        if all(isinstance(e, int) for e in entries):
            return self.ints(entries)
        pieces = []
        static = []
        for entry in entries:
            if isinstance(entry, int):
                static.append(entry)
                continue
            if static:
                pieces.append(self.ints(static))
                static = []
            pieces.append(self.dim(entry, prefer) if isinstance(entry, DynamicDim) else entry)
        if static:
            pieces.append(self.ints(static))
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)

    # ----- attribute arrays ---------------------------------------------------------------
    def array(self, getter, dtype=None):
        """The value of an array attribute (a where-condition, an index array): the traced
        tensor it came from when an op made it, else a constant (the same in every trace)."""
        arrays = self.variants(getter)
        vids = [trace.array_ids.get(id(a)) for trace, a in zip(self.traces, arrays)]
        if vids[0] is not None:
            if any(v != vids[0] for v in vids):
                raise self.error("an array argument of it comes from different tensors in the traced passes")
            name = self.values[vids[0]]
            source_dtype = arrays[0].dtype
            return self.cast(name, source_dtype, dtype) if dtype is not None else name
        arrays = [np.asarray(to_device(a, "cpu")) for a in arrays]
        first = arrays[0]
        if all(a.shape == first.shape and np.array_equal(a, first) for a in arrays[1:]):
            return self.constant(first, dtype)
        name = dynamic_constant(self, arrays)
        if name is None:
            raise self.error("an array argument of it was computed outside easyfit's ops (from .array or "
                             "NumPy) and changes with the input; compute it with tensor ops so it is traced")
        return self.cast(name, first.dtype, dtype) if dtype is not None else name

    def error(self, reason):
        node = self.node
        what = type(node.op).__name__ if node is not None else "the model"
        where = f" (called at {node.source})" if node is not None else ""
        scope = f" in module '{node.scope}'" if node is not None and node.scope else ""
        return ExportError(f"cannot export {what}{scope}{where}: {reason}")


def onnx_dtype(onnx, dtype):
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ----- preparing the example inputs -------------------------------------------------------------

def _as_tensors(args):
    if isinstance(args, (Tensor, np.ndarray)) or not isinstance(args, (tuple, list)):
        args = (args,)
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(Tensor(a.array))
        else:
            out.append(Tensor(_to_array(a, None)))
    return out


def _grown(array, axis):
    """The array with its first slice along `axis` appended (that axis one longer)."""
    xp = get_array_module(array)
    first = xp.take(array, [0], axis=axis)
    return xp.concatenate([array, first], axis=axis)


def _cut(example, input_axes, size=2):
    """The example with each dynamic axis cut to `size` (where it is longer)."""
    out = []
    for i, t in enumerate(example):
        index = [slice(None)] * t.ndim
        for axis in input_axes[i]:
            index[axis] = slice(0, size)
        out.append(Tensor(t.array[tuple(index)]))
    return out


def _axes_spec(names, count, dynamic_axes, kind, ndims):
    """{position: {axis: name}}: the dynamic axes of each input or output."""
    out = {}
    for i in range(count):
        name = names[i]
        if dynamic_axes is None:
            out[i] = {0: "batch"} if ndims[i] >= 1 else {}
            continue
        spec = dynamic_axes.get(name, {})
        if isinstance(spec, (list, tuple)):
            spec = {int(a): f"{name}_dynamic_axes_{j + 1}" for j, a in enumerate(spec)}
        spec = {int(a) % max(ndims[i], 1): str(n) for a, n in spec.items()}
        for axis in spec:
            if axis >= ndims[i]:
                raise ValueError(f"dynamic_axes: {kind} {name!r} has {ndims[i]} axes, no axis {axis}")
        out[i] = spec
    return out


# ----- export ----------------------------------------------------------------------------------

def _whole_module_table():
    from .symbolics import WHOLE_MODULES
    return WHOLE_MODULES


def _run_traces(model, example, input_axes):
    symbols = []
    for spec in input_axes.values():
        for name in spec.values():
            if name not in symbols:
                symbols.append(name)
    variants = [example]
    for symbol in symbols:
        grown = []
        for i, t in enumerate(example):
            array = t.array
            for axis, name in input_axes[i].items():
                if name == symbol:
                    array = _grown(array, axis)
            grown.append(Tensor(array))
        variants.append(grown)
    traces = []
    for inputs in variants:
        with no_grad(), Trace(model, _whole_module_table()) as trace:
            result = model(*inputs)
        trace.inputs = inputs
        trace.result = result
        trace.outputs = flatten_tensors(result)
        traces.append(trace)
    return traces, symbols


def _check_same_structure(traces, symbols):
    base = traces[0]
    for trace, symbol in zip(traces[1:], symbols):
        if len(trace.outputs) != len(base.outputs):
            raise ExportError(f"export: the model returns {len(base.outputs)} tensors, but "
                              f"{len(trace.outputs)} when dynamic axis {symbol!r} is one longer")
        for k, (a, b) in enumerate(zip(base.nodes, trace.nodes)):
            if type(a.op) is not type(b.op) or len(a.inputs) != len(b.inputs):
                raise ExportError(
                    f"export: the ops the model runs depend on the size of dynamic axis {symbol!r} (Python control "
                    f"flow over a shape, such as a loop over time steps): op {k} is {type(a.op).__name__} at "
                    f"{a.source}, but {type(b.op).__name__} at {b.source} when that axis is one longer. Make the "
                    f"axis static in dynamic_axes, or use a layer that exports as one op (nn.LSTM, nn.GRU, nn.RNN)")
        if len(trace.nodes) != len(base.nodes):
            raise ExportError(f"export: the model runs {len(base.nodes)} ops, but {len(trace.nodes)} when dynamic "
                              f"axis {symbol!r} is one longer (Python control flow over a shape); make the axis "
                              f"static in dynamic_axes")


def _refuse_in_place_writes(trace):
    """An in-place method (y.mul_(2)) records no op, so the graph would compute the tensor's
    value before the write. Refused when it writes into a tensor that the graph had already
    produced or read, or writes a value of the graph (a write into a fresh tensor from
    constants, such as a mask filled before use, is a constant and exports)."""
    inputs = {id(t.array) for t in trace.inputs}
    for name, target, operands, ops_before, source in trace.writes:
        seen = set(inputs)
        for node in trace.nodes[:ops_before]:
            seen.update(id(t.array) for t in (*node.inputs, *node.outputs))
        if id(target) in seen or any(id(a) in seen for a in operands):
            raise ExportError(f"cannot export {name}() (called at {source}): an in-place write into a tensor of the "
                              f"traced graph (or of its values into another tensor) is not recorded as an op, so the "
                              f"graph would not see it; write the out-of-place form (y = y * 2 rather than "
                              f"y.mul_(2))")


def _refuse_unconvertible(trace):
    """Every op must have an ONNX form: checked before anything is converted or written."""
    from .symbolics import symbolic_for, refusal_reason
    for node in trace.nodes:
        if symbolic_for(node.op) is None:
            name = type(node.op).__name__
            reason = refusal_reason(node.op)
            scope = f" in module '{node.scope}'" if node.scope else ""
            raise ExportError(
                f"cannot export {type(node.op).__module__}.{name}{scope}, called at {node.source}: {reason}")


def _index_values(traces, parameter_names):
    """Give every tensor a trace-independent id (vid), and each trace its tensor -> vid maps."""
    for trace in traces:
        ids, array_ids = {}, {}
        for j, t in enumerate(trace.inputs):
            ids[id(t)] = ("input", j)
            array_ids[id(t.array)] = ("input", j)
        for k, node in enumerate(trace.nodes):
            for j, t in enumerate(node.inputs):
                key = id(t)
                if key not in ids:
                    name = parameter_names.get(key)
                    ids[key] = ("param", name) if name is not None else ("const", k, j)
            for j, t in enumerate(node.outputs):
                ids[id(t)] = ("node", k, j)
                array_ids[id(t.array)] = ("node", k, j)
        trace.ids, trace.array_ids = ids, array_ids


def export(model, args, f, input_names=None, output_names=None, dynamic_axes=None, opset_version=None,
           metadata=None):
    """Write `model` as an ONNX graph to `f` (a path or a binary file), as torch.onnx.export does.

    `args` is the example input (a Tensor or array, or a tuple of them); the model runs
    once per dynamic axis name (plus once), in eval mode and without gradients, and the
    recorded ops become the graph. By default the first axis of every input is dynamic and
    named 'batch', and so is every output axis whose size follows it (an output's first
    axis, for a model that maps a batch to a batch); `dynamic_axes` ({name: {axis:
    axis_name}} or {name: [axes]}) replaces that default, as in PyTorch, and an output it
    does not name gets the axes whose size follows a dynamic input axis. `opset_version` defaults to the newest opset
    the installed onnxruntime runs. Parameters and buffers are initializers named by
    their state_dict keys; node names carry the module path. `metadata` (str -> str) is
    written to the model's metadata_props. Returns the ONNX ModelProto.

    An op with no ONNX form is refused before anything is written, with its class and
    the line that called it; a Function subclass gives its own form with a static
    `symbolic(g, op, *inputs)` method (see docs/onnx.md).
    """
    onnx = _onnx()
    from .. import __version__
    opset = int(opset_version) if opset_version is not None else default_opset()
    if opset < MIN_OPSET:
        raise ValueError(f"export: opset_version must be at least {MIN_OPSET}, got {opset_version}")
    example = _as_tensors(args)
    input_names = list(input_names or [])
    if len(input_names) > len(example):
        raise ValueError(f"export: {len(input_names)} input_names for {len(example)} inputs")
    input_names += [f"input_{i}" if len(example) > 1 else "input" for i in range(len(input_names), len(example))]
    input_axes = _axes_spec(input_names, len(example), dynamic_axes, "input", [t.ndim for t in example])

    was_training = [m.training for m in model.modules()]
    model.eval()
    try:
        # Traced on a cut of the example (dynamic axes of 2, then 3): the graph is the same and
        # a big example batch costs nothing; a model that cannot run on the cut gets the example.
        try:
            traces, symbols = _run_traces(model, _cut(example, input_axes), input_axes)
        except Exception:
            traces, symbols = _run_traces(model, example, input_axes)
    finally:
        for module, mode in zip(model.modules(), was_training):
            module.training = mode
    base = traces[0]
    from .symbolics import symbolic_for
    for trace in traces:
        _refuse_in_place_writes(trace)
    _refuse_unconvertible(base)
    _check_same_structure(traces, symbols)

    outputs = base.outputs
    output_names = list(output_names or [])
    if len(output_names) > len(outputs):
        raise ValueError(f"export: {len(output_names)} output_names for {len(outputs)} outputs")
    output_names += [f"output_{i}" if len(outputs) > 1 else "output" for i in range(len(output_names), len(outputs))]
    if len(set(input_names + output_names)) != len(input_names) + len(output_names):
        raise ValueError(f"export: input and output names must be distinct, got {input_names} and {output_names}")
    named = set(dynamic_axes or {})
    output_axes = _axes_spec(output_names, len(outputs), dynamic_axes or {}, "output", [t.ndim for t in outputs])
    for i, name in enumerate(output_names):
        if name not in named:
            output_axes[i] = _inferred_axes(traces, symbols, i, name)

    state = model.state_dict(keep_vars=True)
    parameter_names = {}
    for key, value in state.items():
        parameter_names.setdefault(id(value), key)
    _index_values(traces, parameter_names)

    g = GraphBuilder(onnx, opset, traces)
    g.parameter_names = parameter_names
    g.values = {}
    for name in input_names + output_names:
        g.used_names.add(name)
    graph_inputs = []
    for j, (name, t) in enumerate(zip(input_names, example)):
        g.values[("input", j)] = name
        g.register_value(name, [trace.inputs[j].shape for trace in traces])
        graph_inputs.append(_value_info(onnx, name, t, input_axes[j]))

    def value_name(vid, k, j):
        name = g.values.get(vid)
        if name is not None:
            return name
        if vid[0] == "param":
            tensor = base.nodes[k].inputs[j]
            name = g.constant(tensor.numpy_cpu(), name=vid[1])
        else:
            name = _constant_input(g, traces, k, j)
        g.values[vid] = name
        return name

    g.param = lambda tensor: _parameter_value(g, tensor)
    for k, node in enumerate(base.nodes):
        g.index, g.node, g.scope = k, node, node.scope
        names = [value_name(base.ids[id(t)], k, j) for j, t in enumerate(node.inputs)]
        symbolic = symbolic_for(node.op)
        result = symbolic(g, node.op, *names)
        result = list(result) if isinstance(result, (tuple, list)) else [result]
        if len(result) != len(node.outputs):
            raise g.error(f"its ONNX form gave {len(result)} outputs for the op's {len(node.outputs)}")
        for j, name in enumerate(result):
            g.values[("node", k, j)] = name
            g.register_value(name, [trace.nodes[k].outputs[j].shape for trace in traces])
    g.index = g.node = None
    g.scope = ""

    graph_outputs = []
    for i, (name, t) in enumerate(zip(output_names, outputs)):
        vid = base.ids.get(id(t))
        if vid is None:
            raise ExportError(f"export: output {i} ({name!r}) is not computed from the inputs by easyfit ops "
                              f"(a constant or a tensor made outside the traced ops)")
        g.nodes.append(onnx.helper.make_node("Identity", [g.values[vid]], [name], name=f"output/{name}"))
        graph_outputs.append(_value_info(onnx, name, t, output_axes[i]))

    graph = onnx.helper.make_graph(g.nodes, type(model).__name__, graph_inputs, graph_outputs, g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="easyfit", producer_version=__version__)
    proto.ir_version = min(proto.ir_version, _ir_version_for(onnx, opset))
    props = {"easyfit_version": __version__}
    props.update(metadata or {})
    onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in props.items()})
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:  # a defect of a symbolic function: say so plainly
        raise ExportError(f"export: the graph written for {type(model).__name__} is not valid ONNX ({error})") \
            from error
    _write(proto, f)
    return proto


def _ir_version_for(onnx, opset):
    """The IR version that goes with an opset, so that older runtimes accept the file."""
    table = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}
    return table.get(opset, onnx.IR_VERSION)


def _inferred_axes(traces, symbols, i, name):
    """The dynamic axes of output i that no dynamic_axes entry names: those whose size changed
    in the traces, named after the input axis that changed them."""
    sizes = [trace.outputs[i].shape for trace in traces]
    axes = {}
    for d in range(len(sizes[0])):
        changed = [symbol for symbol, shape in zip(symbols, sizes[1:]) if shape[d] != sizes[0][d]]
        if changed:
            axes[d] = changed[0] if len(changed) == 1 else f"{name}_dim{d}"
    return axes


def _parameter_value(g, tensor):
    """The initializer of a parameter or buffer (named by its state_dict key), or a constant."""
    key = g.parameter_names.get(id(tensor))
    vid = ("param", key) if key is not None else None
    if vid is not None and vid in g.values:
        return g.values[vid]
    name = g.constant(tensor.numpy_cpu(), name=key) if key is not None else g.constant(tensor.numpy_cpu())
    if vid is not None:
        g.values[vid] = name
    return name


def _constant_input(g, traces, k, j):
    """A node input that no traced op made: a constant, or one rebuilt at run time (see dynamic_constant)."""
    arrays = [np.asarray(trace.nodes[k].inputs[j].numpy_cpu()) for trace in traces]
    first = arrays[0]
    if all(a.shape == first.shape and np.array_equal(a, first, equal_nan=True) for a in arrays[1:]):
        return g.constant(first)
    name = dynamic_constant(g, arrays)
    if name is None:
        raise g.error(f"its input {j} is a tensor made outside easyfit's ops (with ef.tensor or from .array) "
                      f"whose values change with the input; build it from the inputs with tensor ops, or make the "
                      f"dynamic axes static in dynamic_axes")
    return name


def dynamic_constant(g, arrays):
    """A tensor made outside the traced ops whose shape follows a dynamic axis, rebuilt in the
    graph: a filled tensor (zeros(x.shape[0], ...)) as ConstantOfShape, a counter
    (arange(x.shape[1])) as Range. None when it is neither."""
    first = arrays[0]
    if len({a.ndim for a in arrays}) != 1 or any(a.dtype != first.dtype for a in arrays):
        return None
    entries = [s[0] if len(set(s)) == 1 else DynamicDim(s) for s in zip(*[a.shape for a in arrays])]
    fill = [np.unique(a) for a in arrays]
    if all(f.size == 1 for f in fill) and len({f.item() for f in fill}) == 1:
        value = g.onnx.numpy_helper.from_array(np.asarray([fill[0].item()], dtype=first.dtype), "value")
        return g.op("ConstantOfShape", g.shape_vector(entries), value=value)
    counting = [e for e in entries if not (isinstance(e, int) and e == 1)]
    if len(counting) == 1 and isinstance(counting[0], DynamicDim) and \
            all(np.array_equal(a.reshape(-1), np.arange(a.size)) for a in arrays):
        limit = g.squeeze(g.dim(counting[0]), [0])
        limit = g.cast(limit, np.int64, first.dtype)
        sequence = g.op("Range", g.constant(0, first.dtype), limit, g.constant(1, first.dtype))
        return g.op("Reshape", sequence, g.shape_vector([-1 if e is counting[0] else e for e in entries]))
    return None


def _value_info(onnx, name, tensor, axes):
    shape = [axes.get(d, n) for d, n in enumerate(tensor.shape)]
    return onnx.helper.make_tensor_value_info(name, onnx_dtype(onnx, tensor.dtype), shape)


def _write(proto, f):
    data = proto.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
        return
    path = os.fspath(f)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomically(path, data)   # atomic, with the same permissions as easyfit's other files
