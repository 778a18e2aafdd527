"""Recording one forward pass: every op with its inputs, outputs, module path and source line.

The nn layer owns it because it needs only core and nn; ONNX export (easyfit.onnx) and
TensorBoard's scoped graph (easyfit.learner) both build on it.

The core offers two hooks (`Function.__call__` and `Module.__call__`); a `Trace` installs
both for the duration of one forward pass. Ops are recorded as `TracedNode`s in call
order. Modules whose class is in `whole_modules` (the recurrent layers, batch norm in
eval mode) are recorded as one node each, without their inner ops, so that they map to
one ONNX operator (an LSTM's loop over time then stays dynamic).
"""
import threading

from ..core.autograd import user_frame_summary
from ..core.tensor import Tensor, set_op_hook, set_write_hook
from .module import set_call_hook


class TracedNode:
    """One recorded call: `op` is a Function instance, or a Module recorded whole."""
    __slots__ = ("op", "inputs", "outputs", "scope", "source", "call")

    def __init__(self, op, inputs, outputs, scope, source, call=None):
        self.op, self.inputs, self.outputs = op, inputs, outputs
        self.scope, self.source, self.call = scope, source, call

    @property
    def is_module(self):
        return self.call is not None


def flatten_tensors(value):
    """The Tensors inside nested tuples/lists, in order (None entries are skipped)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        out = []
        for item in value:
            out.extend(flatten_tensors(item))
        return out
    return []


class Trace:
    """Context manager recording the ops of the forward passes run inside it."""

    def __init__(self, model, whole_modules):
        self.paths = {id(module): path for path, module in model.named_modules()}
        self.whole_modules = whole_modules
        self.nodes = []
        self.writes = []    # in-place writes: (method name, target array, operand arrays, ops before, source)
        self.scopes = []
        self.thread = threading.get_ident()   # ops of other threads (a loader's) are not recorded
        self.paused = False

    def __enter__(self):
        self._previous = (set_op_hook(self._on_op), set_call_hook(self._on_module), set_write_hook(self._on_write))
        return self

    def __exit__(self, *exc):
        set_op_hook(self._previous[0])
        set_call_hook(self._previous[1])
        set_write_hook(self._previous[2])

    def _on_write(self, name, target, operands):
        if threading.get_ident() == self.thread:
            self.writes.append((name, target.array, [o.array for o in operands if isinstance(o, Tensor)],
                                len(self.nodes), user_frame_summary()))

    def _scope(self):
        return self.scopes[-1] if self.scopes else ""

    def _on_op(self, fn, inputs):
        if self.paused or threading.get_ident() != self.thread:
            return NotImplemented   # the op runs as usual, unrecorded
        self.paused = True
        try:
            result = fn(*inputs)
        finally:
            self.paused = False
        outputs = result if isinstance(result, tuple) else (result,)
        self.nodes.append(TracedNode(fn, tuple(inputs), tuple(outputs), self._scope(), user_frame_summary()))
        return result

    def _on_module(self, module, args, kwargs):
        if self.paused or threading.get_ident() != self.thread:
            return NotImplemented
        path = self.paths.get(id(module))
        scope = path if path is not None else self._scope()
        whole = self.whole_modules.get(type(module))
        if whole is not None and whole(module):
            self.paused = True   # its inner ops are not recorded: the layer is one node
            try:
                result = module.forward(*args, **kwargs)
            finally:
                self.paused = False
            inputs = tuple(flatten_tensors(list(args) + list(kwargs.values())))
            outputs = tuple(flatten_tensors(result))
            self.nodes.append(TracedNode(module, inputs, outputs, scope, user_frame_summary(),
                                         call=(args, kwargs, result)))
            return result
        self.scopes.append(scope)
        try:
            return module.forward(*args, **kwargs)
        finally:
            self.scopes.pop()
