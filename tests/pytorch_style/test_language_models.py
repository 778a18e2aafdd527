"""Word-level language-model code in PyTorch's idioms: an LSTM with tied weights and a
Transformer encoder, trained by hand-written SGD, under easyfit and PyTorch.

Covers: corpus tensors built with `torch.tensor(ids).type(torch.int64)` and `torch.cat`,
batchify with `data.size(0)`, `narrow`, `view(bsz, -1).t().contiguous()`, `source[i:i+n]`
and `.view(-1)`; `nn.Embedding`, `nn.LSTM`, tied weights
(`self.decoder.weight = self.encoder.weight`), `weight.new_zeros(...)` hidden states,
`isinstance(h, torch.Tensor)` / `h.detach()` repackaging, `nn.init.uniform_/zeros_`;
`nn.TransformerEncoderLayer`/`TransformerEncoder` with a positional encoding built from
`torch.arange(..., dtype=torch.float).unsqueeze(1)`, `torch.sin/cos` into `pe[:, 0::2]`,
`.transpose(0, 1)`, `register_buffer`, a causal mask `torch.log(torch.tril(torch.ones(n, n)))`;
`nn.NLLLoss`, `torch.nn.utils.clip_grad_norm_`, `p.data.add_(p.grad, alpha=-lr)`.
Dropout is 0 in the comparisons (its masks come from each framework's own generator).
"""
import math

import numpy as np
import pytest

import easyfit
from twin_runs import FLOAT32, assert_same_state, copy_state

VOCAB, EMSIZE, NHID, NLAYERS = 37, 16, 16, 2


def corpus(torch, seed=0, lines=40):
    """Lines that count up in steps of 5 (mod VOCAB) from a random start: learnable."""
    rng = np.random.default_rng(seed)
    idss = [torch.tensor([(start + 5 * k) % VOCAB for k in range(length)]).type(torch.int64)
            for start, length in zip(rng.integers(0, VOCAB, lines), rng.integers(3, 12, lines))]
    return torch.cat(idss)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)


def make_rnn_model(torch, dropout=0.0):
    nn, F = torch.nn, torch.nn.functional

    class RNNModel(nn.Module):
        def __init__(self, ntoken, ninp, nhid, nlayers):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = getattr(nn, "LSTM")(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.nhid, self.nlayers = nhid, nlayers

        def init_weights(self):
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))

    return RNNModel(VOCAB, EMSIZE, NHID, NLAYERS)


def make_transformer_model(torch, dropout=0.0):
    nn, F = torch.nn, torch.nn.functional

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=64):
            super(PositionalEncoding, self).__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer('pe', pe)

        def forward(self, x):
            return self.dropout(x + self.pe[:x.size(0), :])

    class TransformerLM(nn.Module):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers):
            super(TransformerLM, self).__init__()
            self.pos_encoder = PositionalEncoding(ninp)
            layer = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
            self.encoder = nn.TransformerEncoder(layer, nlayers)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.decoder = nn.Linear(ninp, ntoken)
            self.ninp = ninp
            nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, src):
            mask = torch.log(torch.tril(torch.ones(len(src), len(src))))
            src = self.input_emb(src) * math.sqrt(self.ninp)
            output = self.encoder(self.pos_encoder(src), mask=mask)
            return F.log_softmax(self.decoder(output), dim=-1)

    return TransformerLM(VOCAB, EMSIZE, 2, NHID, NLAYERS)


def repackage_hidden(torch, h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(torch, v) for v in h)


def train_epoch(torch, model, train_data, bptt=7, lr=2.0, clip=0.25):
    """The program's training loop; returns each batch's loss."""
    criterion = torch.nn.NLLLoss()
    recurrent = hasattr(model, "init_hidden")
    model.train()
    hidden = model.init_hidden(train_data.size(1)) if recurrent else None
    losses = []
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i, bptt)
        model.zero_grad()
        if recurrent:
            hidden = repackage_hidden(torch, hidden)
            output, hidden = model(data, hidden)
        else:
            output = model(data).view(-1, VOCAB)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return losses


def test_the_tied_lstm_shares_one_parameter_on_easyfit():
    model = make_rnn_model(easyfit)
    assert model.decoder.weight is model.encoder.weight
    names = [name for name, _ in model.named_parameters()]
    assert "encoder.weight" in names and "decoder.weight" not in names
    assert len(list(model.parameters())) == len(set(map(id, model.parameters())))
    hidden = model.init_hidden(4)
    assert hidden[0].shape == (NLAYERS, 4, NHID) and hidden[0].dtype == easyfit.float32
    before = model.encoder.weight.detach().numpy().copy()
    losses = train_epoch(easyfit, model, batchify(corpus(easyfit), 4))
    assert all(np.isfinite(losses))
    assert not np.allclose(model.encoder.weight.detach().numpy(), before)
    assert model.decoder.weight is model.encoder.weight


def test_the_transformer_lm_learns_on_easyfit():
    model = make_transformer_model(easyfit)
    train_data = batchify(corpus(easyfit), 4)
    losses = sum((train_epoch(easyfit, model, train_data) for _ in range(3)), [])
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])


@pytest.mark.parametrize("make_model", [make_rnn_model, make_transformer_model], ids=["lstm-tied", "transformer"])
def test_the_language_model_matches_pytorch_step_by_step(make_model):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs, ours = make_model(torch), make_model(easyfit)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    copy_state(theirs, ours, easyfit)
    our_data, their_data = batchify(corpus(easyfit), 4), batchify(corpus(torch), 4)
    np.testing.assert_array_equal(our_data.numpy(), their_data.numpy())
    our_losses = train_epoch(easyfit, ours, our_data)
    their_losses = train_epoch(torch, theirs, their_data)
    np.testing.assert_allclose(our_losses, their_losses, **FLOAT32)
    assert_same_state(ours, theirs, dict(rtol=1e-3, atol=1e-5))
