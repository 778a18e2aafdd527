"""easyfit.nn.modules mirrors torch.nn.modules: each PyTorch path names the same easyfit class."""
import importlib

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn


def test_every_class_is_reachable_by_pytorchs_path_and_is_the_same_object():
    torch = pytest.importorskip("torch")
    checked = 0
    for submodule in ["module", "container", "linear", "flatten", "conv", "activation", "loss", "distance",
                      "batchnorm", "normalization", "pooling", "dropout", "sparse", "rnn", "transformer",
                      "upsampling"]:
        ours = importlib.import_module(f"easyfit.nn.modules.{submodule}")
        theirs = importlib.import_module(f"torch.nn.modules.{submodule}")
        for name in ours.__all__:
            assert hasattr(theirs, name), f"torch.nn.modules.{submodule} has no {name}"
            assert getattr(ours, name) is getattr(nn.modules, name)
            if hasattr(nn, name):
                assert getattr(ours, name) is getattr(nn, name)
            checked += 1
    assert checked >= 50
    # every easyfit layer PyTorch also has is reachable through torch.nn.modules' package
    for name in nn.__all__:
        value = getattr(nn, name)
        if isinstance(value, type) and issubclass(value, nn.Module) and hasattr(torch.nn.modules, name):
            assert getattr(nn.modules, name) is value, name


def test_pytorch_style_custom_loss_subclassing_loss_base():
    from easyfit.nn.modules.loss import _Loss
    from easyfit.nn.modules.batchnorm import _BatchNorm

    class ScaledMSE(_Loss):
        def __init__(self, scale, size_average=None, reduce=None, reduction="mean"):
            super().__init__(size_average, reduce, reduction)
            self.scale = scale

        def forward(self, input, target):
            return nn.functional.mse_loss(input, target, reduction=self.reduction) * self.scale

    x, y = ef.tensor([1.0, 2.0]), ef.tensor([0.0, 0.0])
    assert ScaledMSE(2.0)(x, y).item() == pytest.approx(5.0)
    assert ScaledMSE(1.0, reduce=False).reduction == "none"
    np.testing.assert_allclose(ScaledMSE(1.0, reduction="sum")(x, y).numpy(), 5.0)
    assert issubclass(nn.BatchNorm2d, _BatchNorm)
    assert nn.modules.linear.Linear is nn.Linear and ef.nn.modules.transformer.Transformer is nn.Transformer
