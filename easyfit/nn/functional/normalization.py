"""batch_norm and layer_norm: forward and closed-form backward in one op each; group_norm
as layer_norm over each group's features."""
import numpy as np

from ...core import compiled, lanes
from ...core.autograd import _grad_enabled
from ...core.backend import get_array_module
from ...core.tensor import _wrap, Function, mean, reshape, sum, Tensor, transpose


# Compiled kernels' floating-point options: `reassoc` lets the compiler split sums over SIMD
# lanes, `contract` fuses multiply-adds; NaN and inf keep their meaning.
_REDUCTION_MATH = {"reassoc", "contract"}


def _compiled_applies(*arrays):
    """The compiled kernels run on NumPy float32/float64 arrays when numba is enabled."""
    return (all(type(a) is np.ndarray for a in arrays) and arrays[0].dtype in (np.float32, np.float64)
            and compiled.numba_enabled())


def _features_last_2d(a, axis):
    """View or copy of `a` as (rows, features) with `axis` (the feature axis) last."""
    if axis == a.ndim - 1:
        return a.reshape(-1, a.shape[-1])
    moved = get_array_module(a).moveaxis(a, axis, -1)
    return moved.reshape(-1, a.shape[axis])


def _from_features_last_2d(y2, shape, axis):
    """Inverse of _features_last_2d: a view of y2 with `shape`."""
    if axis == len(shape) - 1:
        return y2.reshape(shape)
    moved_shape = shape[:axis] + shape[axis + 1:] + (shape[axis],)
    return get_array_module(y2).moveaxis(y2.reshape(moved_shape), -1, axis)


class _NormalizeAffine(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias on a 2-D (rows, features) view of x.

    Subclasses say which 2-D view and which axis of it the statistics run over
    (BatchNorm: over rows, per feature; LayerNorm: over features, per row). Inputs are
    x, then weight and bias when given (flags has_weight, has_bias).
    """
    stats_axis = 0

    def __init__(self, eps, has_weight, has_bias):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def to_2d(self, a):
        raise NotImplementedError

    def from_2d(self, a2, shape):
        raise NotImplementedError

    @staticmethod
    def _dot_along(a2, b2, axis):
        """sum(a2 * b2) along `axis` of two (rows, features) arrays, keeping dims, with no product array."""
        out = get_array_module(a2).einsum("ij,ij->j" if axis == 0 else "ij,ij->i", a2, b2)
        return out[None, :] if axis == 0 else out[:, None]

    def forward(self, x, *affine):
        x2 = self.to_2d(x)
        axis = self.stats_axis
        mu = x2.mean(axis=axis, keepdims=True)
        xhat = x2 - mu
        var = self._dot_along(xhat, xhat, axis) / xhat.shape[axis]
        invstd = 1.0 / get_array_module(x).sqrt(var + self.eps)
        xhat *= invstd
        self.batch_mean, self.batch_var = mu.reshape(-1), var.reshape(-1)
        self.xhat, self.invstd = xhat, invstd
        y = xhat * affine[0] if self.has_weight else xhat.copy()
        if self.has_bias:
            y += affine[-1]
        return self.from_2d(y, x.shape)

    def backward(self, gy):
        if not _grad_enabled[0]:
            return self._backward_arrays(gy.array)
        return self._backward_ops(gy)

    def _backward_arrays(self, gy):
        axis = self.stats_axis
        x = self.inputs[0]
        g2 = self.to_2d(gy)
        xhat = self.xhat
        grads = [None]
        if self.has_weight:
            weight = self.inputs[1]
            grads.append(_wrap(self._dot_along(g2, xhat, 0)[0]) if weight.requires_grad else None)
        if self.has_bias:  # weight and bias are per feature: their gradients sum over rows
            grads.append(_wrap(g2.sum(axis=0)) if self.inputs[-1].requires_grad else None)
        if x.requires_grad:
            gxhat = g2 * self.inputs[1].array.reshape(-1) if self.has_weight else g2.copy()
            count = xhat.shape[axis]
            mean_g = gxhat.sum(axis=axis, keepdims=True) / count
            mean_gx = self._dot_along(gxhat, xhat, axis) / count
            gxhat -= mean_g
            gxhat -= xhat * mean_gx
            gxhat *= self.invstd
            grads[0] = _wrap(self.from_2d(gxhat, x.shape))
        return tuple(grads)

    def _backward_ops(self, gy):
        """The same gradients as differentiable ops (for create_graph=True)."""
        axis = self.stats_axis
        x = self.inputs[0]
        x2 = self.to_2d_op(x)
        centered = x2 - mean(x2, axis=axis, keepdims=True)
        invstd = (mean(centered * centered, axis=axis, keepdims=True) + self.eps) ** -0.5
        xhat = centered * invstd
        g2 = self.to_2d_op(gy)
        grads = [None]
        if self.has_weight:
            grads.append(sum(g2 * xhat, axis=0) if self.inputs[1].requires_grad else None)
        if self.has_bias:
            grads.append(sum(g2, axis=0) if self.inputs[-1].requires_grad else None)
        if x.requires_grad:
            gxhat = g2 * self.inputs[1] if self.has_weight else g2
            gx2 = (gxhat - mean(gxhat, axis=axis, keepdims=True)
                   - xhat * mean(gxhat * xhat, axis=axis, keepdims=True)) * invstd
            grads[0] = self.from_2d_op(gx2, x.shape)
        return tuple(grads)


# ----- batch_norm's compiled path (numba, the `fast` extra) ------------------------------
# Training-mode batch_norm in three passes over the data instead of about ten: forward is
# one pass for the statistics (sums of x - shift and its square, shifted by each channel's
# first value so that float64 sums lose nothing to a large mean) and one for the output;
# backward is one pass for the two per-channel sums and one for gx = a*gy + b*x + c with
# per-channel a, b, c. Nothing but the statistics is saved: backward reads x itself.
# Two layouts, as the NumPy path: rows of channels (channels-last: a conv's output) and
# (N, C, L) (stored channels-first).

@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_sums_rows(x2, shift, sums, squares):
    """Per-channel sums of d = x - shift and of d*d. Rows go four at a time: each channel's
    float64 accumulators are loaded and stored once per four rows instead of every row,
    which bound the loop (50,176 rows of 32 channels: 0.60 -> 0.21 ms, one thread)."""
    rows, channels = x2.shape
    whole = rows - rows % 4
    for r in range(0, whole, 4):
        for c in range(channels):
            k = shift[c]
            d0, d1, d2, d3 = x2[r, c] - k, x2[r + 1, c] - k, x2[r + 2, c] - k, x2[r + 3, c] - k
            sums[c] += (d0 + d1) + (d2 + d3)
            squares[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
    for r in range(whole, rows):
        for c in range(channels):
            d = x2[r, c] - shift[c]
            sums[c] += d
            squares[c] += d * d


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_sums_planes(x3, shift, sums, squares):
    n, channels, length = x3.shape
    for b in range(n):
        for c in range(channels):
            s = 0.0
            q = 0.0
            k = shift[c]
            for i in range(length):
                d = x3[b, c, i] - k
                s += d
                q += d * d
            sums[c] += s
            squares[c] += q


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_affine_rows(x2, mean, scale, offset, y2):
    """y = (x - mean) * scale + offset per channel (forward: scale = invstd * weight)."""
    rows, channels = x2.shape
    for r in range(rows):
        for c in range(channels):
            y2[r, c] = (x2[r, c] - mean[c]) * scale[c] + offset[c]


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_affine_planes(x3, mean, scale, offset, y3):
    n, channels, length = x3.shape
    for b in range(n):
        for c in range(channels):
            m, a, o = mean[c], scale[c], offset[c]
            for i in range(length):
                y3[b, c, i] = (x3[b, c, i] - m) * a + o


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_grad_sums_rows(g2, x2, mean, sum_g, sum_g_centered):
    """Per-channel sums of g and of g * (x - mean), four rows at a time (as
    _batch_norm_sums_rows)."""
    rows, channels = x2.shape
    whole = rows - rows % 4
    for r in range(0, whole, 4):
        for c in range(channels):
            m = mean[c]
            g0, g1, g2_, g3 = g2[r, c], g2[r + 1, c], g2[r + 2, c], g2[r + 3, c]
            sum_g[c] += (g0 + g1) + (g2_ + g3)
            sum_g_centered[c] += ((g0 * (x2[r, c] - m) + g1 * (x2[r + 1, c] - m))
                                  + (g2_ * (x2[r + 2, c] - m) + g3 * (x2[r + 3, c] - m)))
    for r in range(whole, rows):
        for c in range(channels):
            g = g2[r, c]
            sum_g[c] += g
            sum_g_centered[c] += g * (x2[r, c] - mean[c])


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_grad_sums_planes(g3, x3, mean, sum_g, sum_g_centered):
    n, channels, length = x3.shape
    for b in range(n):
        for c in range(channels):
            s = 0.0
            q = 0.0
            m = mean[c]
            for i in range(length):
                g = g3[b, c, i]
                s += g
                q += g * (x3[b, c, i] - m)
            sum_g[c] += s
            sum_g_centered[c] += q


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_grad_input_rows(g2, x2, mean, a, b, offset, gx2):
    """gx = a*g + b*(x - mean) + offset per channel."""
    rows, channels = x2.shape
    for r in range(rows):
        for c in range(channels):
            gx2[r, c] = g2[r, c] * a[c] + (x2[r, c] - mean[c]) * b[c] + offset[c]


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _batch_norm_grad_input_planes(g3, x3, mean, a, b, offset, gx3):
    n, channels, length = x3.shape
    for i in range(n):
        for c in range(channels):
            m, ac, bc, oc = mean[c], a[c], b[c], offset[c]
            for j in range(length):
                gx3[i, c, j] = g3[i, c, j] * ac + (x3[i, c, j] - m) * bc + oc


# Batch norm's rows layout and layer norm run on lanes (core/lanes.py), in fixed blocks of
# about this many floats: each block's per-channel sums are added in block order, so the
# results are the same on any number of threads. On one thread they were the slowest
# layers of a two-thread step (batch norm 64x32x28x28 channels-last: 6.7 ms against
# PyTorch's 3.4; layer norm 64x64x256: 1.6 against 0.9). A block of 2**18 floats fills an
# L2 cache: smaller blocks cost a lane handoff each (layer norm above, fwd+bwd: 0.82 ms in
# blocks of 2**16, 0.76 in 2**18), and larger ones leave a lane idle on mid-sized inputs.
_LANE_BLOCK_FLOATS = 1 << 18


def _row_blocks(rows, channels):
    return lanes.blocks(rows, _LANE_BLOCK_FLOATS // max(1, channels))


# Batch norm's row kernels stream their data once at memory speed, so up to this many
# floats a lane handoff (waking the other thread: 50-300 us on the 2-core VMs measured)
# costs more than the second core saves, and the rows stay one block on the calling
# thread. Interleaved fwd+bwd on the AVX-512 EPYC, blocks on lanes / one block: 32x64x16x16
# 2.31 / 1.04 ms, 32x32x32x32 3.32 / 2.03, 64x32x28x28 2.82 / 2.82 (in bench/nn_kernels.py
# 1.87 / 1.97), 64x32x56x56 10.0 / 11.5. Layer norm does more work per float and gains
# from lanes at 1M floats (1.04 against 1.32 ms), so it keeps its blocks.
_BATCH_NORM_ONE_BLOCK_FLOATS = 1 << 20


def _batch_norm_row_blocks(rows, channels):
    if rows * channels <= _BATCH_NORM_ONE_BLOCK_FLOATS:
        return [slice(0, rows)]
    return _row_blocks(rows, channels)


def _sums_by_blocks(kernel, sliced, fixed, channels):
    """The two per-channel float64 sums kernel(*row blocks of `sliced`, *fixed, s, q) adds
    up, block by block on lanes, added in block order."""
    return lanes.run_sums(lambda rows, s, q: kernel(*(a[rows] for a in sliced), *fixed, s, q),
                          _batch_norm_row_blocks(sliced[0].shape[0], channels), channels, channels)


def _rows_by_blocks(kernel, sliced, fixed, out):
    """out = kernel(*sliced, *fixed), row block by row block on lanes."""
    lanes.run(lambda state, index, rows: kernel(*(a[rows] for a in sliced), *fixed, out[rows]),
              _batch_norm_row_blocks(out.shape[0], out.shape[1]))


class BatchNormTrain(_NormalizeAffine):
    """Batch normalization with batch statistics, over every axis but 1 (channels)."""
    stats_axis = 0

    def to_2d(self, a):
        return _features_last_2d(a, 1)

    def from_2d(self, a2, shape):
        return _from_features_last_2d(a2, shape, 1)

    def to_2d_op(self, t):
        axes = (0,) + tuple(range(2, t.ndim)) + (1,)
        return reshape(transpose(t, axes), (-1, t.shape[1]))

    def from_2d_op(self, t2, shape):
        moved = shape[:1] + shape[2:] + shape[1:2]
        axes = (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))
        return transpose(reshape(t2, moved), axes)

    # The (rows, channels) views have few channels (32 ... 512) and many rows. Work runs on
    # a "wide" view with k rows side by side (per-channel vectors tiled k times), so that
    # NumPy's inner loops run over about a thousand elements instead of one row of
    # channels. Per-channel sums of products are einsums over that view (no temporary
    # array), folded from k*C to C at the end; plain sums are NumPy sums down that view
    # (not BLAS products with a ones vector: those start BLAS threads, and on a CPU busy
    # with other work each such call waited 24 ms here instead of taking 0.15 ms).
    def _layout(self, x2):
        rows, channels = x2.shape
        k = max(1, 1024 // channels)
        while rows % k:
            k -= 1
        self.tiles = k

    def _wide(self, a2):
        return a2.reshape(-1, self.tiles * a2.shape[1])

    def _tile(self, vector, dtype):
        return get_array_module(vector).tile(vector.astype(dtype, copy=False), self.tiles)

    def _channel_sum(self, a_wide):
        """Per-channel sum over all rows, for a wide view."""
        return a_wide.sum(axis=0).reshape(self.tiles, -1).sum(axis=0)

    def _channel_dot(self, a_wide, b_wide):
        """Per-channel sum of a * b over all rows, for two wide views."""
        xp = get_array_module(a_wide)
        return xp.einsum("ij,ij->j", a_wide, b_wide).reshape(self.tiles, -1).sum(axis=0)

    # An input stored channels-first (N, C, H, W in memory: an image batch, or the output
    # of concatenate/reshape rather than of a conv) is worked on as (N, C, H*W): rows of
    # one channel are contiguous, so no transposed copy is made, and the output keeps
    # that layout. Conv outputs are channels-last in memory and take the wide 2-D view.
    _CHANNELS_FIRST_MIN_SPATIAL = 16

    def _channels_first(self, x):
        return (x.ndim >= 3 and x.flags.c_contiguous
                and x.size // (x.shape[0] * x.shape[1]) >= self._CHANNELS_FIRST_MIN_SPATIAL)

    def forward(self, x, *affine):
        """Saves x - mean (not the normalized x): y = (x - mean) * (invstd * weight) + bias
        is then two passes, and backward folds invstd into per-channel factors."""
        self.compiled_view = None
        if _compiled_applies(x):
            return self._forward_compiled(x, affine)
        xp = get_array_module(x)
        dtype = x.dtype
        if self._channels_first(x):
            x3 = x.reshape(x.shape[0], x.shape[1], -1)
            count = x3.shape[0] * x3.shape[2]
            mu = xp.einsum("ncl->c", x3) / count
            centered = x3 - self._per_channel(mu, dtype, channels_first=True)
            var = xp.einsum("ncl,ncl->c", centered, centered) / count
        else:
            x2 = xp.ascontiguousarray(self.to_2d(x))
            self._layout(x2)
            count = x2.shape[0]
            mu = self._channel_sum(self._wide(x2)) / count
            centered = self._wide(x2) - self._tile(mu, dtype)
            var = self._channel_dot(centered, centered) / count
        invstd = 1.0 / xp.sqrt(var + self.eps)
        self.batch_mean, self.batch_var = mu, var
        self.centered, self.invstd = centered, invstd
        per_channel = lambda v: self._per_channel(v, dtype, centered.ndim == 3)
        scale = invstd * affine[0] if self.has_weight else invstd
        y = xp.multiply(centered, per_channel(scale))
        if self.has_bias:
            y += per_channel(affine[-1])
        return self._restore(y, x.shape)

    def _compiled_layout(self, a, like=None):
        """(view, kernels' suffix): (N, C, L) planes for an input stored channels-first,
        else contiguous rows of channels. `like` gives the view's shape for gradients."""
        if like is None:
            if self._channels_first(a):
                return a.reshape(a.shape[0], a.shape[1], -1), "planes"
            return np.ascontiguousarray(self.to_2d(a)), "rows"
        if like.ndim == 3:
            return np.ascontiguousarray(a).reshape(like.shape), "planes"
        return np.ascontiguousarray(self.to_2d(a)), "rows"

    def _forward_compiled(self, x, affine):
        dtype = x.dtype
        view, layout = self._compiled_layout(x)
        channels = x.shape[1]
        planes = layout == "planes"
        count = view.shape[0] * view.shape[2] if planes else view.shape[0]
        shift = (view[0, :, 0] if planes else view[0]).astype(np.float64)
        if planes:
            sums, squares = np.zeros(channels), np.zeros(channels)
            _batch_norm_sums_planes(view, shift, sums, squares)
        else:
            sums, squares = _sums_by_blocks(_batch_norm_sums_rows, (view,), (shift,), channels)
        shifted_mean = sums / count
        var = np.maximum(squares / count - shifted_mean * shifted_mean, 0.0)
        mean = shift + shifted_mean
        invstd = 1.0 / np.sqrt(var + self.eps)
        scale = invstd * affine[0] if self.has_weight else invstd
        offset = affine[-1].astype(dtype) if self.has_bias else np.zeros(channels, dtype)
        y = np.empty(view.shape, dtype)
        per_channel = (mean.astype(dtype), scale.astype(dtype), np.ascontiguousarray(offset, dtype))
        if planes:
            _batch_norm_affine_planes(view, *per_channel, y)
        else:
            _rows_by_blocks(_batch_norm_affine_rows, (view,), per_channel, y)
        self.batch_mean, self.batch_var = mean, var
        self.compiled_view, self.invstd, self.centered = view, invstd, None
        return self._restore(y, x.shape)

    def _backward_compiled(self, gy):
        x, view, invstd = self.inputs[0], self.compiled_view, self.invstd
        dtype = view.dtype
        planes = view.ndim == 3
        g, _ = self._compiled_layout(gy, like=view)
        channels = x.shape[1]
        count = view.shape[0] * view.shape[2] if planes else view.shape[0]
        mean = self.batch_mean.astype(dtype)
        if planes:
            sum_g, sum_g_centered = np.zeros(channels), np.zeros(channels)
            _batch_norm_grad_sums_planes(g, view, mean, sum_g, sum_g_centered)
        else:
            sum_g, sum_g_centered = _sums_by_blocks(_batch_norm_grad_sums_rows, (g, view), (mean,), channels)
        sum_g_xhat = sum_g_centered * invstd
        grads = [None]
        if self.has_weight:
            grads.append(_wrap(sum_g_xhat.astype(dtype)) if self.inputs[1].requires_grad else None)
        if self.has_bias:
            grads.append(_wrap(sum_g.astype(dtype)) if self.inputs[-1].requires_grad else None)
        if x.requires_grad:
            # gx = w*invstd * (g - sum(g)/M - xhat * sum(g*xhat)/M), xhat = (x - mean)*invstd
            a = invstd * self.inputs[1].array if self.has_weight else invstd
            b = -a * invstd * sum_g_xhat / count
            offset = -a * sum_g / count
            gx = np.empty(view.shape, dtype)
            per_channel = (mean, a.astype(dtype), b.astype(dtype), offset.astype(dtype))
            if planes:
                _batch_norm_grad_input_planes(g, view, *per_channel, gx)
            else:
                _rows_by_blocks(_batch_norm_grad_input_rows, (g, view), per_channel, gx)
            grads[0] = _wrap(self._restore(gx, x.shape))
        return tuple(grads)

    def _per_channel(self, vector, dtype, channels_first):
        """A per-channel vector shaped to broadcast against the saved layout."""
        return vector.astype(dtype, copy=False)[:, None] if channels_first else self._tile(vector, dtype)

    def _restore(self, a, shape):
        """An array in the saved layout as an (N, C, ...) result."""
        if a.ndim == 3:
            return a.reshape(shape)
        return self.from_2d(a.reshape(-1, shape[1]), shape)

    def _backward_arrays(self, gy):
        """Closed form with the per-channel sums shared between the three gradients; with
        xhat = (x - mean) * invstd and M values per channel,
        gx = weight * invstd * (gy - sum(gy)/M - xhat * sum(gy * xhat)/M)."""
        if self.compiled_view is not None:
            return self._backward_compiled(gy)
        xp = get_array_module(gy)
        x = self.inputs[0]
        centered, invstd = self.centered, self.invstd
        dtype = centered.dtype
        if centered.ndim == 3:  # channels-first (N, C, H*W)
            g = xp.ascontiguousarray(gy).reshape(centered.shape)
            sum_g, sum_g_centered = xp.einsum("ncl->c", g), xp.einsum("ncl,ncl->c", g, centered)
            count = centered.shape[0] * centered.shape[2]
        else:  # the wide view of channels-last rows
            g2 = xp.ascontiguousarray(self.to_2d(gy))
            g = self._wide(g2)
            sum_g, sum_g_centered = self._channel_sum(g), self._channel_dot(g, centered)
            count = g2.shape[0]
        sum_g_xhat = sum_g_centered * invstd
        grads = [None]
        if self.has_weight:
            grads.append(_wrap(sum_g_xhat) if self.inputs[1].requires_grad else None)
        if self.has_bias:
            grads.append(_wrap(sum_g) if self.inputs[-1].requires_grad else None)
        if x.requires_grad:
            per_channel = lambda v: self._per_channel(v, dtype, centered.ndim == 3)
            scale = invstd * self.inputs[1].array if self.has_weight else invstd
            gx = xp.multiply(centered, per_channel(invstd * sum_g_xhat * (-1.0 / count)))
            gx += g
            gx -= per_channel(sum_g / count)
            gx *= per_channel(scale)
            grads[0] = _wrap(self._restore(gx, x.shape))
        return tuple(grads)


# ----- layer_norm's compiled path (numba, the `fast` extra) --------------------------------
# NumPy needs about 15 passes over the data for layer_norm's forward and backward; these
# make one pass per row for each (a row stays in cache between its sums and its writes).
# Sums accumulate in float64; `reassoc` lets the compiler split them over SIMD lanes.


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _layer_norm_forward_kernel(x2, weight, bias, eps, y, row_mean, row_invstd):
    rows, features = x2.shape
    for i in range(rows):
        row, out = x2[i], y[i]
        total = 0.0
        for j in range(features):
            total += row[j]
        mu = total / features
        squares = 0.0
        for j in range(features):
            d = row[j] - mu
            squares += d * d
        invstd = 1.0 / np.sqrt(squares / features + eps)
        row_mean[i] = mu
        row_invstd[i] = invstd
        mu_t, invstd_t = row.dtype.type(mu), row.dtype.type(invstd)
        for j in range(features):
            out[j] = (row[j] - mu_t) * invstd_t * weight[j] + bias[j]


_GRAD_FLUSH_ROWS = 64  # rows summed into weight/bias gradients in the input's dtype before a float64 flush


@compiled.kernel(fastmath=_REDUCTION_MATH)
def _layer_norm_backward_kernel(x2, g2, weight, row_mean, row_invstd, gx, gw, gb, need_gx):
    """Per row, with xhat = (x - mean) * invstd and g*w the gradient of xhat:
    gx = invstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)); over all rows, gw += g*xhat
    and gb += g (float64 gw, gb; partial sums of a few rows in the input's dtype)."""
    rows, features = x2.shape
    dtype = x2.dtype.type
    gw_rows = np.zeros(features, x2.dtype)
    gb_rows = np.zeros(features, x2.dtype)
    for i in range(rows):
        row, grow = x2[i], g2[i]
        mu, invstd = dtype(row_mean[i]), dtype(row_invstd[i])
        if need_gx:
            sum_g = 0.0
            sum_g_xhat = 0.0
            for j in range(features):
                g_weighted = grow[j] * weight[j]
                sum_g += g_weighted
                sum_g_xhat += g_weighted * ((row[j] - mu) * invstd)
            mean_g, mean_g_xhat = dtype(sum_g / features), dtype(sum_g_xhat / features)
            out = gx[i]
            for j in range(features):
                xhat = (row[j] - mu) * invstd
                gb_rows[j] += grow[j]
                gw_rows[j] += grow[j] * xhat
                out[j] = invstd * (grow[j] * weight[j] - mean_g - xhat * mean_g_xhat)
        else:
            for j in range(features):
                gb_rows[j] += grow[j]
                gw_rows[j] += grow[j] * ((row[j] - mu) * invstd)
        if (i + 1) % _GRAD_FLUSH_ROWS == 0 or i == rows - 1:
            for j in range(features):
                gw[j] += gw_rows[j]
                gb[j] += gb_rows[j]
                gw_rows[j] = 0
                gb_rows[j] = 0


class LayerNormFunction(_NormalizeAffine):
    """Layer normalization over the last `normalized_ndim` axes."""
    stats_axis = 1

    def __init__(self, eps, has_weight, has_bias, features):
        super().__init__(eps, has_weight, has_bias)
        self.features = features

    def to_2d(self, a):
        return a.reshape(-1, self.features)

    def from_2d(self, a2, shape):
        return a2.reshape(shape)

    def to_2d_op(self, t):
        return reshape(t, (-1, self.features))

    def from_2d_op(self, t2, shape):
        return reshape(t2, shape)

    # Rows are normalized a block at a time, sized so that a block and its one or two
    # scratch arrays stay in cache: each pass after the first then reads cache, not memory.
    # Forward saves only the per-row mean and 1/std (as PyTorch does); backward rebuilds
    # a block's normalized rows from x in cache instead of keeping them all from forward.
    _BLOCK_FLOATS = 1 << 17

    def _blocks(self, a2):
        rows = a2.shape[0]
        if get_array_module(a2) is not np:  # on a GPU one launch per pass over everything is best
            return [(0, rows)]
        step = max(1, self._BLOCK_FLOATS // self.features)
        return [(start, min(rows, start + step)) for start in range(0, rows, step)]

    def forward(self, x, *affine):
        xp = get_array_module(x)
        # weight/bias have the normalized shape; flatten them to (features,) for the 2-D math.
        weight = affine[0].reshape(-1) if self.has_weight else None
        bias = affine[-1].reshape(-1) if self.has_bias else None
        x2 = xp.ascontiguousarray(x.reshape(-1, self.features))
        rows, features = x2.shape
        y = xp.empty_like(x2)
        mean_all = xp.empty(rows, dtype=x2.dtype)
        invstd_all = xp.empty(rows, dtype=x2.dtype)
        if _compiled_applies(x2):
            dtype = x2.dtype
            weight = np.ones(features, dtype) if weight is None else np.ascontiguousarray(weight, dtype)
            bias = np.zeros(features, dtype) if bias is None else np.ascontiguousarray(bias, dtype)
            eps = float(self.eps)

            def normalize_block(state, index, block):   # rows are independent: any lane, any order
                _layer_norm_forward_kernel(x2[block], weight, bias, eps, y[block], mean_all[block], invstd_all[block])
            lanes.run(normalize_block, _row_blocks(rows, features))
            self.row_mean, self.row_invstd = mean_all, invstd_all
            return y.reshape(x.shape)
        for start, stop in self._blocks(x2):
            block, out = x2[start:stop], y[start:stop]
            mu = xp.einsum("ij->i", block, out=mean_all[start:stop])
            mu *= 1.0 / features
            xp.subtract(block, mu[:, None], out=out)
            invstd = invstd_all[start:stop]
            xp.einsum("ij,ij->i", out, out, out=invstd)
            invstd *= 1.0 / features
            invstd += self.eps
            xp.sqrt(invstd, out=invstd)
            xp.reciprocal(invstd, out=invstd)
            out *= invstd[:, None]
            if weight is not None:
                out *= weight
            if bias is not None:
                out += bias
        self.row_mean, self.row_invstd = mean_all, invstd_all
        return y.reshape(x.shape)

    def _backward_arrays(self, gy):
        """Per block, with xhat rebuilt from x and g = gy * weight:
        gx = invstd * (g - mean(g) - xhat * mean(g * xhat)) along each row."""
        xp = get_array_module(gy)
        x = self.inputs[0]
        weight_t = self.inputs[1] if self.has_weight else None
        bias_t = self.inputs[-1] if self.has_bias else None
        x2 = x.array.reshape(-1, self.features)
        g2 = gy.reshape(-1, self.features)
        rows, features = x2.shape
        dtype = x2.dtype
        need_w = weight_t is not None and weight_t.requires_grad
        need_b = bias_t is not None and bias_t.requires_grad
        weight = weight_t.array.reshape(-1) if weight_t is not None else None
        if _compiled_applies(x2, g2):
            return self._backward_compiled(x, weight_t, bias_t, x2, g2, weight, need_w, need_b)
        gw = xp.zeros(features, dtype=dtype) if need_w else None
        gb = xp.zeros(features, dtype=dtype) if need_b else None
        gx = xp.empty(x.shape, dtype=dtype) if x.requires_grad else None   # its final shape: no copy on a leaf
        gx2 = gx.reshape(rows, features) if gx is not None else None
        for start, stop in self._blocks(x2):
            g_block = g2[start:stop]
            mu, invstd = self.row_mean[start:stop, None], self.row_invstd[start:stop, None]
            xhat = xp.subtract(x2[start:stop], mu)
            xhat *= invstd
            # Sums run as einsums: NumPy's own loops, which (unlike a BLAS product with a
            # ones vector) start no threads that a busy CPU would make wait.
            if need_b:
                gb += xp.einsum("ij->j", g_block)
            if need_w:
                gw += xp.einsum("ij,ij->j", g_block, xhat)
            if gx is None:
                continue
            scratch = xp.multiply(g_block, weight) if weight is not None else g_block.copy()
            mean_gx = xp.einsum("ij,ij->i", scratch, xhat)
            mean_gx *= 1.0 / features
            mean_g = xp.einsum("ij->i", scratch)
            mean_g *= 1.0 / features
            xhat *= mean_gx[:, None]
            out = gx2[start:stop]
            xp.subtract(scratch, xhat, out=out)
            mean_g *= invstd[:, 0]
            out *= invstd
            out -= mean_g[:, None]
        grads = [_wrap(gx) if gx is not None else None]
        if self.has_weight:
            grads.append(_wrap(gw.reshape(weight_t.shape).copy()) if need_w else None)
        if self.has_bias:
            grads.append(_wrap(gb.reshape(bias_t.shape).copy()) if need_b else None)
        return tuple(grads)

    def _backward_compiled(self, x, weight_t, bias_t, x2, g2, weight, need_w, need_b):
        dtype = x2.dtype
        features = x2.shape[1]
        weight = np.ones(features, dtype) if weight is None else np.ascontiguousarray(weight, dtype)
        # Gradients are allocated in their final shapes: a leaf's .grad then takes the array
        # itself (a reshaped view would be copied by the engine).
        gx = np.empty(x.shape, dtype=dtype) if x.requires_grad else np.empty((0, features), dtype=dtype)
        g2 = np.ascontiguousarray(g2)
        gx2 = gx.reshape(-1, features)
        need_gx = x.requires_grad
        # Row blocks on lanes; each block's weight and bias sums are added in block order,
        # so the gradients are the same bit for bit on any number of threads.
        def block_gradients(block, gw, gb):
            _layer_norm_backward_kernel(x2[block], g2[block], weight, self.row_mean[block], self.row_invstd[block],
                                        gx2[block] if need_gx else gx2, gw, gb, need_gx)
        gw, gb = lanes.run_sums(block_gradients, _row_blocks(x2.shape[0], features), features, features)
        grads = [_wrap(gx) if x.requires_grad else None]
        if self.has_weight:
            grads.append(_wrap(gw.reshape(weight_t.shape).astype(dtype)) if need_w else None)
        if self.has_bias:
            grads.append(_wrap(gb.reshape(bias_t.shape).astype(dtype)) if need_b else None)
        return tuple(grads)

    def _backward_ops(self, gy):
        saved = self.inputs
        if self.has_weight:  # the 2-D math needs a (features,) weight; keep the graph to the real one
            self.inputs = [saved[0], reshape(saved[1], (-1,))] + list(saved[2:])
        try:
            grads = super()._backward_ops(gy)
        finally:
            self.inputs = saved
        return (grads[0],) + tuple(None if g is None else reshape(g, p.shape)
                                   for g, p in zip(grads[1:], saved[1:]))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over axis 1 (channels), PyTorch semantics.

    In training, normalizes with the batch statistics and updates `running_mean` and
    `running_var` (Tensors, in place; may be None) with the unbiased batch variance.
    Otherwise normalizes with the running statistics.
    """
    if training:
        count = x.numel() // x.shape[1]
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}")
        fn = BatchNormTrain(eps, weight is not None, bias is not None)
        y = fn(*[t for t in (x, weight, bias) if t is not None])
        if running_mean is not None:
            m = momentum
            running_mean.array *= 1 - m
            running_mean.array += m * fn.batch_mean.astype(running_mean.dtype, copy=False)
            running_var.array *= 1 - m
            running_var.array += (m * count / (count - 1)) * fn.batch_var.astype(running_var.dtype, copy=False)
        if not _grad_enabled[0] or not y.requires_grad:
            fn.centered = fn.compiled_view = None  # nothing will run backward: free what was saved for it
        return y
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: running_mean and running_var are needed when training=False")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    invstd = 1.0 / np.sqrt(running_var.array + eps) if running_var.device == "cpu" else \
        1.0 / get_array_module(running_var.array).sqrt(running_var.array + eps)
    scale = Tensor(invstd.astype(x.dtype, copy=False))
    if weight is not None:
        scale = scale * weight
    shift = -Tensor(running_mean.array.astype(x.dtype, copy=False)) * scale
    if bias is not None:
        shift = shift + bias
    return x * reshape(scale, shape) + reshape(shift, shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing `normalized_shape` axes, then scale and shift."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(normalized_shape):]) != normalized_shape:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end with normalized_shape "
                         f"{normalized_shape}")
    features = int(np.prod(normalized_shape))
    fn = LayerNormFunction(eps, weight is not None, bias is not None, features)
    return fn(*[t for t in (x, weight, bias) if t is not None])


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize x (N, C, *) over each group of C/num_groups channels (and all positions),
    then scale and shift per channel: batch-size independent, as PyTorch's group_norm."""
    if input.ndim < 2:
        raise ValueError(f"group_norm: expected an input (N, C, *), got shape {tuple(input.shape)}")
    n, channels = input.shape[0], input.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or channels % num_groups:
        raise ValueError(f"group_norm: num_groups must be a positive integer dividing the {channels} channels, "
                         f"got {num_groups!r}")
    per_group = int(np.prod(input.shape[1:])) // num_groups
    grouped = reshape(input, (n, num_groups, per_group))
    normalized = reshape(layer_norm(grouped, (per_group,), None, None, eps), input.shape)
    if weight is None and bias is None:
        return normalized
    channel_shape = (1, channels) + (1,) * (input.ndim - 2)
    if weight is not None:
        normalized = normalized * reshape(weight, channel_shape)
    if bias is not None:
        normalized = normalized + reshape(bias, channel_shape)
    return normalized
