"""Gradients as values (`grad`) and their checks against finite differences."""
import numpy as np

from .autograd import run_backward
from .backend import get_array_module
from .tensor import Tensor


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """d(outputs)/d(inputs) as a tuple of Tensors, without touching any `.grad`.

    With `create_graph=True` the result is itself differentiable (Hessian-vector
    products: differentiate `grad(...)` again).
    """
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    grad_outputs = _as_list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    seeds = []
    for y, g in zip(outputs, grad_outputs):
        if not y.requires_grad:
            raise RuntimeError("grad: an output does not require grad (was it computed under no_grad, "
                               "or from inputs without requires_grad=True?)")
        if g is None:
            if y.numel() != 1:
                raise RuntimeError(f"grad: grad_outputs is needed for an output of shape {y.shape}")
            g = Tensor(get_array_module(y.array).ones_like(y.array))
        elif not isinstance(g, Tensor):
            g = Tensor(np.asarray(g, dtype=y.dtype))
        seeds.append(g)
    for x in inputs:
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise RuntimeError("grad: every input must be a Tensor with requires_grad=True")
    if retain_graph is None:
        retain_graph = create_graph
    result = run_backward(outputs, seeds, retain_graph, create_graph, capture=inputs)
    for i, (x, g) in enumerate(zip(inputs, result)):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} (shape {x.shape}) was not used to compute the outputs; "
                               "pass allow_unused=True to get None for it")
    return tuple(result)


def _numeric_jacobian(fn, inputs, index, eps):
    """Central differences of every output element with respect to inputs[index]."""
    x = inputs[index].array
    flat = x.reshape(-1)
    columns = []
    for k in range(flat.size):
        original = flat[k].item()
        flat[k] = original + eps
        plus = _flat_outputs(fn(*inputs))
        flat[k] = original - eps
        minus = _flat_outputs(fn(*inputs))
        flat[k] = original
        columns.append((plus - minus) / (2 * eps))
    if not columns:
        return np.zeros((_flat_outputs(fn(*inputs)).size, 0))
    return np.stack(columns, axis=1)


def _flat_outputs(outputs):
    outputs = _as_list(outputs)
    return np.concatenate([np.asarray(o.numpy_cpu(), dtype=np.float64).reshape(-1) for o in outputs]) \
        if outputs else np.zeros(0)


def _analytic_jacobians(fn, inputs):
    """One row per output element: the gradient of that element w.r.t. every input."""
    outputs = _as_list(fn(*inputs))
    sizes = [o.numel() for o in outputs]
    total = int(np.sum(sizes))
    jacobians = [np.zeros((total, x.numel())) for x in inputs]
    row = 0
    for o_index, out in enumerate(outputs):
        for k in range(out.numel()):
            seed = np.zeros(out.shape, dtype=out.dtype)
            seed.reshape(-1)[k] = 1
            seeds = [Tensor(np.zeros(o.shape, dtype=o.dtype)) for o in outputs]
            seeds[o_index] = Tensor(seed)
            live = [(o, s) for o, s in zip(outputs, seeds) if o.requires_grad]
            if live:
                grads = run_backward([o for o, _ in live], [s for _, s in live], True, False, capture=inputs)
                for j, g in enumerate(grads):
                    if g is not None:
                        jacobians[j][row] = np.asarray(g.numpy_cpu(), dtype=np.float64).reshape(-1)
            row += 1
    return jacobians


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Compare backward with central finite differences, element by element.

    `inputs` are float64 Tensors; those with requires_grad=True are checked. Returns
    True, or raises an AssertionError naming the input and the worst element.
    """
    inputs = _as_list(inputs)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {x.dtype}; use float64 for finite differences")
    analytic = _analytic_jacobians(fn, inputs)
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        numeric = _numeric_jacobian(fn, inputs, i, eps)
        if not np.allclose(analytic[i], numeric, atol=atol, rtol=rtol):
            error = np.abs(analytic[i] - numeric)
            worst = np.unravel_index(np.argmax(error), error.shape)
            if raise_exception:
                raise AssertionError(
                    f"gradcheck: input {i} (shape {x.shape}): analytic and numeric Jacobians differ; "
                    f"worst at (output {worst[0]}, element {worst[1]}): analytic {analytic[i][worst]:.6g}, "
                    f"numeric {numeric[worst]:.6g}\nanalytic:\n{analytic[i]}\nnumeric:\n{numeric}")
            return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check second derivatives: gradcheck of x -> grad(sum(fn(x) * v), x, create_graph=True)."""
    inputs = _as_list(inputs)
    rng = np.random.default_rng(seed)
    outputs = _as_list(fn(*inputs))
    weights = [Tensor(rng.standard_normal(o.shape)) for o in outputs]
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]

    def first_derivatives(*xs):
        pairs = [(o, w) for o, w in zip(_as_list(fn(*xs)), weights) if o.requires_grad]
        ys, live = [o for o, _ in pairs], [w for _, w in pairs]
        targets = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        gs = grad(ys, targets, grad_outputs=live, create_graph=True, allow_unused=True)
        return [g if g is not None else Tensor(np.zeros(t.shape)) for g, t in zip(gs, targets)]

    if not checked:
        return True
    return gradcheck(first_derivatives, inputs, eps=eps, atol=atol, rtol=rtol)
