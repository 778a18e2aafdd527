"""Initialisation through `p.data` and hand-written updates, in PyTorch's idioms.

Covers: `m.weight.data.normal_(0, 0.02)`, `p.data.fill_(0)`, `uniform_`, `zero_()`,
`param.data.add_(-lr * param.grad)`, `p.data.add_(p.grad, alpha=-lr)`, `model.zero_grad()`,
`x.unsqueeze(1)`, `torch.cat([...], 1)`, `x.mm(W)`, `F.smooth_l1_loss`, `W.view(-1)`,
`'{:+.2f}'.format(w)` of a 0-d tensor and `.item()`.
"""
import numpy as np
import pytest

import easyfit
from twin_runs import FLOAT32, assert_same_state, copy_state

DEGREE = 3


def make_model(torch):
    nn = torch.nn

    class Polynomial(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(DEGREE, 8)
            self.out = nn.Linear(8, 1)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(x)))

    return Polynomial()


def init_weights(torch, model):
    """GAN-style initialisation written against `.data`."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data.normal_(0, 0.02)
            m.bias.data.fill_(0)


def make_features(torch, x):
    x = x.unsqueeze(1)
    return torch.cat([x ** i for i in range(1, DEGREE + 1)], 1)


def train(torch, model, inputs, W_target, b_target, steps, lr=0.1):
    """The program: a manual SGD loop; returns the losses and the printed description."""
    F = torch.nn.functional
    W = torch.from_numpy(W_target)
    losses = []
    for step in range(steps):
        x = make_features(torch, torch.from_numpy(inputs[step]))
        y = x.mm(W) + b_target
        model.zero_grad()
        loss = F.smooth_l1_loss(model(x), y)
        loss.backward()
        for i, param in enumerate(model.parameters()):
            if i % 2 == 0:
                param.data.add_(-lr * param.grad)
            else:
                param.data.add_(param.grad, alpha=-lr)
        losses.append(loss.item())
    description = ' '.join('{:+.2f}'.format(w) for w in W.view(-1))
    return losses, description


def test_init_through_data_sets_the_parameters_in_place():
    model = make_model(easyfit)
    weight = model.hidden.weight
    init_weights(easyfit, model)
    assert model.hidden.weight is weight
    for m in (model.hidden, model.out):
        assert float(m.bias.abs().max()) == 0.0
    big = easyfit.nn.Linear(200, 300)
    big.weight.data.normal_(0, 0.02)
    values = big.weight.detach().numpy()
    assert abs(values.mean()) < 1e-3 and values.std() == pytest.approx(0.02, rel=0.03)
    big.weight.data.uniform_(-0.1, 0.1)
    values = big.weight.detach().numpy()
    assert -0.1 <= values.min() < -0.099 and 0.099 < values.max() <= 0.1
    big.bias.data.zero_()
    assert not big.bias.detach().numpy().any()
    assert big.weight.grad is None


def _data(steps):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(steps, 16)).astype(np.float32)
    W_target = rng.normal(size=(DEGREE, 1)).astype(np.float32)
    return inputs, W_target, 0.5


def test_manual_updates_train_on_easyfit():
    model = make_model(easyfit)
    init_weights(easyfit, model)
    model.hidden.weight.data.normal_(0, 0.5)
    inputs, W_target, b_target = _data(150)
    losses, description = train(easyfit, model, inputs, W_target, b_target, 150)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert description == ' '.join('{:+.2f}'.format(w) for w in W_target.reshape(-1))


def test_manual_updates_match_pytorch_step_by_step():
    torch = pytest.importorskip("torch")
    theirs, ours = make_model(torch), make_model(easyfit)
    copy_state(theirs, ours, easyfit)
    inputs, W_target, b_target = _data(30)
    our_losses, our_description = train(easyfit, ours, inputs, W_target, b_target, 30)
    their_losses, their_description = train(torch, theirs, inputs, W_target, b_target, 30)
    np.testing.assert_allclose(our_losses, their_losses, **FLOAT32)
    assert_same_state(ours, theirs)
    assert our_description == their_description
