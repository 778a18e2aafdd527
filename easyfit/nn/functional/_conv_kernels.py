"""Compiled loops of the convolution family (numba, the `fast` extra; see core/compiled.py).

Each is one pass over channels-last arrays where the NumPy path makes KH*KW strided
passes (col2im, the depthwise taps) or copies across a 4 KB stride (NCHW -> NHWC).
Callers in conv.py keep the NumPy path for CuPy arrays and for when numba is absent or
disabled, and check `use_compiled` first. The loops are sequential: the benchmarks run
one thread per framework, and two cores shared with a data loader gain nothing from a
second kernel thread (measured in docs/nn.md).
"""
import numpy as np

from ...core import compiled


def use_compiled(*arrays):
    """True when the compiled kernels apply: numba enabled and every array a NumPy array."""
    return all(isinstance(a, np.ndarray) for a in arrays) and compiled.numba_enabled()


@compiled.kernel
def pad_channels_last(x, out, ph, pw):
    """out[n, ph + h, pw + w, c] = x[n, c, h, w] for x stored (N, C, H, W); out's border
    is left as it is (zeros from the caller). Reads whole rows of x, writes one image row
    of out at a time, so neither side strides through memory."""
    n, c, h, w = x.shape
    for b in range(n):
        for row in range(h):
            target = out[b, ph + row]
            for channel in range(c):
                source = x[b, channel, row]
                for col in range(w):
                    target[pw + col, channel] = source[col]


@compiled.kernel
def im2col(xpad, cols, first, kh, kw, sh, sw, dh, dw, oh, ow):
    """Copy the windows of images first, first+1, ... of xpad (N, Hp, Wp, C) into cols
    (images*OH*OW, KH*KW*C), columns in (kh, kw, c) order."""
    c = xpad.shape[3]
    images = cols.shape[0] // (oh * ow)
    row = 0
    for b in range(first, first + images):
        image = xpad[b]
        for y in range(oh):
            for x in range(ow):
                target = cols[row]
                for i in range(kh):
                    for j in range(kw):
                        source = image[y * sh + i * dh, x * sw + j * dw]
                        base = (i * kw + j) * c
                        for channel in range(c):
                            target[base + channel] = source[channel]
                row += 1


@compiled.kernel
def col2im_add(target, cols, kh, kw, sh, sw, dh, dw, oh, ow):
    """target (n, Hp, Wp, C) += the adjoint of im2col applied to cols (n*OH*OW, KH*KW*C)."""
    n, c = target.shape[0], target.shape[3]
    row = 0
    for b in range(n):
        image = target[b]
        for y in range(oh):
            for x in range(ow):
                source = cols[row]
                for i in range(kh):
                    for j in range(kw):
                        pixel = image[y * sh + i * dh, x * sw + j * dw]
                        base = (i * kw + j) * c
                        for channel in range(c):
                            pixel[channel] += source[base + channel]
                row += 1


@compiled.kernel
def depthwise_forward(xpad, taps, out, sh, sw, dh, dw, kw):
    """out (N, OH, OW, C) = the depthwise conv of xpad (N, Hp, Wp, C) with taps (KH*KW, C),
    every array C-contiguous (the channel loops are then vectorised)."""
    n, oh, ow, c = out.shape
    for b in range(n):
        for y in range(oh):
            for x in range(ow):
                target = out[b, y, x]
                for channel in range(c):
                    target[channel] = 0.0
                for tap in range(taps.shape[0]):
                    i, j = tap // kw, tap % kw
                    source = xpad[b, y * sh + i * dh, x * sw + j * dw]
                    weight = taps[tap]
                    for channel in range(c):
                        target[channel] += source[channel] * weight[channel]


@compiled.kernel
def depthwise_backward(xpad, gy, taps, gx_pad, gw, sh, sw, dh, dw, kw):
    """gx_pad (N, Hp, Wp, C) += the input gradient and gw (KH*KW, C) += the weight gradient
    of a depthwise conv, in one pass over gy (N, OH, OW, C). An empty gx_pad or gw (first
    axis of length 0) skips that gradient."""
    n, oh, ow, c = gy.shape
    need_x, need_w = gx_pad.shape[0] > 0, gw.shape[0] > 0
    for b in range(n):
        for y in range(oh):
            for x in range(ow):
                grad = gy[b, y, x]
                for tap in range(taps.shape[0]):
                    i, j = tap // kw, tap % kw
                    r, s = y * sh + i * dh, x * sw + j * dw
                    if need_w:
                        source = xpad[b, r, s]
                        weight_grad = gw[tap]
                        for channel in range(c):
                            weight_grad[channel] += source[channel] * grad[channel]
                    if need_x:
                        target = gx_pad[b, r, s]
                        weight = taps[tap]
                        for channel in range(c):
                            target[channel] += grad[channel] * weight[channel]
