"""2-D convolution: strided windows (im2col) and one BLAS matmul, computed in
channels-last memory; backward is one matmul for the weight and a col2im that loops
only over the kernel offsets. Depthwise convs use shifted multiply-adds.

conv1d is conv2d on a height-1 view (the same arithmetic, exactly); conv_transpose2d is
conv2d's input gradient (Conv2dGradInput), whose own gradients are conv2d and its weight
gradient.
"""
import numpy as np

from ...core import lanes
from ...core.autograd import _grad_enabled
from ...core.backend import get_array_module
from ...core.functions import concatenate
from ...core.tensor import _wrap, Function, reshape, sum
from . import _conv_kernels as kernels
from . import _winograd
from ._arguments import _pair


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


def _copy_channels_last(x, out, ph, pw):
    """out[:, ph:ph+H, pw:pw+W] = x (N, C, H, W) transposed to (N, H, W, C).

    NumPy's transposing copy reads one float from each channel plane in turn. When a
    plane is a multiple of 4 KB (32x32 floats) those reads all fall in one set of the
    L1 cache and evict each other (11.8 ms for a 32x64x32x32 batch here); the planes are
    first copied a few floats apart (a fast contiguous copy), then transposed (6.3 ms).
    Other sizes transpose directly (2.9 ms for 64x32x28x28, where a compiled scalar loop
    took 10 ms). NumPy batches are copied by blocks of images on lanes (`_by_image_blocks`;
    a copy, so the same on any number of threads): 64x32x28x28 0.74 -> 0.47 ms, 64x32x32x32
    1.83 -> 1.01 ms at 2 threads (best of 20, AVX-512 EPYC); a batch of one block (under
    2^18 floats) is copied on the calling thread."""
    if get_array_module(x) is not np:
        return _transpose_channels_last(x, out, ph, pw)
    _by_image_blocks(x, lambda images: _transpose_channels_last(x[images], out[images], ph, pw))
    return out


def _transpose_channels_last(x, out, ph, pw):
    """_copy_channels_last on one thread."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    target = out[:, ph:ph + h, pw:pw + w]
    if c > 8 and x.flags.c_contiguous and (h * w * x.itemsize) % 4096 == 0 and xp is np:
        skewed = xp.empty((n, c, h * w + 16), dtype=x.dtype)
        skewed[:, :, :h * w] = x.reshape(n, c, h * w)
        x = skewed[:, :, :h * w].reshape(n, c, h, w)
    target[...] = x.transpose(0, 2, 3, 1)
    return out


def _padded_input(x, g):
    """x (N, C, H, W) padded by g's padding, as an (N, Hp, Wp, C) C-contiguous array."""
    if x.flags.c_contiguous and x.shape[1] > 1:  # stored (N, C, H, W): see _copy_channels_last
        n, c, h, w = x.shape
        xp = get_array_module(x)
        out = (xp.zeros if g.ph or g.pw else xp.empty)((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=x.dtype)
        return _copy_channels_last(x, out, g.ph, g.pw)
    return _pad_channels_last(_channels_last(x), g.ph, g.pw)


# Images per chunk are chosen so that one chunk's window matrix holds about this many
# floats (a few MB): it stays in cache between the im2col copy, the matmul and col2im,
# and no step allocates a window matrix for the whole batch.
_CHUNK_FLOATS = 1 << 19
# An input gradient alone (no weight gradient over the same chunks) is cut into at least
# this many chunks, so that every lane folds some (see _conv_backward_arrays).
_MIN_FOLD_CHUNKS = 4


def _chunks(batch, rows_per_image, width):
    """(start, stop) image ranges of about _CHUNK_FLOATS each. Fewer than 8 chunks are made
    a power of two in number and equal in size, so that two or four lanes finish together:
    a 32-image batch of a stride-2 conv (64 -> 128 channels at 16x16) cut 14 + 14 + 4 left
    one lane idle for a third of the forward pass. The cut depends on the sizes alone,
    never on the lane count (results are the same on any number of threads)."""
    per_chunk = max(1, _CHUNK_FLOATS // max(1, rows_per_image * width))
    count = -(-batch // per_chunk)
    if 1 < count < 8:
        count = min(batch, 1 << (count - 1).bit_length())
    per_chunk = -(-batch // count)
    return [(start, min(batch, start + per_chunk)) for start in range(0, batch, per_chunk)]


def _windows(xpad, g):
    """Strided view (N, OH, OW, KH, KW, C) of a padded channels-last array: no copy."""
    xp = get_array_module(xpad)
    n, _, _, c = xpad.shape
    s_n, s_h, s_w, s_c = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, g.oh, g.ow, g.kh, g.kw, c),
        strides=(s_n, s_h * g.sh, s_w * g.sw, s_h * g.dh, s_w * g.dw, s_c))


def _group_major(windows, g):
    """(..., KH, KW, C) windows -> the same, last three axes in (groups, KH, KW, C/groups) order."""
    *lead, kh, kw, c = windows.shape
    split = windows.reshape(*lead, kh, kw, g.groups, c // g.groups)
    return get_array_module(windows).moveaxis(split, -2, -4)


class _WindowMatrices:
    """The window matrix (images*OH*OW, KH*KW*C) of a chunk of images of xpad, one chunk
    at a time: a compiled copy into one reused buffer (the matrix is only valid until the
    next call), or NumPy's copy of the strided windows. Columns in (kh, kw, c) order, or
    group-major with `groups` > 1 (see _conv_kernels.im2col)."""

    def __init__(self, xpad, g, max_images, groups=1):
        self.xpad, self.g, self.groups = xpad, g, groups
        self.compiled = xpad.flags.c_contiguous and kernels.use_compiled(xpad)
        if self.compiled:
            width = g.kh * g.kw * xpad.shape[3]
            self.buffer = get_array_module(xpad).empty((max_images * g.oh * g.ow, width), dtype=xpad.dtype)
        else:
            self.windows = _windows(xpad, g)

    def __call__(self, start, stop):
        g = self.g
        rows = (stop - start) * g.oh * g.ow
        if not self.compiled:
            windows = self.windows[start:stop]
            return (_group_major(windows, g) if self.groups > 1 else windows).reshape(rows, -1)
        cols = self.buffer[:rows]
        kernels.im2col(self.xpad, cols, start, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow, self.groups)
        return cols


def _largest(chunks):
    return max(stop - start for start, stop in chunks)


# Windows of at most this many elements (C*KH*KW; a first layer on 1 or 3 channels) are
# gathered channels-first instead: copying windows of a few floats each row by row is slow,
# while copying whole image rows per (channel, kernel offset) is fast.
_SMALL_WINDOW = 32


def _columns_channels_first(x, g, ones_row=False):
    """The transposed window matrix (C*KH*KW, N*OH*OW) of x (N, C, H, W), rows in weight
    order, and with `ones_row` a last row of ones: the bias's column, so that the forward
    product adds the bias and the weight gradient's product sums gy for the bias gradient
    (two passes over the output fewer: 64x1x28x28 -> 32 channels, 0.56 + 0.49 ms here)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    x_cf = x.transpose(1, 0, 2, 3)
    if g.ph or g.pw:
        padded = xp.zeros((c, n, h + 2 * g.ph, w + 2 * g.pw), dtype=x.dtype)
        padded[:, :, g.ph:g.ph + h, g.pw:g.pw + w] = x_cf
        x_cf = padded
    k, length = c * g.kh * g.kw, n * g.oh * g.ow
    columns = xp.empty((k + bool(ones_row), length), dtype=x.dtype)
    windows = columns[:k].reshape(c, g.kh, g.kw, n, g.oh, g.ow)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, cols = g.offset_slices(i, j)
            windows[:, i, j] = x_cf[:, :, rows, cols]
    if ones_row:
        columns[k] = 1
    return columns


def _small_window_backward(columns_t, x_shape, weight, gy, g, need_x, need_w, need_b):
    """Gradients of a conv whose forward kept `_columns_channels_first` (with the ones row
    when it has a bias), as per-image products over gy viewed (N, O, OH*OW), whichever
    way gy is stored: no channels-last copy of gy, and no product with a reduction as
    long as the batch and an output a few floats wide. Measured here (64x1x28x28 -> 32
    channels, NCHW gy, 2 threads): weight and bias gradients 0.48 ms where the copy, the
    single product and a sum took 1.2 + 1.4 + 0.5; the input gradient 0.7 ms against 3.4."""
    xp = get_array_module(gy)
    n, c, h, w = x_shape
    o, k = weight.shape[0], c * g.kh * g.kw
    gy3 = gy.reshape(n, o, g.oh * g.ow)
    gw = gb = gx = None
    if need_w or need_b:
        per_image = columns_t.reshape(len(columns_t), n, -1).transpose(1, 2, 0)  # (N, OH*OW, K [+ 1])
        both = xp.matmul(gy3, per_image).sum(axis=0)
        gw = xp.ascontiguousarray(both[:, :k]).reshape(weight.shape) if need_w else None
        gb = xp.ascontiguousarray(both[:, k]) if need_b else None
    if need_x:
        wm = weight.reshape(o, k)
        if gy3.strides[2] == gy3.itemsize:  # stored (N, O, OH, OW): one product per image
            window_grads = xp.matmul(wm.T, gy3)
        else:  # stored channels-last: one product for the batch
            window_grads = (gy3.transpose(0, 2, 1).reshape(-1, o) @ wm).reshape(n, -1, k).transpose(0, 2, 1)
        window_grads = window_grads.reshape(n, c, g.kh, g.kw, g.oh, g.ow)
        gx_pad = xp.zeros((n, c, h + 2 * g.ph, w + 2 * g.pw), dtype=gy.dtype)
        for i in range(g.kh):
            for j in range(g.kw):
                rows, cols = g.offset_slices(i, j)
                gx_pad[:, :, rows, cols] += window_grads[:, :, i, j]
        gx = gx_pad[:, :, g.ph:g.ph + h, g.pw:g.pw + w]
    return gx, gw, gb


def _weight_matrix(weight, groups):
    """(O, C/g, KH, KW) -> (g, KH*KW*C/g, O/g): columns in the (kh, kw, c) order of the windows."""
    o, cg, kh, kw = weight.shape
    return weight.transpose(0, 2, 3, 1).reshape(groups, o // groups, kh * kw * cg).transpose(0, 2, 1)


# Where the compiled plane kernels do not apply (_grouped_by_planes, below: numba off,
# float16, CuPy, stride > 1), a grouped conv with narrow groups runs as one dense matmul
# with a block-diagonal weight matrix: groups times the multiply-adds, but one large BLAS
# product instead of a batch of products a few columns wide, and no regrouping copies of
# the window matrix. Measured here (one thread, 1,024 windows of 3x3): groups 4 of 8
# channels 0.40 -> 0.23 ms, groups 8 of 8 channels 1.17 -> 0.96 ms; groups of 32 channels
# lose (0.68 -> 0.98 ms).
_BLOCK_DIAGONAL_MAX_GROUPS = 8
_BLOCK_DIAGONAL_MAX_WIDTH = 8


def _grouped_as_dense(weight_shape, g):
    """True when a grouped (not depthwise) conv is faster as one block-diagonal matmul."""
    return (1 < g.groups <= _BLOCK_DIAGONAL_MAX_GROUPS and not _is_depthwise(weight_shape, g)
            and weight_shape[0] // g.groups <= _BLOCK_DIAGONAL_MAX_WIDTH
            and weight_shape[1] <= _BLOCK_DIAGONAL_MAX_WIDTH)


def _block_diagonal(wm, g):
    """(groups, KH*KW*C/groups, O/groups) -> (1, KH*KW*C, O), zero outside the groups' blocks."""
    groups, kg, og = wm.shape
    cg = kg // (g.kh * g.kw)
    dense = get_array_module(wm).zeros((g.kh * g.kw, groups, cg, groups, og), dtype=wm.dtype)
    for group in range(groups):
        dense[:, group, :, group, :] = wm[group].reshape(g.kh * g.kw, cg, og)
    return dense.reshape(1, g.kh * g.kw * groups * cg, groups * og)


# True runs a grouped conv (stride 1, not depthwise) with the compiled plane kernels
# (_conv_kernels.grouped_forward_planes) on the input stored (N, C, H, W): the multiply-adds
# of the convolution itself, vectorised along image rows, and no copies into channels-last
# memory and back (4 groups of 8 channels, 32x32x32x32, fwd+bwd, one thread, CPU time:
# 17-19 ms against PyTorch's 38; the input stored channels-last, 26 ms against 52 for the
# block-diagonal GEMM). Without numba (or on CuPy, or in float16) the window-matrix path
# runs. Groups of more input channels than _GROUPED_PLANES_MAX_WIDTH run as one BLAS
# product per group (2 groups of 64 channels: 45 ms by BLAS, 73 by planes; of 32: 82 / 64).
_GROUPED_PLANES = True
_GROUPED_PLANES_MAX_WIDTH = 32


def _grouped_by_planes(x, weight, g):
    """True when the grouped conv of x runs plane by plane (compiled): stride 1, padding at
    most the dilated kernel's reach (so that the input gradient is the same kernel), and
    groups of at most _GROUPED_PLANES_MAX_WIDTH input channels."""
    return (_GROUPED_PLANES and g.groups > 1 and not _is_depthwise(weight.shape, g)
            and weight.shape[1] <= _GROUPED_PLANES_MAX_WIDTH
            and g.sh == 1 and g.sw == 1 and g.ph <= g.dh * (g.kh - 1) and g.pw <= g.dw * (g.kw - 1)
            and kernels.use_compiled(x, weight))


# The compiled plane kernels (grouped and depthwise convs) and max-pool's kernels run on
# lanes in fixed blocks of whole images of about this many input floats; weight and bias
# gradients are summed per block in float64 and the blocks added in order, so results are
# the same on any number of threads. On one thread they took as long at 2 threads as at 1
# (depthwise 64 channels, 32x32x32x32: 17.4 ms at both, PyTorch 7.2 at 2 threads).
_IMAGE_BLOCK_FLOATS = 1 << 18


def _image_blocks(x):
    return lanes.blocks(x.shape[0], _IMAGE_BLOCK_FLOATS // max(1, x[0].size))


def _by_image_blocks(x, work):
    """work(images) for every block of images of x (a slice along N), on lanes."""
    lanes.run(lambda state, index, images: work(images), _image_blocks(x))


def _grouped_forward_planes(x, weight, bias, g):
    """A grouped conv2d of x stored (N, C, H, W), output stored the same way (compiled)."""
    o = weight.shape[0]
    out = np.empty((x.shape[0], o, g.oh, g.ow), dtype=x.dtype)
    bias = np.zeros(o, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    _by_image_blocks(x, lambda images: kernels.grouped_forward_planes(x[images], weight, bias, out[images],
                                                                      g.ph, g.pw, g.dh, g.dw))
    return out


def _grouped_backward_planes(x, weight, gy, g, need_x, need_w, need_b):
    """(grad input, grad weight, grad bias) of _grouped_forward_planes, each only when asked
    for (else None). The input gradient is the forward kernel run on gy, padded by the
    kernel's reach less the padding, with the kernel flipped and each group's input and
    output channels swapped."""
    gy = np.ascontiguousarray(gy)
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    gx = gw = gb = None
    if need_x:
        og = o // g.groups
        flipped = weight.reshape(g.groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(c, og, kh, kw)
        flipped = np.ascontiguousarray(flipped[:, :, ::-1, ::-1], dtype=gy.dtype)
        gx = np.empty((n, c, h, w), dtype=gy.dtype)
        no_bias = np.zeros(c, dtype=gy.dtype)
        _by_image_blocks(gy, lambda images: kernels.grouped_forward_planes(
            gy[images], flipped, no_bias, gx[images], g.dh * (kh - 1) - g.ph, g.dw * (kw - 1) - g.pw, g.dh, g.dw))
    if need_w and not np.isfinite(x).all():
        # the kernel multiplies the unused columns' zero gradients by input values, which
        # would turn an inf or NaN outside every window of a kernel offset into NaN there
        gw = _conv_backward_arrays(x, x.shape, None, weight.shape, _output_matrix(gy), g, False, True)[1]
    elif need_w:
        gw, gb = lanes.run_sums(   # sums over images in float64
            lambda images, gw, gb: kernels.grouped_backward_weight_planes(x[images], gy[images], gw, gb,
                                                                          g.ph, g.pw, g.dh, g.dw),
            _image_blocks(x), weight.shape, o if need_b else 0)
        gw, gb = gw.astype(gy.dtype), (gb.astype(gy.dtype) if need_b else None)
    if need_b and gb is None:
        gb = gy.sum(axis=(0, 2, 3))
    return gx, gw, gb


def _col2im_add(target, cols, g, groups=1):
    """target (n, Hp, Wp, C) += the adjoint of the windows of `cols` (n*OH*OW, KH*KW*C),
    columns group-major when groups > 1."""
    if target.flags.c_contiguous and cols.flags.c_contiguous and kernels.use_compiled(target, cols):
        kernels.col2im_add(target, cols, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow, groups)  # one pass
        return
    n, c = target.shape[0], target.shape[3]
    cols = cols.reshape(n, g.oh, g.ow, groups, g.kh, g.kw, c // groups)
    for i in range(g.kh):
        for j in range(g.kw):
            rows, columns = g.offset_slices(i, j)
            target[:, rows, columns] += cols[:, :, :, :, i, j].reshape(n, g.oh, g.ow, c)


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
    if xpad.flags.c_contiguous and kernels.use_compiled(xpad, taps):
        kernels.depthwise_forward(xpad, xp.ascontiguousarray(taps), out, g.sh, g.sw, g.dh, g.dw, g.kw)
        return out.reshape(n * g.oh * g.ow, c)
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
    compiled = gy.flags.c_contiguous and (xpad is None or xpad.flags.c_contiguous) and kernels.use_compiled(gy)
    if compiled:
        # one pass over gy for both gradients; the weight gradient sums in float64
        empty = xp.zeros((0, 1, 1, 1), dtype=gy.dtype)
        gw = xp.zeros((g.kh * g.kw, c)) if need_w else xp.zeros((0, c))
        taps = xp.ascontiguousarray(taps) if need_x else xp.zeros((g.kh * g.kw, c), dtype=gy.dtype)
        kernels.depthwise_backward(xpad if need_w else empty, gy, taps, gx_pad if need_x else empty, gw,
                                   g.sh, g.sw, g.dh, g.dw, g.kw)
        gw = gw.astype(gy.dtype) if need_w else None
    for start, stop in [] if compiled else _chunks(n, g.oh * g.ow, 2 * c):
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


# True runs a depthwise conv (column stride 1) of an input stored (N, C, H, W) compiled
# plane by plane (below) instead of through the channels-last kernels after transposing
# copies of the input and the output gradient and of the input gradient back (depthwise
# 64 channels, 32x32x32, fwd+bwd with bias, one thread, CPU time on a loaded AVX2 EPYC:
# 46 ms channels-last, 27 ms by planes).
_DEPTHWISE_PLANES = True


def _depthwise_forward_planes(x, weight, bias, g):
    """A depthwise conv2d of x stored (N, C, H, W), output stored the same way (compiled)."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    out = xp.empty((n, c, g.oh, g.ow), dtype=x.dtype)
    bias = xp.zeros(c, dtype=x.dtype) if bias is None else xp.ascontiguousarray(bias, dtype=x.dtype)
    weight = xp.ascontiguousarray(weight, dtype=x.dtype)
    _by_image_blocks(x, lambda images: kernels.depthwise_forward_planes(x[images], weight, bias, out[images],
                                                                        g.sh, g.ph, g.pw, g.dh, g.dw))
    return out


def _depthwise_backward_planes(x, weight, gy, g, need_x, need_w, need_b):
    """(grad input, grad weight, grad bias) of _depthwise_forward_planes, each only when
    asked for (else None); gy in any memory order (copied to (N, C, OH, OW) order when it is not)."""
    xp = get_array_module(gy)
    c = x.shape[1]
    gy = xp.ascontiguousarray(gy)
    empty = xp.zeros((0, 1, 1, 1), dtype=gy.dtype)
    gx = xp.empty(x.shape, dtype=gy.dtype) if need_x else empty  # every element written
    weight = xp.ascontiguousarray(weight, dtype=gy.dtype)

    def block(images, gw, gb):
        kernels.depthwise_backward_planes(x[images] if need_w else empty, weight, gy[images],
                                          gx[images] if need_x else empty, gw, gb, g.sh, g.ph, g.pw, g.dh, g.dw)
    gw, gb = lanes.run_sums(block, _image_blocks(x), (c if need_w else 0, g.kh * g.kw), c if need_b else 0)  # float64
    return ((gx if need_x else None), (gw.astype(gy.dtype).reshape(weight.shape) if need_w else None),
            (gb.astype(gy.dtype) if need_b else None))


def _conv_forward_arrays(xpad, weight, g):
    """conv2d without bias as an (N*OH*OW, O) matrix, computed batch chunk by batch chunk.

    `xpad` is the input padded and channels-last (see `_pad_channels_last`)."""
    if _is_depthwise(weight.shape, g):
        return _depthwise_forward(xpad, weight, g)
    if _winograd.applies(xpad, weight.shape, g):
        return _winograd.conv_forward(xpad, weight, g)
    xp = get_array_module(xpad)
    n = xpad.shape[0]
    o = weight.shape[0]
    wm = _weight_matrix(weight, g.groups)
    dense = g.groups == 1 or _grouped_as_dense(weight.shape, g)
    if g.groups > 1 and dense:
        wm = _block_diagonal(wm, g)
    groups = 1 if dense else g.groups
    length = g.oh * g.ow
    out = xp.empty((n * length, o), dtype=xpad.dtype)
    chunks = _chunks(n, length, wm.shape[1] * wm.shape[0])
    width, og = wm.shape[1], o // groups  # one group's columns and outputs

    def product(window_matrix, index, chunk):
        start, stop = chunk
        cols = window_matrix(start, stop)  # group-major: each group's columns one block
        rows = slice(start * length, stop * length)
        for group in range(groups):
            xp.matmul(cols[:, group * width:(group + 1) * width], wm[group],
                      out=out[rows, group * og:(group + 1) * og])
    _run_chunks(xp, product, chunks, lambda: _WindowMatrices(xpad, g, _largest(chunks), groups))
    return out


def _run_chunks(xp, work, chunks, make_state):
    """work(state, index, chunk) for each chunk: NumPy arrays on lanes (core/lanes.py),
    CuPy arrays in order on the current stream."""
    if xp is np:
        lanes.run(work, chunks, make_state)
        return
    state = make_state()
    for index, chunk in enumerate(chunks):
        work(state, index, chunk)


def _grad_input_by_conv_is_faster(g, in_channels, out_channels):
    """True when d conv / d x, a stride-1 convolution of the padded output gradient, beats
    multiplying into window gradients and folding them back (col2im). The convolution
    copies windows of gy (out_channels wide); col2im adds windows of in_channels: measured
    here, the convolution wins by 1.3-2x when out_channels <= in_channels and loses by as
    much when out_channels = 2 * in_channels. A convolution by Winograd tiles wins either way."""
    if not (g.sh == 1 and g.sw == 1 and g.ph <= g.dh * (g.kh - 1) and g.pw <= g.dw * (g.kw - 1)):
        return False
    return out_channels <= in_channels or _winograd.geometry_applies((in_channels, out_channels, g.kh, g.kw), g)


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
    the weight gradient (by Winograd tiles where they apply). The input gradient is a
    convolution itself where that is faster (`_grad_input_by_conv_is_faster`); otherwise
    the chunk's window gradients are folded back by col2im.
    """
    xp = get_array_module(gy_matrix)
    n, c, h, w = x_shape
    o, cg, kh, kw = weight_shape
    if need_w and xpad is None:
        xpad = _padded_input(x, g)
    if _is_depthwise(weight_shape, g):
        return _depthwise_backward(xpad, x_shape, weight, gy_matrix, g, need_x, need_w)
    length = g.oh * g.ow
    groups = 1 if _grouped_as_dense(weight_shape, g) else g.groups  # see _block_diagonal
    og = o // groups
    gx = None
    if need_x and _grad_input_by_conv_is_faster(g, c, o):
        gx = _grad_input_by_conv(gy_matrix, weight, g, x_shape).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    gw_by_tiles = None
    if need_w and _winograd.applies(xpad, weight_shape, g):
        gw_by_tiles = _winograd.weight_gradient(xpad, gy_matrix, weight_shape, g)
    by_windows = need_w and gw_by_tiles is None  # the weight gradient from window matrices
    fold = need_x and gx is None
    gx_pad = xp.zeros((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy_matrix.dtype) if fold else None
    gw = xp.zeros((groups, og, kh * kw * (c // groups)), dtype=gy_matrix.dtype) if by_windows else None
    wm = _weight_matrix(weight, g.groups) if fold else None
    if fold and groups < g.groups:
        wm = _block_diagonal(wm, g)
    if by_windows or fold:
        chunks = _chunks(n, length, kh * kw * c)
        if not by_windows and len(chunks) < _MIN_FOLD_CHUNKS:
            # The input gradient alone: chunks are independent (nothing summed over them), so a
            # small input (a 1-channel first layer: one chunk) is cut further for the lanes.
            chunks = [(images.start, images.stop) for images in lanes.blocks(n, -(-n // _MIN_FOLD_CHUNKS))]
        width = kh * kw * (c // groups)  # one group's columns (group-major, see im2col)
        gw_sum = lanes.OrderedSum(gw) if by_windows else None

        def scratch():  # one lane's: its window matrices and window gradients
            return (_WindowMatrices(xpad, g, _largest(chunks), groups) if by_windows else None,
                    xp.empty((_largest(chunks) * length, groups * width), dtype=gy_matrix.dtype) if fold else None)

        def gradients(state, index, chunk):
            window_matrix, cols_grad = state
            start, stop = chunk
            gy_chunk = gy_matrix[start * length:stop * length]
            if by_windows:
                cols = window_matrix(start, stop)
                partial = xp.empty(gw.shape, dtype=gw.dtype)  # this chunk's share, added in chunk order
                for group in range(groups):
                    xp.matmul(gy_chunk[:, group * og:(group + 1) * og].T, cols[:, group * width:(group + 1) * width],
                              out=partial[group])
                gw_sum.add(index, partial)
            if fold:
                chunk_grad = cols_grad[:len(gy_chunk)]
                for group in range(groups):
                    xp.matmul(gy_chunk[:, group * og:(group + 1) * og], wm[group].T,
                              out=chunk_grad[:, group * width:(group + 1) * width])
                _col2im_add(gx_pad[start:stop], chunk_grad, g, groups)
        _run_chunks(xp, gradients, chunks, scratch)
    if fold:
        gx = gx_pad[:, g.ph:g.ph + h, g.pw:g.pw + w].transpose(0, 3, 1, 2)
    if by_windows:
        if groups < g.groups:  # the dense (O, KH*KW*C) gradient: keep each group's diagonal block
            per_group = gw.reshape(g.groups, o // g.groups, kh * kw, g.groups, cg)
            diagonal = xp.arange(g.groups)
            gw = per_group[diagonal, :, :, diagonal, :]  # (groups, O/groups, KH*KW, C/groups)
        gw = xp.ascontiguousarray(gw.reshape(o, kh, kw, cg).transpose(0, 3, 1, 2))
    return gx, (gw_by_tiles if gw_by_tiles is not None else gw)


def _output_matrix(gy):
    """(N, O, OH, OW) -> (N*OH*OW, O), a view when gy is channels-last in memory."""
    n, o, oh, ow = gy.shape
    if gy.flags.c_contiguous and o > 1:  # stored (N, O, OH, OW): see _copy_channels_last
        out = _copy_channels_last(gy, get_array_module(gy).empty((n, oh, ow, o), dtype=gy.dtype), 0, 0)
        return out.reshape(n * oh * ow, o)
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
        self.planes = (_DEPTHWISE_PLANES and _is_depthwise(weight.shape, g) and g.sw == 1 and x.flags.c_contiguous
                       and kernels.use_compiled(x, weight))
        if self.planes:
            self.xpad = self.columns_t = None
            return _depthwise_forward_planes(x, weight, bias, g)
        self.grouped_planes = _grouped_by_planes(x, weight, g)
        if self.grouped_planes:
            # an input stored otherwise (a conv's channels-last output) is copied, and the
            # copy kept for the weight gradient
            x_planes = np.ascontiguousarray(x)
            self.x_planes = x_planes if x_planes is not x else None
            self.xpad = self.columns_t = None
            return _grouped_forward_planes(x_planes, weight, bias, g)
        if self.groups == 1 and weight[0].size <= _SMALL_WINDOW:
            # Kept for the weight gradient: KH*KW times the size of x, a small first-layer input.
            self.xpad, self.columns_t = None, _columns_channels_first(x, g, ones_row=bias is not None)
            wm = weight.reshape(weight.shape[0], -1)
            if bias is not None:
                wm = get_array_module(wm).concatenate([wm, bias[:, None]], axis=1)
            return _conv_output(self.columns_t.T @ wm.T, x.shape[0], g)
        # Kept for the weight gradient (the size of x, which the graph holds anyway).
        self.xpad, self.columns_t = _padded_input(x, g), None
        out = _conv_forward_arrays(self.xpad, weight, g)
        if bias is not None:
            out += bias
        return _conv_output(out, x.shape[0], g)

    def backward(self, gy):
        x, weight = self.inputs[0], self.inputs[1]
        has_bias = len(self.inputs) == 3
        need_bias = has_bias and self.inputs[2].requires_grad
        params = (self.stride, self.padding, self.dilation, self.groups)
        if not _grad_enabled[0] and self.planes:
            grads = _depthwise_backward_planes(x.array, weight.array, gy.array, self.geometry(x.shape, weight.shape),
                                               x.requires_grad, weight.requires_grad, need_bias)
            gx, gw, gb = (_wrap(grad) if grad is not None else None for grad in grads)
        elif not _grad_enabled[0] and self.grouped_planes and kernels.use_compiled(gy.array):
            x_planes = x.array if self.x_planes is None else self.x_planes
            grads = _grouped_backward_planes(x_planes, weight.array, gy.array, self.geometry(x.shape, weight.shape),
                                             x.requires_grad, weight.requires_grad, need_bias)
            gx, gw, gb = (_wrap(grad) if grad is not None else None for grad in grads)
        elif not _grad_enabled[0] and self.columns_t is not None:
            grads = _small_window_backward(self.columns_t, x.shape, weight.array, gy.array,
                                           self.geometry(x.shape, weight.shape), x.requires_grad,
                                           weight.requires_grad, need_bias)
            gx, gw, gb = (_wrap(grad) if grad is not None else None for grad in grads)
        elif not _grad_enabled[0]:
            g = self.geometry(x.shape, weight.shape)
            gy_matrix = _output_matrix(gy.array)
            gx, gw = _conv_backward_arrays(x.array, x.shape, weight.array, weight.shape, gy_matrix, g,
                                           x.requires_grad, weight.requires_grad, self.xpad)
            gx = _wrap(gx) if gx is not None else None
            gw = _wrap(gw) if gw is not None else None
            # einsum's loop: 0.3 ms where sum(axis=0) took 1.1 for a (50176, 32) gradient
            gb = _wrap(get_array_module(gy_matrix).einsum("ij->j", gy_matrix)) if need_bias else None
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


def _zeros_beside(t, shape):
    """Zeros of `shape` with t's dtype and device, outside the graph."""
    return _wrap(get_array_module(t.array).zeros(shape, dtype=t.dtype))


def _single(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {value!r}")
        return int(value[0])
    return int(value)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of x (N, C, L) with weight (O, C/groups, K), PyTorch semantics.

    `padding` is an int or 'valid' / 'same' (stride 1). Runs as conv2d on height-1 views.
    """
    if x.ndim != 3:
        raise ValueError(f"conv1d expects a 3-D input (N, C, L), got shape {tuple(x.shape)}")
    if weight.ndim != 3:
        raise ValueError(f"conv1d expects a 3-D weight (out_channels, in_channels/groups, kernel), got shape "
                         f"{tuple(weight.shape)}")
    n, c, length = x.shape
    o, cg, k = weight.shape
    padding = padding if isinstance(padding, str) else (0, _single(padding, "padding"))
    out = conv2d(reshape(x, (n, c, 1, length)), reshape(weight, (o, cg, 1, k)), bias,
                 stride=(1, _single(stride, "stride")), padding=padding, dilation=(1, _single(dilation, "dilation")),
                 groups=groups)
    return reshape(out, (n, o, out.shape[3]))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution (the gradient of conv2d with respect to its input) of
    x (N, C, H, W) with weight (C, O/groups, KH, KW), PyTorch's argument order and meaning.

    The output is (N, O, (H-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1, ...);
    `output_padding` (< stride or dilation) keeps that many more rows and columns at the
    bottom and right (resolving the output size that several input sizes share).
    """
    if x.ndim != 4:
        raise ValueError(f"conv_transpose2d expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"conv_transpose2d expects a 4-D weight (in_channels, out_channels/groups, KH, KW), got "
                         f"shape {tuple(weight.shape)}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    dilation, output_padding = _pair(dilation, "dilation"), _pair(output_padding, "output_padding")
    n, c, h, w = x.shape
    if c != weight.shape[0]:
        raise ValueError(f"conv_transpose2d: input has {c} channels (shape {tuple(x.shape)}) but weight "
                         f"{tuple(weight.shape)} expects {weight.shape[0]}")
    if c % groups:
        raise ValueError(f"conv_transpose2d: in_channels {c} is not divisible by groups={groups}")
    for extra, s, d in zip(output_padding, stride, dilation):
        if not 0 <= extra < max(s, d):
            raise ValueError(f"conv_transpose2d: output_padding must be smaller than stride or dilation, got "
                             f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    kh, kw = weight.shape[2:]
    out_channels = weight.shape[1] * groups
    # the size of the conv2d input whose output has x's size
    height = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + 1
    width = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + 1
    if height + output_padding[0] <= 0 or width + output_padding[1] <= 0:
        raise ValueError(f"conv_transpose2d: input {tuple(x.shape)} with kernel {(kh, kw)}, stride {stride}, "
                         f"padding {padding} and dilation {dilation} gives a non-positive output size")
    if output_padding == (0, 0) and height > 0 and width > 0:
        out = Conv2dGradInput((n, out_channels, height, width), stride, padding, dilation, groups)(x, weight)
    else:
        # output_padding reaches into the border that `padding` crops (and past it, where no
        # input reaches): compute the uncropped output, extend it with zeros, then crop.
        full_h, full_w = height + 2 * padding[0], width + 2 * padding[1]
        out = Conv2dGradInput((n, out_channels, full_h, full_w), stride, (0, 0), dilation, groups)(x, weight)
        extra_h, extra_w = max(0, output_padding[0] - padding[0]), max(0, output_padding[1] - padding[1])
        if extra_h:
            out = concatenate([out, _zeros_beside(out, (n, out_channels, extra_h, full_w))], axis=2)
        if extra_w:
            out = concatenate([out, _zeros_beside(out, (n, out_channels, out.shape[2], extra_w))], axis=3)
        out = out[:, :, padding[0]:padding[0] + height + output_padding[0],
                  padding[1]:padding[1] + width + output_padding[1]]
    if bias is not None:
        out = out + reshape(bias, (1, out_channels, 1, 1))
    return out
