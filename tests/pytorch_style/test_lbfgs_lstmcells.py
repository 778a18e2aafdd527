"""Sequence prediction with two LSTMCells, fitted by LBFGS with a closure, in float64.

Covers: `model.double()`, `torch.zeros(n, h, dtype=torch.double)`, `input.split(1, dim=1)`
(chunks of one column), `torch.cat(outputs, dim=1)`, `nn.MSELoss`, `optim.LBFGS(...,
lr=0.8)` with `optimizer.step(closure)`, prediction under `torch.no_grad()` and
`.detach().numpy()`. In float64 the two frameworks agree to rounding, step by step.
"""
import numpy as np
import pytest

import easyfit
from twin_runs import FLOAT64, assert_same_state, copy_state

HIDDEN = 6


def make_model(torch):
    nn = torch.nn

    class Sequence(nn.Module):
        def __init__(self):
            super(Sequence, self).__init__()
            self.lstm1 = nn.LSTMCell(1, HIDDEN)
            self.lstm2 = nn.LSTMCell(HIDDEN, HIDDEN)
            self.linear = nn.Linear(HIDDEN, 1)

        def forward(self, input, future=0):
            outputs = []
            h_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
            c_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for i in range(future):
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            return torch.cat(outputs, dim=1)

    return Sequence().double()


def sine_waves(count=6, length=24, seed=2):
    rng = np.random.default_rng(seed)
    x = np.arange(length)[None, :] + rng.integers(-20, 20, (count, 1))
    return np.sin(x / 4.0).astype(np.float64)


def fit(torch, model, data, steps):
    """The program: LBFGS steps; returns every closure loss, and each step's test loss."""
    input, target = torch.from_numpy(data[1:, :-1]), torch.from_numpy(data[1:, 1:])
    test_input, test_target = torch.from_numpy(data[:1, :-1]), torch.from_numpy(data[:1, 1:])
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.8, max_iter=8)
    closure_losses, test_losses = [], []
    for i in range(steps):
        def closure():
            optimizer.zero_grad()
            out = model(input)
            loss = criterion(out, target)
            closure_losses.append(loss.item())
            loss.backward()
            return loss
        optimizer.step(closure)
        with torch.no_grad():
            future = 5
            pred = model(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            test_losses.append(loss.item())
            prediction = pred.detach().numpy()
    return closure_losses, test_losses, prediction


def test_lbfgs_fits_the_waves_on_easyfit():
    model = make_model(easyfit)
    assert model.linear.weight.dtype == easyfit.float64
    closure_losses, test_losses, prediction = fit(easyfit, model, sine_waves(), steps=3)
    assert closure_losses[-1] < 0.2 * closure_losses[0]
    assert test_losses[-1] < test_losses[0] or test_losses[-1] < 0.01
    assert prediction.shape == (1, 23 + 5) and prediction.dtype == np.float64


@pytest.mark.slow
def test_lbfgs_matches_pytorch_in_float64():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs, ours = make_model(torch), make_model(easyfit)
    copy_state(theirs, ours, easyfit)
    data = sine_waves()
    our_closure, our_test, our_prediction = fit(easyfit, ours, data, steps=2)
    their_closure, their_test, their_prediction = fit(torch, theirs, data, steps=2)
    assert len(our_closure) == len(their_closure)
    np.testing.assert_allclose(our_closure, their_closure, rtol=1e-6)
    np.testing.assert_allclose(our_test, their_test, rtol=1e-5)
    np.testing.assert_allclose(our_prediction, their_prediction, rtol=1e-5, atol=1e-8)
    assert_same_state(ours, theirs, dict(rtol=1e-5, atol=1e-8))
