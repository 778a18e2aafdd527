"""A hand-written classifier training loop in PyTorch's idioms, under easyfit and PyTorch.

Covers: `nn.Module` subclass with Conv2d/max_pool2d/`torch.flatten(x, 1)`/log_softmax,
`torch.device` and `.to(device)`, `torch.utils.data.TensorDataset` + `DataLoader`,
`optimizer.zero_grad(); loss.backward(); optimizer.step()`, `StepLR`, an evaluation loop
under `torch.no_grad()` with `output.argmax(dim=1, keepdim=True)` and
`pred.eq(target.view_as(pred)).sum().item()`, and `'{:.4f}'.format(loss)`.
"""
import numpy as np
import pytest

import easyfit
from twin_runs import FLOAT32, assert_same_state, copy_state


def make_net(torch):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 8, 3, 1)
            self.fc1 = nn.Linear(8 * 4 * 4, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            return F.log_softmax(self.fc2(x), dim=1)

    return Net()


def make_images(count, seed):
    """Three classes of 12x12 pictures: a bright row, a bright column, or noise."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.3, (count, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 3, count)
    for image, label in zip(images, labels):
        if label == 0:
            image[0, rng.integers(2, 10), :] += 2.0
        elif label == 1:
            image[0, :, rng.integers(2, 10)] += 2.0
    return images, labels.astype(np.int64)


def train_and_test(torch, model, train_data, test_data, epochs=2):
    """The program: returns the training losses, test results and the printed lines."""
    F = torch.nn.functional
    device = torch.device("cpu")
    model = model.to(device)
    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(train_data[0]), torch.from_numpy(train_data[1])),
        batch_size=16)
    test_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(test_data[0]), torch.from_numpy(test_data[1])),
        batch_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    losses, printed = [], []
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if batch_idx % 4 == 0:
                printed.append('Train Epoch: {} [{}/{}]\tLoss: {:.4f}'.format(
                    epoch, batch_idx * len(data), len(train_loader.dataset), loss))
        scheduler.step()
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    return losses, test_loss, correct, printed


def test_the_loop_trains_on_easyfit():
    easyfit.manual_seed(1)
    losses, test_loss, correct, printed = train_and_test(easyfit, make_net(easyfit), make_images(192, 0),
                                                         make_images(64, 1), epochs=4)
    assert np.mean(losses[-6:]) < 0.85 * np.mean(losses[:6])
    assert isinstance(correct, int) and correct >= 32  # chance is 21 of 64
    assert printed[0].startswith("Train Epoch: 1 [0/192]\tLoss: ") and len(printed[0].split("Loss: ")[1]) == 6


def test_the_loop_matches_pytorch_step_by_step():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = make_net(torch)
    ours = make_net(easyfit)
    copy_state(theirs, ours, easyfit)
    train, test = make_images(96, 0), make_images(64, 1)
    our_losses, our_test_loss, our_correct, our_printed = train_and_test(easyfit, ours, train, test)
    their_losses, their_test_loss, their_correct, their_printed = train_and_test(torch, theirs, train, test)
    np.testing.assert_allclose(our_losses, their_losses, **FLOAT32)
    assert_same_state(ours, theirs)
    assert our_test_loss == pytest.approx(their_test_loss, rel=1e-4)
    assert our_correct == their_correct
    assert our_printed == their_printed
