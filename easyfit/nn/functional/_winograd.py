"""Winograd F(2x2, 3x3): a dense 3x3 stride-1 convolution in 16 products of 4x4 tiles.

Each 2x2 block of outputs is A^T [(G w G^T) * (B^T d B)] A of the 4x4 input tile d under
it, so the window matrix (9 C columns per output) becomes 16 C-column tiles per 4 outputs:
the GEMMs do 16/36 of im2col's multiply-adds, on matrices of C and O columns. The
transforms are compiled loops (numba): one pass over each chunk's tiles, vectorised over
the channels. The transforms' sums round differently from a dot product of 9 C terms; the
results agree with im2col's to a few units in the last place of the largest term.

Only used where it is measured faster (`applies`): numba on, float32 or float64, groups 1,
dilation 1, both channel counts at least `_MIN_CHANNELS`.
"""
import numpy as np

from ...core import compiled, lanes
from . import _conv_kernels as kernels

# B^T, G and A^T of F(2, 3) with interpolation points 0, 1, -1.
_B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
_A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# Below this many input or output channels the 16 GEMMs are too thin to beat one im2col GEMM.
_MIN_CHANNELS = 16
# Tiles per chunk are chosen so one chunk's transformed input and products hold about this
# many floats: they stay in cache between the transform, the GEMMs and the output transform.
_CHUNK_FLOATS = 1 << 18


def geometry_applies(weight_shape, g):
    """True when a conv of this weight shape and geometry g (see conv._ConvGeometry) is
    one that Winograd tiles compute faster (before looking at the arrays)."""
    o, cg = weight_shape[0], weight_shape[1]
    return (g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1
            and g.groups == 1 and min(o, cg) >= _MIN_CHANNELS and compiled.numba_enabled())


def applies(xpad, weight_shape, g):
    """True when the conv of xpad (N, Hp, Wp, C) runs by Winograd tiles."""
    return geometry_applies(weight_shape, g) and xpad.flags.c_contiguous and kernels.use_compiled(xpad)


def transformed_weight(weight, dtype):
    """(O, C, 3, 3) -> (16, C, O): G w G^T for every (output, input) channel pair, the
    tile position first; summed in float64."""
    o, c = weight.shape[:2]
    u = np.empty((16, c, o), dtype=dtype)
    weight_tiles(np.asarray(weight), u)
    return u


def _padded_to_tiles(xpad, tiles_h, tiles_w):
    """xpad, with zero rows and columns at the bottom and right when an odd output size
    leaves the last tile reaching past it."""
    n, hp, wp, c = xpad.shape
    height, width = 2 * tiles_h + 2, 2 * tiles_w + 2
    if hp >= height and wp >= width:
        return xpad
    out = np.zeros((n, max(hp, height), max(wp, width), c), dtype=xpad.dtype)
    out[:, :hp, :wp] = xpad
    return out


class _Tiling:
    """The tile grid of one conv, its batch chunks, and each lane's scratch for a chunk's
    transformed input (16, tiles, C) and products (16, tiles, O)."""

    def __init__(self, xpad, g, out_channels):
        self.tiles_h, self.tiles_w = (g.oh + 1) // 2, (g.ow + 1) // 2
        self.xpad = _padded_to_tiles(xpad, self.tiles_h, self.tiles_w)
        n, self.c, self.o = xpad.shape[0], xpad.shape[3], out_channels
        self.per_image = self.tiles_h * self.tiles_w
        self.images = max(1, min(n, _CHUNK_FLOATS // (16 * self.per_image * max(self.c, self.o))))
        self.chunks = [(start, min(n, start + self.images)) for start in range(0, n, self.images)]

    def scratch(self):
        tiles = 16 * self.images * self.per_image
        return np.empty(tiles * self.c, dtype=self.xpad.dtype), np.empty(tiles * self.o, dtype=self.xpad.dtype)

    def views(self, buffers, chunk):
        count = (chunk[1] - chunk[0]) * self.per_image
        return (buffers[0][:16 * count * self.c].reshape(16, count, self.c),
                buffers[1][:16 * count * self.o].reshape(16, count, self.o))


def conv_forward(xpad, weight, g):
    """conv2d of xpad (N, Hp, Wp, C), padded and channels-last, as an (N*OH*OW, O) matrix."""
    tiling = _Tiling(xpad, g, weight.shape[0])
    u = transformed_weight(weight, xpad.dtype)
    out = np.empty((xpad.shape[0] * g.oh * g.ow, weight.shape[0]), dtype=xpad.dtype)

    def tiles(buffers, index, chunk):
        v, m = tiling.views(buffers, chunk)
        input_tiles(tiling.xpad, v, chunk[0], tiling.tiles_h, tiling.tiles_w)
        np.matmul(v, u, out=m)
        output_tiles(m, out, chunk[0], tiling.tiles_h, tiling.tiles_w, g.oh, g.ow)
    lanes.run(tiles, tiling.chunks, tiling.scratch)
    return out


def weight_gradient(xpad, gy_matrix, weight_shape, g):
    """d conv2d / d weight (O, C, 3, 3) for xpad (N, Hp, Wp, C) padded and channels-last and
    the output gradient gy_matrix (N*OH*OW, O), through the same tiles: per chunk, the
    input tiles V and the output gradient carried back through A (A dY A^T), their 16
    products (C x tiles times tiles x O) summed in chunk order, then G^T (...) G."""
    tiling = _Tiling(xpad, g, weight_shape[0])
    total = lanes.OrderedSum(np.zeros((16, tiling.c, tiling.o), dtype=xpad.dtype))
    gy_matrix = np.ascontiguousarray(gy_matrix)

    def products(buffers, index, chunk):
        v, dm = tiling.views(buffers, chunk)
        input_tiles(tiling.xpad, v, chunk[0], tiling.tiles_h, tiling.tiles_w)
        output_tiles_adjoint(gy_matrix, dm, chunk[0], tiling.tiles_h, tiling.tiles_w, g.oh, g.ow)
        total.add(index, np.matmul(v.transpose(0, 2, 1), dm))
    lanes.run(products, tiling.chunks, tiling.scratch)
    gw = np.empty(weight_shape, dtype=xpad.dtype)
    weight_tiles_adjoint(total.total, gw)
    return gw


@compiled.kernel
def weight_tiles(weight, u):
    """u (16, C, O) = G w G^T of each 3x3 kernel w of weight (O, C, 3, 3), summed in float64."""
    o, c = weight.shape[0], weight.shape[1]
    rows = np.empty((4, 3))
    for out_channel in range(o):
        for in_channel in range(c):
            w = weight[out_channel, in_channel]
            for j in range(3):  # G down each column: w0, (w0 + w1 + w2) / 2, (w0 - w1 + w2) / 2, w2
                w0, w1, w2 = np.float64(w[0, j]), np.float64(w[1, j]), np.float64(w[2, j])
                rows[0, j] = w0
                rows[1, j] = 0.5 * (w0 + w1 + w2)
                rows[2, j] = 0.5 * (w0 - w1 + w2)
                rows[3, j] = w2
            for i in range(4):  # then G^T across each row
                w0, w1, w2 = rows[i, 0], rows[i, 1], rows[i, 2]
                u[4 * i, in_channel, out_channel] = w0
                u[4 * i + 1, in_channel, out_channel] = 0.5 * (w0 + w1 + w2)
                u[4 * i + 2, in_channel, out_channel] = 0.5 * (w0 - w1 + w2)
                u[4 * i + 3, in_channel, out_channel] = w2


@compiled.kernel
def weight_tiles_adjoint(du, gw):
    """gw (O, C, 3, 3) = G^T du G for each (input, output) channel pair of du (16, C, O),
    summed in float64: the adjoint of weight_tiles."""
    c, o = du.shape[1], du.shape[2]
    rows = np.empty((4, 3))
    for out_channel in range(o):
        for in_channel in range(c):
            for i in range(4):  # G^T across each row: d0 + (d1 + d2) / 2, (d1 - d2) / 2, (d1 + d2) / 2 + d3
                d0 = np.float64(du[4 * i, in_channel, out_channel])
                d1 = np.float64(du[4 * i + 1, in_channel, out_channel])
                d2 = np.float64(du[4 * i + 2, in_channel, out_channel])
                d3 = np.float64(du[4 * i + 3, in_channel, out_channel])
                rows[i, 0] = d0 + 0.5 * (d1 + d2)
                rows[i, 1] = 0.5 * (d1 - d2)
                rows[i, 2] = 0.5 * (d1 + d2) + d3
            target = gw[out_channel, in_channel]
            for j in range(3):  # then G^T down each column
                d0, d1, d2, d3 = rows[0, j], rows[1, j], rows[2, j], rows[3, j]
                target[0, j] = d0 + 0.5 * (d1 + d2)
                target[1, j] = 0.5 * (d1 - d2)
                target[2, j] = 0.5 * (d1 + d2) + d3


# The transforms run in two stages of simple loops (two or three loads, one store), each
# vectorised over the channels: loops making all 16 values of a tile at once are not (too
# many possibly overlapping arrays for LLVM's run-time checks), and ran 3x slower.

@compiled.kernel
def input_tiles(xpad, v, first, tiles_h, tiles_w):
    """v (16, tiles, C) = B^T d B of every 4x4 tile d (2 apart) of images first, first+1, ...
    of xpad (N, Hp, Wp, C); v's first axis is the position in the 4x4 tile, row-major."""
    wp, c = xpad.shape[2], xpad.shape[3]
    rows = np.empty((4, wp, c), dtype=xpad.dtype)  # B^T applied down one row of tiles
    t = 0
    for b in range(first, first + v.shape[1] // (tiles_h * tiles_w)):
        image = xpad[b]
        for ty in range(tiles_h):
            r0, r1, r2, r3 = image[2 * ty], image[2 * ty + 1], image[2 * ty + 2], image[2 * ty + 3]
            for x in range(wp):
                for ch in range(c):
                    rows[0, x, ch] = r0[x, ch] - r2[x, ch]
                for ch in range(c):
                    rows[1, x, ch] = r1[x, ch] + r2[x, ch]
                for ch in range(c):
                    rows[2, x, ch] = r2[x, ch] - r1[x, ch]
                for ch in range(c):
                    rows[3, x, ch] = r1[x, ch] - r3[x, ch]
            for i in range(4):  # then B across: columns (0 - 2, 1 + 2, 2 - 1, 1 - 3) of each tile
                row = rows[i]
                v0, v1, v2, v3 = v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]
                for tx in range(tiles_w):
                    s0, s1, s2, s3 = row[2 * tx], row[2 * tx + 1], row[2 * tx + 2], row[2 * tx + 3]
                    target = t + tx
                    for ch in range(c):
                        v0[target, ch] = s0[ch] - s2[ch]
                    for ch in range(c):
                        v1[target, ch] = s1[ch] + s2[ch]
                    for ch in range(c):
                        v2[target, ch] = s2[ch] - s1[ch]
                    for ch in range(c):
                        v3[target, ch] = s1[ch] - s3[ch]
            t += tiles_w


@compiled.kernel
def output_tiles(m, out, first, tiles_h, tiles_w, oh, ow):
    """out's rows of images first, first+1, ... (out is (N*OH*OW, O)) = A^T m A of each
    tile's 16 products m (16, tiles, O): the 2x2 outputs of the tile (those inside OH x OW)."""
    o = m.shape[2]
    rows = np.empty((8, tiles_w, o), dtype=m.dtype)  # A^T applied down one row of tiles
    t = 0
    for b in range(first, first + m.shape[1] // (tiles_h * tiles_w)):
        for ty in range(tiles_h):
            y = 2 * ty
            for j in range(4):  # rows (0 + 1 + 2) and (1 - 2 - 3) of each tile column j
                m0, m1, m2, m3 = m[j, t:t + tiles_w], m[4 + j, t:t + tiles_w], m[8 + j, t:t + tiles_w], \
                    m[12 + j, t:t + tiles_w]
                top, bottom = rows[j], rows[4 + j]
                for tx in range(tiles_w):
                    for ch in range(o):
                        top[tx, ch] = m0[tx, ch] + m1[tx, ch] + m2[tx, ch]
                    for ch in range(o):
                        bottom[tx, ch] = m1[tx, ch] - m2[tx, ch] - m3[tx, ch]
            for i in range(2):  # then A across: columns (0 + 1 + 2) and (1 - 2 - 3)
                if y + i >= oh:
                    break
                p0, p1, p2, p3 = rows[4 * i], rows[4 * i + 1], rows[4 * i + 2], rows[4 * i + 3]
                base = (b * oh + y + i) * ow
                for tx in range(tiles_w):
                    left = out[base + 2 * tx]
                    for ch in range(o):
                        left[ch] = p0[tx, ch] + p1[tx, ch] + p2[tx, ch]
                    if 2 * tx + 1 < ow:
                        right = out[base + 2 * tx + 1]
                        for ch in range(o):
                            right[ch] = p1[tx, ch] - p2[tx, ch] - p3[tx, ch]
            t += tiles_w


@compiled.kernel
def output_tiles_adjoint(gy, dm, first, tiles_h, tiles_w, oh, ow):
    """dm (16, tiles, O) = A gy_tile A^T for each tile's 2x2 block of the output gradient
    gy (N*OH*OW, O) of images first, first+1, ... (outputs past OH x OW count as zeros): the
    adjoint of output_tiles."""
    o = gy.shape[1]
    rows = np.empty((4, 2, o), dtype=gy.dtype)  # A applied down one tile: rows g0, g0 + g1, g0 - g1, -g1
    t = 0
    for b in range(first, first + dm.shape[1] // (tiles_h * tiles_w)):
        for ty in range(tiles_h):
            y = 2 * ty
            for tx in range(tiles_w):
                x = 2 * tx
                for q in range(2):
                    if x + q >= ow:
                        for i in range(4):
                            for ch in range(o):
                                rows[i, q, ch] = 0.0
                        continue
                    top = gy[(b * oh + y) * ow + x + q]
                    if y + 1 < oh:
                        bottom = gy[(b * oh + y + 1) * ow + x + q]
                        for ch in range(o):
                            rows[0, q, ch] = top[ch]
                        for ch in range(o):
                            rows[1, q, ch] = top[ch] + bottom[ch]
                        for ch in range(o):
                            rows[2, q, ch] = top[ch] - bottom[ch]
                        for ch in range(o):
                            rows[3, q, ch] = -bottom[ch]
                    else:
                        for ch in range(o):
                            rows[0, q, ch] = top[ch]
                            rows[1, q, ch] = top[ch]
                            rows[2, q, ch] = top[ch]
                            rows[3, q, ch] = 0.0
                for i in range(4):  # then A^T across: columns g0, g0 + g1, g0 - g1, -g1
                    left, right = rows[i, 0], rows[i, 1]
                    d0, d1, d2, d3 = dm[4 * i, t], dm[4 * i + 1, t], dm[4 * i + 2, t], dm[4 * i + 3, t]
                    for ch in range(o):
                        d0[ch] = left[ch]
                    for ch in range(o):
                        d1[ch] = left[ch] + right[ch]
                    for ch in range(o):
                        d2[ch] = left[ch] - right[ch]
                    for ch in range(o):
                        d3[ch] = -right[ch]
                t += 1
