"""PyTorch's time-sequence-prediction example, reduced in size: two LSTMCells and a Linear
fitted to sine waves with LBFGS(lr=0.8) through a closure, written once for each framework
with the same initial weights; the losses of every closure call must agree."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.optim import LBFGS

HIDDEN = 12


def sine_waves(count=5, length=24, period=8, seed=0):
    """generate_sine_wave.py's data, smaller: phase-shifted sines, one per row."""
    rng = np.random.default_rng(seed)
    x = np.arange(length) + rng.integers(-4 * period, 4 * period, count).reshape(count, 1)
    return np.sin(x / period).astype(np.float64)


class Sequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, HIDDEN)
        self.lstm2 = nn.LSTMCell(HIDDEN, HIDDEN)
        self.linear = nn.Linear(HIDDEN, 1)

    def forward(self, input, future=0):
        batch = input.shape[0]
        h_t, c_t, h_t2, c_t2 = (ef.zeros(batch, HIDDEN, dtype=np.float64) for _ in range(4))
        outputs = []
        for step in range(input.shape[1]):
            h_t, c_t = self.lstm1(input[:, step:step + 1], (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs.append(output)
        for _ in range(future):
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs.append(output)
        return ef.concatenate(outputs, axis=1)


def torch_sequence(torch):
    class TorchSequence(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = torch.nn.LSTMCell(1, HIDDEN)
            self.lstm2 = torch.nn.LSTMCell(HIDDEN, HIDDEN)
            self.linear = torch.nn.Linear(HIDDEN, 1)

        def forward(self, input, future=0):
            h_t, c_t, h_t2, c_t2 = (torch.zeros(input.size(0), HIDDEN, dtype=torch.double) for _ in range(4))
            outputs = []
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for _ in range(future):
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            return torch.cat(outputs, dim=1)
    return TorchSequence()


def train(make_tensor, model, optimizer_class, loss_func, steps, data):
    inputs, targets = make_tensor(data[3:, :-1]), make_tensor(data[3:, 1:])
    optimizer = optimizer_class(model.parameters(), lr=0.8, max_iter=5)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = loss_func(model(inputs), targets)
        losses.append(loss.item())
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return losses


@pytest.mark.slow  # 0.4 s for easyfit; PyTorch's side took 3-12 s on the loaded 2-core machine
def test_time_sequence_prediction_with_lbfgs_matches_torch():
    torch = pytest.importorskip("torch")
    data = sine_waves()
    torch.manual_seed(0)  # an initialisation where lr=0.8 without line search converges (some diverge, in both)
    theirs = torch_sequence(torch).double()
    ours = Sequence().double()
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    our_losses = train(ef.tensor, ours, LBFGS, nn.MSELoss(), 2, data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: PyTorch's thread pool only adds waiting on a shared machine
    try:
        their_losses = train(torch.from_numpy, theirs, torch.optim.LBFGS, torch.nn.MSELoss(), 2, data)
    finally:
        torch.set_num_threads(threads)
    assert len(our_losses) == len(their_losses) == 10
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-7)
    assert our_losses[-1] < 0.1 * our_losses[0]
    with ef.no_grad():  # the example's prediction of the future, without a graph
        prediction = ours(ef.tensor(data[:3, :-1]), future=5)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(data[:3, :-1]), future=5)
    np.testing.assert_allclose(prediction.numpy(), expected.numpy(), rtol=1e-6, atol=1e-9)
