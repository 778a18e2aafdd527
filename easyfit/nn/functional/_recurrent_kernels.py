"""Compiled per-step gate kernels of the LSTM and GRU (numba, the `fast` extra; see core/compiled.py).

A recurrent step is one matmul (`h @ W_hh.T`, NumPy's BLAS) and then the gate math. On
NumPy the gate math is 10 (LSTM forward) to 16 (LSTM backward) elementwise calls, and
NumPy's float32 `tanh` is a scalar libm loop (about 4 ns an element on an AVX2 EPYC:
two thirds of a step's elementwise time). Here each step's gate math is one kernel call,
and float32 `tanh` (sigmoid is 0.5 tanh(x/2) + 0.5) is a rational function that the
compiler vectorises: `tanh(x) = x P(x^2) / Q(x^2)` with P and Q of degree 4, fitted here
(weighted least squares on [0, 10], relative error under 6e-8: within 2 float32 ulps of
the true value, as NumPy's own; `|x| >= 10` gives +-1, where float32 tanh rounds to +-1
anyway), evaluated in float64. float64 arrays use `math.tanh` (chosen from the arrays'
item size when the kernel is compiled, so the float32 loop keeps no branch), and
gradient checks in float64 run the same kernels with full precision.

Two things keep the loops vectorised (measured: 3-8x slower otherwise): numba's
`error_model="numpy"` (a division without Python's zero check, which would branch out of
the loop), and loops that each store to one array at one offset (a loop storing to the
four gate blocks of one row stays scalar), so a kernel is a few short loops over a row.

Callers in recurrent.py keep the NumPy path for CuPy arrays, float16, and when numba
is absent or disabled (`EASYFIT_NUMBA=0`), and check `use_compiled` first.
"""
import math

import numpy as np

from ...core import compiled

# tanh(x) ~= x * P(s) / Q(s), s = x * x, on |x| < 10 (P(0) = Q(0) = 1)
_P1, _P2, _P3, _P4 = 1.3317905033520316e-01, 3.4210035791575138e-03, 1.9403582106925512e-05, 1.1739788340677654e-08
_Q1, _Q2, _Q3, _Q4 = 4.6651209272245353e-01, 2.5592172346629721e-02, 3.1645142306988174e-04, 7.1030625553336916e-07
_CLAMP = 10.0


def use_compiled(*arrays):
    """True when the compiled kernels apply: numba enabled and every array a NumPy
    float32 or float64 array (float16 and CuPy take the NumPy / array-module path)."""
    return (all(isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64) for a in arrays)
            and compiled.numba_enabled())


def tanh_rational(x):
    """The float32 kernels' tanh on a NumPy array, computed in float64 (for tests and docs)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -_CLAMP, _CLAMP)
    s = x * x
    p = 1.0 + s * (_P1 + s * (_P2 + s * (_P3 + s * _P4)))
    q = 1.0 + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4)))
    return np.clip(x * p / q, -1.0, 1.0)


@compiled.kernel(error_model="numpy")
def tanh_kernel(x, out):
    """out = tanh(x) elementwise, both C-contiguous 2-D; the kernels' own tanh (tests)."""
    precise = out.itemsize == 8   # a compile-time constant: the unused branch is dropped

    def tanh(v):
        if precise:
            return math.tanh(v)
        a = min(max(float(v), -_CLAMP), _CLAMP)
        s = a * a
        p = 1.0 + s * (_P1 + s * (_P2 + s * (_P3 + s * _P4)))
        q = 1.0 + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4)))
        return min(max(a * p / q, -1.0), 1.0)

    rows, cols = x.shape
    for b in range(rows):
        for j in range(cols):
            out[b, j] = tanh(x[b, j])


@compiled.kernel(error_model="numpy")
def lstm_forward_step(gates_x, recurrent_t, c_prev, activations, c_new, h_new):
    """One LSTM step after the matmul: pre = gates_x + recurrent (B, 4H, gates i, f, g, o);
    activations = (sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)); c' = f c + i g;
    h' = o tanh(c'). `recurrent_t` is h W_hh.T transposed, (4H, B), as the product
    W_hh @ h.T gives it (see `_transposed_product` in recurrent.py); every other array
    is (B, ...) with unit stride along its last axis."""
    precise = c_new.itemsize == 8

    def tanh(v):
        if precise:
            return math.tanh(v)
        a = min(max(float(v), -_CLAMP), _CLAMP)
        s = a * a
        p = 1.0 + s * (_P1 + s * (_P2 + s * (_P3 + s * _P4)))
        q = 1.0 + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4)))
        return min(max(a * p / q, -1.0), 1.0)

    batch, H = c_prev.shape
    for b in range(batch):
        x = gates_x[b]
        y = activations[b]
        for j in range(4 * H):      # the row's column of the product, gathered apart so
            y[j] = recurrent_t[j, b]    # that the gate loop below reads with unit stride
        # one flat loop over the four gates (sigmoid(v) is 0.5 tanh(v / 2) + 0.5; the g
        # gate's scale is 1)
        for j in range(4 * H):
            scale = 1.0 if 2 * H <= j < 3 * H else 0.5
            y[j] = scale * tanh(scale * (x[j] + y[j])) + (1.0 - scale)
        c_out = c_new[b]
        h_out = h_new[b]
        c_in = c_prev[b]
        for j in range(H):
            c_out[j] = y[H + j] * c_in[j] + y[j] * y[2 * H + j]
        for j in range(H):          # tanh alone with one load and one store: it vectorises
            h_out[j] = tanh(c_out[j])
        for j in range(H):
            h_out[j] *= y[3 * H + j]


@compiled.kernel(error_model="numpy")
def lstm_backward_step(dh, grad_output, dc, activations, c_prev, c_new, tanh_cell, grad_gates):
    """One LSTM step backward before the matmul. dh (B, H): the gradient reaching h' from
    the step after (h' W_hh.T); `grad_output` (the output's gradient at this step) is added
    to it in place (the matmul overwrites dh next); dc (B, H): the gradient of c', replaced
    by that of c. Writes grad_gates (B, 4H), the
    gradient of the gates' pre-activations (i, f, g, o). tanh(c') is recomputed from c_new
    into the scratch `tanh_cell` (B, H), not saved by the forward pass."""
    precise = c_new.itemsize == 8

    def tanh(v):
        if precise:
            return math.tanh(v)
        a = min(max(float(v), -_CLAMP), _CLAMP)
        s = a * a
        p = 1.0 + s * (_P1 + s * (_P2 + s * (_P3 + s * _P4)))
        q = 1.0 + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4)))
        return min(max(a * p / q, -1.0), 1.0)

    batch, H = dc.shape
    for b in range(batch):
        # Short loops that each store to one array at one offset: LLVM vectorises those
        # (one loop storing to four gate offsets of one row stays scalar).
        y = activations[b]
        d = grad_gates[b]
        tc = tanh_cell[b]
        c_row = c_new[b]
        h_grad = dh[b]
        c_grad = dc[b]
        out_grad = grad_output[b]
        c_in = c_prev[b]
        for j in range(H):
            tc[j] = tanh(c_row[j])
        for j in range(H):
            h_grad[j] += out_grad[j]
        for j in range(H):
            c_grad[j] += h_grad[j] * y[3 * H + j] * (1 - tc[j] * tc[j])
        for j in range(H):      # i
            d[j] = c_grad[j] * y[2 * H + j] * y[j] * (1 - y[j])
        for j in range(H):      # f
            d[H + j] = c_grad[j] * c_in[j] * y[H + j] * (1 - y[H + j])
        for j in range(H):      # g
            d[2 * H + j] = c_grad[j] * y[j] * (1 - y[2 * H + j] * y[2 * H + j])
        for j in range(H):      # o
            d[3 * H + j] = h_grad[j] * tc[j] * y[3 * H + j] * (1 - y[3 * H + j])
        for j in range(H):
            c_grad[j] *= y[H + j]


@compiled.kernel(error_model="numpy")
def gru_forward_step(gates_x, gates_h, bias_hh, h_prev, activations, h_new):
    """One GRU step after the matmul. gates_h (B, 3H) holds h W_hh.T and gets b_hh added
    (kept for backward); r = sigmoid(x_r + gh_r), z = sigmoid(x_z + gh_z),
    n = tanh(x_n + r gh_n), h' = n + z (h - n); activations = (r, z, n)."""
    precise = h_new.itemsize == 8

    def tanh(v):
        if precise:
            return math.tanh(v)
        a = min(max(float(v), -_CLAMP), _CLAMP)
        s = a * a
        p = 1.0 + s * (_P1 + s * (_P2 + s * (_P3 + s * _P4)))
        q = 1.0 + s * (_Q1 + s * (_Q2 + s * (_Q3 + s * _Q4)))
        return min(max(a * p / q, -1.0), 1.0)

    batch, H = h_prev.shape
    for b in range(batch):
        x = gates_x[b]
        gh = gates_h[b]
        y = activations[b]
        h_out = h_new[b]
        h_in = h_prev[b]
        for j in range(3 * H):
            gh[j] += bias_hh[j]
        for j in range(2 * H):      # r and z
            y[j] = 0.5 * tanh(0.5 * (x[j] + gh[j])) + 0.5
        for j in range(H):          # n, kept in h_out for a moment
            h_out[j] = tanh(x[2 * H + j] + y[j] * gh[2 * H + j])
        for j in range(H):
            n = h_out[j]
            y[2 * H + j] = n
            h_out[j] = n + y[H + j] * (h_in[j] - n)


@compiled.kernel(error_model="numpy")
def gru_backward_step(dh, recurrent, grad_output, activations, gates_h, h_prev, grad_x, grad_h):
    """One GRU step backward before the matmul. The gradient reaching h' is
    dh + recurrent + grad_output (dh: the part through z of the step after, recurrent: its
    matmul part); writes grad_x (B, 3H, the gradient of x W_ih.T + b_ih), grad_h (B, 3H,
    of h W_hh.T + b_hh) and replaces dh with the part of h's gradient that goes through z."""
    batch, H = dh.shape
    for b in range(batch):
        y = activations[b]
        gh = gates_h[b]
        dx = grad_x[b]
        dhh = grad_h[b]
        for j in range(H):
            r = y[j]
            z = y[H + j]
            n = y[2 * H + j]
            h_grad = dh[b, j] + recurrent[b, j] + grad_output[b, j]
            da_n = h_grad * (1 - z) * (1 - n * n)
            da_r = da_n * gh[2 * H + j] * r * (1 - r)
            da_z = h_grad * (h_prev[b, j] - n) * z * (1 - z)
            dx[j] = da_r
            dx[H + j] = da_z
            dx[2 * H + j] = da_n
            dhh[j] = da_r
            dhh[H + j] = da_z
            dhh[2 * H + j] = da_n * r
            dh[b, j] = h_grad * z
