"""Compiled loops of the convolution family (numba, the `fast` extra; see core/compiled.py).

Each is one pass where the NumPy path makes KH*KW strided passes (col2im, the depthwise
taps). Callers in conv.py keep the NumPy path for CuPy arrays and for when numba is
absent or disabled, and check `use_compiled` first. The loops are sequential (no `parallel=True`): that would add
compile time and a threading layer, and on a small machine the second core is the data
loader's; a parallel variant has not been measured.
"""
import numpy as np

from ...core import compiled


def use_compiled(*arrays):
    """True when the compiled kernels apply: numba enabled and every array a NumPy array."""
    return all(isinstance(a, np.ndarray) for a in arrays) and compiled.numba_enabled()


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


# Depthwise convolution of arrays stored (N, C, H, W), one channel plane at a time with no
# padded copy: a kernel offset touches, in each row, one run of columns, found once per
# row; the loop over that run is vectorised when the stride is 1. An image batch (and a
# gradient that comes back in that order) is used as it is stored, as PyTorch does,
# instead of transposed to channels-last and back. Offset (i, j) reads input column
# x*sw + j*dw - pw of output column x: the run [lo, hi) keeps it inside [0, W).

@compiled.kernel
def depthwise_forward_planes(x, weight, out, sh, sw, ph, pw, dh, dw):
    """out (N, C, OH, OW) = the depthwise conv of x (N, C, H, W) with weight (C, 1, KH, KW)."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    for b in range(n):
        for channel in range(c):
            plane, target = x[b, channel], out[b, channel]
            target[:, :] = 0.0
            for i in range(kh):
                for j in range(kw):
                    tap = weight[channel, 0, i, j]
                    offset = j * dw - pw
                    lo = 0 if offset >= 0 else (sw - 1 - offset) // sw
                    hi = max(lo, min(ow, (w - 1 - offset) // sw + 1)) if w - 1 - offset >= 0 else lo
                    for y in range(oh):
                        r = y * sh + i * dh - ph
                        if r < 0 or r >= h:
                            continue
                        row, out_row = plane[r], target[y]
                        if sw == 1:  # contiguous runs: vectorised
                            for col in range(lo, hi):
                                out_row[col] += tap * row[col + offset]
                        else:
                            for col in range(lo, hi):
                                out_row[col] += tap * row[col * sw + offset]


@compiled.kernel
def depthwise_backward_planes(x, weight, gy, gx, gw, sh, sw, ph, pw, dh, dw):
    """gx (N, C, H, W) = the input gradient (gx zero on entry) and gw (C, KH*KW), float64,
    += the weight gradient of a depthwise conv, from gy (N, C, OH, OW). An empty gx or gw
    (first axis of length 0) skips that gradient; x is read only for gw."""
    n, c, oh, ow = gy.shape
    kh, kw = weight.shape[2], weight.shape[3]
    h, w = gx.shape[2], gx.shape[3]
    if gw.shape[0] > 0:
        h, w = x.shape[2], x.shape[3]
    need_x, need_w = gx.shape[0] > 0, gw.shape[0] > 0
    partial = np.zeros(ow)  # per-column partial sums of one tap's weight gradient (vectorised)
    for b in range(n):
        for channel in range(c):
            grad = gy[b, channel]
            for i in range(kh):
                for j in range(kw):
                    offset = j * dw - pw
                    lo = 0 if offset >= 0 else (sw - 1 - offset) // sw
                    hi = max(lo, min(ow, (w - 1 - offset) // sw + 1)) if w - 1 - offset >= 0 else lo
                    tap = weight[channel, 0, i, j]
                    partial[:] = 0.0
                    for y in range(oh):
                        r = y * sh + i * dh - ph
                        if r < 0 or r >= h:
                            continue
                        grad_row = grad[y]
                        if need_x:
                            target = gx[b, channel, r]
                            if sw == 1:
                                for col in range(lo, hi):
                                    target[col + offset] += tap * grad_row[col]
                            else:
                                for col in range(lo, hi):
                                    target[col * sw + offset] += tap * grad_row[col]
                        if need_w:
                            row = x[b, channel, r]
                            if sw == 1:
                                for col in range(lo, hi):
                                    partial[col] += grad_row[col] * row[col + offset]
                            else:
                                for col in range(lo, hi):
                                    partial[col] += grad_row[col] * row[col * sw + offset]
                    if need_w:
                        gw[channel, i * kw + j] += partial.sum()
