"""Kernel chunks on several threads (core/lanes.py): every chunk once, BLAS on one thread
meanwhile and restored after, sums in chunk order, and the same results on any number of
threads."""
import os
import random
import threading
import time

import numpy as np
import pytest

import easyfit as ef
from easyfit.core import lanes, threads
from easyfit.nn import functional as F
from easyfit.nn.functional import normalization

needs_openblas = pytest.mark.skipif(threads.get_num_threads() is None, reason="no OpenBLAS to set")


@pytest.fixture
def two_lanes(monkeypatch):
    """Two lanes, and OpenBLAS on two threads (restored after)."""
    if threads.get_num_threads() is None:
        pytest.skip("no OpenBLAS to set")
    monkeypatch.setattr(lanes, "count", lambda: 2)
    before = threads.get_num_threads()
    threads.set_raw(2)
    yield
    threads.set_raw(before)


def test_every_chunk_runs_once_with_blas_on_one_thread(two_lanes):
    seen, blas, names, states = [], [], set(), []

    def make_state():
        states.append(object())
        return states[-1]

    def work(state, index, chunk):
        seen.append((index, chunk))
        blas.append(threads.get_num_threads())
        names.add(threading.current_thread().name)
        time.sleep(0.002)   # long enough for the second lane to take chunks too
    chunks = [(i, i + 1) for i in range(40)]
    lanes.run(work, chunks, make_state)
    assert sorted(seen) == list(enumerate(chunks))
    assert set(blas) == {1}
    assert len(states) == 2 and len(names) == 2
    assert threads.get_num_threads() == 2


def test_a_single_chunk_keeps_blas_threads(two_lanes):
    """One chunk (one large image) cannot be shared: its product keeps BLAS's threads
    instead of running on one."""
    seen = []
    lanes.run(lambda state, index, chunk: seen.append(threads.get_num_threads()), [(0, 1)])
    assert seen == [2]


def test_an_error_in_a_lane_reaches_the_caller_and_blas_is_restored(two_lanes):
    def work(state, index, chunk):
        if index == 5:
            raise ValueError("chunk 5")
    with pytest.raises(ValueError, match="chunk 5"):
        lanes.run(work, list(range(12)))
    assert threads.get_num_threads() == 2


def test_ordered_sum_adds_in_chunk_order_whatever_the_arrival():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(50).astype(np.float32) * 10.0 ** rng.integers(-3, 4) for _ in range(30)]
    expected = np.zeros(50, np.float32)
    for part in parts:
        expected += part
    order = list(range(30))
    random.Random(1).shuffle(order)
    total = lanes.OrderedSum(np.zeros(50, np.float32))
    for index in order:
        total.add(index, parts[index])
    np.testing.assert_array_equal(total.total, expected)


def test_blocks_depend_on_the_sizes_alone():
    assert lanes.blocks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert lanes.blocks(3, 0) == [slice(0, 1), slice(1, 2), slice(2, 3)]   # at least one item a block
    assert lanes.blocks(0, 4) == []


def test_run_sums_adds_each_chunks_partials_in_chunk_order(two_lanes):
    rng = np.random.default_rng(12)
    values = rng.standard_normal(40) * 10.0 ** rng.integers(-6, 7, 40)
    chunks = lanes.blocks(40, 3)

    def work(chunk, total, count):
        time.sleep(0.001 * (chunk.start % 2))   # chunks finish out of order
        total += values[chunk].sum()
        count += chunk.stop - chunk.start
    total, count = lanes.run_sums(work, chunks, (), ())
    expected = 0.0
    for chunk in chunks:
        expected += values[chunk].sum()
    assert total == expected and count == 40


@needs_openblas
@pytest.mark.parametrize("channels", [8, 32], ids=["im2col", "winograd"])
def test_a_conv_is_the_same_bit_for_bit_on_one_and_two_threads(channels, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, channels, 12, 12)).astype(np.float32)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        xt, wt = ef.tensor(x, requires_grad=True), ef.tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, padding=1)
        y.backward(ef.tensor(np.cos(y.numpy())))
        results.append((y.numpy(), xt.grad.numpy(), wt.grad.numpy()))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def _conv_in_child(queue):
    rng = np.random.default_rng(4)
    x = ef.tensor(rng.standard_normal((8, 16, 32, 32)).astype(np.float32))  # several chunks
    w = ef.tensor(rng.standard_normal((16, 16, 3, 3)).astype(np.float32))
    queue.put(F.conv2d(x, w, padding=1).numpy())


@needs_openblas
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_lanes_of_its_own(monkeypatch):
    """After a conv has started the lane threads, a forked child (a data-loader worker) has
    none of them: it starts its own instead of waiting forever for the parent's."""
    import multiprocessing
    monkeypatch.setattr(lanes, "count", lambda: 2)
    started = []
    monkeypatch.setattr(lanes, "_executor", lambda size, f=lanes._executor: started.append(size) or f(size))
    expected = []
    _conv_in_child(type("Q", (), {"put": staticmethod(expected.append)}))   # starts the pool here
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_conv_in_child, args=(queue,))
    assert started
    child.start()
    try:
        result = queue.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(result, expected[0])


@needs_openblas
def test_channels_last_batch_norm_runs_on_lanes_the_same_on_any_number(monkeypatch, lane_threads):
    """batch_norm of a conv's (channels-last) output splits its rows into blocks on lanes;
    its statistics add the blocks in order, so one and two lanes agree bit for bit."""
    pytest.importorskip("numba")
    from easyfit import nn
    monkeypatch.setattr(normalization, "_LANE_BLOCK_FLOATS", 1 << 14)   # several blocks
    monkeypatch.setattr(normalization, "_BATCH_NORM_ONE_BLOCK_FLOATS", 1 << 13)
    rng = np.random.default_rng(5)
    x_array = np.ascontiguousarray(rng.standard_normal((8, 24, 24, 32)).astype(np.float32) * 3 + 1)
    seed = ef.tensor(rng.standard_normal((8, 32, 24, 24)).astype(np.float32))
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        layer = nn.BatchNorm2d(32)
        x = ef.tensor(x_array, requires_grad=True)
        y = layer(ef.transpose(x, (0, 3, 1, 2)))
        y.backward(seed)
        results.append((y.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.running_var.numpy()))
    assert len(lane_threads) == 2    # the two-lane run used a second thread
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@needs_openblas
def test_a_mid_sized_channels_last_batch_norm_stays_on_the_calling_thread(monkeypatch, lane_threads):
    """Batch norm's row kernels only stream memory: up to _BATCH_NORM_ONE_BLOCK_FLOATS a
    second lane's wake-up costs more than it saves, so a ResNet-sized input (32x32x32x32)
    is one block on the calling thread, and a larger one still splits."""
    pytest.importorskip("numba")
    from easyfit import nn
    monkeypatch.setattr(lanes, "count", lambda: 2)
    rng = np.random.default_rng(7)
    for shape, threads_used in (((32, 32, 32, 32), 1), ((16, 64, 64, 32), 2)):
        lane_threads.clear()
        x = ef.tensor(np.ascontiguousarray(rng.standard_normal(shape).astype(np.float32)), requires_grad=True)
        layer = nn.BatchNorm2d(shape[-1])
        layer(ef.transpose(x, (0, 3, 1, 2))).sum().backward()
        assert len(lane_threads) == threads_used, shape
        assert x.grad is not None


@needs_openblas
def test_layer_norm_runs_on_lanes_the_same_on_any_number(monkeypatch, lane_threads):
    """layer_norm's rows are independent: blocks of them run on lanes, and the weight and
    bias gradients add the blocks' sums in order, so one and two lanes agree bit for bit."""
    pytest.importorskip("numba")
    from easyfit import nn
    monkeypatch.setattr(normalization, "_LANE_BLOCK_FLOATS", 1 << 14)   # several blocks
    rng = np.random.default_rng(6)
    x_array = rng.standard_normal((16, 24, 128)).astype(np.float32) * 2 + 0.5
    seed = ef.tensor(rng.standard_normal(x_array.shape).astype(np.float32))
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        layer = nn.LayerNorm(128)
        x = ef.tensor(x_array, requires_grad=True)
        y = layer(x)
        y.backward(seed)
        results.append((y.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()))
    assert len(lane_threads) == 2
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@needs_openblas
@pytest.mark.parametrize("groups", [16, 4], ids=["depthwise", "grouped"])
def test_plane_kernels_run_on_lanes_the_same_on_any_number(groups, monkeypatch, lane_threads):
    """Depthwise and grouped convs run their compiled plane kernels in blocks of images on
    lanes; the weight and bias gradients add the blocks' sums in order."""
    pytest.importorskip("numba")
    from easyfit.nn.functional import conv
    monkeypatch.setattr(conv, "_IMAGE_BLOCK_FLOATS", 1 << 11)   # blocks of one image
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        xt, wt, bt = (ef.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, padding=1, groups=groups)
        y.backward(ef.tensor(np.cos(y.numpy())))
        results.append((y.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()))
    assert len(lane_threads) == 2
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@needs_openblas
def test_max_pool_runs_on_lanes_the_same_on_any_number(monkeypatch, lane_threads):
    """max_pool2d of a conv's (channels-last) output runs its compiled kernels in blocks of
    images on lanes."""
    pytest.importorskip("numba")
    from easyfit.nn.functional import conv
    monkeypatch.setattr(conv, "_IMAGE_BLOCK_FLOATS", 1 << 11)
    rng = np.random.default_rng(10)
    x = np.ascontiguousarray(rng.standard_normal((6, 10, 10, 16)).astype(np.float32)).transpose(0, 3, 1, 2)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        for kernel_size, stride in ((2, 2), (3, 1)):   # windows that tile the input, and overlapping ones
            xt = ef.tensor(x, requires_grad=True)
            y = F.max_pool2d(xt, kernel_size, stride)
            y.backward(ef.tensor(np.sin(y.numpy())))
            results.append((n, kernel_size, y.numpy(), xt.grad.numpy()))
    assert len(lane_threads) == 2
    for (_, k1, *one), (_, k2, *two) in zip(results[:2], results[2:]):
        assert k1 == k2
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)


@needs_openblas
def test_a_one_channel_input_gradient_alone_runs_on_lanes_the_same_on_any_number(monkeypatch, lane_threads):
    """A 1-channel input fits one chunk; its input gradient alone (nothing summed over
    chunks: a transposed conv to one channel) is cut into several, so both lanes work,
    with the same results as one."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    results = []
    for n in (1, 2):
        monkeypatch.setattr(lanes, "count", lambda n=n: n)
        with ef.no_grad():
            results.append(F.conv_transpose2d(ef.tensor(x), ef.tensor(w), padding=1).numpy())
    assert results[0].shape == (8, 1, 14, 14)
    assert len(lane_threads) == 2
    np.testing.assert_array_equal(*results)


@pytest.mark.parametrize("shape", [(8, 32, 32, 32), (24, 16, 28, 28)])   # 4 KB planes (skewed first) and others
def test_a_large_transpose_to_channels_last_runs_on_lanes(shape, monkeypatch, lane_threads):
    """The NCHW -> padded NHWC copy of a conv's input or output gradient is split into
    blocks of images on lanes; the copy is the same as NumPy's own transpose."""
    from easyfit.nn.functional import conv
    monkeypatch.setattr(lanes, "count", lambda: 2)
    monkeypatch.setattr(conv, "_IMAGE_BLOCK_FLOATS", 1 << 16)   # blocks of 2 and 5 images
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    n, c, h, w = shape
    out = np.full((n, h + 2, w + 4, c), 7.0, dtype=np.float32)
    conv._copy_channels_last(x, out, 1, 2)
    expected = np.full_like(out, 7.0)
    expected[:, 1:1 + h, 2:2 + w] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, expected)
    assert len(lane_threads) == 2


def test_a_few_conv_chunks_are_equal_and_a_power_of_two_in_number():
    """Two or four lanes finish a conv's chunks together: 14 + 14 + 4 images (one lane
    idle a third of the time) become 4 x 8; many chunks, or one, keep their sizes."""
    from easyfit.nn.functional.conv import _CHUNK_FLOATS, _chunks
    per_image = _CHUNK_FLOATS // 14          # 14 images fit a chunk
    assert _chunks(32, per_image, 1) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert _chunks(20, per_image, 1) == [(0, 10), (10, 20)]
    assert _chunks(3, _CHUNK_FLOATS, 1) == [(0, 1), (1, 2), (2, 3)]   # never more chunks than images
    assert _chunks(10, per_image, 1) == [(0, 10)]
    assert len(_chunks(140, per_image, 1)) == 10
