"""The backward engine: grad mode, anomaly detection, and the iterative backward pass.

Backward visits op nodes (Function instances) in decreasing generation order using a
heap, so every consumer of a tensor is processed before the op that produced it and no
recursion is involved (a 100,000-op chain is fine). Each node's incoming gradients are
summed in a per-node slot list; leaf tensors accumulate into `.grad`.
"""
import heapq
import os
import sys
import traceback
import weakref
from contextlib import contextmanager

import numpy as np

from . import threads
from .backend import get_array_module

# Global switches, read on every op: plain module-level lists are the cheapest lookup.
_grad_enabled = [True]
_anomaly_enabled = [False]


def is_grad_enabled():
    """True unless inside `no_grad()` (or `set_grad_enabled(False)`): whether ops record a graph."""
    return _grad_enabled[0]


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit."""
    __slots__ = ("enabled", "previous")

    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.previous = _grad_enabled[0]
        _grad_enabled[0] = self.enabled

    def __exit__(self, *exc):
        _grad_enabled[0] = self.previous

    def __call__(self, func):
        enabled = self.enabled

        def wrapper(*args, **kwargs):
            with _GradMode(enabled):
                return func(*args, **kwargs)
        wrapper.__name__ = getattr(func, "__name__", "wrapper")
        wrapper.__doc__ = getattr(func, "__doc__", None)
        wrapper.__wrapped__ = func
        return wrapper


def no_grad():
    """Ops inside record no graph: `with easyfit.no_grad(): ...` or as a decorator."""
    return _GradMode(False)


def enable_grad():
    """Re-enable graph recording inside a `no_grad` block."""
    return _GradMode(True)


def set_grad_enabled(mode):
    """Turn graph recording on or off; usable as a context manager, like PyTorch's."""
    return _GradMode(bool(mode))


class AnomalyError(RuntimeError):
    """A NaN or infinity appeared in a gradient during backward."""


@contextmanager
def detect_anomaly():
    """Record where each op was created; a non-finite gradient then names it.

    Slower (every op captures the caller's source line), so use it while debugging.
    """
    previous = _anomaly_enabled[0]
    _anomaly_enabled[0] = True
    try:
        yield
    finally:
        _anomaly_enabled[0] = previous


def is_anomaly_enabled():
    return _anomaly_enabled[0]


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_frame_summary():
    """'file:line: code' of the innermost stack frame outside the easyfit package."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "<unknown location>"
    summary = traceback.extract_stack(frame, limit=1)[-1]
    code = f": {summary.line}" if summary.line else ""
    return f"{summary.filename}:{summary.lineno}{code}"


def _check_finite(fn, grads):
    for index, g in enumerate(grads):
        if g is None:
            continue
        data = g.array
        if data.dtype.kind in "fc" and data.size and not bool(get_array_module(data).isfinite(data).all()):
            where = getattr(fn, "source", None) or "<unknown location; enable detect_anomaly() before the forward pass>"
            raise AnomalyError(
                f"{type(fn).__name__} backward produced non-finite values (nan or inf) in the "
                f"gradient of its input {index}; that op was created at {where}")


_stand_in_classes = {}


def stand_in(x):
    """What a graph node keeps of its input `x` when its backward needs none of x's values.

    Backward reaches x's creator through the node's inputs, so a node that kept x itself
    would keep x's array alive until backward, though only x's shape, dtype and place in
    the graph are needed (ReLU, which keeps its output instead; shape and joining ops).
    The stand-in is a Tensor with x's creator, output index and requires_grad and a
    zero-byte array of x's shape and dtype (one zero, broadcast: reading its values is a
    bug), so x's array is freed as soon as nothing else uses it, as PyTorch frees what
    no backward saved. Leaves, and tensors that need no gradient, are kept as they are
    (the engine accumulates into a leaf's own `.grad`).
    """
    if x.creator is None or not x.requires_grad:
        return x
    cls = _stand_in_classes.get(type(x))
    if cls is None:
        cls = _stand_in_classes[type(x)] = type("StandIn", (type(x),), {
            "__slots__": ("stands_for",),
            "__doc__": "A graph-only stand-in for a tensor whose values backward does not need."})
    array = x.array
    xp = get_array_module(array)
    y = cls.__new__(cls)
    y.array = xp.broadcast_to(xp.zeros_like(array, shape=()), array.shape)
    y.grad = None
    y.requires_grad = True
    y.creator = x.creator
    y.output_index = x.output_index
    y.stands_for = weakref.ref(x)   # easyfit.grad(..., inputs=[x]) still finds x's gradient
    return y


class KeepsStandIns:
    """Mixin, listed before Function, for ops whose backward reads no value of some or all
    of their inputs: the node keeps `stand_in`s of those, so their memory is freed as soon
    as nothing else uses it. `input_values_needed()` says which inputs backward reads
    (None: none of them); an op like `a * b` needs a's values only when b needs a gradient.
    """

    def input_values_needed(self):
        return None

    def __call__(self, *inputs):
        y = super().__call__(*inputs)
        if getattr(y, "creator", None) is self:
            needed = self.input_values_needed()
            self.inputs = tuple(x if needed is not None and needed[i] else stand_in(x)
                                for i, x in enumerate(self.inputs))
        return y


def _capture_key(x):
    stands_for = getattr(x, "stands_for", None)
    if stands_for is None:
        return id(x)
    original = stands_for()
    return id(original) if original is not None else None


def _base_references(view):
    return sys.getrefcount(view.base)


# What _base_references counts for a view that alone holds its base (interpreters differ).
_SOLE_VIEW_REFERENCES = _base_references(np.empty((2, 2)).T)


def _owns(array, taken):
    """Whether `array` may become a leaf's .grad as it is: writable memory that nothing else
    holds (its own, or a base that only this view refers to: a layer's gradient returned
    as a transposed or reshaped view of a fresh array), and not already another leaf's."""
    if not array.flags.writeable or id(array) in taken:
        return False
    if array.base is None:
        return True
    return (type(array.base) is type(array) and array.base.base is None
            and _base_references(array) <= _SOLE_VIEW_REFERENCES)


def _accumulate(grad, gx, create_graph, owned):
    """grad + gx for a leaf's `.grad`. Without create_graph, and when `.grad` holds its own
    writable memory from an earlier backward (not an array of this pass, which other
    gradients may still share), the sum is written into it in place, as PyTorch does:
    gradient accumulation over micro-batches allocates nothing."""
    array = grad.array
    if (not create_graph and grad.creator is None and id(array) not in owned and array.base is None
            and array.flags.writeable and array.shape == gx.array.shape and array.dtype == gx.array.dtype
            and type(array) is type(gx.array)):
        get_array_module(array).add(array, gx.array, out=array)
        return grad
    return grad + gx


def _copy_in_layout_of(leaf, gradient):
    """A copy of `gradient` stored in memory as `leaf` is (PyTorch's rule for a leaf's .grad):
    a channels-last leaf gets a channels-last gradient, with no transposing copy when the
    gradient already is one."""
    copy = get_array_module(leaf).empty_like(leaf, dtype=gradient.dtype)
    copy[...] = gradient
    return copy


def run_backward(roots, root_grads, retain_graph, create_graph, capture=None):
    """Backpropagate `root_grads` (Tensors) from `roots` through their graph.

    Without `capture`, leaf tensors that require grad accumulate into `.grad`. With
    `capture` (a list of tensors), nothing is accumulated; the gradients reaching those
    tensors are returned in the same order (None where none arrived).
    """
    threads.adapt()   # BLAS threads follow the machine's load (at most one look a second)
    captured = None
    capture_index = None
    if capture is not None:
        captured = [None] * len(capture)
        capture_index = {}
        for i, t in enumerate(capture):
            capture_index.setdefault(id(t), []).append(i)

    heap = []
    pending = {}   # Function -> list of summed output gradients
    counter = 0    # tie-breaker so the heap never compares Functions
    push, pop = heapq.heappush, heapq.heappop
    # Leaf .grad arrays must be private and writable (optimizers and clipping update them
    # in place), never a view or an array shared with another leaf or the caller.
    owned = {id(g.array) for g in root_grads}

    with _GradMode(create_graph):
        items = list(zip(roots, root_grads))
        check = _anomaly_enabled[0]
        while True:
            for x, gx in items:
                if gx is None or not x.requires_grad:
                    continue
                if capture_index is not None:
                    slots = capture_index.get(_capture_key(x))
                    if slots is not None:
                        for i in slots:
                            captured[i] = gx if captured[i] is None else captured[i] + gx
                creator = x.creator
                if creator is None:
                    if capture_index is None:
                        if x.grad is not None:
                            previous = x.grad
                            x.grad = _accumulate(previous, gx, create_graph, owned)
                            if x.grad is previous:
                                continue   # summed in place into memory of x's own
                        elif gx.creator is None and (not _owns(gx.array, owned)
                                                     or gx.array.strides != x.array.strides):
                            x.grad = type(gx)(_copy_in_layout_of(x.array, gx.array))
                        else:
                            x.grad = gx
                        owned.add(id(x.grad.array))
                    continue
                slot = pending.get(creator)
                if slot is None:
                    if creator.inputs is None:
                        raise RuntimeError(
                            "Trying to backward through the graph a second time (or directly access "
                            "saved tensors after they have already been freed). Pass "
                            "retain_graph=True to the first backward() or easyfit.grad() call if you "
                            "need to backward through the graph again.")
                    slot = pending[creator] = [None] * creator.n_outputs
                    counter += 1
                    push(heap, (-creator.generation, counter, creator))
                index = x.output_index
                if slot[index] is None:
                    slot[index] = gx
                elif create_graph:
                    slot[index] = slot[index] + gx
                else:   # a sum nobody differentiates: on the arrays, no op dispatched
                    slot[index] = type(gx)(slot[index].array + gx.array)
            if not heap:
                break
            fn = pop(heap)[2]
            input_grads = fn.backward_inputs(pending.pop(fn))
            if check:
                _check_finite(fn, input_grads)
            items = zip(fn.inputs, input_grads)   # zip keeps the inputs alive past release()
            if not retain_graph:
                fn.release()
    return captured
