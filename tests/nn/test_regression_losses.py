"""smooth_l1_loss, huber_loss, kl_div and cosine_similarity against PyTorch (values, input and
target gradients) and finite differences."""
import warnings

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.nn import functional as F

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 6)) * 2
Y = rng.standard_normal((4, 6)) * 2
LOGP = np.log(rng.dirichlet(np.ones(6), size=4))
P = rng.dirichlet(np.ones(6), size=4)
P[0, 2] = 0.0  # a zero target probability contributes 0
P[0] /= P[0].sum()


def compare(ours, theirs, x, y, target_grad=True, rtol=1e-10):
    torch = pytest.importorskip("torch")
    x_ef, y_ef = ef.tensor(x, requires_grad=True), ef.tensor(y, requires_grad=target_grad)
    x_t, y_t = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=target_grad)
    out_ef, out_t = ours(x_ef, y_ef), theirs(x_t, y_t)
    np.testing.assert_allclose(out_ef.numpy(), out_t.detach().numpy(), rtol=rtol, atol=1e-12)
    seed = np.random.default_rng(1).standard_normal(tuple(out_t.shape))
    out_ef.backward(ef.tensor(seed))
    out_t.backward(torch.tensor(seed))
    np.testing.assert_allclose(x_ef.grad.numpy(), x_t.grad.numpy(), rtol=rtol, atol=1e-12)
    if target_grad:
        np.testing.assert_allclose(y_ef.grad.numpy(), y_t.grad.numpy(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0, 0.0])
def test_smooth_l1_loss(reduction, beta):
    torch = pytest.importorskip("torch")
    compare(lambda x, y: F.smooth_l1_loss(x, y, reduction=reduction, beta=beta),
            lambda x, y: torch.nn.functional.smooth_l1_loss(x, y, reduction=reduction, beta=beta), X, Y)
    compare(nn.SmoothL1Loss(reduction=reduction, beta=beta),
            torch.nn.SmoothL1Loss(reduction=reduction, beta=beta), X, Y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_loss(reduction, delta):
    torch = pytest.importorskip("torch")
    compare(nn.HuberLoss(reduction=reduction, delta=delta), torch.nn.HuberLoss(reduction=reduction, delta=delta),
            X, Y)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none", "mean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    torch = pytest.importorskip("torch")
    target = np.log(rng.dirichlet(np.ones(6), size=4)) if log_target else P
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn about reduction='mean'
        compare(nn.KLDivLoss(reduction=reduction, log_target=log_target),
                torch.nn.KLDivLoss(reduction=reduction, log_target=log_target), LOGP, target,
                target_grad=log_target)  # torch's target gradient is nan at a zero probability
        compare(lambda x, y: F.kl_div(x, y, reduction=reduction, log_target=log_target),
                lambda x, y: torch.nn.functional.kl_div(x, y, reduction=reduction, log_target=log_target),
                LOGP, target, target_grad=log_target)
    if not log_target:
        compare(lambda x, y: F.kl_div(x, y, reduction="sum"), lambda x, y: torch.nn.functional.kl_div(
            x, y, reduction="sum"), LOGP, rng.dirichlet(np.ones(6), size=4))  # positive targets: grads agree


def test_kl_div_mean_warns_and_legacy_arguments():
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(ef.tensor(LOGP), ef.tensor(P))
    loss = nn.KLDivLoss(size_average=False)
    assert loss.reduction == "sum"
    assert nn.SmoothL1Loss(reduce=False).reduction == "none"
    with pytest.raises(ValueError, match="reduction must be 'mean', 'batchmean', 'sum' or 'none', got 'avg'"):
        nn.KLDivLoss(reduction="avg")
    with pytest.raises(ValueError, match="beta must be a number >= 0"):
        F.smooth_l1_loss(ef.tensor(X), ef.tensor(Y), beta=-1)
    with pytest.raises(ValueError, match="input shape .* and target shape .* differ"):
        F.smooth_l1_loss(ef.tensor(X), ef.tensor(Y[:2]))


@pytest.mark.parametrize("dim", [1, 0, -1])
def test_cosine_similarity(dim):
    torch = pytest.importorskip("torch")
    x = X.copy()
    x[1] = 0.0  # a zero vector: the eps clamp applies and the gradient stays finite
    compare(nn.CosineSimilarity(dim=dim), torch.nn.CosineSimilarity(dim=dim), x, Y, rtol=1e-9)
    compare(lambda a, b: F.cosine_similarity(a, b, dim=dim, eps=0.5),
            lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=dim, eps=0.5), X * 0.05, Y, rtol=1e-9)


def test_cosine_similarity_broadcasts():
    torch = pytest.importorskip("torch")
    a, b = rng.standard_normal((3, 1, 5)), rng.standard_normal((4, 5))
    compare(lambda x, y: F.cosine_similarity(x, y, dim=-1),
            lambda x, y: torch.nn.functional.cosine_similarity(x, y, dim=-1), a, b, rtol=1e-9)


@pytest.mark.parametrize("loss", [
    lambda x, y: F.smooth_l1_loss(x, y, beta=0.7),
    lambda x, y: F.huber_loss(x, y, delta=0.7),
    lambda x, y: F.kl_div(x, y, reduction="batchmean", log_target=True),
    lambda x, y: F.cosine_similarity(x, y).sum(),
], ids=["smooth_l1", "huber", "kl_div", "cosine"])
def test_gradcheck(loss):
    x = ef.tensor(X * 0.3, requires_grad=True)
    y = ef.tensor(Y * 0.3, requires_grad=True)
    assert ef.gradcheck(loss, (x, y))
