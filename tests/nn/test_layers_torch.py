"""Every layer against PyTorch: same weights (through state_dict as NumPy arrays), same
outputs, input gradients, parameter gradients and running statistics."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn

torch = pytest.importorskip("torch")


def load_from_torch(ef_module, torch_module):
    ef_module.load_state_dict({k: v.detach().numpy().copy() for k, v in torch_module.state_dict().items()})


def run_both(ef_module, torch_module, x, atol=1e-5, rtol=1e-4, train=True, integer_input=False, seed=0):
    """Forward and backward (with a random output gradient) in both; compare everything."""
    load_from_torch(ef_module, torch_module)
    ef_module.train(train)
    torch_module.train(train)
    if integer_input:
        x_ef, x_t = ef.tensor(x), torch.tensor(x)
    else:
        x_ef = ef.tensor(x, requires_grad=True)
        x_t = torch.tensor(x, requires_grad=True)
    y_ef, y_t = ef_module(x_ef), torch_module(x_t)
    np.testing.assert_allclose(y_ef.numpy(), y_t.detach().numpy(), atol=atol, rtol=rtol)
    grad_out = np.random.default_rng(seed).standard_normal(y_t.shape).astype(x.dtype if not integer_input
                                                                               else np.float32)
    y_ef.backward(ef.tensor(grad_out))
    y_t.backward(torch.tensor(grad_out))
    if not integer_input:
        np.testing.assert_allclose(x_ef.grad.numpy(), x_t.grad.numpy(), atol=atol, rtol=rtol)
    torch_params = dict(torch_module.named_parameters())
    ef_params = dict(ef_module.named_parameters())
    assert list(ef_params) == list(torch_params)
    for name, p in ef_params.items():
        np.testing.assert_allclose(p.grad.numpy(), torch_params[name].grad.numpy(), atol=atol, rtol=rtol,
                                   err_msg=name)
    torch_state = torch_module.state_dict()
    assert list(ef_module.state_dict()) == list(torch_state)
    for name, value in ef_module.state_dict().items():
        np.testing.assert_allclose(value.numpy(), torch_state[name].numpy(), atol=atol, rtol=rtol, err_msg=name)
    return y_ef


def randn(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)])
def test_linear(shape):
    run_both(nn.Linear(7, 4), torch.nn.Linear(7, 4), randn(*shape))


def test_linear_without_bias():
    run_both(nn.Linear(7, 4, bias=False), torch.nn.Linear(7, 4, bias=False), randn(3, 7))


@pytest.mark.parametrize("ours, theirs", [
    (nn.ReLU(), torch.nn.ReLU()), (nn.Tanh(), torch.nn.Tanh()), (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh")), (nn.SiLU(), torch.nn.SiLU()),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)), (nn.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)), (nn.Identity(), torch.nn.Identity()),
    (nn.Flatten(), torch.nn.Flatten()),
], ids=lambda m: repr(m))
def test_activations_and_reshapes(ours, theirs):
    run_both(ours, theirs, randn(4, 6, 3) * 3)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 0)),
    dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=3, groups=2, padding=1),
    dict(kernel_size=1, stride=1),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=2, stride=3, bias=False),
    dict(kernel_size=1, padding=1),               # stride 1, padding wider than the kernel: col2im
    dict(kernel_size=(2, 3), dilation=(2, 1)),    # stride 1, uneven kernel
], ids=str)
@pytest.mark.parametrize("channels", [(4, 6), (6, 4)], ids=["widening", "narrowing"])
def test_conv2d(kwargs, channels):
    """Both ways to the input gradient: col2im (widening) and, at stride 1, a convolution (narrowing)."""
    cin, cout = channels
    run_both(nn.Conv2d(cin, cout, **kwargs), torch.nn.Conv2d(cin, cout, **kwargs), randn(2, cin, 9, 8), atol=1e-4)


@pytest.mark.parametrize("frozen", [None, "weight", "bias", "input"])
@pytest.mark.parametrize("layout", ["NCHW", "channels-last"])
def test_few_input_channels_gradients_from_either_layout(layout, frozen):
    """A first layer's gradients come from per-image products over the output gradient as
    it is stored (a later conv hands one back channels-last), with the bias's gradient
    from the same product as the weight's; each part frozen in turn."""
    ours, theirs = nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1)
    load_from_torch(ours, theirs)
    for module in (ours, theirs):
        if frozen in ("weight", "bias"):
            getattr(module, frozen).requires_grad_(False)
    x = randn(4, 3, 10, 7)
    grad_out = randn(4, 8, 10, 7, seed=2)
    if layout == "channels-last":
        grad_out = np.ascontiguousarray(grad_out.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    x_ef, x_t = ef.tensor(x, requires_grad=frozen != "input"), torch.tensor(x, requires_grad=frozen != "input")
    ours(x_ef).backward(ef.tensor(grad_out))
    theirs(x_t).backward(torch.tensor(grad_out))
    pairs = [(p.grad, q.grad) for p, q in zip(ours.parameters(), theirs.parameters()) if q.requires_grad]
    if frozen != "input":
        pairs.append((x_ef.grad, x_t.grad))
    assert len(pairs) == 3 - (frozen is not None)
    for mine, reference in pairs:
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("channels, kwargs", [
    (1, dict(kernel_size=3, padding=1)),
    (3, dict(kernel_size=3, stride=2, padding=1)),
    (1, dict(kernel_size=5, dilation=2, padding=3, bias=False)),
], ids=str)
def test_conv2d_on_few_input_channels(channels, kwargs):
    """First layers (windows of at most 32 elements) gather their windows channels-first."""
    run_both(nn.Conv2d(channels, 6, **kwargs), torch.nn.Conv2d(channels, 6, **kwargs), randn(3, channels, 11, 9),
             atol=1e-4)


def test_depthwise_conv2d_with_channel_multiplier():
    """Two outputs per input channel: the grouped-matmul path."""
    run_both(nn.Conv2d(4, 8, 3, groups=4, padding=1), torch.nn.Conv2d(4, 8, 3, groups=4, padding=1),
             randn(2, 4, 6, 6), atol=1e-4)


@pytest.mark.parametrize("kernel", ["block-diagonal", "per group"])
@pytest.mark.parametrize("channels, groups, kwargs", [
    (32, 4, dict(kernel_size=3, padding=1)),                   # the benchmark's shape of groups
    (16, 2, dict(kernel_size=3, stride=2, padding=1)),         # input gradient by folding
    (12, 3, dict(kernel_size=(3, 2), dilation=2, padding=(2, 1), bias=False)),
], ids=str)
def test_grouped_conv2d_both_kernels(monkeypatch, kernel, channels, groups, kwargs):
    """Narrow groups run as one block-diagonal matmul, others group by group."""
    from easyfit.nn.functional import conv as conv_functional
    if kernel == "per group":
        monkeypatch.setattr(conv_functional, "_BLOCK_DIAGONAL_MAX_GROUPS", 1)
    monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", 4000)  # several batch chunks
    run_both(nn.Conv2d(channels, channels, groups=groups, **kwargs),
             torch.nn.Conv2d(channels, channels, groups=groups, **kwargs), randn(3, channels, 9, 8), atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, padding=1),                 # input gradient by folding
    dict(kernel_size=(3, 2), dilation=2, padding=(2, 1), bias=False),
    dict(kernel_size=5),
], ids=str)
@pytest.mark.parametrize("chunk_floats", [None, 1], ids=["one chunk", "an image per chunk"])
def test_depthwise_conv2d(kwargs, chunk_floats, monkeypatch):
    """One channel per group: shifted multiply-adds instead of matmuls."""
    from easyfit.nn.functional import conv as conv_functional
    if chunk_floats:
        monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", chunk_floats)
    run_both(nn.Conv2d(5, 5, groups=5, **kwargs), torch.nn.Conv2d(5, 5, groups=5, **kwargs), randn(3, 5, 9, 8),
             atol=1e-4)


def test_conv_stack_in_channels_last_memory():
    """Two convs and a pool in a row: the second sees the first's channels-last view."""
    ours = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 4, 3),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Conv2d(5, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    run_both(ours, theirs, randn(3, 3, 10, 10), atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(3, 2), stride=1),
    dict(kernel_size=3, stride=2, dilation=2),
], ids=str)
@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_max_pool2d(kwargs, layout):
    """Both memory orders: an (N, C, H, W) array pools as N*C one-channel images, a conv's
    channels-last output as N images of C channels."""
    x = randn(2, 3, 9, 8)
    run_both(nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), channels_last(x) if layout == "channels-last" else x)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=3), dict(kernel_size=2, stride=3),
                                    dict(kernel_size=3, stride=1, padding=1)], ids=str)
@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_max_pool2d_in_many_batch_chunks(monkeypatch, kwargs, layout):
    """Pooling runs a few images at a time; one image per chunk, with ties (ReLU zeros) to route."""
    from easyfit.nn.functional import conv as conv_functional
    monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", 1)
    x = np.maximum(randn(5, 3, 7, 6), 0).astype(np.float32)
    run_both(nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs), channels_last(x) if layout == "channels-last" else x)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), dict(kernel_size=(3, 2), stride=1),
], ids=str)
def test_avg_pool2d(kwargs):
    run_both(nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs), randn(2, 3, 9, 8))


@pytest.mark.parametrize("size", [1, 3, (2, 4), (5, 3), (None, 2)], ids=str)
def test_adaptive_avg_pool2d(size):
    run_both(nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), randn(2, 3, 9, 8))


def channels_last(x):
    """The same NCHW array stored as NHWC in memory, as a conv's output is."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm2d(train, layout):
    """Both memory layouts: batch_norm works on (N, C, H*W) rows or on a wide NHWC view."""
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
        theirs.running_mean.uniform_(-1, 1)
        theirs.running_var.uniform_(0.5, 2)
    x = randn(4, 3, 5, 6) * 2 + 1
    run_both(ours, theirs, channels_last(x) if layout == "channels-last" else x, train=train, atol=1e-4)
    # a second step continues the running statistics identically
    if train:
        x = randn(4, 3, 5, 6, seed=7)
        ours(ef.tensor(x))
        theirs(torch.tensor(x))
        for name, value in ours.state_dict().items():
            np.testing.assert_allclose(value.numpy(), theirs.state_dict()[name].numpy(), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm1d(shape, train):
    run_both(nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3), randn(*shape) + 2, train=train, atol=1e-4)


@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
def test_batch_norm2d_large_mean(layout):
    """Statistics and gradients stay accurate when the mean dwarfs the spread (1000 +- 1)."""
    ours, theirs = nn.BatchNorm2d(5), torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    x = (randn(6, 5, 7, 4) + 1000).astype(np.float32)
    run_both(ours, theirs, channels_last(x) if layout == "channels-last" else x, atol=2e-3, rtol=1e-3)


def test_batch_norm_variants():
    run_both(nn.BatchNorm1d(3, affine=False), torch.nn.BatchNorm1d(3, affine=False), randn(6, 3), atol=1e-4)
    run_both(nn.BatchNorm2d(3, track_running_stats=False), torch.nn.BatchNorm2d(3, track_running_stats=False),
             randn(2, 3, 4, 4), train=False, atol=1e-4)
    run_both(nn.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None), randn(6, 3), atol=1e-4)


@pytest.mark.parametrize("normalized_shape, shape", [(6, (4, 6)), ((3, 6), (2, 3, 6)), (6, (2, 5, 6))])
def test_layer_norm(normalized_shape, shape):
    theirs = torch.nn.LayerNorm(normalized_shape)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    run_both(nn.LayerNorm(normalized_shape), theirs, randn(*shape) * 3 + 1, atol=1e-4)


@pytest.mark.parametrize("affine", ["weight and bias", "weight only", "none"])
def test_layer_norm_many_row_blocks(affine):
    """Rows are normalized a cache-sized block at a time: 5,000 rows of 64 span three blocks."""
    from easyfit.nn.functional.normalization import LayerNormFunction
    assert 5000 * 64 > 2 * LayerNormFunction._BLOCK_FLOATS
    kwargs = dict(elementwise_affine=affine != "none", bias=affine == "weight and bias")
    theirs = torch.nn.LayerNorm(64, **kwargs)
    if affine != "none":
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-0.5, 0.5)
    run_both(nn.LayerNorm(64, **kwargs), theirs, randn(2, 2500, 64) * 3 + 1, atol=1e-4)


def test_layer_norm_without_affine():
    run_both(nn.LayerNorm(5, elementwise_affine=False), torch.nn.LayerNorm(5, elementwise_affine=False),
             randn(3, 5), atol=1e-4)


@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(padding_idx):
    indices = np.array([[0, 3, 3, 9], [9, 1, 0, 3]], dtype=np.int64)
    ours = nn.Embedding(10, 4, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(10, 4, padding_idx=padding_idx)
    run_both(ours, theirs, indices, integer_input=True)
    if padding_idx is not None:
        assert np.all(ours.weight.grad.numpy()[padding_idx] == 0)


def test_embedding_default_init_zeroes_padding_row():
    emb = nn.Embedding(50, 8, padding_idx=3)
    assert np.all(emb.weight.numpy()[3] == 0)
    assert 0.7 < emb.weight.numpy().std() < 1.3


def test_dropout_eval_is_identity_and_train_scales():
    layer = nn.Dropout(0.25)
    x = ef.ones(1000, 100)
    layer.eval()
    assert layer(x) is x
    layer.train()
    y = layer(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    ef.manual_seed(3)
    first = layer(x).numpy()
    ef.manual_seed(3)
    np.testing.assert_array_equal(first, layer(x).numpy())


def test_dropout_gradient_uses_the_same_mask():
    x = ef.randn(50, 20, requires_grad=True)
    y = nn.Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, y.numpy() != 0)


def test_pytorch_default_initialisation_ranges():
    linear = nn.Linear(100, 30)
    bound = 1 / np.sqrt(100)
    assert np.abs(linear.weight.numpy()).max() <= bound and np.abs(linear.bias.numpy()).max() <= bound
    assert np.abs(linear.weight.numpy()).max() > 0.9 * bound
    conv = nn.Conv2d(8, 16, 3, groups=2)
    bound = 1 / np.sqrt(4 * 9)
    assert np.abs(conv.weight.numpy()).max() <= bound and np.abs(conv.weight.numpy()).max() > 0.9 * bound
    assert conv.weight.shape == (16, 4, 3, 3)


def test_state_dict_moves_to_pytorch_unchanged():
    ours = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 4 * 4, 2))
    ours.train()
    ours(ef.randn(2, 3, 6, 6))  # move the running statistics away from their initial values
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = randn(2, 3, 6, 6)
    np.testing.assert_allclose(ours(ef.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), atol=1e-5)


def test_load_torch_tensors_directly():
    theirs = torch.nn.Linear(3, 2)
    ours = nn.Linear(3, 2)
    ours.load_state_dict(theirs.state_dict())
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_in_many_batch_chunks(monkeypatch, groups, stride):
    """Large batches run chunk by chunk; force one image per chunk and compare again."""
    from easyfit.nn.functional import conv as conv_functional
    monkeypatch.setattr(conv_functional, "_CHUNK_FLOATS", 1)
    run_both(nn.Conv2d(6, 4, 3, stride=stride, padding=1, groups=groups),
             torch.nn.Conv2d(6, 4, 3, stride=stride, padding=1, groups=groups), randn(5, 6, 7, 7), atol=1e-4)
    run_both(nn.Conv2d(4, 6, 3, stride=stride, padding=1, groups=groups),
             torch.nn.Conv2d(4, 6, 3, stride=stride, padding=1, groups=groups), randn(5, 4, 7, 7), atol=1e-4)


def test_embedding_from_pretrained_and_padding_idx_like_torch():
    table = randn(6, 3)
    indices = np.array([[0, 2, 5], [2, 2, 1]], dtype=np.int64)
    for freeze in (True, False):
        ours = nn.Embedding.from_pretrained(ef.tensor(table), freeze=freeze, padding_idx=2)
        theirs = torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=freeze, padding_idx=2)
        assert ours.weight.requires_grad == theirs.weight.requires_grad == (not freeze)
        np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())  # row 2 kept
        out, t_out = ours(ef.tensor(indices)), theirs(torch.tensor(indices))
        np.testing.assert_array_equal(out.numpy(), t_out.detach().numpy())
        if not freeze:
            out.sum().backward()
            t_out.sum().backward()
            np.testing.assert_array_equal(ours.weight.grad.numpy(), theirs.weight.grad.numpy())
    assert list(nn.Embedding(4, 2, sparse=True).state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="max_norm and scale_grad_by_freq are not implemented"):
        nn.Embedding(4, 2, max_norm=1.0)
