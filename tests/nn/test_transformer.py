"""Transformer, its encoder/decoder stacks and layers against PyTorch: state dict keys,
outputs and every parameter's gradient, with masks, in eval mode and float64."""
import copy

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn

D, HEADS, FF, S, T, N = 8, 2, 16, 5, 4, 3

# PyTorch warns when a boolean padding mask meets a float attention mask; both are supported.
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]


def load_from_torch(mine, theirs):
    state = {name: value.detach().numpy() for name, value in theirs.state_dict().items()}
    assert sorted(state) == sorted(mine.state_dict())
    mine.load_state_dict(state)
    mine.eval()
    theirs.eval()


def run_both(torch, mine, theirs, arrays, mine_kwargs=None, torch_kwargs=None, rtol=1e-7, atol=1e-9):
    """Forward both on the same arrays, backward a loss; compare outputs, input and parameter gradients.

    easyfit's erf (in GELU) is a polynomial good to 1.5e-7, so GELU models get rtol 1e-5."""
    results = []
    for module, make, kwargs in ((mine, lambda a: ef.tensor(a, requires_grad=True), mine_kwargs or {}),
                                 (theirs, lambda a: torch.tensor(a, requires_grad=True), torch_kwargs or {})):
        inputs = [make(a) for a in arrays]
        output = module(*inputs, **kwargs)
        weights = np.linspace(-1, 1, int(np.prod(output.shape))).reshape(output.shape)
        loss = (output * make(weights)).sum() + (output * output).sum() * 0.1
        loss.backward()
        grads = {name: p.grad for name, p in module.named_parameters()}
        results.append((output, [t.grad for t in inputs], grads))
    (output, input_grads, grads), (t_output, t_input_grads, t_grads) = results
    np.testing.assert_allclose(output.numpy(), t_output.detach().numpy(), rtol=rtol, atol=atol)
    for a, b in zip(input_grads, t_input_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol)
    assert sorted(grads) == sorted(t_grads)
    for name in grads:
        assert (grads[name] is None) == (t_grads[name] is None), name
        if grads[name] is not None:
            np.testing.assert_allclose(grads[name].numpy(), t_grads[name].numpy(), rtol=max(rtol, 1e-6),
                                       atol=atol, err_msg=name)
    return output


def masks(torch, rng, length, source_length, prefix=""):
    """Boolean padding masks (one padded key in two batch items) for both libraries."""
    padding = np.zeros((N, source_length), dtype=bool)
    padding[0, -1] = padding[2, -2:] = True
    return ({f"{prefix}key_padding_mask": ef.tensor(padding)}, {f"{prefix}key_padding_mask": torch.tensor(padding)})


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_matches_torch(norm_first, activation, batch_first):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    kwargs = dict(dim_feedforward=FF, dropout=0.0, activation=activation, batch_first=batch_first,
                  norm_first=norm_first)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, HEADS, **kwargs), 2,
                                         norm=torch.nn.LayerNorm(D), enable_nested_tensor=False).double()
    mine = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, **kwargs), 2, norm=nn.LayerNorm(D)).double()
    load_from_torch(mine, theirs)
    assert "layers.1.self_attn.in_proj_weight" in mine.state_dict() and "norm.weight" in mine.state_dict()
    src = rng.standard_normal((N, S, D) if batch_first else (S, N, D))
    causal = nn.Transformer.generate_square_subsequent_mask(S).double()
    t_causal = torch.nn.Transformer.generate_square_subsequent_mask(S).double()
    np.testing.assert_array_equal(causal.numpy(), t_causal.numpy())
    ours, theirs_kwargs = masks(torch, rng, S, S, prefix="src_")
    ours["mask"], theirs_kwargs["mask"] = causal, t_causal
    tolerance = dict(rtol=1e-5, atol=1e-6) if activation == "gelu" else {}
    run_both(torch, mine, theirs, [src], ours, theirs_kwargs, **tolerance)
    run_both(torch, mine, theirs, [src], **tolerance)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_matches_torch(norm_first):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    kwargs = dict(dim_feedforward=FF, dropout=0.0, norm_first=norm_first)
    theirs = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, HEADS, **kwargs), 2).double()
    mine = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, HEADS, **kwargs), 2).double()
    load_from_torch(mine, theirs)
    tgt, memory = rng.standard_normal((T, N, D)), rng.standard_normal((S, N, D))
    ours, theirs_kwargs = masks(torch, rng, T, S, prefix="memory_")
    tgt_padding, t_tgt_padding = masks(torch, rng, T, T, prefix="tgt_")
    ours.update(tgt_padding)
    theirs_kwargs.update(t_tgt_padding)
    memory_mask = rng.standard_normal((T, S))
    ours["memory_mask"], theirs_kwargs["memory_mask"] = ef.tensor(memory_mask), torch.tensor(memory_mask)
    ours["tgt_mask"] = nn.Transformer.generate_square_subsequent_mask(T, dtype=np.float64)
    theirs_kwargs["tgt_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    run_both(torch, mine, theirs, [tgt, memory], ours, theirs_kwargs)


def test_full_transformer_matches_torch_and_is_causal_means_the_causal_mask():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    kwargs = dict(d_model=D, nhead=HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF,
                  dropout=0.0, batch_first=True, activation="gelu")
    theirs = torch.nn.Transformer(**kwargs).double()
    mine = nn.Transformer(**kwargs).double()
    load_from_torch(mine, theirs)
    src, tgt = rng.standard_normal((N, S, D)), rng.standard_normal((N, T, D))
    mask = nn.Transformer.generate_square_subsequent_mask(T).double()
    t_mask = torch.nn.Transformer.generate_square_subsequent_mask(T).double()
    padding = np.zeros((N, S), dtype=bool)
    padding[1, -2:] = True
    with_mask = run_both(torch, mine, theirs, [src, tgt],
                         dict(tgt_mask=mask, src_key_padding_mask=ef.tensor(padding),
                              memory_key_padding_mask=ef.tensor(padding)),
                         dict(tgt_mask=t_mask, tgt_is_causal=True, src_key_padding_mask=torch.tensor(padding),
                              memory_key_padding_mask=torch.tensor(padding)), rtol=1e-5, atol=1e-6)
    with_hint = mine(ef.tensor(src), ef.tensor(tgt), tgt_is_causal=True, src_key_padding_mask=ef.tensor(padding),
                     memory_key_padding_mask=ef.tensor(padding))
    np.testing.assert_allclose(with_hint.numpy(), with_mask.numpy(), rtol=1e-12)
    unbatched = mine(ef.tensor(src[0]), ef.tensor(tgt[0]), tgt_mask=mask)
    t_unbatched = theirs(torch.tensor(src[0]), torch.tensor(tgt[0]), tgt_mask=t_mask)
    np.testing.assert_allclose(unbatched.numpy(), t_unbatched.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_state_dict_keys_and_shapes_equal_torchs():
    torch = pytest.importorskip("torch")
    for bias in (True, False):
        theirs = torch.nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=2,
                                      dim_feedforward=FF, bias=bias)
        mine = nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=2,
                              dim_feedforward=FF, bias=bias)
        ours = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        assert ours == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        assert list(ours) == list(theirs.state_dict())  # the same order too


def test_stack_deep_copies_its_layer_and_transformer_reinitialises_matrices():
    layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=FF)
    encoder = nn.TransformerEncoder(layer, 3)
    weights = [m.linear1.weight for m in encoder.layers]
    assert len({id(w) for w in weights}) == 3 and all(w is not layer.linear1.weight for w in weights)
    for w in weights:  # same values to start with, as in PyTorch
        np.testing.assert_array_equal(w.array, layer.linear1.weight.array)
    model = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    bound = np.sqrt(6 / (64 + 16))  # xavier_uniform_ of linear1 (64, 16)
    w = model.encoder.layers[0].linear1.weight.array
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound


def test_training_mode_dropout_and_backward_run():
    model = nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=FF,
                           dropout=0.5)
    out = model(ef.randn(S, N, D), ef.randn(T, N, D))
    assert out.shape == (T, N, D)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    src, tgt = ef.randn(S, N, D), ef.randn(T, N, D)
    np.testing.assert_array_equal(model(src, tgt).numpy(), model(src, tgt).numpy())


def test_custom_callable_activation_and_errors():
    torch = pytest.importorskip("torch")
    layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=FF, dropout=0.0, activation=nn.functional.silu)
    t_layer = torch.nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=FF, dropout=0.0,
                                               activation=torch.nn.functional.silu)
    layer.double()
    t_layer.double()
    load_from_torch(layer, t_layer)
    run_both(torch, layer, t_layer, [np.random.default_rng(4).standard_normal((S, N, D))])
    with pytest.raises(ValueError, match="activation should be 'relu' or 'gelu'"):
        nn.TransformerEncoderLayer(D, HEADS, activation="tanh")
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        nn.TransformerEncoder(layer, 0)
    with pytest.raises(ValueError, match="batch sizes of src"):
        nn.Transformer(d_model=D, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=1)(
            ef.randn(S, 2, D), ef.randn(T, 3, D))


def test_word_language_model_transformer_idiom_matches_torch():
    """The TransformerModel of PyTorch's word_language_model example: a subclass of
    nn.Transformer whose `decoder` is replaced by a Linear, a positional-encoding buffer and a
    log(tril(ones)) causal mask; written for both frameworks, weights copied across."""
    torch = pytest.importorskip("torch")
    ntoken, ninp, nhead, nhid, nlayers, length, batch = 11, 8, 2, 16, 2, 6, 3
    position = np.arange(20, dtype=np.float32)[:, None]
    div_term = np.exp(np.arange(0, ninp, 2, dtype=np.float32) * (-np.log(10000.0) / ninp))
    table = np.zeros((20, 1, ninp), dtype=np.float32)
    table[:, 0, 0::2], table[:, 0, 1::2] = np.sin(position * div_term), np.cos(position * div_term)
    log_mask = np.where(np.tril(np.ones((length, length))) > 0, 0.0, -np.inf).astype(np.float32)

    class OurModel(nn.Transformer):
        def __init__(self):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers,
                             dropout=0.0)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.register_buffer("pe", ef.tensor(table))
            self.decoder = nn.Linear(ninp, ntoken)

        def forward(self, src):
            x = self.input_emb(src) * np.sqrt(ninp) + self.pe[:src.shape[0]]
            return nn.functional.log_softmax(self.decoder(self.encoder(x, mask=ef.tensor(log_mask))), dim=-1)

    class TheirModel(torch.nn.Transformer):
        def __init__(self):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers,
                             dropout=0.0)
            self.input_emb = torch.nn.Embedding(ntoken, ninp)
            self.register_buffer("pe", torch.tensor(table))
            self.decoder = torch.nn.Linear(ninp, ntoken)

        def forward(self, src):
            x = self.input_emb(src) * np.sqrt(ninp) + self.pe[:src.size(0)]
            mask = torch.log(torch.tril(torch.ones(length, length)))
            return torch.nn.functional.log_softmax(self.decoder(self.encoder(x, mask=mask)), dim=-1)

    theirs, ours = TheirModel(), OurModel()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert not any(key.startswith("decoder.layers") for key in ours.state_dict())  # the stack was replaced
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    tokens = np.random.default_rng(5).integers(0, ntoken, (length, batch))
    targets = np.random.default_rng(6).integers(0, ntoken, (length * batch,))
    out, t_out = ours(ef.tensor(tokens)), theirs(torch.tensor(tokens))
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    loss = nn.functional.nll_loss(out.reshape(-1, ntoken), ef.tensor(targets))
    t_loss = torch.nn.functional.nll_loss(t_out.reshape(-1, ntoken), torch.tensor(targets))
    loss.backward()
    t_loss.backward()
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=name)
