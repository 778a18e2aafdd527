"""Fused ops against finite differences in float64: first and second derivatives."""
import numpy as np
import pytest

import easyfit as ef
from easyfit.nn import functional as F
from easyfit.nn.functional import conv as conv_functional


def t(*shape, seed=0, scale=1.0, shift=0.0):
    data = np.random.default_rng(seed).standard_normal(shape) * scale + shift
    return ef.tensor(data, dtype=np.float64, requires_grad=True)


def check(fn, *inputs, second=True, atol=1e-5):
    """gradcheck, then gradcheck of the backward itself as a function of (inputs, output grad):
    this covers every second derivative, including those with respect to the output gradient."""
    assert ef.gradcheck(fn, list(inputs), atol=atol)
    if not second:
        return
    out = fn(*inputs)
    seed = ef.tensor(np.random.default_rng(9).standard_normal(out.shape), requires_grad=True)

    def backward_of(*args):
        *xs, grad_out = args
        grads = ef.grad(fn(*xs), list(xs), grad_outputs=grad_out, create_graph=True, allow_unused=True)
        return [g if g is not None else ef.zeros(x.shape, dtype=np.float64) for g, x in zip(grads, xs)]
    assert ef.gradcheck(backward_of, list(inputs) + [seed], atol=atol)


def test_linear():
    check(lambda x, w, b: F.linear(x, w, b), t(3, 4), t(2, 4, seed=1), t(2, seed=2))
    check(lambda x, w: F.linear(x, w), t(2, 2, 3), t(2, 3, seed=1))


@pytest.mark.parametrize("kwargs", [
    dict(), dict(padding=1), dict(stride=2, padding=1), dict(dilation=2, padding=1), dict(groups=2),
], ids=str)
def test_conv2d(kwargs):
    x, w, b = t(2, 2, 5, 4), t(2, 2 // kwargs.get("groups", 1), 2, 2, seed=1), t(2, seed=2)
    check(lambda x, w, b: F.conv2d(x, w, b, **kwargs), x, w, b)


def test_max_pool2d():
    # distinct values so that the max is unique (finite differences are exact then)
    x = ef.tensor(np.random.default_rng(0).permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) / 10.0,
                  dtype=np.float64, requires_grad=True)
    check(lambda x: F.max_pool2d(x, 2), x)
    check(lambda x: F.max_pool2d(x, 3, stride=2, padding=1), x)
    # stored channels-last (a conv's output): pooled as images of C channels, not N*C of one
    # (the input is given as (N, H, W, C); its transpose is the channels-last view)
    x_nhwc = ef.tensor(np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)), requires_grad=True)
    assert not ef.transpose(x_nhwc, (0, 3, 1, 2)).numpy().flags.c_contiguous
    check(lambda x: F.max_pool2d(ef.transpose(x, (0, 3, 1, 2)), 3, stride=2, padding=1), x_nhwc)


def test_avg_pool2d():
    check(lambda x: F.avg_pool2d(x, 2), t(1, 2, 4, 4))
    check(lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False), t(1, 2, 5, 5))


def test_adaptive_avg_pool2d():
    check(lambda x: F.adaptive_avg_pool2d(x, (2, 3)), t(1, 2, 5, 4))


def test_batch_norm_train():
    rm, rv = ef.zeros(3, dtype=np.float64), ef.ones(3, dtype=np.float64)
    check(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=True), t(4, 3, 2, 2), t(3, seed=1, shift=1),
          t(3, seed=2))
    check(lambda x: F.batch_norm(x, None, None, training=True), t(5, 3))
    # 20 pixels per channel, stored channels-first: the (N, C, H*W) path
    check(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), t(2, 3, 4, 5), t(3, seed=1, shift=1),
          t(3, seed=2))


def test_batch_norm_eval():
    rm, rv = ef.tensor([0.1, -0.2], dtype=np.float64), ef.tensor([1.5, 0.5], dtype=np.float64)
    check(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), t(3, 2), t(2, seed=1), t(2, seed=2))


def test_layer_norm():
    check(lambda x, w, b: F.layer_norm(x, (2, 3), w, b), t(2, 2, 3), t(2, 3, seed=1, shift=1), t(2, 3, seed=2))
    check(lambda x: F.layer_norm(x, 4), t(3, 4))


@pytest.mark.parametrize("options", [
    {}, {"ignore_index": 1}, {"label_smoothing": 0.2}, {"weight": np.array([1.0, 2.0, 0.5])},
    {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.1},
], ids=str)
def test_cross_entropy_class_indices(options):
    target = ef.tensor([0, 2, 1, 1])
    check(lambda x: F.cross_entropy(x, target, **options), t(4, 3))


def test_cross_entropy_probabilities():
    probs = ef.tensor(np.random.default_rng(3).dirichlet(np.ones(3), size=4), requires_grad=True)
    check(lambda x, p: F.cross_entropy(x, p, label_smoothing=0.1), t(4, 3), probs)


def test_cross_entropy_spatial():
    target = ef.tensor(np.array([[[0, 1], [2, 2]]]))
    check(lambda x: F.cross_entropy(x, target), t(1, 3, 2, 2))


def test_nll_loss():
    check(lambda x: F.nll_loss(x, ef.tensor([0, 2, 1]), weight=ef.tensor([1.0, 2.0, 3.0])), t(3, 3))


def test_softmax_family():
    check(lambda x: F.softmax(x, axis=1), t(2, 4))
    check(lambda x: F.log_softmax(x, axis=0), t(3, 2))
    check(lambda x: F.logsumexp(x, axis=1), t(2, 3))
    check(lambda x: F.logsumexp(x, axis=(0, 1), keepdims=True), t(2, 3))


def test_gelu_and_erf():
    check(F.gelu, t(6, scale=2))
    check(F.erf, t(5))
    np.testing.assert_allclose(F.erf(ef.tensor([0.0, 0.5, 1.0, -2.0], dtype=np.float64)).numpy(),
                               [0.0, 0.5204998778, 0.8427007929, -0.9953222650], atol=2e-7)


def test_embedding():
    indices = np.array([[0, 2], [2, 3]])
    check(lambda w: F.embedding(indices, w), t(4, 3))


def test_embedding_padding_row_gets_no_gradient_at_any_order():
    indices = np.array([[0, 2], [2, 3]])
    w = t(4, 3)
    seed = ef.tensor(np.random.default_rng(1).standard_normal((2, 2, 3)), requires_grad=True)
    (g,) = ef.grad(F.embedding(indices, w, padding_idx=2), [w], grad_outputs=seed, create_graph=True)
    assert np.all(g.numpy()[2] == 0)
    expected = np.zeros((4, 3))
    np.add.at(expected, indices.reshape(-1), seed.numpy().reshape(-1, 3))
    expected[2] = 0
    np.testing.assert_allclose(g.numpy(), expected)
    # the gradient as a function of the output gradient: its own gradient skips the padding row too
    assert ef.gradcheck(lambda s: ef.grad(F.embedding(indices, w, padding_idx=2), [w], grad_outputs=s,
                                          create_graph=True)[0], [seed])


def test_bce_with_logits():
    y = ef.tensor(np.random.default_rng(3).random((2, 3)), requires_grad=True)
    check(lambda x, y: F.binary_cross_entropy_with_logits(x, y), t(2, 3, scale=2), y)
    check(lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=np.array([0.5, 1.0, 2.0])),
          t(2, 3, scale=2), y)


def test_bce_on_probabilities():
    p = ef.tensor(np.random.default_rng(4).uniform(0.2, 0.8, (2, 3)), requires_grad=True)
    y = ef.tensor(np.random.default_rng(5).random((2, 3)), requires_grad=True)
    check(lambda p, y: F.binary_cross_entropy(p, y), p, y)


def test_dropout_gradient():
    x = t(4, 5)
    ef.manual_seed(1)
    mask = F.dropout(ef.ones(4, 5, dtype=np.float64), 0.5).numpy()

    def fn(x):
        ef.manual_seed(1)
        return F.dropout(x, 0.5)
    check(fn, x)
    np.testing.assert_array_equal(fn(x).numpy(), x.numpy() * mask)


def test_conv2d_second_derivatives_in_batch_chunks(monkeypatch):
    monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", 1)
    check(lambda x, w: F.conv2d(x, w, padding=1, groups=2), t(3, 2, 3, 3), t(4, 1, 2, 2, seed=1))
    check(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=3), t(2, 3, 5, 4), t(3, 1, 3, 3, seed=1))


@pytest.mark.parametrize("kernel", ["block-diagonal", "per group"])
def test_grouped_conv2d_both_kernels(monkeypatch, kernel):
    """Narrow groups run as one block-diagonal matmul, others group by group: check both,
    with the input gradient by folding (stride 2) and as a convolution (stride 1)."""
    if kernel == "per group":
        monkeypatch.setattr(conv_functional, "_BLOCK_DIAGONAL_MAX_GROUPS", 1)
    assert conv_functional._grouped_as_dense((4, 2, 2, 2), conv_functional._ConvGeometry(
        3, 3, (2, 2), (1, 1), (1, 1), (1, 1), groups=2)) == (kernel == "block-diagonal")
    check(lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2), t(2, 4, 3, 3), t(4, 2, 2, 2, seed=1), t(4, seed=2))
    check(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=3), t(2, 6, 5, 4), t(9, 2, 3, 3, seed=1))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)], ids=str)
def test_max_pool2d_without_grad_gives_the_same_maxima(kwargs):
    """Under no_grad the forward skips recording the winners; the maxima must not change."""
    x = ef.tensor(np.maximum(np.random.default_rng(3).standard_normal((3, 2, 7, 6)), 0), dtype=np.float32,
                  requires_grad=True)
    with_graph = F.max_pool2d(x, **kwargs)
    with ef.no_grad():
        without = F.max_pool2d(x, **kwargs)
    assert without.creator is None
    np.testing.assert_array_equal(without.numpy(), with_graph.numpy())
