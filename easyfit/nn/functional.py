"""Functional forms of the layers and losses: `easyfit.nn.functional` (import as F).

The ops that dominate training time are fused into single `Function`s whose backward
is computed directly on arrays in first-order backward and, when a graph of the
backward is requested (`create_graph=True`), through differentiable ops, so higher-order
gradients still work:

- `linear`: x @ W.T + b in one op;
- `conv2d`: strided windows (im2col) and one BLAS matmul; backward is one matmul for the
  weight and a col2im that loops only over the kernel offsets;
- `max_pool2d` / `avg_pool2d`: loops over the kernel offsets only, argmax backward;
- `batch_norm` / `layer_norm`: forward and closed-form backward in one op each;
- `cross_entropy`: log-softmax and NLL (ignore_index, label_smoothing, class weight);
- `embedding`: a row gather whose backward is a fast scatter-add.

Convolution and pooling compute in channels-last memory and return NCHW views of it,
so a stack of them never transposes activations back and forth.
"""
import math

import numpy as np

from ..core.autograd import _grad_enabled
from ..core.backend import get_array_module, scatter_add, to_device
from ..core.random import default_generator
from ..core.tensor import Function, Tensor, _wrap, reshape, transpose, sum, mean, matmul
from ..core.functions import exp, log, tanh, sigmoid, abs, maximum, where
from ..core.functions import relu as _relu, pad as _pad

__all__ = [
    "linear", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
    "dropout", "embedding", "one_hot", "pad", "relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu", "softplus",
    "erf", "softmax", "log_softmax", "logsumexp", "flatten", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits",
]


def _pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ===== linear ==========================================================================

class Linear(Function):
    """y = x @ weight.T + bias, for x of shape (..., in_features)."""

    def forward(self, x, weight, bias=None):
        if x.ndim == 2:
            y = x @ weight.T
        else:
            y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
        if bias is not None:
            y += bias
        return y

    def backward(self, gy):
        x, weight = self.inputs[0], self.inputs[1]
        has_bias = len(self.inputs) == 3
        out_features, in_features = weight.shape
        if not _grad_enabled[0]:  # first-order: plain arrays, no graph
            g2 = gy.array.reshape(-1, out_features)
            gx = _wrap((g2 @ weight.array).reshape(x.shape)) if x.requires_grad else None
            gw = _wrap(g2.T @ x.array.reshape(-1, in_features)) if weight.requires_grad else None
            gb = _wrap(g2.sum(axis=0)) if has_bias and self.inputs[2].requires_grad else None
        else:
            g2 = reshape(gy, (-1, out_features))
            gx = reshape(matmul(g2, weight), x.shape) if x.requires_grad else None
            gw = matmul(transpose(g2), reshape(x, (-1, in_features))) if weight.requires_grad else None
            gb = sum(g2, axis=0) if has_bias and self.inputs[2].requires_grad else None
        return (gx, gw, gb) if has_bias else (gx, gw)


def linear(x, weight, bias=None):
    """x @ weight.T + bias (weight has PyTorch's shape (out_features, in_features))."""
    return Linear()(x, weight, bias) if bias is not None else Linear()(x, weight)


def _axis(axis, dim, default, function):
    """`axis`, or PyTorch's name for it, `dim`: torch.nn.functional code runs unchanged."""
    if dim is None:
        return axis
    if axis != default:
        raise TypeError(f"{function}() got both axis={axis!r} and dim={dim!r}; give one")
    return dim


def flatten(x, start_axis=1, end_axis=-1, *, start_dim=None, end_dim=None):
    """Merge axes start_axis..end_axis into one (PyTorch's start_dim/end_dim also accepted)."""
    start_axis = _axis(start_axis, start_dim, 1, "flatten")
    end_axis = _axis(end_axis, end_dim, -1, "flatten")
    ndim = x.ndim
    start, end = start_axis % ndim, end_axis % ndim
    shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
    return reshape(x, shape)


# ===== activations =====================================================================

class Softmax(Function):
    save_outputs = True

    def __init__(self, axis):
        self.axis = axis

    def forward(self, a):
        xp = get_array_module(a)
        y = a - a.max(axis=self.axis, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=self.axis, keepdims=True)
        return y

    def backward(self, gy):
        y = self.output()
        return y * (gy - sum(gy * y, axis=self.axis, keepdims=True))


def softmax(x, axis=-1, *, dim=None):
    """exp(x) / sum(exp(x)) along `axis` (or PyTorch's `dim`), shifted by the maximum so it cannot overflow."""
    return Softmax(_axis(axis, dim, -1, "softmax") % x.ndim)(x)


class LogSoftmax(Function):
    save_outputs = True

    def __init__(self, axis):
        self.axis = axis

    def forward(self, a):
        xp = get_array_module(a)
        shifted = a - a.max(axis=self.axis, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return shifted

    def backward(self, gy):
        return gy - exp(self.output()) * sum(gy, axis=self.axis, keepdims=True)


def log_softmax(x, axis=-1, *, dim=None):
    """log(softmax(x)) along `axis` (or PyTorch's `dim`), computed stably (no log of a rounded zero)."""
    return LogSoftmax(_axis(axis, dim, -1, "log_softmax") % x.ndim)(x)


class LogSumExp(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        xp = get_array_module(a)
        m = a.max(axis=self.axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        y = xp.log(xp.exp(a - m).sum(axis=self.axis, keepdims=True)) + m
        return y if self.keepdims else y.squeeze(axis=self.axis)

    def backward(self, gy):
        x = self.inputs[0]
        if not self.keepdims:
            gy = reshape(gy, tuple(1 if i in self.axis else n for i, n in enumerate(x.shape)))
        return gy * _softmax_over(x, self.axis)


def _softmax_over(x, axes):
    """Softmax over several axes at once (used by logsumexp's gradient)."""
    if len(axes) == 1:
        return softmax(x, axes[0])
    shifted = x - Tensor(x.array.max(axis=axes, keepdims=True))
    e = exp(shifted)
    return e / sum(e, axis=axes, keepdims=True)


def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """log(sum(exp(x))) over `axis`, computed without overflow (PyTorch's dim/keepdim also accepted)."""
    axis = _axis(axis, dim, None, "logsumexp")
    keepdims = _axis(keepdims, keepdim, False, "logsumexp")
    axes = tuple(range(x.ndim)) if axis is None else tuple(sorted(
        a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))))
    return LogSumExp(axes, keepdims)(x)


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): NumPy has no erf and SciPy is not a dependency.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf_array(a):
    xp = get_array_module(a)
    sign = xp.sign(a)
    z = xp.abs(a)
    t = 1.0 / (1.0 + _ERF_P * z)
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return (sign * (1.0 - poly * xp.exp(-z * z))).astype(a.dtype, copy=False)


class Erf(Function):
    def forward(self, a):
        return _erf_array(a)

    def backward(self, gy):
        x = self.inputs[0]
        return gy * (exp(-(x * x)) * (2.0 / math.sqrt(math.pi)))


def erf(x):
    """The error function (to about 1.5e-7, the float32 resolution)."""
    return Erf()(x)


class GELU(Function):
    """x * Phi(x), Phi the standard normal CDF (PyTorch's approximate='none')."""

    def forward(self, a):
        cdf = _erf_array(a * a.dtype.type(1 / math.sqrt(2)))
        cdf += 1
        cdf *= 0.5
        cdf *= a
        return cdf

    def backward(self, gy):
        x = self.inputs[0]
        cdf = (erf(x * (1 / math.sqrt(2))) + 1.0) * 0.5
        pdf = exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
        return gy * (cdf + x * pdf)


def gelu(x, approximate="none"):
    """GELU; approximate='tanh' gives the tanh approximation, as in PyTorch."""
    if approximate == "none":
        return GELU()(x)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
        return x * 0.5 * (tanh(inner) + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def relu(x, inplace=False):
    """max(x, 0) elementwise. `inplace` is accepted so PyTorch code runs; the result is always new."""
    return _relu(x)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x."""
    return where(x > 0, x, x * negative_slope)  # a traced comparison: ONNX export follows it


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return x * sigmoid(x)


def softplus(x):
    """log(1 + exp(x)), computed without overflow."""
    return relu(x) + log(exp(-abs(x)) + 1.0)


# ===== dropout =========================================================================

def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    The mask is drawn from easyfit's seeded generator (`easyfit.manual_seed`).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    keep = default_generator().random(x.shape, dtype=dtype) >= p
    mask = keep.astype(x.dtype)
    mask *= 1.0 / (1.0 - p)
    return x * _wrap(to_device(mask, x.device))


# ===== embedding =======================================================================

class EmbeddingLookup(Function):
    """weight[indices] for an integer array of any shape."""

    def __init__(self, indices, padding_idx=None):
        self.indices, self.padding_idx = indices, padding_idx

    def forward(self, weight):
        xp = get_array_module(weight)
        rows = xp.take(weight, self.indices.reshape(-1), axis=0)
        return rows.reshape(self.indices.shape + weight.shape[1:])

    def backward(self, gy):
        weight = self.inputs[0]
        return EmbeddingGrad(self.indices, weight.shape[0], self.padding_idx)(gy)


class EmbeddingGrad(Function):
    """The gradient of a lookup: gy's rows summed into a (num_embeddings, dim) array."""

    def __init__(self, indices, num_embeddings, padding_idx):
        self.indices, self.num_embeddings, self.padding_idx = indices, num_embeddings, padding_idx

    def forward(self, gy):
        xp = get_array_module(gy)
        dim = gy.shape[self.indices.ndim:]
        out = xp.zeros((self.num_embeddings,) + dim, dtype=gy.dtype)
        scatter_add(out, self.indices.reshape(-1), gy.reshape((-1,) + dim))
        if self.padding_idx is not None:
            out[self.padding_idx] = 0
        return out

    def backward(self, ggw):
        g = EmbeddingLookup(self.indices)(ggw)
        if self.padding_idx is not None:
            keep = (self.indices != self.padding_idx).astype(ggw.dtype)
            g = g * _wrap(keep.reshape(keep.shape + (1,) * (g.ndim - keep.ndim)))
        return g


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each index, as torch's one_hot (-1: the largest index + 1)."""
    indices = tensor.array if isinstance(tensor, Tensor) else np.asarray(tensor)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {indices.dtype}")
    if num_classes == -1:
        if indices.size == 0:
            raise ValueError("one_hot: num_classes=-1 needs at least one index to infer the class count")
        num_classes = int(indices.max()) + 1
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= num_classes):
        raise ValueError(f"one_hot: indices must be in [0, {num_classes}), got values from {int(indices.min())} "
                         f"to {int(indices.max())}")
    xp = get_array_module(indices)
    return Tensor((indices[..., None] == xp.arange(num_classes)).astype(np.int64))


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad: `pad` gives (before, after) widths from the last axis backwards,
    e.g. (left, right, top, bottom) for an image. Only mode='constant' (see easyfit.pad)."""
    pad = tuple(int(width) for width in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of widths, at most two per axis of the "
                         f"{x.ndim}-d input, got {pad}")
    widths = [(0, 0)] * x.ndim
    for pair in range(len(pad) // 2):
        widths[x.ndim - 1 - pair] = (pad[2 * pair], pad[2 * pair + 1])
    return _pad(x, widths, mode=mode, constant_values=value)


def embedding(indices, weight, padding_idx=None):
    """Rows of `weight` at integer `indices`; the row `padding_idx` receives no gradient."""
    indices = indices.array if isinstance(indices, Tensor) else np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {indices.dtype}")
    num = weight.shape[0]
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= num):
        raise IndexError(f"embedding: indices must lie in [0, {num}), got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num
    return EmbeddingLookup(to_device(indices, weight.device), padding_idx)(weight)


# ===== convolution =====================================================================

class _ConvGeometry:
    """Shapes and hyper-parameters of one 2-D convolution or pooling window."""
    __slots__ = ("kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "oh", "ow", "groups")

    def __init__(self, height, width, kernel, stride, padding, dilation, groups=1):
        self.kh, self.kw = kernel
        self.sh, self.sw = stride
        self.ph, self.pw = padding
        self.dh, self.dw = dilation
        self.groups = groups
        self.oh = (height + 2 * self.ph - self.dh * (self.kh - 1) - 1) // self.sh + 1
        self.ow = (width + 2 * self.pw - self.dw * (self.kw - 1) - 1) // self.sw + 1

    def offset_slices(self, i, j):
        """The (rows, cols) slices of the padded input that kernel offset (i, j) touches."""
        r0, c0 = i * self.dh, j * self.dw
        return (slice(r0, r0 + self.sh * (self.oh - 1) + 1, self.sh),
                slice(c0, c0 + self.sw * (self.ow - 1) + 1, self.sw))


def _channels_last(x):
    """(N, C, H, W) -> an (N, H, W, C) view (contiguous when x came from a conv or pool)."""
    return x.transpose(0, 2, 3, 1)


def _pad_channels_last(xh, ph, pw, fill=0.0):
    if ph == 0 and pw == 0:
        return xh
    xp = get_array_module(xh)
    n, h, w, c = xh.shape
    out = xp.full((n, h + 2 * ph, w + 2 * pw, c), fill, dtype=xh.dtype) if fill else \
        xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=xh.dtype)
    out[:, ph:ph + h, pw:pw + w] = xh
    return out


# Images per chunk are chosen so that one chunk's window matrix holds about this many
# floats (a few MB): it stays in cache between the im2col copy, the matmul and col2im,
# and no step allocates a window matrix for the whole batch.
_CHUNK_FLOATS = 1 << 19


def _chunks(batch, rows_per_image, width):
    per_chunk = max(1, _CHUNK_FLOATS // max(1, rows_per_image * width))
    return [(start, min(batch, start + per_chunk)) for start in range(0, batch, per_chunk)]


def _windows(xpad, g):
    """Strided view (N, OH, OW, KH, KW, C) of a padded channels-last array: no copy."""
    xp = get_array_module(xpad)
    n, _, _, c = xpad.shape
    s_n, s_h, s_w, s_c = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, g.oh, g.ow, g.kh, g.kw, c),
        strides=(s_n, s_h * g.sh, s_w * g.sw, s_h * g.dh, s_w * g.dw, s_c))


# Windows of at most this many elements (C*KH*KW; a first layer on 1 or 3 channels) are
# gathered channels-first instead: copying windows of a few floats each row by row is slow,
# while copying whole image rows per (channel, kernel offset) is fast.
_SMALL_WINDOW = 32


def _columns_channels_first(x, g):
    """The transposed window matrix (C*KH*KW, N*OH*OW) of x (N, C, H, W), rows in weight order."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    x_cf = x.transpose(1, 0, 2, 3)
    if g.ph or g.pw:
        padded = xp.zeros((c, n, h + 2 * g.ph, w + 2 * g.pw), dtype=x.dtype)
        padded[:, :, g.ph:g.ph + h, g.pw:g.pw + w] = x_cf
        x_cf = padded
    columns = xp.empty((c, g.kh, g.kw, n, g.oh, g.ow), dtype=x.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, cols = g.offset_slices(i, j)
            columns[:, i, j] = x_cf[:, :, rows, cols]
    return columns.reshape(c * g.kh * g.kw, n * g.oh * g.ow)


def _weight_matrix(weight, groups):
    """(O, C/g, KH, KW) -> (g, KH*KW*C/g, O/g): columns in the (kh, kw, c) order of the windows."""
    o, cg, kh, kw = weight.shape
    return weight.transpose(0, 2, 3, 1).reshape(groups, o // groups, kh * kw * cg).transpose(0, 2, 1)


def _group_columns(cols, g):
    """(rows, KH*KW*C) -> (groups, rows, KH*KW*C/groups)."""
    rows, k = cols.shape
    cg = k // (g.kh * g.kw * g.groups)
    return cols.reshape(rows, g.kh * g.kw, g.groups, cg).transpose(2, 0, 1, 3).reshape(g.groups, rows, -1)


def _ungroup_columns(cols_g, g):
    """The inverse of _group_columns."""
    groups, rows, kg = cols_g.shape
    cg = kg // (g.kh * g.kw)
    return cols_g.reshape(groups, rows, g.kh * g.kw, cg).transpose(1, 2, 0, 3).reshape(rows, -1)


def _col2im_add(target, cols, g):
    """target (n, Hp, Wp, C) += the adjoint of the windows of `cols` (n*OH*OW, KH*KW*C)."""
    n, c = target.shape[0], target.shape[3]
    cols = cols.reshape(n, g.oh, g.ow, g.kh, g.kw, c)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = g.offset_slices(i, j)
            target[:, rows, columns] += cols[:, :, :, i, j]


def _is_depthwise(weight_shape, g):
    """One input and one output channel per group: each channel filtered on its own."""
    return g.groups > 1 and weight_shape[1] == 1 and weight_shape[0] == g.groups


# A depthwise conv as a grouped matmul would multiply one window column by one weight
# column per group; instead it runs as KH*KW multiply-adds of shifted views of the
# channels-last input, each vectorised over the channels (15x faster here).

def _depthwise_taps(weight, g, dtype):
    """(KH*KW, C): one row of per-channel weights for each kernel offset."""
    return weight.reshape(weight.shape[0], g.kh * g.kw).T.astype(dtype, copy=False)


def _depthwise_forward(xpad, weight, g):
    """Depthwise conv2d without bias as an (N*OH*OW, C) matrix."""
    xp = get_array_module(xpad)
    n, c = xpad.shape[0], xpad.shape[3]
    taps = _depthwise_taps(weight, g, xpad.dtype)
    out = xp.empty((n, g.oh, g.ow, c), dtype=xpad.dtype)
    for start, stop in _chunks(n, g.oh * g.ow, 2 * c):  # a chunk's output and scratch stay in cache
        block = out[start:stop]
        scratch = xp.empty_like(block)
        for tap in range(g.kh * g.kw):
            rows, columns = g.offset_slices(*divmod(tap, g.kw))
            shifted = xpad[start:stop, rows, columns]
            if tap == 0:
                xp.multiply(shifted, taps[0], out=block)
            else:
                xp.multiply(shifted, taps[tap], out=scratch)
                block += scratch
    return out.reshape(n * g.oh * g.ow, c)


def _depthwise_backward(xpad, x_shape, weight, gy_matrix, g, need_x, need_w):
    """(grad input as an NCHW view, grad weight (C, 1, KH, KW)) of a depthwise conv2d."""
    xp = get_array_module(gy_matrix)
    n, c, h, w = x_shape
    gy = gy_matrix.reshape(n, g.oh, g.ow, c)
    taps = _depthwise_taps(weight, g, gy.dtype) if need_x else None
    gx_pad = xp.zeros((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy.dtype) if need_x else None
    gw = xp.zeros((g.kh * g.kw, c), dtype=gy.dtype) if need_w else None
    for start, stop in _chunks(n, g.oh * g.ow, 2 * c):
        gy_block = gy[start:stop]
        scratch = xp.empty_like(gy_block) if need_x else None
        for tap in range(g.kh * g.kw):
            rows, columns = g.offset_slices(*divmod(tap, g.kw))
            if need_w:
                gw[tap] += xp.einsum("nhwc,nhwc->c", xpad[start:stop, rows, columns], gy_block)
            if need_x:
                xp.multiply(gy_block, taps[tap], out=scratch)
                gx_pad[start:stop, rows, columns] += scratch
    gx = gx_pad[:, g.ph:g.ph + h, g.pw:g.pw + w].transpose(0, 3, 1, 2) if need_x else None
    gw = xp.ascontiguousarray(gw.T).reshape(c, 1, g.kh, g.kw) if need_w else None
    return gx, gw


def _conv_forward_arrays(xpad, weight, g):
    """conv2d without bias as an (N*OH*OW, O) matrix, computed batch chunk by batch chunk.

    `xpad` is the input padded and channels-last (see `_pad_channels_last`)."""
    if _is_depthwise(weight.shape, g):
        return _depthwise_forward(xpad, weight, g)
    xp = get_array_module(xpad)
    n = xpad.shape[0]
    o = weight.shape[0]
    wm = _weight_matrix(weight, g.groups)
    length = g.oh * g.ow
    out = xp.empty((n * length, o), dtype=xpad.dtype)
    windows = _windows(xpad, g)
    for start, stop in _chunks(n, length, wm.shape[1] * g.groups):
        cols = windows[start:stop].reshape((stop - start) * length, -1)
        if g.groups == 1:
            xp.matmul(cols, wm[0], out=out[start * length:stop * length])
        else:
            part = xp.matmul(_group_columns(cols, g), wm)  # (groups, rows, O/groups)
            out[start * length:stop * length] = part.transpose(1, 0, 2).reshape(-1, o)
    return out


def _grad_input_by_conv_is_faster(g, in_channels, out_channels):
    """True when d conv / d x, a stride-1 convolution of the padded output gradient, beats
    multiplying into window gradients and folding them back (col2im). The convolution
    copies windows of gy (out_channels wide); col2im adds windows of in_channels: measured
    here, the convolution wins by 1.3-2x when out_channels <= in_channels and loses by as
    much when out_channels = 2 * in_channels."""
    return (g.sh == 1 and g.sw == 1 and g.ph <= g.dh * (g.kh - 1) and g.pw <= g.dw * (g.kw - 1)
            and out_channels <= in_channels)


def _grad_input_by_conv(gy_matrix, weight, g, x_shape):
    """d conv / d x for stride 1, as the convolution of gy (padded by d*(k-1)-p) with the
    flipped kernel, channels swapped within each group: one window copy and one matmul per
    chunk, and no col2im. Returns an (N*H*W, C) matrix, channels-last."""
    n, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    groups = g.groups
    flipped = weight.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    flipped = flipped.reshape(c, o // groups, kh, kw)[:, :, ::-1, ::-1]
    pad_h, pad_w = g.dh * (kh - 1) - g.ph, g.dw * (kw - 1) - g.pw
    g_in = _ConvGeometry(g.oh, g.ow, (kh, kw), (1, 1), (pad_h, pad_w), (g.dh, g.dw), groups)
    gy_pad = _pad_channels_last(gy_matrix.reshape(n, g.oh, g.ow, o), pad_h, pad_w)
    return _conv_forward_arrays(gy_pad, flipped, g_in)


def _conv_backward_arrays(x, x_shape, weight, weight_shape, gy_matrix, g, need_x, need_w, xpad=None):
    """(grad input as an NCHW view, grad weight), each only when asked for.

    Works chunk by chunk over the batch: the window matrix of a chunk is rebuilt from x
    (cheaper than keeping the whole batch's from the forward pass) and multiplied into
    the weight gradient. The input gradient is a convolution itself where that is faster
    (`_grad_input_by_conv_is_faster`); otherwise the chunk's window gradients are folded
    back by col2im.
    """
    xp = get_array_module(gy_matrix)
    n, c, h, w = x_shape
    o, cg, kh, kw = weight_shape
    if need_w and xpad is None:
        xpad = _pad_channels_last(_channels_last(x), g.ph, g.pw)
    if _is_depthwise(weight_shape, g):
        return _depthwise_backward(xpad, x_shape, weight, gy_matrix, g, need_x, need_w)
    length = g.oh * g.ow
    groups = g.groups
    og = o // groups
    gx = None
    if need_x and _grad_input_by_conv_is_faster(g, c, o):
        gx = _grad_input_by_conv(gy_matrix, weight, g, x_shape).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    fold = need_x and gx is None
    gx_pad = xp.zeros((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy_matrix.dtype) if fold else None
    gw = xp.zeros((groups, og, kh * kw * cg), dtype=gy_matrix.dtype) if need_w else None
    wm = _weight_matrix(weight, groups) if fold else None
    windows = _windows(xpad, g) if need_w else None
    if need_w or fold:
        for start, stop in _chunks(n, length, kh * kw * c):
            gy_chunk = gy_matrix[start * length:stop * length]
            if groups > 1:
                gy_chunk = gy_chunk.reshape(-1, groups, og).transpose(1, 0, 2)  # (groups, rows, O/groups)
            if need_w:
                cols = windows[start:stop].reshape((stop - start) * length, -1)
                if groups == 1:
                    gw[0] += gy_chunk.T @ cols
                else:
                    gw += gy_chunk.transpose(0, 2, 1) @ _group_columns(cols, g)
            if fold:
                if groups == 1:
                    cols_grad = gy_chunk @ wm[0].T
                else:
                    cols_grad = _ungroup_columns(gy_chunk @ wm.transpose(0, 2, 1), g)
                _col2im_add(gx_pad[start:stop], cols_grad, g)
    if fold:
        gx = gx_pad[:, g.ph:g.ph + h, g.pw:g.pw + w].transpose(0, 3, 1, 2)
    if need_w:
        gw = xp.ascontiguousarray(gw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2))
    return gx, gw


def _output_matrix(gy):
    """(N, O, OH, OW) -> (N*OH*OW, O), a view when gy is channels-last in memory."""
    n, o, oh, ow = gy.shape
    return _channels_last(gy).reshape(n * oh * ow, o)


def _conv_output(out_matrix, n, g):
    """(N*OH*OW, O) -> an (N, O, OH, OW) view."""
    return out_matrix.reshape(n, g.oh, g.ow, -1).transpose(0, 3, 1, 2)


class Conv2d(Function):
    """2-D cross-correlation (PyTorch's conv2d) through strided windows and BLAS matmuls."""

    def __init__(self, stride, padding, dilation, groups):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def geometry(self, x_shape, w_shape):
        return _ConvGeometry(x_shape[2], x_shape[3], w_shape[2:], self.stride, self.padding,
                             self.dilation, self.groups)

    def forward(self, x, weight, bias=None):
        g = self.geometry(x.shape, weight.shape)
        if self.groups == 1 and weight[0].size <= _SMALL_WINDOW:
            # Kept for the weight gradient: KH*KW times the size of x, a small first-layer input.
            self.xpad, self.columns_t = None, _columns_channels_first(x, g)
            out = self.columns_t.T @ weight.reshape(weight.shape[0], -1).T
        else:
            # Kept for the weight gradient (the size of x, which the graph holds anyway).
            self.xpad, self.columns_t = _pad_channels_last(_channels_last(x), g.ph, g.pw), None
            out = _conv_forward_arrays(self.xpad, weight, g)
        if bias is not None:
            out += bias
        return _conv_output(out, x.shape[0], g)

    def backward(self, gy):
        x, weight = self.inputs[0], self.inputs[1]
        has_bias = len(self.inputs) == 3
        need_bias = has_bias and self.inputs[2].requires_grad
        params = (self.stride, self.padding, self.dilation, self.groups)
        if not _grad_enabled[0]:
            g = self.geometry(x.shape, weight.shape)
            gy_matrix = _output_matrix(gy.array)
            by_columns = self.columns_t is not None and weight.requires_grad
            gx, gw = _conv_backward_arrays(x.array, x.shape, weight.array, weight.shape, gy_matrix, g,
                                           x.requires_grad, weight.requires_grad and not by_columns, self.xpad)
            if by_columns:
                gw = (gy_matrix.T @ self.columns_t.T).reshape(weight.shape)
            gx = _wrap(gx) if gx is not None else None
            gw = _wrap(gw) if gw is not None else None
            gb = _wrap(gy_matrix.sum(axis=0)) if need_bias else None
        else:
            gx = Conv2dGradInput(x.shape, *params)(gy, weight) if x.requires_grad else None
            gw = Conv2dGradWeight(weight.shape, *params)(x, gy) if weight.requires_grad else None
            gb = sum(gy, axis=(0, 2, 3)) if need_bias else None
        return (gx, gw, gb) if has_bias else (gx, gw)


class Conv2dGradInput(Function):
    """d conv2d / d x applied to gy (a transposed convolution); linear in gy and in weight."""

    def __init__(self, x_shape, stride, padding, dilation, groups):
        self.x_shape = tuple(x_shape)
        self.params = (stride, padding, dilation, groups)

    def forward(self, gy, weight):
        stride, padding, dilation, groups = self.params
        g = _ConvGeometry(self.x_shape[2], self.x_shape[3], weight.shape[2:], stride, padding, dilation, groups)
        return _conv_backward_arrays(None, self.x_shape, weight, weight.shape, _output_matrix(gy), g, True, False)[0]

    def backward(self, ggx):
        gy, weight = self.inputs
        g_gy = Conv2d(*self.params)(ggx, weight) if gy.requires_grad else None
        g_w = Conv2dGradWeight(weight.shape, *self.params)(ggx, gy) if weight.requires_grad else None
        return g_gy, g_w


class Conv2dGradWeight(Function):
    """d conv2d / d weight applied to gy; linear in x and in gy."""

    def __init__(self, weight_shape, stride, padding, dilation, groups):
        self.weight_shape = tuple(weight_shape)
        self.params = (stride, padding, dilation, groups)

    def forward(self, x, gy):
        stride, padding, dilation, groups = self.params
        g = _ConvGeometry(x.shape[2], x.shape[3], self.weight_shape[2:], stride, padding, dilation, groups)
        return _conv_backward_arrays(x, x.shape, None, self.weight_shape, _output_matrix(gy), g, False, True)[1]

    def backward(self, ggw):
        x, gy = self.inputs
        g_x = Conv2dGradInput(x.shape, *self.params)(gy, ggw) if x.requires_grad else None
        g_gy = Conv2d(*self.params)(x, ggw) if gy.requires_grad else None
        return g_x, g_gy


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of x (N, C, H, W) with weight (O, C/groups, KH, KW), PyTorch semantics.

    `padding` is an int, a pair, or 'valid' / 'same' (stride 1).
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D input (N, C, H, W), got shape {x.shape}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    kh, kw = weight.shape[2:]
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' needs stride 1")
        total_h, total_w = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        if total_h % 2 or total_w % 2:
            raise ValueError(f"conv2d: padding='same' needs an odd effective kernel, got {(kh, kw)} "
                             f"with dilation {dilation}")
        padding = (total_h // 2, total_w // 2)
    else:
        padding = _pair(padding, "padding")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels (shape {x.shape}) but weight {weight.shape} "
                         f"with groups={groups} expects {weight.shape[1] * groups}")
    if weight.shape[0] % groups:
        raise ValueError(f"conv2d: out_channels {weight.shape[0]} is not divisible by groups={groups}")
    g = _ConvGeometry(x.shape[2], x.shape[3], (kh, kw), stride, padding, dilation)
    if g.oh <= 0 or g.ow <= 0:
        raise ValueError(f"conv2d: input of spatial size {x.shape[2:]} (padding {padding}) is smaller than the "
                         f"kernel {(kh, kw)} with dilation {dilation}")
    fn = Conv2d(stride, padding, dilation, groups)
    return fn(x, weight, bias) if bias is not None else fn(x, weight)


# ===== pooling =========================================================================

def _pool_geometry(x, kernel_size, stride, padding, dilation, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input (N, C, H, W), got shape {x.shape}")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding, dilation = _pair(padding, "padding"), _pair(dilation, "dilation")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size {kernel}")
    g = _ConvGeometry(x.shape[2], x.shape[3], kernel, stride, padding, dilation)
    if g.oh <= 0 or g.ow <= 0:
        raise ValueError(f"{name}: input of spatial size {x.shape[2:]} is smaller than the kernel {kernel}")
    return g


def _windows_disjoint(g):
    """True when no input element belongs to two windows (stride >= kernel span)."""
    return g.sh >= g.dh * (g.kh - 1) + 1 and g.sw >= g.dw * (g.kw - 1) + 1


class MaxPool2d(Function):
    """Max over each window; remembers which kernel offset won for the backward."""

    def __init__(self, geometry):
        self.g = geometry

    def forward(self, x):
        g = self.g
        xp = get_array_module(x)
        xh = _channels_last(x)
        n, h, w, c = xh.shape
        out = xp.empty((n, g.oh, g.ow, c), dtype=x.dtype)
        # Without a graph no backward runs: the maxima alone are a third of the work.
        argmax = xp.empty(out.shape, dtype=np.int8 if g.kh * g.kw < 127 else np.int32) \
            if _grad_enabled[0] else None
        # A few images at a time: the dozen passes below then run in cache (about 2x faster).
        for start, stop in _chunks(n, h * w, c):
            self._forward_chunk(xh[start:stop], out[start:stop], None if argmax is None else argmax[start:stop])
        self.argmax = argmax
        return out.transpose(0, 3, 1, 2)

    def _forward_chunk(self, xh, out, argmax):
        g = self.g
        xp = get_array_module(xh)
        xpad = _pad_channels_last(xh, g.ph, g.pw, fill=-np.inf)
        rows, columns = g.offset_slices(0, 0)
        out[...] = xpad[:, rows, columns]
        if argmax is None:
            for k in range(1, g.kh * g.kw):
                rows, columns = g.offset_slices(k // g.kw, k % g.kw)
                xp.maximum(out, xpad[:, rows, columns], out=out)
            return
        # argmax holds the winning offset index; offsets are visited in increasing order, so
        # "argmax = max(argmax, better * k)" records k exactly where offset k is strictly better
        # (the first maximum wins ties, as in PyTorch), without slow masked writes.
        argmax[...] = 0
        better = xp.empty(out.shape, dtype=bool)
        candidate = xp.empty(out.shape, dtype=argmax.dtype)
        for k in range(1, g.kh * g.kw):
            rows, columns = g.offset_slices(k // g.kw, k % g.kw)
            window = xpad[:, rows, columns]
            xp.greater(window, out, out=better)
            xp.maximum(out, window, out=out)
            xp.multiply(better, k, out=candidate)
            xp.maximum(argmax, candidate, out=argmax)

    def backward(self, gy):
        return MaxPool2dGrad(self.g, self.argmax, self.inputs[0].shape)(gy)


class MaxPool2dGrad(Function):
    """Routes each output gradient to the input element that won the max."""

    def __init__(self, geometry, argmax, x_shape):
        self.g, self.argmax, self.x_shape = geometry, argmax, x_shape

    def forward(self, gy):
        g = self.g
        xp = get_array_module(gy)
        n, c, h, w = self.x_shape
        gyh = _channels_last(gy)
        out = xp.empty((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy.dtype)
        for start, stop in _chunks(n, h * w, c):
            self._route_chunk(gyh[start:stop], self.argmax[start:stop], out[start:stop])
        return out[:, g.ph:g.ph + h, g.pw:g.pw + w].transpose(0, 3, 1, 2)

    def _route_chunk(self, gyh, argmax, out):
        g = self.g
        xp = get_array_module(gyh)
        out[...] = 0
        disjoint = _windows_disjoint(g)
        routed = None if disjoint else xp.empty(gyh.shape, dtype=gyh.dtype)
        won = xp.empty(gyh.shape, dtype=bool)
        for k in range(g.kh * g.kw):
            rows, columns = g.offset_slices(k // g.kw, k % g.kw)
            xp.equal(argmax, k, out=won)
            if disjoint:  # each input element is written by one window: write in place
                xp.multiply(gyh, won, out=out[:, rows, columns])
            else:
                xp.multiply(gyh, won, out=routed)
                out[:, rows, columns] += routed

    def backward(self, ggx):
        return MaxPool2dGather(self.g, self.argmax)(ggx)


class MaxPool2dGather(Function):
    """Picks, for each window, the element of its input at the max's position (linear)."""

    def __init__(self, geometry, argmax):
        self.g, self.argmax = geometry, argmax

    def forward(self, a):
        g = self.g
        xp = get_array_module(a)
        apad = _pad_channels_last(_channels_last(a), g.ph, g.pw)
        out = xp.zeros(self.argmax.shape, dtype=a.dtype)
        for i in range(g.kh):
            for j in range(g.kw):
                rows, columns = g.offset_slices(i, j)
                xp.copyto(out, apad[:, rows, columns], where=self.argmax == i * g.kw + j)
        return out.transpose(0, 3, 1, 2)

    def backward(self, gy):
        return MaxPool2dGrad(self.g, self.argmax, self.inputs[0].shape)(gy)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """Max pooling (stride defaults to kernel_size; padding counts as -inf)."""
    return MaxPool2d(_pool_geometry(x, kernel_size, stride, padding, dilation, "max_pool2d"))(x)


class AvgPool2d(Function):
    """Mean over each window (linear; its backward is AvgPool2dGrad and vice versa)."""

    def __init__(self, geometry, divisor):
        self.g, self.divisor = geometry, divisor

    def forward(self, x):
        g = self.g
        xpad = _pad_channels_last(_channels_last(x), g.ph, g.pw)
        out = None
        for i in range(g.kh):
            for j in range(g.kw):
                rows, columns = g.offset_slices(i, j)
                if out is None:
                    out = xpad[:, rows, columns].copy()
                else:
                    out += xpad[:, rows, columns]
        out /= self.divisor
        return out.transpose(0, 3, 1, 2)

    def backward(self, gy):
        return AvgPool2dGrad(self.g, self.divisor, self.inputs[0].shape)(gy)


class AvgPool2dGrad(Function):
    def __init__(self, geometry, divisor, x_shape):
        self.g, self.divisor, self.x_shape = geometry, divisor, x_shape

    def forward(self, gy):
        g = self.g
        xp = get_array_module(gy)
        n, c, h, w = self.x_shape
        share = _channels_last(gy) / self.divisor
        out = xp.zeros((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy.dtype)
        for i in range(g.kh):
            for j in range(g.kw):
                rows, columns = g.offset_slices(i, j)
                out[:, rows, columns] += share
        return out[:, g.ph:g.ph + h, g.pw:g.pw + w].transpose(0, 3, 1, 2)

    def backward(self, ggx):
        return AvgPool2d(self.g, self.divisor)(ggx)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling; with count_include_pad=False, padded zeros are left out of the mean."""
    g = _pool_geometry(x, kernel_size, stride, padding, 1, "avg_pool2d")
    if count_include_pad or (g.ph == 0 and g.pw == 0):
        divisor = np.array(g.kh * g.kw, dtype=x.dtype)
    else:
        ones = np.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype)
        counts = AvgPool2d(g, np.array(1, dtype=x.dtype)).forward(ones)  # (1, 1, OH, OW) window sizes
        divisor = np.ascontiguousarray(counts.transpose(0, 2, 3, 1))
    xp = get_array_module(x.array)
    return AvgPool2d(g, xp.asarray(divisor) if xp is not np else divisor)(x)


def _adaptive_pool_matrix(size_in, size_out, dtype):
    """(size_out, size_in): row i averages input cells floor(i*in/out) .. ceil((i+1)*in/out)."""
    matrix = np.zeros((size_out, size_in), dtype=dtype)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -(-((i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size, with PyTorch's bin edges."""
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d expects a 4-D input (N, C, H, W), got shape {x.shape}")
    oh, ow = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    h, w = x.shape[2:]
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    if (oh, ow) == (1, 1):
        return mean(x, axis=(2, 3), keepdims=True)
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow))
    rows = Tensor(to_device(_adaptive_pool_matrix(h, oh, x.dtype), x.device))
    columns = Tensor(to_device(_adaptive_pool_matrix(w, ow, x.dtype).T.copy(), x.device))
    return matmul(matmul(rows, x), columns)


# ===== normalization ===================================================================

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
    # array), folded from k*C to C at the end; plain sums are BLAS products with ones.
    def _layout(self, x2):
        rows, channels = x2.shape
        k = max(1, 1024 // channels)
        while rows % k:
            k -= 1
        xp = get_array_module(x2)
        self.ones = xp.ones(rows, dtype=x2.dtype)
        self.tiles = k

    def _wide(self, a2):
        return a2.reshape(-1, self.tiles * a2.shape[1])

    def _tile(self, vector, dtype):
        return get_array_module(vector).tile(vector.astype(dtype, copy=False), self.tiles)

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
            mu = (self.ones @ x2) / count
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
            sum_g, sum_g_centered = self.ones @ g2, self._channel_dot(g, centered)
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

    def forward(self, x, *affine):
        # weight/bias have the normalized shape; flatten them to (features,) for the 2-D math.
        return super().forward(x, *[a.reshape(-1) for a in affine])

    def _backward_arrays(self, gy):
        grads = super()._backward_arrays(gy)
        return (grads[0],) + tuple(None if g is None else _wrap(g.array.reshape(p.shape))
                                   for g, p in zip(grads[1:], self.inputs[1:]))

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
        count = x.size // x.shape[1]
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
            fn.centered = None  # nothing will run backward: free the saved centered input now
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


# ===== losses ==========================================================================

def _reduce(loss, reduction):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    return loss


class SoftmaxCrossEntropy(Function):
    """Cross-entropy of logits (M, C) with class indices or class probabilities, fused.

    Loss per row: -sum_c q_c * log_softmax(z)_c with q the (weighted, smoothed) target
    distribution; the gradient is softmax(z) * sum(q) - q, computed from the softmax
    that the forward pass already has.
    """

    def __init__(self, target, weight, ignore_index, reduction, label_smoothing):
        self.target, self.weight = target, weight
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, logits, soft_target=None):
        xp = get_array_module(logits)
        rows, classes = logits.shape
        logp = logits - logits.max(axis=1, keepdims=True)
        probs = xp.exp(logp)
        total = probs.sum(axis=1, keepdims=True)
        logp -= xp.log(total)
        probs /= total
        self.probs = probs
        eps, weight = self.label_smoothing, self.weight
        if soft_target is None:
            target = self.target
            valid = target != self.ignore_index
            safe = xp.where(valid, target, 0)
            picked = logp[xp.arange(rows), safe]
            w_target = weight[safe] * valid if weight is not None else valid.astype(logits.dtype)
            loss = -(1.0 - eps) * picked * w_target
            if eps:
                smooth = -(logp @ weight) if weight is not None else -logp.sum(axis=1)
                loss += (eps / classes) * smooth * valid
            self.valid, self.safe, self.w_target = valid, safe, w_target
            self.denominator = w_target.sum()
        else:
            q = soft_target * (1.0 - eps) + eps / classes if eps else soft_target
            if weight is not None:
                q = q * weight
            loss = -(q * logp).sum(axis=1)
            self.denominator = rows
        loss = loss.astype(logits.dtype, copy=False)
        if self.reduction == "mean":
            return xp.asarray(loss.sum() / self.denominator, dtype=logits.dtype)
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def _row_scale(self, gy):
        """d loss / d per-row loss as an (M, 1)-broadcastable tensor."""
        if self.reduction == "mean":
            return gy * (1.0 / self.denominator)
        if self.reduction == "sum":
            return gy
        return reshape(gy, (-1, 1))

    def backward(self, gy):
        logits = self.inputs[0]
        rows, classes = logits.shape
        eps, weight = self.label_smoothing, self.weight
        xp = get_array_module(logits.array)
        if len(self.inputs) == 1:
            # a_i = sum of the row's target distribution; q = (1-eps) w_t e_t + valid * (eps/C) w
            weight_sum = weight.sum() if weight is not None else classes
            a = (1.0 - eps) * self.w_target + (eps / classes) * weight_sum * self.valid
            if not _grad_enabled[0]:
                scale = self._row_scale(gy).array
                g = self.probs * a[:, None]
                if eps:
                    g -= (eps / classes) * (self.valid[:, None] * (weight if weight is not None else 1.0))
                g[xp.arange(rows), self.safe] -= (1.0 - eps) * self.w_target
                g *= scale
                return _wrap(g.astype(logits.dtype, copy=False))
            q = xp.zeros((rows, classes), dtype=logits.dtype)
            if eps:
                q += (eps / classes) * (self.valid[:, None] * (weight if weight is not None else 1.0))
            q[xp.arange(rows), self.safe] += (1.0 - eps) * self.w_target
            p = softmax(logits, axis=1)
            return (p * _wrap(a[:, None].astype(logits.dtype)) - _wrap(q)) * self._row_scale(gy)
        target = self.inputs[1]
        scale = self._row_scale(gy)
        w = _wrap(weight) if weight is not None else None
        q = target * (1.0 - eps) + eps / classes if eps else target
        if w is not None:
            q = q * w
        p = softmax(logits, axis=1) if _grad_enabled[0] else _wrap(self.probs)
        g_logits = (p * sum(q, axis=1, keepdims=True) - q) * scale if logits.requires_grad else None
        g_target = None
        if target.requires_grad:
            g_target = -log_softmax(logits, axis=1) * (1.0 - eps) * scale
            if w is not None:
                g_target = g_target * w
        return g_logits, g_target


def _class_axis_last(x):
    """(N, C, d1, ...) -> (N*d1*..., C) through differentiable ops."""
    axes = (0,) + tuple(range(2, x.ndim)) + (1,)
    return reshape(transpose(x, axes), (-1, x.shape[1]))


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits `input` (N, C) or (N, C, d1, ...) or (C,).

    `target` holds class indices (N,) / (N, d1, ...), or class probabilities with the
    input's shape. `weight` (C,) weighs classes; rows whose target is `ignore_index` are
    left out (and out of the mean's denominator); `label_smoothing` mixes the target
    with the uniform distribution. PyTorch's semantics throughout.
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    target_array = target.array if isinstance(target, Tensor) else np.asarray(target)
    soft = target_array.dtype.kind == "f"
    unbatched = input.ndim == 1
    classes = input.shape[0] if unbatched else input.shape[1]
    if soft:
        if target_array.shape != input.shape:
            raise ValueError(f"cross_entropy: class-probability targets must have the input's shape "
                             f"{input.shape}, got {target_array.shape}")
    else:
        expected = input.shape[:1] + input.shape[2:] if not unbatched else ()
        if target_array.shape != expected:
            raise ValueError(f"cross_entropy: for input of shape {input.shape} the class-index target must have "
                             f"shape {expected}, got {target_array.shape}")
        if target_array.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: class-index targets must be integers, got dtype {target_array.dtype}")
        valid = target_array[target_array != ignore_index]
        if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= classes):
            raise IndexError(f"cross_entropy: target class indices must lie in [0, {classes}) (or equal "
                             f"ignore_index={ignore_index}), got values in [{int(valid.min())}, {int(valid.max())}]")
    if weight is not None:
        weight_array = weight.array if isinstance(weight, Tensor) else np.asarray(weight)
        if weight_array.shape != (classes,):
            raise ValueError(f"cross_entropy: weight must have shape ({classes},), got {weight_array.shape}")
        weight_array = weight_array.astype(input.dtype, copy=False)
    else:
        weight_array = None
    logits = reshape(input, (1, classes)) if unbatched else (input if input.ndim == 2 else _class_axis_last(input))
    if soft:
        target_t = target if isinstance(target, Tensor) else Tensor(target_array)
        target_t = reshape(target_t, (1, classes)) if unbatched else (
            target_t if input.ndim == 2 else _class_axis_last(target_t))
        fn = SoftmaxCrossEntropy(None, weight_array, ignore_index, reduction, label_smoothing)
        loss = fn(logits, target_t)
    else:
        flat_target = to_device(target_array.reshape(-1), input.device)
        fn = SoftmaxCrossEntropy(flat_target, weight_array, ignore_index, reduction, label_smoothing)
        loss = fn(logits)
    if reduction == "none":
        return reshape(loss, input.shape[:1] + input.shape[2:] if not unbatched else ())
    return loss


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities `input` (N, C) or (N, C, d1, ...) at `target`."""
    _check_reduction(reduction)
    target_array = target.array if isinstance(target, Tensor) else np.asarray(target)
    if target_array.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: targets must be integer class indices, got dtype {target_array.dtype}")
    classes = input.shape[1]
    expected = input.shape[:1] + input.shape[2:]
    if target_array.shape != expected:
        raise ValueError(f"nll_loss: for input of shape {input.shape} the target must have shape {expected}, "
                         f"got {target_array.shape}")
    logp = input if input.ndim == 2 else _class_axis_last(input)
    flat = target_array.reshape(-1)
    valid = flat != ignore_index
    if valid.any() and (int(flat[valid].min()) < 0 or int(flat[valid].max()) >= classes):
        raise IndexError(f"nll_loss: target class indices must lie in [0, {classes}), got values in "
                         f"[{int(flat[valid].min())}, {int(flat[valid].max())}]")
    safe = np.where(valid, flat, 0)
    if weight is not None:
        weight_array = weight.array if isinstance(weight, Tensor) else np.asarray(weight)
        w_target = weight_array.astype(input.dtype)[safe] * valid
    else:
        w_target = valid.astype(input.dtype)
    xp = get_array_module(input.array)
    picked = logp[(xp.asarray(np.arange(flat.size)), xp.asarray(safe))]
    loss = -picked * _wrap(xp.asarray(w_target))
    if reduction == "mean":
        return sum(loss) * (1.0 / w_target.sum())
    if reduction == "sum":
        return sum(loss)
    return reshape(loss, expected)


def _check_same_shape(name, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{name}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ; "
                         "reshape one of them (broadcasting here is almost always a bug)")


def _as_target(target, like):
    return target if isinstance(target, Tensor) else Tensor(np.asarray(target, dtype=like.dtype))


def mse_loss(input, target, reduction="mean"):
    """Mean squared error."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("l1_loss", input, target)
    return _reduce(abs(input - target), reduction)


class BCEWithLogits(Function):
    """Binary cross-entropy of logits, stable for any magnitude:
    loss = (1 - y) x + (1 + (pw - 1) y) softplus(-x)."""

    def __init__(self, pos_weight):
        self.pos_weight = pos_weight

    def forward(self, x, y):
        xp = get_array_module(x)
        softplus_neg = xp.logaddexp(0, -x).astype(x.dtype, copy=False)
        if self.pos_weight is None:
            return (1 - y) * x + softplus_neg
        return (1 - y) * x + (1 + (self.pos_weight - 1) * y) * softplus_neg

    def backward(self, gy):
        x, y = self.inputs
        pw = self.pos_weight
        gx = gy_target = None
        if x.requires_grad:
            if pw is None:
                gx = gy * (sigmoid(x) - y)
            else:
                coefficient = (y * _wrap(pw - 1)) + 1.0
                gx = gy * ((1.0 - y) - coefficient * sigmoid(-x))
        if y.requires_grad:
            gy_target = -gy * x if pw is None else gy * (softplus(-x) * _wrap(pw - 1) - x)
        return gx, gy_target


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable op (PyTorch semantics)."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    pw = None
    if pos_weight is not None:
        pw = (pos_weight.array if isinstance(pos_weight, Tensor) else np.asarray(pos_weight)).astype(input.dtype)
    loss = BCEWithLogits(pw)(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


class BinaryCrossEntropy(Function):
    """-(y log x + (1 - y) log(1 - x)) with each log clamped at -100, as in PyTorch."""

    def forward(self, x, y):
        xp = get_array_module(x)
        with np.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100.0)
            log_1mx = xp.maximum(xp.log1p(-x), -100.0)
        return -(y * log_x + (1 - y) * log_1mx)

    def backward(self, gy):
        x, y = self.inputs
        gx = gy * (x - y) / maximum((1.0 - x) * x, 1e-12) if x.requires_grad else None
        g_target = None
        if y.requires_grad:
            g_target = gy * (maximum(log(1.0 - x), -100.0) - maximum(log(x), -100.0))
        return gx, g_target


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities in [0, 1] (PyTorch semantics)."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("binary_cross_entropy", input, target)
    if input.array.size and (float(input.array.min()) < 0 or float(input.array.max()) > 1):
        raise ValueError("binary_cross_entropy: input must hold probabilities in [0, 1]; "
                         "for logits use binary_cross_entropy_with_logits")
    loss = BinaryCrossEntropy()(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
