"""Training parity: the same MLP and CNN from the same weights, trained with each optimizer,
give PyTorch's per-step losses; a checkpoint mid-training resumes exactly."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.optim import SGD, Adam, AdamW, RMSprop, ParamScheduler, one_cycle_lr, one_cycle_mom, set_hyper

torch = pytest.importorskip("torch")

STEPS = 30
OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=3e-3)),
    ("Adam", dict(lr=3e-3, amsgrad=True, weight_decay=1e-3)),
    ("AdamW", dict(lr=3e-3, weight_decay=0.05)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
]
OURS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}


def mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(20, 32), lib.nn.ReLU(), lib.nn.Linear(32, 32), lib.nn.ReLU(),
                             lib.nn.Linear(32, 5))


def cnn(lib):
    L = lib.nn
    return L.Sequential(L.Conv2d(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Conv2d(4, 6, 3, padding=1), L.ReLU(),
                        L.Flatten(), L.Linear(6 * 4 * 4, 5))


class EasyfitLib:
    nn = nn


def batches(kind, steps, seed=0):
    """`steps` batches cycling through 3 fixed ones, so the model can fit them and the loss falls."""
    rng = np.random.default_rng(seed)
    shape = (16, 20) if kind == "mlp" else (8, 1, 8, 8)
    fixed = [(rng.standard_normal(shape).astype(np.float32), rng.integers(0, 5, shape[0]).astype(np.int64))
             for _ in range(3)]
    return [fixed[step % 3] for step in range(steps)]


def twin_models(kind):
    """A torch model and an easyfit model holding the same weights."""
    torch.manual_seed(0)
    theirs = (mlp if kind == "mlp" else cnn)(torch)
    ours = (mlp if kind == "mlp" else cnn)(EasyfitLib)
    ours.load_state_dict({name: value.detach().numpy().copy() for name, value in theirs.state_dict().items()})
    return ours, theirs


def train_easyfit(model, opt, data, scheduler=None):
    loss_func = nn.CrossEntropyLoss()
    losses = []
    for x, y in data:
        loss = loss_func(model(ef.tensor(x)), ef.tensor(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def train_torch(model, opt, data, hyper_at=None):
    loss_func = torch.nn.CrossEntropyLoss()
    losses = []
    for step, (x, y) in enumerate(data):
        if hyper_at is not None:
            lr, mom = hyper_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
                if "betas" in group:
                    group["betas"] = (mom, group["betas"][1])
                else:
                    group["momentum"] = mom
        loss = loss_func(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=[f"{n}-{k}" for n, k in OPTIMIZERS])
def test_per_step_losses_match_torch(kind, name, kwargs):
    ours, theirs = twin_models(kind)
    data = batches(kind, STEPS)
    our_losses = train_easyfit(ours, OURS[name](ours.parameters(), **kwargs), data)
    their_losses = train_torch(theirs, getattr(torch.optim, name)(theirs.parameters(), **kwargs), data)
    np.testing.assert_allclose(our_losses, their_losses, rtol=5e-5, atol=1e-6)  # measured: <= 1e-5
    assert our_losses[-1] < 0.9 * our_losses[0]  # it did learn
    for (key, value), (_, tvalue) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        np.testing.assert_allclose(value, tvalue.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_one_cycle_schedule_matches_torch_given_the_same_values(name):
    ours, theirs = twin_models("mlp")
    data = batches("mlp", STEPS, seed=1)
    kwargs = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    lr, mom = one_cycle_lr(0.1 if name == "SGD" else 1e-2), one_cycle_mom()
    opt = OURS[name](ours.parameters(), **kwargs)
    our_losses = train_easyfit(ours, opt, data, ParamScheduler(opt, total_steps=STEPS, lr=lr, mom=mom))
    their_losses = train_torch(theirs, getattr(torch.optim, name)(theirs.parameters(), **kwargs), data,
                               hyper_at=lambda step: (lr(step / STEPS), mom(step / STEPS)))
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                          ("Adam", dict(lr=3e-3, amsgrad=True)),
                                          ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.3))])
def test_checkpoint_mid_training_resumes_exactly(name, kwargs, tmp_path):
    data = batches("cnn", 16, seed=2)
    model, _ = twin_models("cnn")
    opt = OURS[name](model.parameters(), **kwargs)
    scheduler = ParamScheduler(opt, total_steps=16, lr=one_cycle_lr(kwargs["lr"]))
    train_easyfit(model, opt, data[:8], scheduler)
    ef.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()},
            tmp_path / "checkpoint.safetensors")
    uninterrupted = train_easyfit(model, opt, data[8:], scheduler)

    checkpoint = ef.load(tmp_path / "checkpoint.safetensors")
    resumed_model = cnn(EasyfitLib)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_opt = OURS[name](resumed_model.parameters(), **kwargs)
    resumed_opt.load_state_dict(checkpoint["opt"])
    resumed_scheduler = ParamScheduler(resumed_opt, total_steps=16, lr=one_cycle_lr(kwargs["lr"]))
    resumed_scheduler.load_state_dict(checkpoint["sched"])
    resumed = train_easyfit(resumed_model, resumed_opt, data[8:], resumed_scheduler)
    assert resumed == uninterrupted  # bit for bit
    for (key, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=key)


def test_torch_optimizer_hyper_parameters_move_through_set_hyper():
    ours, _ = twin_models("mlp")
    opt = Adam(ours.parameters())
    set_hyper(opt, "lr", 0.5)
    assert opt.param_groups[0]["lr"] == 0.5
