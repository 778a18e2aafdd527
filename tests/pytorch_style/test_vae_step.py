"""A variational auto-encoder's training steps in PyTorch's idioms, under easyfit and PyTorch.

Covers: `x.view(-1, n)`, `torch.exp(0.5 * logvar)`, `torch.randn_like(std)`,
`torch.sigmoid`, `F.binary_cross_entropy(..., reduction='sum')`,
`-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())`, `optim.Adam`, `loss.item() /
len(data)`, and sampling with `torch.randn(n, k).to(device)` under `torch.no_grad()`.
The noise comes from `torch.randn_like` in the easyfit-only run; the comparison gives both
frameworks the same noise (their generators differ) through the `noise` argument.
"""
import numpy as np
import pytest

import easyfit
from twin_runs import FLOAT32, assert_same_state, copy_state

PIXELS, HIDDEN, LATENT = 64, 32, 4


def make_vae(torch, noise=None):
    nn, F = torch.nn, torch.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.fc1 = nn.Linear(PIXELS, HIDDEN)
            self.fc21 = nn.Linear(HIDDEN, LATENT)
            self.fc22 = nn.Linear(HIDDEN, LATENT)
            self.fc3 = nn.Linear(LATENT, HIDDEN)
            self.fc4 = nn.Linear(HIDDEN, PIXELS)
            self.noises = iter(noise) if noise is not None else None

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std) if self.noises is None else torch.from_numpy(next(self.noises))
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, PIXELS))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    return VAE()


def loss_function(torch, recon_x, x, mu, logvar):
    BCE = torch.nn.functional.binary_cross_entropy(recon_x, x.view(-1, PIXELS), reduction='sum')
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def train(torch, model, batches):
    """The program: Adam steps over `batches`; returns the per-sample losses and a decoded sample."""
    device = torch.device("cpu")
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for batch in batches:
        data = torch.from_numpy(batch).to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(torch, recon_batch, data, mu, logvar)
        loss.backward()
        optimizer.step()
        losses.append(loss.item() / len(data))
    with torch.no_grad():
        sample = model.decode(torch.randn(8, LATENT).to(device)).cpu()
    return losses, sample.view(8, 1, 8, 8)


def _batches(count, size=16, seed=0):
    """Blurry blobs with values in [0, 1], shaped (size, 1, 8, 8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:8, 0:8]
    centres = rng.uniform(1, 7, (count, size, 2, 1, 1))
    images = np.exp(-((yy - centres[:, :, 0]) ** 2 + (xx - centres[:, :, 1]) ** 2) / 4.0)
    return [b[:, None].astype(np.float32) for b in images]


def test_the_vae_trains_with_randn_like_on_easyfit():
    losses, sample = train(easyfit, make_vae(easyfit), _batches(60))
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert sample.shape == (8, 1, 8, 8)
    values = sample.numpy()
    assert values.min() >= 0 and values.max() <= 1


def test_randn_like_follows_its_argument():
    std = easyfit.ones(2000, 3, dtype=easyfit.float64)
    eps = easyfit.randn_like(std)
    assert eps.shape == (2000, 3) and eps.dtype == easyfit.float64 and not eps.requires_grad
    assert abs(float(eps.mean())) < 0.06 and float(eps.std()) == pytest.approx(1.0, abs=0.05)


def test_the_vae_matches_pytorch_step_by_step():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    batches = _batches(20)
    rng = np.random.default_rng(1)
    noise = [rng.standard_normal((16, LATENT)).astype(np.float32) for _ in batches]
    theirs, ours = make_vae(torch, noise), make_vae(easyfit, noise)
    copy_state(theirs, ours, easyfit)
    our_losses, _ = train(easyfit, ours, batches)
    their_losses, _ = train(torch, theirs, batches)
    np.testing.assert_allclose(our_losses, their_losses, **FLOAT32)
    assert_same_state(ours, theirs, dict(rtol=1e-3, atol=2e-5))
