"""MultiheadAttention against PyTorch (masks, weights, layouts) and finite differences."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import Tensor, gradcheck

E, HEADS, L, S, N = 8, 2, 3, 4, 2


def torch_or_skip():
    return pytest.importorskip("torch")


def pair(torch, bias=True, batch_first=False, dropout=0.0):
    theirs = torch.nn.MultiheadAttention(E, HEADS, dropout=dropout, bias=bias, batch_first=batch_first).double()
    mine = nn.MultiheadAttention(E, HEADS, dropout=dropout, bias=bias, batch_first=batch_first).double()
    state = {name: value.detach().numpy() for name, value in theirs.state_dict().items()}
    assert list(state) == list(mine.state_dict())
    mine.load_state_dict(state)
    return mine, theirs


def compare(mine, theirs, torch, arrays, self_attention, mine_kwargs, torch_kwargs):
    """Run both on the same arrays; compare output, weights and every gradient."""
    results = []
    for module, make, kwargs in ((mine, lambda a: ef.tensor(a, requires_grad=True), mine_kwargs),
                                 (theirs, lambda a: torch.tensor(a, requires_grad=True), torch_kwargs)):
        tensors = [make(a) for a in arrays]
        q, k, v = (tensors[0],) * 3 if self_attention else tensors
        output, weights = module(q, k, v, **kwargs)
        loss = (output * output).sum()
        if weights is not None:
            loss = loss + (weights * weights).sum() * 3.0
        loss.backward()
        grads = [t.grad for t in tensors] + [p.grad for p in module.parameters()]
        results.append((output, weights, grads))
    (output, weights, grads), (t_output, t_weights, t_grads) = results
    np.testing.assert_allclose(output.numpy(), t_output.detach().numpy(), rtol=1e-7, atol=1e-10)
    assert (weights is None) == (t_weights is None)
    if weights is not None:
        np.testing.assert_allclose(weights.numpy(), t_weights.detach().numpy(), rtol=1e-7, atol=1e-10)
    for mine_grad, theirs_grad in zip(grads, t_grads):
        np.testing.assert_allclose(mine_grad.numpy(), theirs_grad.numpy(), rtol=1e-7, atol=1e-10)
    return output, weights


def masks(kind, torch, source_length, rng, per_head=False):
    """(easyfit kwargs, torch kwargs) for a mask kind."""
    mine, theirs = {}, {}
    shape = (N * HEADS, L, source_length) if per_head else (L, source_length)
    if kind in ("bool", "both"):
        blocked = rng.random(shape) < 0.3
        blocked[..., 0] = False                      # every query keeps one key: no all-masked row
        mine["attn_mask"], theirs["attn_mask"] = ef.tensor(blocked), torch.tensor(blocked)
    if kind == "float":
        added = rng.standard_normal(shape)
        mine["attn_mask"], theirs["attn_mask"] = ef.tensor(added), torch.tensor(added)
    if kind in ("padding", "both"):
        padding = np.zeros((N, source_length), dtype=bool)
        padding[0, -2:] = True
        mine["key_padding_mask"], theirs["key_padding_mask"] = ef.tensor(padding), torch.tensor(padding)
    return mine, theirs


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("self_attention", [False, True])
@pytest.mark.parametrize("mask", ["none", "bool", "float", "padding", "both"])
def test_matches_torch(batch_first, self_attention, mask):
    torch = torch_or_skip()
    mine, theirs = pair(torch, batch_first=batch_first)
    rng = np.random.default_rng(0)
    source = L if self_attention else S
    layout = (lambda steps: (N, steps, E)) if batch_first else (lambda steps: (steps, N, E))
    arrays = [rng.standard_normal(layout(L))] if self_attention else \
        [rng.standard_normal(layout(L)), rng.standard_normal(layout(S)), rng.standard_normal(layout(S))]
    mine_kwargs, torch_kwargs = masks(mask, torch, source, rng)
    output, weights = compare(mine, theirs, torch, arrays, self_attention, mine_kwargs, torch_kwargs)
    assert output.shape == layout(L) and weights.shape == (N, L, source)


@pytest.mark.parametrize("average", [True, False])
def test_per_head_weights_and_per_head_mask_match_torch(average):
    torch = torch_or_skip()
    mine, theirs = pair(torch)
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((L, N, E)), rng.standard_normal((S, N, E)), rng.standard_normal((S, N, E))]
    mine_kwargs, torch_kwargs = masks("bool", torch, S, rng, per_head=True)
    for kwargs in (mine_kwargs, torch_kwargs):
        kwargs["average_attn_weights"] = average
    _, weights = compare(mine, theirs, torch, arrays, False, mine_kwargs, torch_kwargs)
    assert weights.shape == ((N, L, S) if average else (N, HEADS, L, S))


def test_need_weights_false_and_no_bias_match_torch():
    torch = torch_or_skip()
    mine, theirs = pair(torch, bias=False)
    assert [name for name, _ in mine.named_parameters()] == ["in_proj_weight", "out_proj.weight"]
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((L, N, E)), rng.standard_normal((S, N, E)), rng.standard_normal((S, N, E))]
    mine_kwargs, torch_kwargs = masks("padding", torch, S, rng)
    mine_kwargs["need_weights"] = torch_kwargs["need_weights"] = False
    _, weights = compare(mine, theirs, torch, arrays, False, mine_kwargs, torch_kwargs)
    assert weights is None


def test_unbatched_input_matches_torch():
    torch = torch_or_skip()
    mine, theirs = pair(torch)
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((L, E)), rng.standard_normal((S, E)), rng.standard_normal((S, E))]
    padding = np.array([False, False, True, False])
    output, weights = compare(mine, theirs, torch, arrays, False, {"key_padding_mask": ef.tensor(padding)},
                              {"key_padding_mask": torch.tensor(padding)})
    assert output.shape == (L, E) and weights.shape == (L, S)
    assert np.all(weights.numpy()[:, 2] == 0)


def test_parameters_and_initialisation_follow_torch():
    torch = torch_or_skip()
    mine = nn.MultiheadAttention(E, HEADS)
    theirs = torch.nn.MultiheadAttention(E, HEADS)
    assert [(n, tuple(t.shape)) for n, t in mine.state_dict().items()] == \
        [(n, tuple(t.shape)) for n, t in theirs.state_dict().items()]
    assert np.all(mine.in_proj_bias.numpy() == 0) and np.all(mine.out_proj.bias.numpy() == 0)
    bound = np.sqrt(6.0 / (E + 3 * E))              # xavier_uniform_ on (3E, E)
    weight = mine.in_proj_weight.numpy()
    assert weight.dtype == np.float32 and np.abs(weight).max() <= bound and weight.std() > bound / 3
    assert repr(nn.MultiheadAttention(E, HEADS, batch_first=True)).splitlines() == [
        "MultiheadAttention(", "  embed_dim=8, num_heads=2, batch_first=True",
        "  (out_proj): Linear(in_features=8, out_features=8, bias=True)", ")"]


def test_dropout_only_in_training():
    attention = nn.MultiheadAttention(E, HEADS, dropout=0.5)
    x = ef.randn(L, N, E)
    attention.eval()
    reference = nn.MultiheadAttention(E, HEADS)
    reference.load_state_dict(attention.state_dict())
    evaluated, eval_weights = attention(x, x, x)
    np.testing.assert_array_equal(evaluated.numpy(), reference(x, x, x)[0].numpy())
    np.testing.assert_allclose(eval_weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)
    attention.train()
    trained, weights = attention(x, x, x, average_attn_weights=False)
    assert not np.allclose(trained.numpy(), evaluated.numpy())
    # Dropped weights are exactly zero; kept ones are scaled by 1 / (1 - p) = 2.
    dropped = weights.numpy() == 0
    assert dropped.any() and (~dropped).any()
    assert np.all(weights.numpy() <= 2.0 + 1e-6)


def test_gradcheck():
    attention = nn.MultiheadAttention(4, 2).double()
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((2, 1, 4), (3, 1, 4), (3, 1, 4)))
    mask = ef.tensor(np.array([[False, True, False], [False, False, False]]))
    assert gradcheck(lambda q, k, v: attention(q, k, v, attn_mask=mask), [q, k, v])


def test_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"):
        nn.MultiheadAttention(10, 3)
    attention = nn.MultiheadAttention(E, HEADS)
    x = ef.randn(L, N, E)
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\).*embed_dim=8.*\(3, 2, 6\)"):
        attention(ef.randn(L, N, 6), x, x)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 3\) or \(4, 3, 3\), got \(3, 4\)"):
        attention(x, x, x, attn_mask=ef.tensor(np.zeros((L, 4), dtype=bool)))
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(2, 3\), got \(3, 2\)"):
        attention(x, x, x, key_padding_mask=ef.tensor(np.zeros((3, 2), dtype=bool)))
    with pytest.raises(ValueError, match="key and value must have the same shape"):
        attention(x, ef.randn(4, N, E), ef.randn(5, N, E))


def test_export_args_rebuild_an_identical_layer_and_learner_export_round_trips(tmp_path):
    from easyfit.learner.export import build_module, describe_module
    layer = nn.MultiheadAttention(8, 2, dropout=0.1, bias=False, batch_first=True)
    rebuilt = nn.MultiheadAttention(**layer.export_args())
    assert rebuilt.extra_repr() == layer.extra_repr()
    arrays = {}
    spec = describe_module(layer, "model", arrays)
    again = build_module(spec, arrays)
    again.load_state_dict(layer.state_dict())
    layer.eval(), again.eval()
    x = ef.randn(2, 3, 8)
    np.testing.assert_array_equal(layer(x, x, x)[0].numpy(), again(x, x, x)[0].numpy())
