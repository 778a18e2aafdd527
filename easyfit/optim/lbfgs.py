"""L-BFGS: a quasi-Newton method that re-evaluates the loss through a closure.

The algorithm is PyTorch's (itself from minFunc), step for step, so a program written
for `torch.optim.LBFGS` follows the same trajectory: one `step(closure)` runs up to
`max_iter` iterations; each builds a search direction from the last `history_size`
curvature pairs (two-loop recursion), then moves a fixed `lr` along it or, with
`line_search_fn='strong_wolfe'`, as far as a strong-Wolfe line search finds good.

Scalars (step lengths, dot products) stay NumPy scalars of the parameters' dtype, as
PyTorch keeps them 0-d tensors, so float32 runs round as PyTorch's do.
"""
import numbers

import numpy as np

from ..core import no_grad, enable_grad
from ..core.backend import get_array_module, device_of, to_device
from ..core.tensor import Tensor
from .optimizer import Optimizer

_LINE_SEARCHES = (None, "strong_wolfe")


class LBFGS(Optimizer):
    """PyTorch's L-BFGS; `step(closure)` needs a closure that recomputes the loss::

        opt = LBFGS(model.parameters(), lr=0.8, line_search_fn='strong_wolfe')

        def closure():
            opt.zero_grad()
            loss = loss_func(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)   # returns the first loss the closure computed

    One parameter group only (the parameters are treated as one flat vector);
    `max_eval` defaults to `max_iter * 5 // 4`. Memory: `2 * history_size + 3` copies
    of the parameters.
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))

    def _validate(self, hyper):
        self._check_range(hyper, "lr", 0.0)
        self._check_range(hyper, "tolerance_grad", 0.0)
        self._check_range(hyper, "tolerance_change", 0.0)
        for name, low in (("max_iter", 1), ("max_eval", 1), ("history_size", 1)):
            value = hyper[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"LBFGS: {name} must be an integer >= {low}, got {value!r}")
        if hyper["line_search_fn"] not in _LINE_SEARCHES:
            raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got {hyper['line_search_fn']!r}")

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): it treats all "
                             "parameters as one vector; pass them all in one group")
        super().add_param_group(param_group)
        devices = {device_of(p.array) for p in self.param_groups[0]["params"]}
        if len(devices) > 1:
            raise ValueError(f"LBFGS: all parameters must be on one device, got {sorted(devices)}")

    # ----- the parameters as one flat vector ----------------------------------------------
    @property
    def _params(self):
        return self.param_groups[0]["params"]

    def _flat_grad(self):
        pieces = []
        for p in self._params:
            if p.grad is None:
                pieces.append(get_array_module(p.array).zeros(p.array.size, p.array.dtype))
            else:
                grad = p.grad.array if isinstance(p.grad, Tensor) else p.grad
                pieces.append(grad.reshape(-1))
        return get_array_module(pieces[0]).concatenate(pieces)

    def _move(self, step_length, direction):
        """Parameters += step_length * direction (a flat vector)."""
        offset = 0
        for p in self._params:
            count = p.array.size
            p.array += step_length * direction[offset:offset + count].reshape(p.array.shape)
            offset += count

    def _copy_params(self):
        return [p.array.copy() for p in self._params]

    def _restore_params(self, saved):
        for p, array in zip(self._params, saved):
            p.array[...] = array

    def _evaluate(self, closure):
        with enable_grad():
            loss = closure()
        return loss

    def _evaluate_along(self, closure, start, step_length, direction):
        """Loss and flat gradient at start + step_length * direction; the parameters are left at start."""
        self._move(step_length, direction)
        loss = _as_float(self._evaluate(closure))
        flat_grad = self._flat_grad()
        self._restore_params(start)
        return loss, flat_grad

    # ----- the step -----------------------------------------------------------------------
    def step(self, closure=None):
        """Run up to `max_iter` L-BFGS iterations; return the loss of the first closure call."""
        if closure is None:
            raise TypeError("LBFGS.step needs a closure: a function that zeroes the gradients, computes the "
                            "loss, calls loss.backward() and returns the loss")
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        # The state is global; it is kept under the first parameter, as in PyTorch.
        state = self.state.setdefault(self._params[0], {"func_evals": 0, "n_iter": 0})
        with no_grad():
            first_loss = self._evaluate(closure)
            loss = _as_float(first_loss)
            evaluations = 1
            state["func_evals"] += 1
            flat_grad = self._flat_grad()
            xp = get_array_module(flat_grad)
            if _abs_max(xp, flat_grad) <= tolerance_grad:
                return first_loss

            direction, step_length = state.get("d"), state.get("t")
            old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
            h_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
            iteration = 0
            while iteration < max_iter:
                iteration += 1
                state["n_iter"] += 1
                # the search direction: steepest descent first, then the two-loop recursion
                if state["n_iter"] == 1:
                    direction = -flat_grad
                    old_dirs, old_stps, ro = [], [], []
                    h_diag = 1
                else:
                    y = flat_grad - prev_flat_grad
                    s = direction * step_length
                    ys = _dot(xp, y, s)
                    if ys > 1e-10:
                        if len(old_dirs) == history_size:
                            old_dirs.pop(0)
                            old_stps.pop(0)
                            ro.pop(0)
                        old_dirs.append(y)
                        old_stps.append(s)
                        ro.append(1.0 / ys)
                        h_diag = ys / _dot(xp, y, y)
                    alphas = [None] * len(old_dirs)
                    q = -flat_grad
                    for i in range(len(old_dirs) - 1, -1, -1):
                        alphas[i] = _dot(xp, old_stps[i], q) * ro[i]
                        q += -alphas[i] * old_dirs[i]
                    direction = q * h_diag
                    for i in range(len(old_dirs)):
                        beta = _dot(xp, old_dirs[i], direction) * ro[i]
                        direction += (alphas[i] - beta) * old_stps[i]
                if prev_flat_grad is None:
                    prev_flat_grad = flat_grad.copy()
                else:
                    prev_flat_grad[...] = flat_grad
                prev_loss = loss

                # the step length
                if state["n_iter"] == 1:
                    step_length = min(1.0, 1.0 / flat_grad.dtype.type(xp.abs(flat_grad).sum())) * lr
                else:
                    step_length = lr
                slope = _dot(xp, flat_grad, direction)
                if slope > -tolerance_change:
                    break
                if group["line_search_fn"] == "strong_wolfe":
                    start = self._copy_params()

                    def along(step):
                        return self._evaluate_along(closure, start, step, direction)

                    loss, flat_grad, step_length, used = _strong_wolfe(
                        along, step_length, direction, loss, flat_grad, slope, tolerance_change,
                        max_searches=max_eval - evaluations)
                    self._move(step_length, direction)
                    converged = _abs_max(xp, flat_grad) <= tolerance_grad
                else:
                    self._move(step_length, direction)
                    used = 0
                    converged = False
                    if iteration != max_iter:  # the last iteration's loss would go unused
                        loss = _as_float(self._evaluate(closure))
                        flat_grad = self._flat_grad()
                        converged = _abs_max(xp, flat_grad) <= tolerance_grad
                        used = 1
                evaluations += used
                state["func_evals"] += used

                if (iteration == max_iter or evaluations >= max_eval or converged
                        or _abs_max(xp, direction * step_length) <= tolerance_change
                        or abs(loss - prev_loss) < tolerance_change):
                    break

            state.update(d=direction, t=step_length, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                         prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return first_loss

    # ----- checkpoints ------------------------------------------------------------------
    def state_dict(self):
        """As `Optimizer.state_dict()`; the global state sits under parameter 0 (PyTorch's names:
        `func_evals, n_iter, d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad, prev_loss`),
        with scalars as 0-d arrays and the history as lists of arrays."""
        state, self.state = self.state, {}
        try:
            checkpoint = super().state_dict()
        finally:
            self.state = state
        entry = self.state.get(self._params[0])
        if entry is not None:
            checkpoint["state"] = {0: {name: _saved(value) for name, value in entry.items()}}
        return checkpoint

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("LBFGS.load_state_dict expects a dict with 'state' and 'param_groups' (from state_dict())")
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        entries = dict(state_dict["state"])
        if not entries:
            return
        if set(map(int, entries)) != {0}:
            raise ValueError(f"LBFGS.load_state_dict: LBFGS keeps its state under parameter 0, the checkpoint has "
                             f"state for parameters {sorted(map(int, entries))}; was it written by another optimizer?")
        entry = next(iter(entries.values()))
        expected = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
                    "prev_loss"}
        if not {"func_evals", "n_iter"} <= set(entry) <= expected:
            raise ValueError(f"LBFGS.load_state_dict: the state has entries {sorted(entry)}, LBFGS keeps "
                             f"{sorted(expected)}; was the checkpoint written by another optimizer?")
        first = self._params[0].array
        size = sum(p.array.size for p in self._params)
        restored = {}
        for name, value in entry.items():
            restored[name] = _restored(name, value, first, size)
        self.state = {self._params[0]: restored}


def _as_float(loss):
    if isinstance(loss, Tensor):
        return float(loss.item())
    return float(loss)


def _dot(xp, a, b):
    """A dot product as a scalar of the arrays' dtype (PyTorch's 0-d tensor), on the host."""
    return a.dtype.type(xp.dot(a, b))


def _abs_max(xp, a):
    return a.dtype.type(xp.abs(a).max())


def _saved(value):
    if isinstance(value, list):
        return [_saved(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return np.array(value, dtype=np.int64)
    if isinstance(value, (float, np.floating)):
        return np.array(value)
    return value.copy()


def _restored(name, value, first, size):
    """A saved state value back on the parameters' device, with flat vectors checked against their size."""
    if isinstance(value, (list, tuple)):
        return [_restored(name, item, first, size) for item in value]
    value = value.array if isinstance(value, Tensor) else value
    if value is None or isinstance(value, numbers.Number) and not isinstance(value, np.generic):
        return value
    value = np.asarray(value) if isinstance(value, np.generic) else value
    if value.ndim == 0:
        scalar = value.item() if hasattr(value, "item") else value
        if name in ("func_evals", "n_iter") or value.dtype.kind in "iu":
            return int(scalar)
        return first.dtype.type(scalar) if name != "prev_loss" else float(scalar)
    if value.shape != (size,):
        raise ValueError(f"LBFGS.load_state_dict: state '{name}' has shape {tuple(value.shape)}, the parameters "
                         f"have {size} elements in all")
    value = to_device(value, device_of(first))
    return get_array_module(first).array(value, dtype=first.dtype, copy=True)


# ----- the strong-Wolfe line search (minFunc's, as PyTorch runs it) --------------------------

def _cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through two points with their values and slopes, kept
    within `bounds` (default: between the points); the middle when the cubic has none."""
    low, high = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square < 0:
        return (low + high) / 2.0
    d2 = np.sqrt(d2_square)
    if x1 <= x2:
        position = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        position = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(position, low), high)


def _strong_wolfe(along, step, direction, loss, flat_grad, slope, tolerance_change, c1=1e-4, c2=0.9,
                  max_searches=25):
    """Find a step length meeting the strong Wolfe conditions along `direction`.

    `along(step)` returns (loss, flat gradient) there. First a bracket containing such a
    step is found (growing the step by cubic extrapolation), then it is narrowed by cubic
    interpolation ("zoom"). Returns (loss, flat gradient, step, evaluations used).
    """
    xp = get_array_module(direction)
    direction_size = _abs_max(xp, direction)
    flat_grad = flat_grad.copy()
    new_loss, new_grad = along(step)
    evaluations = 1
    new_slope = _dot(xp, new_grad, direction)

    previous_step, previous_loss, previous_grad, previous_slope = 0, loss, flat_grad, slope
    done = False
    searches = 0
    bracket_slope = None
    while searches < max_searches:
        if new_loss > loss + c1 * step * slope or (searches > 1 and new_loss >= previous_loss):
            bracket, bracket_loss = [previous_step, step], [previous_loss, new_loss]
            bracket_grad, bracket_slope = [previous_grad, new_grad.copy()], [previous_slope, new_slope]
            break
        if abs(new_slope) <= -c2 * slope:
            bracket, bracket_loss, bracket_grad = [step], [new_loss], [new_grad]
            done = True
            break
        if new_slope >= 0:
            bracket, bracket_loss = [previous_step, step], [previous_loss, new_loss]
            bracket_grad, bracket_slope = [previous_grad, new_grad.copy()], [previous_slope, new_slope]
            break
        # extrapolate: the cubic's minimum, between 1.01 and 10 times the current step
        lowest, highest = step + 0.01 * (step - previous_step), step * 10
        next_step = _cubic_minimum(previous_step, previous_loss, previous_slope, step, new_loss, new_slope,
                                   bounds=(lowest, highest))
        previous_step, previous_loss, previous_grad, previous_slope = step, new_loss, new_grad.copy(), new_slope
        step = next_step
        new_loss, new_grad = along(step)
        evaluations += 1
        new_slope = _dot(xp, new_grad, direction)
        searches += 1
    if searches == max_searches:
        bracket, bracket_loss, bracket_grad = [0, step], [loss, new_loss], [flat_grad, new_grad]

    # zoom: shrink the bracket until its low end meets the conditions
    insufficient_progress = False
    low, high = (0, 1) if bracket_loss[0] <= bracket_loss[-1] else (1, 0)
    while not done and searches < max_searches:
        if abs(bracket[1] - bracket[0]) * direction_size < tolerance_change:
            break
        step = _cubic_minimum(bracket[0], bracket_loss[0], bracket_slope[0], bracket[1], bracket_loss[1],
                              bracket_slope[1])
        # a step too close to an end of the bracket twice running (or on it) moves 10% inside
        margin = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - step, step - min(bracket)) < margin:
            if insufficient_progress or step >= max(bracket) or step <= min(bracket):
                if abs(step - max(bracket)) < abs(step - min(bracket)):
                    step = max(bracket) - margin
                else:
                    step = min(bracket) + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        new_loss, new_grad = along(step)
        evaluations += 1
        new_slope = _dot(xp, new_grad, direction)
        searches += 1
        if new_loss > loss + c1 * step * slope or new_loss >= bracket_loss[low]:
            # not enough decrease: the new step becomes the high end
            bracket[high], bracket_loss[high] = step, new_loss
            bracket_grad[high], bracket_slope[high] = new_grad.copy(), new_slope
            low, high = (0, 1) if bracket_loss[0] <= bracket_loss[1] else (1, 0)
        else:
            if abs(new_slope) <= -c2 * slope:
                done = True
            elif new_slope * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_loss[high] = bracket[low], bracket_loss[low]
                bracket_grad[high], bracket_slope[high] = bracket_grad[low], bracket_slope[low]
            bracket[low], bracket_loss[low] = step, new_loss
            bracket_grad[low], bracket_slope[low] = new_grad.copy(), new_slope
    return bracket_loss[low], bracket_grad[low], bracket[low], evaluations
