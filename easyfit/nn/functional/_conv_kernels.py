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
    """True when the compiled kernels apply: numba enabled and every array a NumPy float32
    or float64 array (numba has no float16)."""
    return (all(isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64) for a in arrays)
            and compiled.numba_enabled())


# im2col's and col2im's columns are in (kh, kw, c) order, or group-major, (group, kh, kw,
# c within the group), for a grouped conv: then one group's columns are one contiguous
# block, which a BLAS product reads as a strided matrix. The channel loops index the
# pixel from 0 and the column row by offset: measured per chunk of two 28x28x32 images
# (CPU time), 0.13-0.15 ms; with both indexed by offset 0.63 ms; with both through views
# 0.20 ms.

@compiled.kernel
def im2col(xpad, cols, first, kh, kw, sh, sw, dh, dw, oh, ow, groups):
    """Copy the windows of images first, first+1, ... of xpad (N, Hp, Wp, C) into cols
    (images*OH*OW, KH*KW*C), columns in (group, kh, kw, c within the group) order."""
    c = xpad.shape[3]
    cg = c // groups
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
                        if groups == 1:  # the loop LLVM vectorises: source indexed from 0
                            base = (i * kw + j) * c
                            for channel in range(c):
                                target[base + channel] = source[channel]
                            continue
                        for group in range(groups):
                            base = (group * kh * kw + i * kw + j) * cg
                            part = source[group * cg:(group + 1) * cg]
                            for channel in range(cg):
                                target[base + channel] = part[channel]
                row += 1


@compiled.kernel
def col2im_add(target, cols, kh, kw, sh, sw, dh, dw, oh, ow, groups):
    """target (n, Hp, Wp, C) += the adjoint of im2col applied to cols (n*OH*OW, KH*KW*C)."""
    n, c = target.shape[0], target.shape[3]
    cg = c // groups
    row = 0
    for b in range(n):
        image = target[b]
        for y in range(oh):
            for x in range(ow):
                source = cols[row]
                for i in range(kh):
                    for j in range(kw):
                        pixel = image[y * sh + i * dh, x * sw + j * dw]
                        if groups == 1:  # the loop LLVM vectorises: pixel indexed from 0
                            base = (i * kw + j) * c
                            for channel in range(c):
                                pixel[channel] += source[base + channel]
                            continue
                        for group in range(groups):
                            base = (group * kh * kw + i * kw + j) * cg
                            part = pixel[group * cg:(group + 1) * cg]
                            for channel in range(cg):
                                part[channel] += source[base + channel]
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


# Depthwise convolution of arrays stored (N, C, H, W), one channel plane at a time: an
# image batch (and a gradient that comes back in that order) is used as it is stored, as
# PyTorch does, instead of transposed to channels-last and back. Each plane is copied into
# a small zero-bordered buffer, so that every kernel offset reads (or, for the input
# gradient, adds into) one slice of a buffer row per output row, with no bounds logic.
# The inner loops index views with the loop counter alone: an index that may be negative
# (`row[col + offset]`) makes numba emit a wrap-around test that stops LLVM from
# vectorising the loop (4-5x slower, measured).

@compiled.kernel
def depthwise_forward_planes(x, weight, bias, out, sh, ph, pw, dh, dw):
    """out (N, C, OH, OW) = the depthwise conv of x (N, C, H, W) with weight (C, 1, KH, KW),
    column stride 1, plus bias (C,)."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = weight.shape[2], weight.shape[3]
    padded = np.zeros((h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    for b in range(n):
        for channel in range(c):
            plane = x[b, channel]
            for r in range(h):
                source, target = plane[r], padded[r + ph, pw:pw + w]
                for col in range(w):
                    target[col] = source[col]
            taps, start = weight[channel, 0], bias[channel]
            for y in range(oh):
                out_row = out[b, channel, y]
                for col in range(ow):
                    out_row[col] = start
                for i in range(kh):
                    for j in range(kw):
                        tap = taps[i, j]
                        source = padded[y * sh + i * dh, j * dw:j * dw + ow]
                        for col in range(ow):
                            out_row[col] += tap * source[col]


# The weight gradient's sums may be reordered (`reassoc`): each tap's sum over a plane is
# then vectorised, with several partial sums, instead of one float added at a time.
@compiled.kernel(fastmath={"reassoc"})
def depthwise_backward_planes(x, weight, gy, gx, gw, gb, sh, ph, pw, dh, dw):
    """gx (N, C, H, W) = the input gradient, gw (C, KH*KW) += the weight gradient and gb
    (C,) += the bias gradient of a depthwise conv with column stride 1, from gy (N, C, OH,
    OW); gw and gb float64. An empty gx, gw or gb (first axis of length 0) skips that
    gradient; x is read only for gw."""
    n, c, oh, ow = gy.shape
    kh, kw = weight.shape[2], weight.shape[3]
    need_x, need_w, need_b = gx.shape[0] > 0, gw.shape[0] > 0, gb.shape[0] > 0
    h, w = (x.shape[2], x.shape[3]) if need_w else (gx.shape[2], gx.shape[3])
    padded = np.zeros((h + 2 * ph, w + 2 * pw), dtype=gy.dtype)        # the input plane (gw)
    grad_padded = np.zeros((h + 2 * ph, w + 2 * pw), dtype=gy.dtype)   # the input gradient (gx)
    for b in range(n):
        for channel in range(c):
            grad = gy[b, channel]
            if need_b:
                total = 0.0
                for y in range(oh):
                    grad_row = grad[y]
                    for col in range(ow):
                        total += grad_row[col]
                gb[channel] += total
            if need_x:
                taps = weight[channel, 0]
                grad_padded[:, :] = 0.0
                for y in range(oh):
                    grad_row = grad[y]
                    for i in range(kh):
                        for j in range(kw):
                            tap = taps[i, j]
                            target = grad_padded[y * sh + i * dh, j * dw:j * dw + ow]
                            for col in range(ow):
                                target[col] += tap * grad_row[col]
                plane_grad = gx[b, channel]
                for r in range(h):
                    source, target = grad_padded[r + ph, pw:pw + w], plane_grad[r]
                    for col in range(w):
                        target[col] = source[col]
            if need_w:
                plane = x[b, channel]
                for r in range(h):
                    source, target = plane[r], padded[r + ph, pw:pw + w]
                    for col in range(w):
                        target[col] = source[col]
                for i in range(kh):
                    for j in range(kw):
                        total = 0.0
                        for y in range(oh):
                            grad_row, source = grad[y], padded[y * sh + i * dh, j * dw:j * dw + ow]
                            for col in range(ow):
                                total += grad_row[col] * source[col]
                        gw[channel, i * kw + j] += total


# Grouped convolution (stride 1, groups neither 1 nor depthwise) of arrays stored (N, C,
# H, W), one group of one image at a time. The group's input planes are copied into
# zero-bordered buffers laid end to end at the padded row pitch Wp; an output plane is then
# computed at that pitch too, as OH*Wp values of which the last Wp-OW of each row are never
# used, so that every (input channel, kernel offset) is one multiply-add over OH*Wp
# contiguous floats (a long loop LLVM vectorises) instead of OH loops of OW. Three
# offsets of a kernel row share one pass, which loads the accumulator once for three
# products. The input gradient is the same kernel run on the output gradient with the
# flipped kernel (conv.py); the weight gradient is dot products over the same buffers.

@compiled.kernel
def grouped_forward_planes(x, weight, bias, out, ph, pw, dh, dw):
    """out (N, O, OH, OW) = the stride-1 grouped conv of x (N, C, H, W) with weight (O,
    C/groups, KH, KW), plus bias (O,); padding ph, pw (the buffers' zero borders)."""
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = out.shape[2], out.shape[3]
    groups = c // cg
    og = o // groups
    hp, wp = h + 2 * ph, w + 2 * pw
    length = oh * wp
    # the last output row's unused columns read up to (kw-1)*dw past the last padded row
    padded = np.zeros((cg, hp * wp + (kw - 1) * dw), dtype=x.dtype)
    acc = np.empty(length, dtype=x.dtype)
    for b in range(n):
        for group in range(groups):
            for ci in range(cg):
                plane, target_plane = x[b, group * cg + ci], padded[ci]
                for r in range(h):
                    source, target = plane[r], target_plane[(r + ph) * wp + pw:(r + ph) * wp + pw + w]
                    for col in range(w):
                        target[col] = source[col]
            for oi in range(og):
                channel = group * og + oi
                start = bias[channel]
                for k in range(length):
                    acc[k] = start
                for ci in range(cg):
                    plane, taps = padded[ci], weight[channel, ci]
                    for i in range(kh):
                        row = i * dh * wp
                        j = 0
                        while j + 3 <= kw:
                            w0, w1, w2 = taps[i, j], taps[i, j + 1], taps[i, j + 2]
                            s0 = plane[row + j * dw:row + j * dw + length]
                            s1 = plane[row + (j + 1) * dw:row + (j + 1) * dw + length]
                            s2 = plane[row + (j + 2) * dw:row + (j + 2) * dw + length]
                            for k in range(length):
                                acc[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k]
                            j += 3
                        while j < kw:
                            w0 = taps[i, j]
                            s0 = plane[row + j * dw:row + j * dw + length]
                            for k in range(length):
                                acc[k] += w0 * s0[k]
                            j += 1
                target_plane = out[b, channel]
                for y in range(oh):
                    source, target = acc[y * wp:y * wp + ow], target_plane[y]
                    for col in range(ow):
                        target[col] = source[col]


# Each weight-gradient sum is over a whole plane: its adds may be reordered (`reassoc`), so
# that LLVM vectorises it with several partial sums (in the input's precision; the sums over
# images are float64).
@compiled.kernel(fastmath={"reassoc"})
def grouped_backward_weight_planes(x, gy, gw, gb, ph, pw, dh, dw):
    """gw (O, C/groups, KH, KW) += the weight gradient and gb (O,) += the bias gradient of
    the stride-1 grouped conv of x (N, C, H, W), from gy (N, O, OH, OW); gw and gb float64.
    An empty gb (length 0) skips the bias gradient."""
    n, c, h, w = x.shape
    o, cg, kh, kw = gw.shape
    oh, ow = gy.shape[2], gy.shape[3]
    groups = c // cg
    og = o // groups
    hp, wp = h + 2 * ph, w + 2 * pw
    length = oh * wp
    need_b = gb.shape[0] > 0
    padded = np.zeros((cg, hp * wp + (kw - 1) * dw), dtype=x.dtype)
    grads = np.zeros((og, length), dtype=gy.dtype)  # gy's planes at pitch wp: unused columns stay 0
    zero = grads[0, 0]
    for b in range(n):
        for group in range(groups):
            for ci in range(cg):
                plane, target_plane = x[b, group * cg + ci], padded[ci]
                for r in range(h):
                    source, target = plane[r], target_plane[(r + ph) * wp + pw:(r + ph) * wp + pw + w]
                    for col in range(w):
                        target[col] = source[col]
            for oi in range(og):
                plane, target_plane = gy[b, group * og + oi], grads[oi]
                for r in range(oh):
                    source, target = plane[r], target_plane[r * wp:r * wp + ow]
                    for col in range(ow):
                        target[col] = source[col]
            for oi in range(og):
                channel = group * og + oi
                grad = grads[oi]
                if need_b:
                    total = zero
                    for k in range(length):
                        total += grad[k]
                    gb[channel] += total
                for ci in range(cg):
                    plane = padded[ci]
                    for i in range(kh):
                        row = i * dh * wp
                        j = 0
                        while j + 3 <= kw:
                            s0 = plane[row + j * dw:row + j * dw + length]
                            s1 = plane[row + (j + 1) * dw:row + (j + 1) * dw + length]
                            s2 = plane[row + (j + 2) * dw:row + (j + 2) * dw + length]
                            t0, t1, t2 = zero, zero, zero
                            for k in range(length):
                                t0 += grad[k] * s0[k]
                                t1 += grad[k] * s1[k]
                                t2 += grad[k] * s2[k]
                            gw[channel, ci, i, j] += t0
                            gw[channel, ci, i, j + 1] += t1
                            gw[channel, ci, i, j + 2] += t2
                            j += 3
                        while j < kw:
                            s0 = plane[row + j * dw:row + j * dw + length]
                            t0 = zero
                            for k in range(length):
                                t0 += grad[k] * s0[k]
                            gw[channel, ci, i, j] += t0
                            j += 1
