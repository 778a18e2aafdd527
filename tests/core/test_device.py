"""easyfit.device: PyTorch's torch.device spellings, usable wherever easyfit takes a device."""
import pickle

import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core.device import device


@pytest.mark.parametrize("args, text, kind, index", [
    (("cpu",), "cpu", "cpu", None),
    (("cuda",), "cuda", "cuda", None),
    (("cuda:1",), "cuda:1", "cuda", 1),
    (("cuda", 2), "cuda:2", "cuda", 2),
    ((3,), "cuda:3", "cuda", 3),
])
def test_device_spellings(args, text, kind, index):
    made = device(*args)
    assert made == text and str(made) == text
    assert made.type == kind and made.index == index
    assert device(made) is made
    assert pickle.loads(pickle.dumps(made)) == made


def test_repr_is_pytorchs():
    assert repr(device("cpu")) == "device(type='cpu')"
    assert repr(device("cuda:1")) == "device(type='cuda', index=1)"


@pytest.mark.parametrize("args, message", [
    (("gpu",), "unknown device type 'gpu'"),
    (("cuda:x",), "must be a non-negative integer"),
    (("cuda:1", 2), "given twice"),
    (("cpu", 1), "only index 0"),
    ((None,), "takes a device name"),
])
def test_bad_devices_are_named(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        device(*args)


def test_a_device_works_with_to_and_modules():
    cpu = ef.device("cpu")
    x = ef.zeros(2, 3).to(cpu)
    assert x.device == cpu == "cpu"
    layer = nn.Linear(3, 2).to(cpu)
    assert layer(x).device == "cpu"
    assert ef.ones(2, device=cpu).device == "cpu"
