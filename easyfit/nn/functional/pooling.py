"""Max, average and adaptive-average 2-D pooling: loops over the kernel offsets only."""
import numpy as np

from ...core import compiled
from ...core.autograd import _grad_enabled
from ...core.backend import get_array_module, to_device
from ...core.tensor import Function, matmul, mean, Tensor
from ._arguments import _pair
from .conv import _by_image_blocks, _channels_last, _chunks, _ConvGeometry, _pad_channels_last


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


# Max-pooling works on a stack of images (n, H, W, c) in the input's own memory order: a
# conv's output (channels-last in memory) as (N, H, W, C), an input stored (N, C, H, W)
# (an image batch, a reshape's output) as N*C one-channel images (N*C, H, W, 1). Walking
# an (N, C, H, W) array channels-last would step across memory on every element: fwd+bwd
# of 64x64x28x28 took 35 ms that way, 25 ms as one-channel images.

def _stored_channels_first(x):
    return x.flags.c_contiguous and x.shape[1] > 1


def _as_images(a, channels_first):
    """(N, C, H, W) -> the (n, H, W, c) stack of images that pooling walks (see above)."""
    if not channels_first:
        return _channels_last(a)
    n, c, h, w = a.shape
    return get_array_module(a).ascontiguousarray(a).reshape(n * c, h, w, 1)


def _from_images(images, batch, channels_first):
    """The inverse of _as_images: an (N, C, H', W') view of an (n, H', W', c) stack."""
    if not channels_first:
        return images.transpose(0, 3, 1, 2)
    return images.reshape(batch, -1, images.shape[1], images.shape[2])


# ----- max-pooling's compiled path (numba, the `fast` extra) ------------------------------
# One pass over the input for the maxima and the winning offsets (the NumPy path makes four
# per kernel offset), and one pass for the backward's routing, over contiguous stacks of
# images (n, H, W, c). Padding counts as -inf; as in PyTorch a NaN wins its window, and
# otherwise the first maximum wins ties.

@compiled.kernel
def _max_pool_forward_kernel(xh, kh, kw, sh, sw, ph, pw, dh, dw, out, argmax):
    """Maxima into out and, when argmax is not empty, the winning offsets into it."""
    n, h, w, c = xh.shape
    oh, ow = out.shape[1], out.shape[2]
    record = argmax.size > 0
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for k in range(kh * kw):
                    iy = oy * sh - ph + (k // kw) * dh
                    ix = ox * sw - pw + (k % kw) * dw
                    inside = 0 <= iy < h and 0 <= ix < w
                    if k == 0:
                        for ch in range(c):
                            out[b, oy, ox, ch] = xh[b, iy, ix, ch] if inside else -np.inf
                        if record:
                            for ch in range(c):
                                argmax[b, oy, ox, ch] = 0
                    elif inside and record:
                        code = argmax.dtype.type(k)
                        for ch in range(c):  # branch-free, so that it runs as SIMD
                            v = xh[b, iy, ix, ch]
                            current = out[b, oy, ox, ch]
                            better = (v > current) | (v != v)
                            out[b, oy, ox, ch] = v if better else current
                            argmax[b, oy, ox, ch] = code if better else argmax[b, oy, ox, ch]
                    elif inside:
                        for ch in range(c):
                            v = xh[b, iy, ix, ch]
                            current = out[b, oy, ox, ch]
                            out[b, oy, ox, ch] = v if (v > current) | (v != v) else current


@compiled.kernel
def _max_pool_backward_kernel(gy, argmax, kh, kw, sh, sw, ph, pw, dh, dw, out, tiled):
    """Routes gy to the winners in out (n, H, W, c). When the windows tile the input exactly
    (disjoint, covering it), every element of out is written; otherwise out must hold
    zeros and gradients are added (overlapping windows may share a winner)."""
    n, h, w, c = out.shape
    oh, ow = gy.shape[1], gy.shape[2]
    row_offset = np.empty(kh * kw, np.int64)     # offset k's place in its window, without
    column_offset = np.empty(kh * kw, np.int64)  # an integer division per element
    for k in range(kh * kw):
        row_offset[k] = (k // kw) * dh - ph
        column_offset[k] = (k % kw) * dw - pw
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                if tiled:
                    for k in range(kh * kw):
                        iy = oy * sh + (k // kw)
                        ix = ox * sw + (k % kw)
                        for ch in range(c):
                            out[b, iy, ix, ch] = gy[b, oy, ox, ch] if argmax[b, oy, ox, ch] == k else 0
                else:  # add each gradient once, at its winner
                    for ch in range(c):
                        k = argmax[b, oy, ox, ch]
                        iy = oy * sh + row_offset[k]
                        ix = ox * sw + column_offset[k]
                        if 0 <= iy < h and 0 <= ix < w:
                            out[b, iy, ix, ch] += gy[b, oy, ox, ch]


# Below this many channels per image (N*C one-channel images: an input stored
# channels-first) the compiled loops run too short for SIMD and the NumPy path is faster.
_COMPILED_POOL_MIN_CHANNELS = 8


def _compiled_pool_applies(xh):
    """The compiled kernels run on NumPy float32/float64 stacks of images with many channels."""
    return (type(xh) is np.ndarray and xh.dtype in (np.float32, np.float64)
            and xh.shape[3] >= _COMPILED_POOL_MIN_CHANNELS and compiled.numba_enabled())


def _windows_tile(g, h, w):
    """True when the windows are disjoint and cover every input element."""
    return (g.ph == 0 and g.pw == 0 and g.dh * (g.kh - 1) + 1 == g.sh and g.dw * (g.kw - 1) + 1 == g.sw
            and (g.kh == 1 or g.dh == 1) and (g.kw == 1 or g.dw == 1) and g.oh * g.sh == h and g.ow * g.sw == w)


class MaxPool2d(Function):
    """Max over each window; remembers which kernel offset won for the backward."""

    def __init__(self, geometry):
        self.g = geometry

    def forward(self, x):
        g = self.g
        xp = get_array_module(x)
        self.channels_first = _stored_channels_first(x)
        xh = _as_images(x, self.channels_first)
        n, h, w, c = xh.shape
        out = xp.empty((n, g.oh, g.ow, c), dtype=x.dtype)
        # Without a graph no backward runs: the maxima alone are a third of the work.
        argmax = xp.empty(out.shape, dtype=np.int8 if g.kh * g.kw < 127 else np.int32) \
            if _grad_enabled[0] else None
        if _compiled_pool_applies(xh):
            # int32 winners: with int8 ones the compiled loop does not vectorize (5x slower)
            record = argmax is not None
            argmax = np.empty(out.shape if record else (0, 0, 0, 0), np.int32)
            xh = np.ascontiguousarray(xh)
            _by_image_blocks(xh, lambda images: _max_pool_forward_kernel(
                xh[images], g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, out[images],
                argmax[images] if record else argmax))
            self.argmax = argmax if record else None
            return _from_images(out, x.shape[0], self.channels_first)
        # A few images at a time: the dozen passes below then run in cache (about 2x faster).
        for start, stop in _chunks(n, h * w, c):
            self._forward_chunk(xh[start:stop], out[start:stop], None if argmax is None else argmax[start:stop])
        self.argmax = argmax
        return _from_images(out, x.shape[0], self.channels_first)

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
        return MaxPool2dGrad(self.g, self.argmax, self.inputs[0].shape, self.channels_first)(gy)


class MaxPool2dGrad(Function):
    """Routes each output gradient to the input element that won the max."""

    def __init__(self, geometry, argmax, x_shape, channels_first):
        self.g, self.argmax, self.x_shape, self.channels_first = geometry, argmax, x_shape, channels_first

    def forward(self, gy):
        g = self.g
        xp = get_array_module(gy)
        gyh = _as_images(gy, self.channels_first)
        n, _, _, c = gyh.shape
        h, w = self.x_shape[2:]
        if _compiled_pool_applies(gyh):
            tiled = _windows_tile(g, h, w)
            out = np.empty((n, h, w, c), dtype=gy.dtype) if tiled else np.zeros((n, h, w, c), dtype=gy.dtype)
            # a strided gradient (from a Flatten: channels-first) is 10x slower to walk than to copy
            gyh = np.ascontiguousarray(gyh)
            _by_image_blocks(gyh, lambda images: _max_pool_backward_kernel(
                gyh[images], self.argmax[images], g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, out[images], tiled))
            return _from_images(out, self.x_shape[0], self.channels_first)
        out = xp.empty((n, h + 2 * g.ph, w + 2 * g.pw, c), dtype=gy.dtype)
        for start, stop in _chunks(n, h * w, c):
            self._route_chunk(gyh[start:stop], self.argmax[start:stop], out[start:stop])
        return _from_images(out[:, g.ph:g.ph + h, g.pw:g.pw + w], self.x_shape[0], self.channels_first)

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
        return MaxPool2dGather(self.g, self.argmax, self.channels_first)(ggx)


class MaxPool2dGather(Function):
    """Picks, for each window, the element of its input at the max's position (linear)."""

    def __init__(self, geometry, argmax, channels_first):
        self.g, self.argmax, self.channels_first = geometry, argmax, channels_first

    def forward(self, a):
        g = self.g
        xp = get_array_module(a)
        apad = _pad_channels_last(_as_images(a, self.channels_first), g.ph, g.pw)
        out = xp.zeros(self.argmax.shape, dtype=a.dtype)
        for i in range(g.kh):
            for j in range(g.kw):
                rows, columns = g.offset_slices(i, j)
                xp.copyto(out, apad[:, rows, columns], where=self.argmax == i * g.kw + j)
        return _from_images(out, a.shape[0], self.channels_first)

    def backward(self, gy):
        return MaxPool2dGrad(self.g, self.argmax, self.inputs[0].shape, self.channels_first)(gy)


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
