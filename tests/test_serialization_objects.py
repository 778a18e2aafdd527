"""Whole objects through easyfit.save/load (PyTorch's `torch.save(model, f)`), without pickle.

A program's own classes are rebuilt only when allowed (`serialization.safe_globals`), as
PyTorch's weights_only loading asks; easyfit's own are always allowed; nothing in the file
runs code.
"""
import io
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn, serialization
from easyfit.nn import functional as F


class TiedLM(nn.Module):
    """A module-level class, as a user's script defines its model."""

    def __init__(self, ntoken=11, nhid=6):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, nhid)
        self.rnn = nn.LSTM(nhid, nhid, 2)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight
        self.activation = F.relu
        self.register_buffer("scale", ef.tensor([math.sqrt(nhid)]))
        self.rnn_type = "LSTM"

    def forward(self, input):
        output, _ = self.rnn(self.encoder(input) * self.scale)
        return F.log_softmax(self.decoder(self.activation(output)), dim=-1)


def _roundtrip(model, target):
    ef.save(model, target)
    if isinstance(target, io.BytesIO):
        target.seek(0)
    with serialization.safe_globals([TiedLM]):
        return ef.load(target)


@pytest.mark.parametrize("use_file_object", [False, True], ids=["path", "file object"])
def test_a_model_round_trips_with_tied_weights_and_buffers(use_file_object, tmp_path):
    model = TiedLM()
    model.eval()
    if use_file_object:
        with open(tmp_path / "model.pt", "wb") as f:
            ef.save(model, f)
        with open(tmp_path / "model.pt", "rb") as f, serialization.safe_globals([TiedLM]):
            loaded = ef.load(f)
    else:
        loaded = _roundtrip(model, tmp_path / "model.pt")
    assert type(loaded) is TiedLM and type(loaded.rnn) is nn.LSTM
    assert loaded.decoder.weight is loaded.encoder.weight
    assert isinstance(loaded.encoder.weight, nn.Parameter) and loaded.encoder.weight.requires_grad
    assert loaded.activation is F.relu and loaded.rnn_type == "LSTM" and not loaded.training
    assert list(loaded.state_dict()) == list(model.state_dict())
    tokens = ef.tensor([[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(loaded(tokens).numpy(), model(tokens).numpy())
    loss = loaded(tokens).sum()
    loss.backward()
    assert loaded.encoder.weight.grad is not None


def test_a_class_that_is_not_allowed_is_refused_with_the_fix(tmp_path):
    ef.save(TiedLM(), tmp_path / "model.pt")
    with pytest.raises(serialization.UntrustedGlobalError, match=r"TiedLM.*safe_globals\(\[TiedLM\]\)"):
        ef.load(tmp_path / "model.pt")


def test_add_safe_globals_allows_until_cleared(tmp_path):
    ef.save(TiedLM(), tmp_path / "model.pt")
    serialization.add_safe_globals([TiedLM])
    try:
        assert TiedLM in serialization.get_safe_globals()
        assert isinstance(ef.load(tmp_path / "model.pt"), TiedLM)
    finally:
        serialization.clear_safe_globals()
    assert TiedLM not in serialization.get_safe_globals()


def test_easyfit_names_resolve_only_to_easyfit_objects(tmp_path):
    path = tmp_path / "layer.pt"
    ef.save(nn.Linear(2, 3), path)
    assert isinstance(ef.load(path), nn.Linear)  # easyfit's own classes need no permission
    # a header that names something reachable from an easyfit module but not defined there is refused
    from easyfit.core import serialization as core
    with pytest.raises(serialization.UntrustedGlobalError, match="os.system"):
        core._trusted("easyfit.core.serialization:os.system", path, "function")
    with pytest.raises(serialization.UntrustedGlobalError, match="builtins.eval"):
        core._trusted("builtins:eval", path, "function")
    with pytest.raises(serialization.UntrustedGlobalError, match="contextmanager"):
        core._trusted("easyfit.core.autograd:contextmanager", path, "function")  # contextlib's


def test_a_file_naming_an_op_where_it_lived_before_the_tensor_split_loads(tmp_path):
    # Files written before tensor.py's families moved out name its ops easyfit.core.tensor:...
    from easyfit.core import reductions, serialization as core
    path = tmp_path / "old.pt"
    assert core._trusted("easyfit.core.tensor:mean", path, "function") is ef.mean
    assert core._trusted("easyfit.core.tensor:Sum", path, "class") is reductions.Sum
    with pytest.raises(serialization.UntrustedGlobalError, match="clip"):
        core._trusted("easyfit.core:clip", path, "function")  # an alias (of clamp), not the name of an object


def test_what_cannot_be_named_again_is_refused_before_writing(tmp_path):
    model = nn.Linear(2, 2)
    model.hook = lambda x: x
    with pytest.raises(TypeError, match="lambda"):
        ef.save(model, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    with pytest.raises(TypeError, match="got list"):
        ef.save([1, 2], tmp_path / "list.pt")


def test_state_dicts_still_load_as_plain_arrays(tmp_path):
    buffer = io.BytesIO()
    ef.save(nn.Linear(2, 3).state_dict(), buffer)
    buffer.seek(0)
    state = ef.load(buffer)
    assert set(state) == {"weight", "bias"} and isinstance(state["weight"], np.ndarray)


def test_an_object_inside_a_checkpoint_dict(tmp_path):
    model = nn.Linear(2, 3)
    ef.save({"model": model, "epoch": 3}, tmp_path / "checkpoint.pt")
    checkpoint = ef.load(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 3 and isinstance(checkpoint["model"], nn.Linear)
    np.testing.assert_array_equal(checkpoint["model"].weight.numpy(), model.weight.numpy())
