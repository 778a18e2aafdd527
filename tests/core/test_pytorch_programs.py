"""PyTorch-style programs that run on easyfit with only their imports changed (issue 16).

Each program is written once against a `torch`-like module and run twice: on PyTorch and
on easyfit. The weights start equal (copied through state_dict) and the losses and
results must agree step for step within float32 noise.
"""
import numpy as np
import pytest

import easyfit

torch = pytest.importorskip("torch")


def _frameworks():
    return [(torch, torch.nn, torch.nn.functional, torch.optim, torch.utils.data),
            (easyfit, easyfit.nn, easyfit.nn.functional, easyfit.optim, easyfit.utils.data)]


def _classifier_program(lib, nn, F, optim, data, start_weights):
    """An MNIST-example-style loop: view, init through .data, log_softmax, max(1), item(), format."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            x = F.relu(self.fc1(x))
            return F.log_softmax(self.fc2(x), dim=1)

    model = Net()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.bias.data.fill_(0.01)
    state = model.state_dict()
    state.update({name: lib.tensor(value) for name, value in start_weights.items()})
    model.load_state_dict(state)
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((48, 4, 4)).astype(np.float32))
    y = lib.tensor(rng.integers(0, 4, 48))
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=16, shuffle=False)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log = []
    for epoch in range(3):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            log.append("{:.5f}".format(loss.item()))
        model.eval()
        with lib.no_grad():
            output = model(x)
            pred = output.max(1, keepdim=True)[1]
            correct = pred.eq(y.view_as(pred)).sum().item()
            total = F.nll_loss(output, y, reduction="sum").item()
        log.append((correct, round(total, 3)))
    return log


def test_classifier_program_matches_pytorch():
    rng = np.random.default_rng(1)
    start = {"fc1.weight": (rng.standard_normal((32, 16)) * 0.2).astype(np.float32),
             "fc2.weight": (rng.standard_normal((4, 32)) * 0.2).astype(np.float32)}
    theirs, ours = [_classifier_program(*fw, start) for fw in _frameworks()]
    assert ours == theirs


def _regression_program(lib, nn, F, optim, data, w_target):
    """The polynomial-regression example's idioms: unsqueeze, cat, mm, manual update via .data."""
    w = lib.zeros(4, 1, requires_grad=True)
    b = lib.zeros(1, requires_grad=True)
    x = lib.linspace(-1, 1, 32).unsqueeze(1)
    features = lib.cat([x ** i for i in range(1, 5)], 1)
    y = features.mm(lib.tensor(w_target)) + 0.5
    losses = []
    for step in range(50):
        loss = ((features.mm(w) + b - y) ** 2).mean()
        loss.backward()
        for p in (w, b):
            p.data.add_(p.grad.data, alpha=-0.5)
            p.grad.data.zero_()
        losses.append(loss.item())
    return np.array(losses), w.detach().numpy().ravel()


def test_regression_program_matches_pytorch():
    w_target = np.array([[0.5], [-1.0], [2.0], [0.3]], dtype=np.float32)
    (theirs, w_theirs), (ours, w_ours) = [_regression_program(*fw, w_target) for fw in _frameworks()]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    np.testing.assert_allclose(w_ours, w_theirs, rtol=1e-4, atol=1e-6)
    assert ours[-1] < ours[0] / 10


def _tensor_idioms(lib):
    """A grab of tensor idioms from tutorials; every value comes back as NumPy for comparison."""
    lib.manual_seed(0)
    a = lib.tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    out = [a.transpose(0, 1), a.permute(2, 0, 1).contiguous().view(4, -1), a.flatten(1), a.sum(-1, keepdim=True),
           a.mean(dim=(0, 2)), a.var(1), a.std(), a.max(dim=2).values, a.min(-1)[1], a.argmax(1),
           a.sort(dim=1, descending=True)[0], a.topk(2)[1], a.cumsum(2), a.narrow(2, 1, 2), a.chunk(2, -1)[1],
           a.split(3, 2)[1], a.repeat(1, 2, 1), a.expand(3, 2, 3, 4).sum(0), a.unsqueeze(0).squeeze(0),
           a.flip(0), a.roll(1, 2), a.tril(), a.triu(1), a.masked_fill(a > 10, -1.0), a.clamp(min=3, max=8),
           a.gather(2, lib.tensor([[[0], [1], [2]], [[3], [2], [1]]])), a.index_select(1, lib.tensor([2, 0])),
           a.norm(dim=1), a[0].t().mm(a[1]), lib.bmm(a, a.transpose(1, 2)), a.softmax(-1), a.log_softmax(1),
           lib.stack([a, a], 1), lib.where(a > 5, a, lib.zeros_like(a)), a.new_ones(2), a.eq(3).any(),
           a.long().float().double(), lib.arange(5), lib.tril(lib.ones(3, 3)), a.sin().cos(), a.pow(2).sqrt(),
           a.clone().zero_(), a.clone().fill_(2).add_(1, alpha=2).mul_(3), a.scatter(1, lib.tensor([[[1, 0, 2, 1]]]),
                                                                                       -5.0 * lib.ones(1, 1, 4))]
    return [t.numpy() if hasattr(t, "numpy") else np.asarray(t) for t in out]


def test_tensor_idioms_match_pytorch():
    theirs, ours = _tensor_idioms(torch), _tensor_idioms(easyfit)
    assert len(ours) == len(theirs)
    for i, (o, t) in enumerate(zip(ours, theirs)):
        assert o.shape == t.shape, i
        np.testing.assert_allclose(o, t, rtol=1e-5, atol=1e-5, err_msg=f"idiom {i}")
