"""Conv1d, ConvTranspose2d, Upsample / interpolate and GroupNorm against PyTorch (outputs,
input and parameter gradients, initialisation bounds) and finite differences."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.nn import functional as F


def randn(*shape, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_both(torch, ours, theirs, x, rtol=1e-9, atol=1e-10, **kwargs):
    """Load torch's weights into ours; compare forward, input and parameter gradients."""
    state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    assert list(state) == list(ours.state_dict())
    ours.load_state_dict(state)
    x_ef, x_t = ef.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y_ef, y_t = ours(x_ef, **kwargs), theirs(x_t, **kwargs)
    assert y_ef.shape == tuple(y_t.shape)
    np.testing.assert_allclose(y_ef.numpy(), y_t.detach().numpy(), rtol=rtol, atol=atol)
    seed = np.random.default_rng(7).standard_normal(tuple(y_t.shape)).astype(x.dtype)
    y_ef.backward(ef.tensor(seed))
    y_t.backward(torch.tensor(seed))
    np.testing.assert_allclose(x_ef.grad.numpy(), x_t.grad.numpy(), rtol=rtol, atol=atol)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_params[name].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=name)
    return y_ef


# ----- Conv1d -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(), dict(stride=2, padding=1), dict(dilation=2, padding=2), dict(groups=3, stride=3),
    dict(padding="same", dilation=2), dict(padding="valid", bias=False), dict(kernel_size=1),
], ids=str)
def test_conv1d_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    args = dict(in_channels=6, out_channels=9, kernel_size=3)
    args.update(kwargs)
    theirs = torch.nn.Conv1d(**args).double()
    ours = nn.Conv1d(**args).double()
    run_both(torch, ours, theirs, randn(2, 6, 11))
    run_both(torch, ours, theirs, randn(6, 11))  # unbatched


def test_conv1d_initialisation_bounds_and_shapes():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Conv1d(4, 8, 5, groups=2), torch.nn.Conv1d(4, 8, 5, groups=2)
    assert ours.weight.shape == tuple(theirs.weight.shape) and ours.bias.shape == tuple(theirs.bias.shape)
    bound = 1 / np.sqrt(2 * 5)  # fan_in = in_channels / groups * kernel
    assert np.abs(ours.weight.array).max() <= bound and np.abs(ours.bias.array).max() <= bound
    assert np.abs(ours.weight.array).max() > 0.8 * bound
    assert repr(ours) == repr(theirs)


# ----- ConvTranspose2d --------------------------------------------------------------------

TRANSPOSED = [
    dict(), dict(stride=2), dict(stride=2, padding=1, output_padding=1), dict(stride=3, padding=(1, 0),
                                                                              output_padding=(2, 1)),
    dict(groups=2, stride=2), dict(dilation=2, padding=1), dict(dilation=2, output_padding=1),
    dict(stride=2, padding=2, output_padding=1, groups=2, dilation=2, bias=False),
]


@pytest.mark.parametrize("kwargs", TRANSPOSED, ids=str)
def test_conv_transpose2d_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), **kwargs).double()
    ours = nn.ConvTranspose2d(4, 6, (3, 2), **kwargs).double()
    run_both(torch, ours, theirs, randn(2, 4, 5, 4))
    run_both(torch, ours, theirs, randn(4, 3, 3))  # unbatched


def test_conv_transpose2d_float32_and_output_size():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    ours = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    for size in [(9, 7), (10, 8)]:
        out = run_both(torch, ours, theirs, randn(2, 3, 5, 4, dtype=np.float32), rtol=1e-5, atol=1e-5,
                       output_size=size)
        assert out.shape == (2, 5) + size
    with pytest.raises(ValueError, match="not reachable"):
        ours(ef.randn(2, 3, 5, 4), output_size=(12, 8))


def test_conv_transpose2d_initialisation_and_repr():
    torch = pytest.importorskip("torch")
    ours, theirs = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), torch.nn.ConvTranspose2d(4, 6, 3, stride=2,
                                                                                              groups=2)
    assert ours.weight.shape == tuple(theirs.weight.shape) == (4, 3, 3, 3)
    bound = 1 / np.sqrt(3 * 9)  # fan_in from the weight: out_channels / groups * kernel, as PyTorch
    assert np.abs(ours.bias.array).max() <= bound and np.abs(ours.weight.array).max() <= bound
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1, output_padding=1), dict(groups=2, dilation=2)],
                         ids=str)
def test_conv_transpose2d_first_and_second_derivatives(kwargs):
    x = ef.tensor(randn(2, 2, 3, 3), requires_grad=True)
    w = ef.tensor(randn(2, 2, 2, 3, seed=2), requires_grad=True)
    b = ef.tensor(randn(2 * kwargs.get("groups", 1), seed=3), requires_grad=True)

    def fn(x, w, b):
        return F.conv_transpose2d(x, w, b, **kwargs)

    assert ef.gradcheck(fn, [x, w, b])
    out = fn(x, w, b)
    seed = ef.tensor(randn(*out.shape, seed=4), requires_grad=True)

    def backward_of(x, w, b, seed):
        return list(ef.grad(fn(x, w, b), [x, w, b], grad_outputs=seed, create_graph=True))

    assert ef.gradcheck(backward_of, [x, w, b, seed])


def test_conv_errors():
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, L\)"):
        nn.Conv1d(3, 4, 2)(ef.randn(2, 4, 5))
    with pytest.raises(ValueError, match="must both be divisible by groups"):
        nn.Conv1d(3, 4, 2, groups=2)


# ----- interpolate / Upsample ---------------------------------------------------------------

INTERPOLATIONS = [
    ((2, 3, 5, 7), dict(scale_factor=2, mode="nearest")),
    ((2, 3, 5, 7), dict(size=(9, 4), mode="nearest")),
    ((2, 3, 5, 7), dict(scale_factor=1.7, mode="nearest")),
    ((2, 3, 5, 7), dict(scale_factor=(0.6, 2.3), mode="nearest-exact")),
    ((2, 3, 5, 7), dict(scale_factor=2, mode="bilinear")),
    ((2, 3, 5, 7), dict(scale_factor=2, mode="bilinear", align_corners=True)),
    ((2, 3, 5, 7), dict(size=(8, 3), mode="bilinear")),
    ((2, 3, 5, 7), dict(size=(1, 10), mode="bilinear", align_corners=True)),
    ((2, 3, 5, 7), dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True)),
    ((2, 3, 6), dict(scale_factor=2.5, mode="linear")),
    ((2, 3, 6), dict(size=4, mode="linear", align_corners=True)),
    ((2, 3, 6), dict(scale_factor=3, mode="nearest")),
]


@pytest.mark.parametrize("shape, kwargs", INTERPOLATIONS, ids=[str(k) for _, k in INTERPOLATIONS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_interpolate_matches_torch(shape, kwargs, dtype):
    torch = pytest.importorskip("torch")
    x = randn(*shape, dtype=dtype)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    run_both(torch, nn.Upsample(**kwargs), torch.nn.Upsample(**kwargs), x, **tolerance)
    ours = F.interpolate(ef.tensor(x), **kwargs)
    theirs = torch.nn.functional.interpolate(torch.tensor(x), **kwargs)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), **tolerance)


def test_upsampling_spellings_match_torch():
    torch = pytest.importorskip("torch")
    x = randn(1, 2, 3, 4)
    run_both(torch, nn.UpsamplingNearest2d(scale_factor=2), torch.nn.UpsamplingNearest2d(scale_factor=2), x)
    run_both(torch, nn.UpsamplingBilinear2d(size=(5, 7)), torch.nn.UpsamplingBilinear2d(size=(5, 7)), x)


def test_interpolate_gradcheck_and_errors():
    x = ef.tensor(randn(1, 2, 3, 4), requires_grad=True)
    assert ef.gradcheck(lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), [x])
    assert ef.gradcheck(lambda x: F.interpolate(x, size=(7, 3), mode="nearest"), [x])
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="align_corners can only be set"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="bicubic, trilinear and area are not implemented"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="expects a 4-D input"):
        F.interpolate(ef.randn(1, 2, 3), scale_factor=2, mode="bilinear")


# ----- GroupNorm -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape, groups, options", [((3, 6, 4, 5), 3, {}), ((2, 6, 7), 2, dict(eps=1e-3)),
                                                    ((4, 6), 6, {}), ((2, 6, 3, 3), 1, dict(affine=False)),
                                                    ((2, 6, 3), 2, dict(bias=False))], ids=str)
def test_group_norm_matches_torch(shape, groups, options):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.GroupNorm(groups, 6, **options).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    run_both(torch, nn.GroupNorm(groups, 6, **options).double(), theirs, randn(*shape) * 3 + 1, rtol=1e-8)
    assert repr(nn.GroupNorm(groups, 6, **options)) == repr(torch.nn.GroupNorm(groups, 6, **options))


def test_group_norm_functional_gradcheck_and_errors():
    x, w, b = (ef.tensor(randn(*s, seed=i), requires_grad=True) for i, s in enumerate([(2, 4, 3), (4,), (4,)]))
    assert ef.gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b), [x, w, b])
    with pytest.raises(ValueError, match="must be divisible by num_groups"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 6, \*\)"):
        nn.GroupNorm(3, 6)(ef.randn(2, 4, 3))


@pytest.mark.parametrize("make", [
    lambda: nn.Conv1d(2, 4, 3, stride=2, padding="valid", groups=2),
    lambda: nn.ConvTranspose2d(2, 3, (3, 2), stride=2, output_padding=(1, 0), bias=False),
    lambda: nn.GroupNorm(2, 4, eps=1e-3, bias=False),
    lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
    lambda: nn.Embedding(5, 4, padding_idx=1, _freeze=True),
    lambda: nn.Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=8,
                           activation="gelu", batch_first=True),
], ids=["Conv1d", "ConvTranspose2d", "GroupNorm", "Upsample", "Embedding", "Transformer"])
def test_new_layers_rebuild_from_their_export_description(make):
    from easyfit.learner.export import build_module, describe_module
    module = make()
    arrays = {}
    rebuilt = build_module(describe_module(module, "model", arrays), arrays)
    assert repr(rebuilt) == repr(module)
    rebuilt.load_state_dict(module.state_dict())
    assert [p.requires_grad for p in rebuilt.parameters()] == [p.requires_grad for p in module.parameters()]
