"""Losses against PyTorch (values and gradients) and their argument checks."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.nn import functional as F

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def compare(ef_loss, torch_loss, x, target, atol=1e-5, target_grad=False):
    x_ef, x_t = ef.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    if target_grad:
        t_ef, t_t = ef.tensor(target, requires_grad=True), torch.tensor(target, requires_grad=True)
    else:
        t_ef, t_t = ef.tensor(target), torch.tensor(target)
    out_ef, out_t = ef_loss(x_ef, t_ef), torch_loss(x_t, t_t)
    np.testing.assert_allclose(out_ef.numpy(), out_t.detach().numpy(), atol=atol, rtol=1e-4)
    seed = np.random.default_rng(1).standard_normal(out_t.shape).astype(np.float32)
    out_ef.backward(ef.tensor(seed))
    out_t.backward(torch.tensor(seed))
    np.testing.assert_allclose(x_ef.grad.numpy(), x_t.grad.numpy(), atol=atol, rtol=1e-4)
    if target_grad:
        np.testing.assert_allclose(t_ef.grad.numpy(), t_t.grad.numpy(), atol=atol, rtol=1e-4)


LOGITS = rng.standard_normal((6, 5)).astype(np.float32) * 3
TARGET = np.array([0, 4, 2, 2, 1, 3], dtype=np.int64)
WEIGHT = np.array([1.0, 2.0, 0.5, 1.5, 3.0], dtype=np.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [
    {}, {"ignore_index": 2}, {"label_smoothing": 0.1}, {"weight": WEIGHT},
    {"weight": WEIGHT, "ignore_index": 4, "label_smoothing": 0.2},
], ids=str)
def test_cross_entropy_class_indices(options, reduction):
    ours = nn.CrossEntropyLoss(weight=ef.tensor(options["weight"]) if "weight" in options else None,
                               ignore_index=options.get("ignore_index", -100), reduction=reduction,
                               label_smoothing=options.get("label_smoothing", 0.0))
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(options["weight"]) if "weight" in options else None,
                                       ignore_index=options.get("ignore_index", -100), reduction=reduction,
                                       label_smoothing=options.get("label_smoothing", 0.0))
    compare(ours, theirs, LOGITS, TARGET)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "weight": WEIGHT}], ids=str)
def test_cross_entropy_probabilities(options):
    probs = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
    kw = dict(label_smoothing=options.get("label_smoothing", 0.0))
    ours = nn.CrossEntropyLoss(weight=options.get("weight"), **kw)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(options["weight"]) if "weight" in options else None, **kw)
    compare(ours, theirs, LOGITS, probs, target_grad=True)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_spatial_and_unbatched(reduction):
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    t = rng.integers(0, 4, size=(2, 3, 5))
    t[0, 1, 2] = -100
    compare(nn.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction), x, t)
    compare(nn.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction),
            LOGITS[0], np.array(3))


def test_cross_entropy_is_stable_for_huge_logits():
    x = ef.tensor([[1000.0, -1000.0], [0.0, 3000.0]], requires_grad=True)
    loss = F.cross_entropy(x, ef.tensor([1, 1]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), 1000.0, rtol=1e-6)


def test_cross_entropy_keeps_float32():
    loss = F.cross_entropy(ef.randn(4, 3, requires_grad=True), ef.tensor([0, 1, 2, 0]))
    assert loss.dtype == np.float32


def test_cross_entropy_bad_targets_are_named():
    with pytest.raises(IndexError, match=r"\[0, 5\).*7"):
        F.cross_entropy(ef.tensor(LOGITS), ef.tensor([0, 7, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        F.cross_entropy(ef.tensor(LOGITS), ef.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction):
    logp = np.log(rng.dirichlet(np.ones(5), size=6)).astype(np.float32)
    compare(nn.NLLLoss(weight=WEIGHT, ignore_index=2, reduction=reduction),
            torch.nn.NLLLoss(weight=torch.tensor(WEIGHT), ignore_index=2, reduction=reduction), logp, TARGET)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_l1(reduction):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = rng.standard_normal((4, 3)).astype(np.float32)
    compare(nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), x, y, target_grad=True)
    compare(nn.L1Loss(reduction=reduction), torch.nn.L1Loss(reduction=reduction), x, y, target_grad=True)


def test_regression_losses_refuse_silent_broadcasting():
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\)"):
        F.mse_loss(ef.randn(4, 1), ef.randn(4))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits(reduction):
    x = (rng.standard_normal((5, 3)) * 4).astype(np.float32)
    x[0, 0] = 0.0
    y = rng.random((5, 3)).astype(np.float32)
    w = rng.random(3).astype(np.float32)
    pos = np.array([0.5, 2.0, 3.0], dtype=np.float32)
    compare(nn.BCEWithLogitsLoss(reduction=reduction), torch.nn.BCEWithLogitsLoss(reduction=reduction), x, y,
            target_grad=True)
    compare(nn.BCEWithLogitsLoss(weight=ef.tensor(w), pos_weight=ef.tensor(pos), reduction=reduction),
            torch.nn.BCEWithLogitsLoss(weight=torch.tensor(w), pos_weight=torch.tensor(pos), reduction=reduction),
            x, y, target_grad=True)


def test_bce_with_logits_is_stable():
    x = ef.tensor([-500.0, 500.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, ef.tensor([1.0, 0.0]), reduction="sum")
    loss.backward()
    np.testing.assert_allclose(loss.item(), 1000.0)
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 1.0])


def test_bce_on_probabilities():
    p = rng.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)
    y = rng.random((4, 3)).astype(np.float32)
    compare(nn.BCELoss(), torch.nn.BCELoss(), p, y, target_grad=True)
    with pytest.raises(ValueError, match="probabilities"):
        F.binary_cross_entropy(ef.tensor([1.5]), ef.tensor([1.0]))
