"""Recurrent layers (RNN, LSTM, GRU) and their cells, with PyTorch's parameters and gate order.

Speed comes from two things. The input projections of a whole sequence are one matmul per
layer and direction (`x @ W_ih.T + b` over all time steps at once). The recurrence of one
layer direction is then ONE op (`LSTMSequence`, `GRUSequence`, `RNNSequence`) whose forward
loops over time on raw arrays (one matmul `h @ W_hh.T` per step, the gate math in place on
preallocated buffers) and whose first-order backward loops back over time the same way and
gets the weight gradient as one matmul over all steps. Under `create_graph=True` the backward
is instead composed of Tensor ops (the same math, step by step) so that higher-order
gradients work. The cells are the same ops run for one step.
"""
import math
import warnings

import numpy as np

from ..core import lanes
from ..core.autograd import is_grad_enabled
from ..core.backend import get_array_module
from ..core.functions import concatenate, sigmoid, stack, swapaxes, tanh, relu, reshape, expand_dims
from ..core.random import default_generator
from ..core.tensor import Function, Tensor, DEFAULT_FLOAT
from . import functional as F
from .functional import _recurrent_kernels as kernels
from ._blas_threads import thread_choice
from .module import Module, Parameter

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
           "LSTMSequence", "GRUSequence", "RNNSequence"]


def _step_indices(length, reverse):
    """(step t, index of the state before it, index of the state after it) in processing order.

    States live in a (length + 1, ...) buffer: forward runs keep h_0 at 0 and the state
    after step t at t + 1; reverse runs keep h_0 at `length` and the state after step t at t.
    Either way the per-step outputs are one contiguous slice of the buffer.
    """
    if reverse:
        return [(t, t + 1, t) for t in range(length - 1, -1, -1)]
    return [(t, t, t + 1) for t in range(length)]


def _outputs_slice(length, reverse):
    return slice(0, length) if reverse else slice(1, length + 1)


def _previous_slice(length, reverse):
    return slice(1, length + 1) if reverse else slice(0, length)


# ----- LSTM -------------------------------------------------------------------------------

def _lstm_gate_constants(hidden_size, dtype, xp):
    """Per-column constants that apply sigmoid (i, f, o) and tanh (g) in one pass.

    sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5, so with `scale` 0.5 on the sigmoid gates and 1
    on g, the activations are `tanh(pre * scale) * scale + offset`. Their derivatives,
    y * (1 - y) and 1 - y * y, are both `base + y * (slope - y)`.
    """
    H = hidden_size
    scale = xp.full(4 * H, 0.5, dtype=dtype)
    scale[2 * H:3 * H] = 1
    offset = xp.full(4 * H, 0.5, dtype=dtype)
    offset[2 * H:3 * H] = 0
    slope = offset * 2          # 1 on sigmoid gates, 0 on g
    base = 1 - slope            # 0 on sigmoid gates, 1 on g
    return scale, offset, slope, base


class LSTMSequence(Function):
    """One LSTM layer direction over a whole sequence, as one op.

    Inputs: `gates_x` (T, B, 4H), the input projections x_t @ W_ih.T + b_ih + b_hh for all
    steps; `h0`, `c0` (B, H); `weight_hh` (4H, H). Outputs: the hidden states (T, B, H),
    h_n and c_n (B, H). Gates are ordered i, f, g, o as in PyTorch. With `reverse=True`
    the sequence is processed from the last step to the first (a bidirectional layer's
    backward direction); outputs stay aligned with the input steps.

    Per step the forward pass is one matmul and ten elementwise calls on preallocated
    buffers of one step's size (they stay in the CPU's cache: computing the step-independent
    parts for all steps at once, outside the loop, was measured slower). With the compiled
    kernels, a batch of two row blocks or more runs its blocks on lanes (`_run_rows`);
    otherwise the step loops run with the BLAS thread count that `ThreadChoice` finds faster.
    """

    def __init__(self, reverse=False):
        self.reverse = reverse

    def forward(self, gates_x, h0, c0, weight_hh):
        self.compiled = kernels.use_compiled(gates_x, weight_hh)
        if self.compiled:
            return self._forward_compiled(gates_x, h0, c0, weight_hh)
        xp = get_array_module(gates_x)
        length, batch, four_h = gates_x.shape
        H = four_h // 4
        dtype = gates_x.dtype
        scale, offset, _, _ = _lstm_gate_constants(H, dtype, xp)
        # i, f, g, o after sigmoid/tanh; first the scaled input projections (0.5 on the sigmoid
        # gates: sigmoid(x) = 0.5 tanh(0.5 x) + 0.5, exact in floating point, as is 0.5 * W)
        activations = xp.multiply(gates_x, scale)
        hidden = xp.empty((length + 1, batch, H), dtype=dtype)
        cell = xp.empty((length + 1, batch, H), dtype=dtype)
        tanh_cell = xp.empty((length, batch, H), dtype=dtype)
        scratch = xp.empty((batch, H), dtype=dtype)
        recurrent = xp.empty((batch, four_h), dtype=dtype)
        first = length if self.reverse else 0
        hidden[first] = h0
        cell[first] = c0
        weight_t = xp.ascontiguousarray(weight_hh.T * scale)   # contiguous: BLAS runs faster on it
        steps = _step_indices(length, self.reverse)

        def loop(first, stop):
            for t, prev, new in steps[first:stop]:
                gates = activations[t]
                xp.matmul(hidden[prev], weight_t, out=recurrent)
                gates += recurrent
                xp.tanh(gates, out=gates)
                gates *= scale
                gates += offset
                xp.multiply(gates[:, H:2 * H], cell[prev], out=cell[new])
                xp.multiply(gates[:, :H], gates[:, 2 * H:3 * H], out=scratch)
                cell[new] += scratch
                xp.tanh(cell[new], out=tanh_cell[t])
                xp.multiply(gates[:, 3 * H:], tanh_cell[t], out=hidden[new])

        _run_loop(xp, ("lstm forward", batch, H, dtype.str), loop, length)
        self.saved = (activations, hidden, cell, tanh_cell)
        last = 0 if self.reverse else length
        return hidden[_outputs_slice(length, self.reverse)], hidden[last].copy(), cell[last].copy()

    def _forward_compiled(self, gates_x, h0, c0, weight_hh):
        """The forward pass with one compiled gate kernel per step (numba; see _recurrent_kernels).
        Saves the activations, hidden and cell states; tanh(c) is recomputed in backward."""
        length, batch, four_h = gates_x.shape
        H = four_h // 4
        dtype = gates_x.dtype
        gates_x = np.ascontiguousarray(gates_x)
        activations = np.empty_like(gates_x)
        hidden = np.empty((length + 1, batch, H), dtype=dtype)
        cell = np.empty((length + 1, batch, H), dtype=dtype)
        first = length if self.reverse else 0
        hidden[first] = h0
        cell[first] = c0
        weight = np.ascontiguousarray(weight_hh)
        steps = _step_indices(length, self.reverse)
        step_kernel = kernels.lstm_forward_step

        def loop(rows, first, stop):
            out_t = np.empty((four_h, rows.stop - rows.start), dtype=dtype)
            for t, prev, new in steps[first:stop]:
                _transposed_product(weight, hidden[prev, rows], out_t)
                step_kernel(gates_x[t, rows], out_t, cell[prev, rows], activations[t, rows], cell[new, rows],
                            hidden[new, rows])

        _run_rows(("lstm forward compiled", batch, H, dtype.str), loop, length, batch)
        self.saved = (activations, hidden, cell)
        last = 0 if self.reverse else length
        return hidden[_outputs_slice(length, self.reverse)], hidden[last].copy(), cell[last].copy()

    def backward(self, grad_hidden, grad_h_n, grad_c_n):
        gates_x, h0, c0, weight_hh = self.inputs
        if is_grad_enabled():   # create_graph=True: a backward that is itself differentiable
            return _lstm_backward_composed(gates_x, h0, c0, weight_hh, grad_hidden, grad_h_n, grad_c_n,
                                           self.reverse)
        if self.compiled:
            return self._backward_compiled(grad_hidden, grad_h_n, grad_c_n)
        activations, hidden, cell, tanh_cell = self.saved
        w = weight_hh.array
        xp = get_array_module(w)
        length, batch, four_h = activations.shape
        H = four_h // 4
        dtype = activations.dtype
        _, _, slope, base = _lstm_gate_constants(H, dtype, xp)
        grad_gates = xp.empty_like(activations)
        dh = grad_h_n.array.copy()
        dc = grad_c_n.array.copy()
        scratch = xp.empty((batch, H), dtype=dtype)
        derivative = xp.empty((batch, four_h), dtype=dtype)
        g_hidden = grad_hidden.array
        steps = list(reversed(_step_indices(length, self.reverse)))

        def loop(first, stop):
            for t, prev, _ in steps[first:stop]:
                xp.add(dh, g_hidden[t], out=dh)
                gates = activations[t]
                d = grad_gates[t]
                tc = tanh_cell[t]
                # dc += dh * o * (1 - tanh(c)^2)
                xp.multiply(tc, tc, out=scratch)
                xp.subtract(1, scratch, out=scratch)
                xp.multiply(scratch, gates[:, 3 * H:], out=scratch)
                xp.multiply(scratch, dh, out=scratch)
                xp.add(dc, scratch, out=dc)
                # d(gate activation): i <- dc * g, f <- dc * c_prev, g <- dc * i, o <- dh * tanh(c)
                xp.multiply(dc, gates[:, 2 * H:3 * H], out=d[:, :H])
                xp.multiply(dc, cell[prev], out=d[:, H:2 * H])
                xp.multiply(dc, gates[:, :H], out=d[:, 2 * H:3 * H])
                xp.multiply(dh, tc, out=d[:, 3 * H:])
                # times the activation derivative, for all four gates in one pass
                xp.subtract(slope, gates, out=derivative)
                xp.multiply(derivative, gates, out=derivative)
                xp.add(derivative, base, out=derivative)
                d *= derivative
                xp.multiply(dc, gates[:, H:2 * H], out=dc)
                xp.matmul(d, w, out=dh)

        _run_loop(xp, ("lstm backward", batch, H, dtype.str), loop, length)
        return self._backward_results(hidden, grad_gates, dh, dc)

    def _backward_compiled(self, grad_hidden, grad_h_n, grad_c_n):
        activations, hidden, cell = self.saved
        w = np.ascontiguousarray(self.inputs[3].array)
        length, batch, four_h = activations.shape
        H = four_h // 4
        dtype = activations.dtype
        grad_gates = np.empty_like(activations)
        dh = np.array(grad_h_n.array, dtype=dtype, order="C")
        dc = np.array(grad_c_n.array, dtype=dtype, order="C")
        tanh_cell = np.empty((batch, H), dtype=dtype)
        g_hidden = np.ascontiguousarray(grad_hidden.array, dtype=dtype)
        steps = list(reversed(_step_indices(length, self.reverse)))
        step_kernel = kernels.lstm_backward_step

        def loop(rows, first, stop):
            dh_rows, dc_rows, tanh_rows = dh[rows], dc[rows], tanh_cell[rows]
            for t, prev, new in steps[first:stop]:
                step_kernel(dh_rows, g_hidden[t, rows], dc_rows, activations[t, rows], cell[prev, rows],
                            cell[new, rows], tanh_rows, grad_gates[t, rows])
                np.matmul(grad_gates[t, rows], w, out=dh_rows)

        _run_rows(("lstm backward compiled", batch, H, dtype.str), loop, length, batch)
        return self._backward_results(hidden, grad_gates, dh, dc)

    def _backward_results(self, hidden, grad_gates, dh, dc):
        """The gradients of both backward paths: the gates', h0's, c0's and W_hh's
        (summed over steps in one product of the stacked gates and previous states)."""
        grad_weight = None
        if self.needs_grad(3):
            length, _, four_h = grad_gates.shape
            H = four_h // 4
            previous = hidden[_previous_slice(length, self.reverse)]
            grad_weight = grad_gates.reshape(-1, four_h).T @ previous.reshape(-1, H)
        return (Tensor(grad_gates) if self.needs_grad(0) else None,
                Tensor(dh) if self.needs_grad(1) else None,
                Tensor(dc) if self.needs_grad(2) else None,
                Tensor(grad_weight) if grad_weight is not None else None)


# The rows of a batch never meet in a recurrent layer, so a block of rows can run the whole
# time loop by itself: blocks of this many rows run on lanes (core/lanes.py), each with its
# own one-thread products and gate kernels, and nothing waits between steps. OpenBLAS split
# every step's product over two threads and joined them after it; with another process on
# one core, each join waited for it (the LSTM step of bench/train_step.py: 3.5x its quiet
# time, against PyTorch's 2.9x). The blocks are fixed by the batch size alone, so results
# are the same on any number of threads.
_LANE_ROWS = 16


def _transposed_product(weight, h, out_t):
    """out_t = (h @ weight.T).T = weight @ h.T, for a step's few rows h (B, H).

    The compiled LSTM gate kernel reads the product in this layout. For a block of 16 rows
    OpenBLAS computes it about a third faster than h @ weight.T (16x256 by 256x1024, one
    thread, best of 30: 0.126 against 0.187 ms with the SkylakeX kernel on an AVX-512
    EPYC, 0.115 against 0.129 with the Haswell kernel on the same machine)."""
    np.matmul(weight, h.T, out=out_t)


def _run_rows(key, loop, steps, batch):
    """Run the compiled `loop(rows, first, stop)` over all steps: a batch of two row blocks
    or more by blocks on lanes; a smaller one whole, through `_run_loop`."""
    blocks = lanes.blocks(batch, _LANE_ROWS)
    if len(blocks) == 1:
        _run_loop(np, key, lambda first, stop: loop(slice(0, batch), first, stop), steps)
    else:
        lanes.run(lambda state, index, rows: loop(rows, 0, steps), blocks)


def _run_loop(xp, key, loop, steps):
    """Run `loop(first, stop)` over all steps; on NumPy with the BLAS thread count `thread_choice` finds faster."""
    if xp is np:
        thread_choice.run(key, loop, steps)
    else:
        loop(0, steps)


def _lstm_backward_composed(gates_x, h0, c0, weight_hh, grad_hidden, grad_h_n, grad_c_n, reverse):
    """LSTMSequence's backward written with Tensor ops (used under create_graph=True)."""
    length = gates_x.shape[0]
    H = h0.shape[-1]
    steps = _step_indices(length, reverse)
    weight_t = weight_hh.T
    h, c = h0, c0
    saved = {}
    for t, _, _ in steps:   # recompute the forward pass with ops, from the inputs
        pre = gates_x[t] + h @ weight_t
        i, f = sigmoid(pre[:, :H]), sigmoid(pre[:, H:2 * H])
        g, o = tanh(pre[:, 2 * H:3 * H]), sigmoid(pre[:, 3 * H:])
        c_new = f * c + i * g
        tc = tanh(c_new)
        saved[t] = (h, c, i, f, g, o, tc)
        h, c = o * tc, c_new
    dh, dc = grad_h_n, grad_c_n
    grad_gates = [None] * length
    grad_weight = None
    for t, _, _ in reversed(steps):
        h_prev, c_prev, i, f, g, o, tc = saved[t]
        dh = dh + grad_hidden[t]
        dc = dc + dh * o * (1.0 - tc * tc)
        d = concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                         dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=1)
        grad_gates[t] = d
        step_weight = d.T @ h_prev
        grad_weight = step_weight if grad_weight is None else grad_weight + step_weight
        dc = dc * f
        dh = d @ weight_hh
    return stack(grad_gates), dh, dc, grad_weight


# ----- GRU ----------------------------------------------------------------------------------

class GRUSequence(Function):
    """One GRU layer direction over a whole sequence, as one op (PyTorch's GRU equations).

    Inputs: `gates_x` (T, B, 3H) = x_t @ W_ih.T + b_ih; `h0` (B, H); `weight_hh` (3H, H);
    `bias_hh` (3H,). Gates r, z, n: r = sigmoid(x_r + h W_hr + b_hr), z likewise,
    n = tanh(x_n + r * (h W_hn + b_hn)), h' = (1 - z) * n + z * h. Outputs: hidden states
    (T, B, H) and h_n (B, H).
    """

    def __init__(self, reverse=False):
        self.reverse = reverse

    def forward(self, gates_x, h0, weight_hh, bias_hh):
        self.compiled = kernels.use_compiled(gates_x, weight_hh, bias_hh)
        if self.compiled:
            return self._forward_compiled(gates_x, h0, weight_hh, bias_hh)
        xp = get_array_module(gates_x)
        length, batch, three_h = gates_x.shape
        H = three_h // 3
        dtype = gates_x.dtype
        activations = xp.empty((length, batch, three_h), dtype=dtype)   # r, z, n
        gates_h = xp.empty((length, batch, three_h), dtype=dtype)       # h @ W_hh.T + b_hh
        hidden = xp.empty((length + 1, batch, H), dtype=dtype)
        hidden[length if self.reverse else 0] = h0
        weight_t = xp.ascontiguousarray(weight_hh.T)
        steps = _step_indices(length, self.reverse)

        def loop(first, stop):
            for t, prev, new in steps[first:stop]:
                gh = gates_h[t]
                y = activations[t]
                xp.matmul(hidden[prev], weight_t, out=gh)
                gh += bias_hh
                rz = y[:, :2 * H]
                xp.add(gates_x[t][:, :2 * H], gh[:, :2 * H], out=rz)
                rz *= 0.5
                xp.tanh(rz, out=rz)
                rz *= 0.5
                rz += 0.5
                n = y[:, 2 * H:]
                xp.multiply(y[:, :H], gh[:, 2 * H:], out=n)
                n += gates_x[t][:, 2 * H:]
                xp.tanh(n, out=n)
                h_new = hidden[new]
                xp.subtract(hidden[prev], n, out=h_new)     # h' = n + z * (h - n)
                h_new *= y[:, H:2 * H]
                h_new += n

        _run_loop(xp, ("gru forward", batch, H, dtype.str), loop, length)
        self.saved = (activations, gates_h, hidden)
        return hidden[_outputs_slice(length, self.reverse)], hidden[0 if self.reverse else length].copy()

    def _forward_compiled(self, gates_x, h0, weight_hh, bias_hh):
        """The forward pass with one compiled gate kernel per step (numba; see _recurrent_kernels)."""
        length, batch, three_h = gates_x.shape
        H = three_h // 3
        dtype = gates_x.dtype
        gates_x = np.ascontiguousarray(gates_x)
        bias_hh = np.ascontiguousarray(bias_hh, dtype=dtype)
        activations = np.empty((length, batch, three_h), dtype=dtype)   # r, z, n
        gates_h = np.empty((length, batch, three_h), dtype=dtype)       # h @ W_hh.T + b_hh
        hidden = np.empty((length + 1, batch, H), dtype=dtype)
        hidden[length if self.reverse else 0] = h0
        weight_t = np.ascontiguousarray(weight_hh.T)
        steps = _step_indices(length, self.reverse)
        step_kernel = kernels.gru_forward_step

        def loop(rows, first, stop):
            for t, prev, new in steps[first:stop]:
                np.matmul(hidden[prev, rows], weight_t, out=gates_h[t, rows])
                step_kernel(gates_x[t, rows], gates_h[t, rows], bias_hh, hidden[prev, rows], activations[t, rows],
                            hidden[new, rows])

        _run_rows(("gru forward compiled", batch, H, dtype.str), loop, length, batch)
        self.saved = (activations, gates_h, hidden)
        return hidden[_outputs_slice(length, self.reverse)], hidden[0 if self.reverse else length].copy()

    def _backward_compiled(self, grad_hidden, grad_h_n):
        activations, gates_h, hidden = self.saved
        w = np.ascontiguousarray(self.inputs[2].array)
        length, batch, three_h = activations.shape
        H = three_h // 3
        dtype = activations.dtype
        grad_gates_x = np.empty_like(activations)
        grad_gates_h = np.empty_like(activations)
        dh = np.array(grad_h_n.array, dtype=dtype, order="C")
        recurrent = np.zeros((batch, H), dtype=dtype)   # the matmul part of h's gradient
        g_hidden = np.ascontiguousarray(grad_hidden.array, dtype=dtype)
        steps = list(reversed(_step_indices(length, self.reverse)))
        step_kernel = kernels.gru_backward_step

        def loop(rows, first, stop):
            dh_rows, recurrent_rows = dh[rows], recurrent[rows]
            for t, prev, _ in steps[first:stop]:
                step_kernel(dh_rows, recurrent_rows, g_hidden[t, rows], activations[t, rows], gates_h[t, rows],
                            hidden[prev, rows], grad_gates_x[t, rows], grad_gates_h[t, rows])
                np.matmul(grad_gates_h[t, rows], w, out=recurrent_rows)

        _run_rows(("gru backward compiled", batch, H, dtype.str), loop, length, batch)
        dh += recurrent
        return self._backward_results(hidden, grad_gates_x, grad_gates_h, dh)

    def _backward_results(self, hidden, grad_gates_x, grad_gates_h, dh):
        length, _, three_h = grad_gates_h.shape
        H = three_h // 3
        grad_weight = grad_bias = None
        if self.needs_grad(2):
            previous = hidden[_previous_slice(length, self.reverse)]
            grad_weight = grad_gates_h.reshape(-1, three_h).T @ previous.reshape(-1, H)
        if self.needs_grad(3):
            grad_bias = grad_gates_h.reshape(-1, three_h).sum(axis=0)
        return (Tensor(grad_gates_x) if self.needs_grad(0) else None,
                Tensor(dh) if self.needs_grad(1) else None,
                Tensor(grad_weight) if grad_weight is not None else None,
                Tensor(grad_bias) if grad_bias is not None else None)

    def backward(self, grad_hidden, grad_h_n):
        gates_x, h0, weight_hh, bias_hh = self.inputs
        if is_grad_enabled():
            return _gru_backward_composed(gates_x, h0, weight_hh, bias_hh, grad_hidden, grad_h_n, self.reverse)
        if self.compiled:
            return self._backward_compiled(grad_hidden, grad_h_n)
        activations, gates_h, hidden = self.saved
        w = weight_hh.array
        xp = get_array_module(w)
        length, batch, three_h = activations.shape
        H = three_h // 3
        dtype = activations.dtype
        grad_gates_x = xp.empty_like(activations)
        grad_gates_h = xp.empty_like(activations)
        dh = grad_h_n.array.copy()
        scratch = xp.empty((batch, H), dtype=dtype)
        g_hidden = grad_hidden.array
        steps = list(reversed(_step_indices(length, self.reverse)))
        recurrent = xp.empty((batch, H), dtype=dtype)

        def loop(first, stop):
            for t, prev, _ in steps[first:stop]:
                xp.add(dh, g_hidden[t], out=dh)
                y = activations[t]
                r, z, n = y[:, :H], y[:, H:2 * H], y[:, 2 * H:]
                dx, dhh = grad_gates_x[t], grad_gates_h[t]
                # n-gate pre-activation: dh * (1 - z) * (1 - n^2)
                da_n = dx[:, 2 * H:]
                xp.multiply(n, n, out=da_n)
                xp.subtract(1, da_n, out=da_n)
                xp.subtract(1, z, out=scratch)
                xp.multiply(scratch, dh, out=scratch)
                da_n *= scratch
                xp.multiply(da_n, r, out=dhh[:, 2 * H:])
                # r: da_n * (h W_hn + b_hn) * r * (1 - r)
                da_r = dx[:, :H]
                xp.subtract(1, r, out=da_r)
                da_r *= r
                da_r *= gates_h[t][:, 2 * H:]
                da_r *= da_n
                # z: dh * (h_prev - n) * z * (1 - z)
                da_z = dx[:, H:2 * H]
                xp.subtract(1, z, out=da_z)
                da_z *= z
                xp.subtract(hidden[prev], n, out=scratch)
                xp.multiply(scratch, dh, out=scratch)
                da_z *= scratch
                dhh[:, :2 * H] = dx[:, :2 * H]
                xp.multiply(dh, z, out=dh)
                xp.matmul(dhh, w, out=recurrent)
                xp.add(dh, recurrent, out=dh)

        _run_loop(xp, ("gru backward", batch, H, dtype.str), loop, length)
        return self._backward_results(hidden, grad_gates_x, grad_gates_h, dh)


def _gru_backward_composed(gates_x, h0, weight_hh, bias_hh, grad_hidden, grad_h_n, reverse):
    """GRUSequence's backward written with Tensor ops (used under create_graph=True)."""
    length = gates_x.shape[0]
    H = h0.shape[-1]
    steps = _step_indices(length, reverse)
    weight_t = weight_hh.T
    h = h0
    saved = {}
    for t, _, _ in steps:
        gx = gates_x[t]
        gh = h @ weight_t + bias_hh
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        saved[t] = (h, gh, r, z, n)
        h = n + z * (h - n)
    dh = grad_h_n
    grad_x, grad_h = [None] * length, [None] * length
    grad_weight = None
    for t, _, _ in reversed(steps):
        h_prev, gh, r, z, n = saved[t]
        dh = dh + grad_hidden[t]
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        da_r = da_n * gh[:, 2 * H:] * r * (1.0 - r)
        da_z = dh * (h_prev - n) * z * (1.0 - z)
        grad_x[t] = concatenate([da_r, da_z, da_n], axis=1)
        grad_h[t] = concatenate([da_r, da_z, da_n * r], axis=1)
        step_weight = grad_h[t].T @ h_prev
        grad_weight = step_weight if grad_weight is None else grad_weight + step_weight
        dh = dh * z + grad_h[t] @ weight_hh
    grad_gates_h = stack(grad_h)
    return stack(grad_x), dh, grad_weight, grad_gates_h.sum(axis=(0, 1))


# ----- Elman RNN ---------------------------------------------------------------------------

class RNNSequence(Function):
    """One Elman RNN layer direction over a whole sequence, as one op.

    Inputs: `gates_x` (T, B, H) = x_t @ W_ih.T + b_ih + b_hh; `h0` (B, H); `weight_hh`
    (H, H). h' = tanh(gates_x + h @ W_hh.T) (or relu). Outputs: hidden states and h_n.
    """

    def __init__(self, nonlinearity="tanh", reverse=False):
        self.nonlinearity, self.reverse = nonlinearity, reverse

    def forward(self, gates_x, h0, weight_hh):
        xp = get_array_module(gates_x)
        length, batch, H = gates_x.shape
        hidden = xp.empty((length + 1, batch, H), dtype=gates_x.dtype)
        hidden[length if self.reverse else 0] = h0
        weight_t = xp.ascontiguousarray(weight_hh.T)
        use_tanh = self.nonlinearity == "tanh"
        steps = _step_indices(length, self.reverse)

        def loop(first, stop):
            for t, prev, new in steps[first:stop]:
                h = hidden[new]
                xp.matmul(hidden[prev], weight_t, out=h)
                h += gates_x[t]
                if use_tanh:
                    xp.tanh(h, out=h)
                else:
                    xp.maximum(h, 0, out=h)

        _run_loop(xp, ("rnn forward", batch, H, gates_x.dtype.str), loop, length)
        self.saved = hidden
        return hidden[_outputs_slice(length, self.reverse)], hidden[0 if self.reverse else length].copy()

    def backward(self, grad_hidden, grad_h_n):
        gates_x, h0, weight_hh = self.inputs
        if is_grad_enabled():
            return _rnn_backward_composed(gates_x, h0, weight_hh, grad_hidden, grad_h_n, self.nonlinearity,
                                          self.reverse)
        hidden = self.saved
        w = weight_hh.array
        xp = get_array_module(w)
        length, batch, H = gates_x.shape
        grad_pre = xp.empty((length, batch, H), dtype=hidden.dtype)
        dh = grad_h_n.array.copy()
        g_hidden = grad_hidden.array
        use_tanh = self.nonlinearity == "tanh"
        steps = list(reversed(_step_indices(length, self.reverse)))

        def loop(first, stop):
            for t, _, new in steps[first:stop]:
                xp.add(dh, g_hidden[t], out=dh)
                d = grad_pre[t]
                y = hidden[new]
                if use_tanh:
                    xp.multiply(y, y, out=d)
                    xp.subtract(1, d, out=d)
                    d *= dh
                else:
                    xp.multiply(dh, y > 0, out=d)
                xp.matmul(d, w, out=dh)

        _run_loop(xp, ("rnn backward", batch, H, hidden.dtype.str), loop, length)
        grad_weight = None
        if self.needs_grad(2):
            previous = hidden[_previous_slice(length, self.reverse)]
            grad_weight = grad_pre.reshape(-1, H).T @ previous.reshape(-1, H)
        return (Tensor(grad_pre) if self.needs_grad(0) else None,
                Tensor(dh) if self.needs_grad(1) else None,
                Tensor(grad_weight) if grad_weight is not None else None)


def _rnn_backward_composed(gates_x, h0, weight_hh, grad_hidden, grad_h_n, nonlinearity, reverse):
    """RNNSequence's backward written with Tensor ops (used under create_graph=True)."""
    length = gates_x.shape[0]
    steps = _step_indices(length, reverse)
    weight_t = weight_hh.T
    h = h0
    saved = {}
    for t, _, _ in steps:
        pre = gates_x[t] + h @ weight_t
        h_new = tanh(pre) if nonlinearity == "tanh" else relu(pre)
        saved[t] = (h, pre, h_new)
        h = h_new
    dh = grad_h_n
    grad_pre = [None] * length
    grad_weight = None
    for t, _, _ in reversed(steps):
        h_prev, pre, y = saved[t]
        dh = dh + grad_hidden[t]
        if nonlinearity == "tanh":
            d = dh * (1.0 - y * y)
        else:
            d = dh * Tensor((pre.array > 0).astype(pre.dtype))
        grad_pre[t] = d
        step_weight = d.T @ h_prev
        grad_weight = step_weight if grad_weight is None else grad_weight + step_weight
        dh = d @ weight_hh
    return stack(grad_pre), dh, grad_weight


# ----- modules ---------------------------------------------------------------------------

_SEQUENCE_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _check_size(owner, name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: parameters, input checks, layer loop."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = _check_size(name, "input_size", input_size)
        self.hidden_size = _check_size(name, "hidden_size", hidden_size)
        self.num_layers = _check_size(name, "num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} applies between stacked layers only, so it has no "
                          f"effect with num_layers=1", stacklevel=3)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        num_directions = 2 if bidirectional else 1
        gate_size = _SEQUENCE_GATES[mode] * hidden_size
        # Parameters are attributes named as in PyTorch, created in PyTorch's order.
        self._parameter_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                names = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, hidden_size)}
                if self.bias:
                    names.update({"bias_ih": (gate_size,), "bias_hh": (gate_size,)})
                for kind, shape in names.items():
                    setattr(self, kind + suffix, Parameter(np.empty(shape, dtype=DEFAULT_FLOAT)))
                self._parameter_names.append(tuple(kind + suffix for kind in
                                                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias uniform in +-1/sqrt(hidden_size), as PyTorch does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            param.array[...] = default_generator().uniform(-bound, bound, size=param.shape)

    def flatten_parameters(self):
        """Does nothing: kept so PyTorch code that calls it runs unchanged (easyfit never
        copies the weights into a packed buffer, so there is nothing to re-pack)."""

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text

    def _layer_parameters(self, index):
        weight_ih, weight_hh, bias_ih, bias_hh = self._parameter_names[index]
        if not self.bias:
            return getattr(self, weight_ih), getattr(self, weight_hh), None, None
        return getattr(self, weight_ih), getattr(self, weight_hh), getattr(self, bias_ih), getattr(self, bias_hh)

    def _describe(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _check_input(self, input):
        """The input as a time-major (T, B, input_size) Tensor, and whether it was batched."""
        if not isinstance(input, Tensor):
            raise TypeError(f"{self._describe()}: expected the input as a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3):
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise ValueError(f"{self._describe()}: expected a 3-D input {layout} or a 2-D unbatched input "
                             f"(seq_len, input_size), got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{self._describe()}: expected input with input_size={self.input_size} features in "
                             f"its last axis, got shape {tuple(input.shape)}")
        weight = getattr(self, self._parameter_names[0][0])
        if input.dtype != weight.dtype:
            raise TypeError(f"{self._describe()}: input dtype {input.dtype} does not match the parameters' dtype "
                            f"{weight.dtype}; convert one of them (model.to({input.dtype}) or input.astype(...))")
        time_axis = 1 if (self.batch_first and input.ndim == 3) else 0
        if input.shape[time_axis] == 0:
            raise ValueError(f"{self._describe()}: got an empty sequence, input shape {tuple(input.shape)}")
        if input.ndim == 2:
            return expand_dims(input, 1), False
        return (swapaxes(input, 0, 1) if self.batch_first else input), True

    def _initial_state(self, state, name, batch, batched, reference):
        """A (num_layers * num_directions, B, H) Tensor: the given state, or zeros."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        expected = (layers, batch, self.hidden_size) if batched else (layers, self.hidden_size)
        if state is None:
            xp = get_array_module(reference.array)
            return Tensor(xp.zeros((layers, batch, self.hidden_size), dtype=reference.dtype))
        if not isinstance(state, Tensor):
            raise TypeError(f"{self._describe()}: expected {name} as a Tensor, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ValueError(f"{self._describe()}: expected {name} of shape {expected}, got {tuple(state.shape)}")
        return state if batched else expand_dims(state, 1)

    def _run(self, input, states):
        """Run every layer and direction; returns the output and the final states (stacked)."""
        x, batched = self._check_input(input)
        length, batch = x.shape[0], x.shape[1]
        initial = [self._initial_state(s, n, batch, batched, x) for s, n in zip(states, ("h_0", "c_0"))]
        num_directions = 2 if self.bidirectional else 1
        finals = [[] for _ in initial]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                weight_ih, weight_hh, bias_ih, bias_hh = self._layer_parameters(index)
                gates_x = _input_projection(layer_input, weight_ih, self._input_bias(bias_ih, bias_hh))
                hidden, *last = self._sequence(direction == 1, gates_x, [s[index] for s in initial],
                                               weight_hh, bias_hh)
                outputs.append(hidden)
                for collected, state in zip(finals, last):
                    collected.append(state)
            layer_input = outputs[0] if num_directions == 1 else concatenate(outputs, axis=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        output = layer_input
        finals = [stack(collected) for collected in finals]
        if not batched:
            output = reshape(output, (length, output.shape[-1]))
            finals = [reshape(f, (f.shape[0], f.shape[-1])) for f in finals]
        elif self.batch_first:
            output = swapaxes(output, 0, 1)
        return output, finals

    def _input_bias(self, bias_ih, bias_hh):
        if bias_ih is None:
            return None
        return bias_ih + bias_hh

    def _sequence(self, reverse, gates_x, states, weight_hh, bias_hh):
        if self.mode == "LSTM":
            return LSTMSequence(reverse)(gates_x, states[0], states[1], weight_hh)
        if self.mode == "GRU":
            return GRUSequence(reverse)(gates_x, states[0], weight_hh, _bias_or_zeros(bias_hh, weight_hh))
        nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"
        return RNNSequence(nonlinearity, reverse)(gates_x, states[0], weight_hh)


def _input_projection(x, weight, bias):
    """x (T, B, in) @ weight.T + bias as one matmul over all steps: (T, B, gates)."""
    return F.linear(x, weight, bias)


def _bias_or_zeros(bias, weight):
    if bias is not None:
        return bias
    return Tensor(get_array_module(weight.array).zeros(weight.shape[0], dtype=weight.dtype))


class RNN(RNNBase):
    """Elman RNN, h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu), as torch.nn.RNN.

    `forward(input, h_0=None)` returns `(output, h_n)`: output (seq_len, batch, D * hidden)
    ((batch, seq_len, ...) with batch_first), h_n (num_layers * D, batch, hidden), D = 2 if
    bidirectional else 1.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional)

    def forward(self, input, hx=None):
        output, (h_n,) = self._run(input, [hx])
        return output, h_n


class LSTM(RNNBase):
    """Long short-term memory, as torch.nn.LSTM (gates i, f, g, o; weight_ih_l0 is (4*hidden, in)).

    `forward(input, (h_0, c_0)=None)` returns `(output, (h_n, c_n))` with PyTorch's shapes.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)

    def forward(self, input, hx=None):
        if hx is None:
            hx = (None, None)
        elif not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{self._describe()}: expected the initial state as a tuple (h_0, c_0), "
                            f"got {type(hx).__name__}")
        output, (h_n, c_n) = self._run(input, list(hx))
        return output, (h_n, c_n)


class GRU(RNNBase):
    """Gated recurrent unit, as torch.nn.GRU (gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

    `forward(input, h_0=None)` returns `(output, h_n)` with PyTorch's shapes.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)

    def _input_bias(self, bias_ih, bias_hh):
        return bias_ih   # b_hn sits inside r * (...), so b_hh is applied by the GRU op itself

    def forward(self, input, hx=None):
        output, (h_n,) = self._run(input, [hx])
        return output, h_n


# ----- cells ------------------------------------------------------------------------------

class RNNCellBase(Module):
    """Shared machinery of the cells: one time step of the matching sequence op."""

    gates = 1

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        name = type(self).__name__
        self.input_size = _check_size(name, "input_size", input_size)
        self.hidden_size = _check_size(name, "hidden_size", hidden_size)
        self.bias = bool(bias)
        gate_size = self.gates * hidden_size
        self.weight_ih = Parameter(np.empty((gate_size, input_size), dtype=DEFAULT_FLOAT))
        self.weight_hh = Parameter(np.empty((gate_size, hidden_size), dtype=DEFAULT_FLOAT))
        if self.bias:
            self.bias_ih = Parameter(np.empty(gate_size, dtype=DEFAULT_FLOAT))
            self.bias_hh = Parameter(np.empty(gate_size, dtype=DEFAULT_FLOAT))
        else:
            self.bias_ih = self.bias_hh = None
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias uniform in +-1/sqrt(hidden_size), as PyTorch does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            param.array[...] = default_generator().uniform(-bound, bound, size=param.shape)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            text += f", nonlinearity={self.nonlinearity!r}"
        return text

    def _describe(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _check_input(self, input):
        """The input as (1, B, input_size) (one time step), and whether it was batched."""
        if not isinstance(input, Tensor):
            raise TypeError(f"{self._describe()}: expected the input as a Tensor, got {type(input).__name__}")
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{self._describe()}: expected input of shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(input.shape)}")
        if input.dtype != self.weight_ih.dtype:
            raise TypeError(f"{self._describe()}: input dtype {input.dtype} does not match the parameters' dtype "
                            f"{self.weight_ih.dtype}; convert one of them (model.to({input.dtype}) or "
                            f"input.astype(...))")
        batched = input.ndim == 2
        x = input if batched else expand_dims(input, 0)
        return expand_dims(x, 0), batched

    def _state(self, state, name, batch, batched, reference):
        """A (B, H) Tensor: the given state, or zeros."""
        if state is None:
            xp = get_array_module(reference.array)
            return Tensor(xp.zeros((batch, self.hidden_size), dtype=reference.dtype))
        expected = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if not isinstance(state, Tensor):
            raise TypeError(f"{self._describe()}: expected {name} as a Tensor, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ValueError(f"{self._describe()}: expected {name} of shape {expected}, got {tuple(state.shape)}")
        return state if batched else expand_dims(state, 0)


def _unbatch(state, batched):
    return state if batched else reshape(state, (state.shape[-1],))


class RNNCell(RNNCellBase):
    """One step of an Elman RNN: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias)

    def forward(self, input, hx=None):
        x, batched = self._check_input(input)
        h = self._state(hx, "hx", x.shape[1], batched, x)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        _, h_new = RNNSequence(self.nonlinearity)(_input_projection(x, self.weight_ih, bias), h, self.weight_hh)
        return _unbatch(h_new, batched)


class LSTMCell(RNNCellBase):
    """One LSTM step (gates i, f, g, o): `forward(input, (h, c)=None)` returns `(h', c')`."""

    gates = 4

    def forward(self, input, hx=None):
        x, batched = self._check_input(input)
        if hx is None:
            hx = (None, None)
        elif not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{self._describe()}: expected the state as a tuple (h, c), got {type(hx).__name__}")
        h = self._state(hx[0], "h", x.shape[1], batched, x)
        c = self._state(hx[1], "c", x.shape[1], batched, x)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        _, h_new, c_new = LSTMSequence()(_input_projection(x, self.weight_ih, bias), h, c, self.weight_hh)
        return _unbatch(h_new, batched), _unbatch(c_new, batched)


class GRUCell(RNNCellBase):
    """One GRU step (gates r, z, n, PyTorch's equations): `forward(input, h=None)` returns h'."""

    gates = 3

    def forward(self, input, hx=None):
        x, batched = self._check_input(input)
        h = self._state(hx, "hx", x.shape[1], batched, x)
        gates_x = _input_projection(x, self.weight_ih, self.bias_ih)
        _, h_new = GRUSequence()(gates_x, h, self.weight_hh, _bias_or_zeros(self.bias_hh, self.weight_hh))
        return _unbatch(h_new, batched)
