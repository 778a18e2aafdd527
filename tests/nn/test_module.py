"""Module behaviour: parameter discovery, state dicts, modes, apply, zero_grad, printing."""
from collections import OrderedDict

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.second = nn.Linear(4, 2)

    def forward(self, x):
        return self.second(self.act(self.first(x)))


def names(module):
    return [name for name, _ in module.named_parameters()]


def test_parameters_found_in_attribute_order():
    model = TwoLayer()
    assert names(model) == ["first.weight", "first.bias", "second.weight", "second.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters())


def test_own_parameters_come_before_submodules_as_in_pytorch():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)
            self.scale = nn.Parameter(np.ones(1, dtype=np.float32))

    assert names(Scaled()) == ["scale", "inner.weight", "inner.bias"]
    assert list(Scaled().state_dict()) == ["scale", "inner.weight", "inner.bias"]


def test_lists_tuples_and_dicts_of_modules_are_walked():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = [nn.Linear(2, 2), nn.Linear(2, 2, bias=False)]
            self.pair = (nn.Linear(2, 1),)
            self.heads = {"a": nn.Linear(2, 3), "b": [nn.Linear(3, 1)]}
            self.extra = [nn.Parameter(np.zeros(2, dtype=np.float32))]

    model = Holder()
    assert names(model) == ["extra.0", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                            "pair.0.weight", "pair.0.bias", "heads.a.weight", "heads.a.bias",
                            "heads.b.0.weight", "heads.b.0.bias"]
    assert [name for name, _ in model.named_children()] == ["blocks.0", "blocks.1", "pair.0", "heads.a",
                                                             "heads.b.0"]


def test_shared_parameters_counted_once_but_state_dict_keeps_both_names():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]

    tied = TwoLayer()
    tied.second.weight = tied.first.weight  # a shared Parameter under two names
    tied.second.in_features = 3
    assert names(tied) == ["first.weight", "first.bias", "second.bias"]


def test_module_containing_itself_does_not_recurse_forever():
    model = TwoLayer()
    model.loop = [model]
    assert names(model) == ["first.weight", "first.bias", "second.weight", "second.bias"]
    assert len(list(model.modules())) == 4


def test_sequential_and_module_list():
    seq = nn.Sequential(OrderedDict(conv=nn.Linear(2, 3), act=nn.Tanh()))
    assert list(seq.state_dict()) == ["conv.weight", "conv.bias"]
    assert seq.conv is seq[0] and seq["act"] is seq[1] and len(seq) == 2
    assert isinstance(seq[:1], nn.Sequential) and len(seq[:1]) == 1
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.Linear(2, 1))
    assert names(layers)[-2:] == ["3.weight", "3.bias"] and len(layers) == 4
    with pytest.raises(TypeError, match="position 1"):
        nn.Sequential(nn.ReLU(), "not a module")


def test_module_dict_holds_named_modules_like_pytorch():
    heads = nn.ModuleDict({"cls": nn.Linear(4, 3), "box": nn.Linear(4, 2, bias=False)})
    heads["extra"] = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert names(heads) == ["cls.weight", "cls.bias", "box.weight", "extra.0.weight", "extra.0.bias"]
    assert list(heads) == ["cls", "box", "extra"] and "box" in heads and len(heads) == 3
    assert [k for k, _ in heads.items()] == list(heads.keys()) and heads["cls"] is list(heads.values())[0]
    assert "(box): Linear(in_features=4, out_features=2, bias=False)" in repr(heads)
    heads.update([("cls", nn.Linear(4, 5))])  # replaces in place, keeps the order
    assert list(heads) == ["cls", "box", "extra"] and heads["cls"].out_features == 5
    del heads["extra"]
    assert heads.pop("box").out_features == 2 and list(heads) == ["cls"]
    with pytest.raises(KeyError, match=r"has no module 'nope'; it has \['cls'\]"):
        heads["nope"]
    with pytest.raises(KeyError, match="without '.'"):
        heads["a.b"] = nn.ReLU()
    with pytest.raises(TypeError, match="key 'x'"):
        heads["x"] = "not a module"
    with pytest.raises(NotImplementedError, match="container"):
        heads(ef.ones(1, 4))


def test_module_dict_state_dict_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.ModuleDict({"c": nn.BatchNorm1d(2)})})
    theirs = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 2), "b": torch.nn.ModuleDict({"c": torch.nn.BatchNorm1d(2)})})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})


def test_train_eval_propagate():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_apply_visits_children_then_self():
    model = TwoLayer()
    visited = []
    assert model.apply(lambda m: visited.append(type(m).__name__)) is model
    assert visited == ["Linear", "ReLU", "Linear", "TwoLayer"]


def test_zero_grad_clears_gradients():
    model = TwoLayer()
    model(ef.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(float(np.abs(p.grad.numpy()).sum()) == 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trip_and_in_place_loading():
    source, target = TwoLayer(), TwoLayer()
    weight_before = target.first.weight
    result = target.load_state_dict({k: v.numpy().copy() for k, v in source.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert target.first.weight is weight_before  # identity kept: optimizers stay valid
    x = ef.randn(4, 3)
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())
    # state_dict values share memory with the parameters but are detached
    sd = source.state_dict()
    assert not sd["first.weight"].requires_grad
    assert np.shares_memory(sd["first.weight"].numpy(), source.first.weight.numpy())


def test_load_state_dict_strict_errors_name_the_keys():
    model = TwoLayer()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    del sd["second.bias"]
    sd["third.weight"] = np.zeros(2)
    with pytest.raises(KeyError) as info:
        model.load_state_dict(sd)
    assert "second.bias" in str(info.value) and "third.weight" in str(info.value)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["second.bias"] and result.unexpected_keys == ["third.weight"]


def test_load_state_dict_shape_mismatch_names_key_and_shapes():
    model = TwoLayer()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    sd["first.weight"] = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"first\.weight.*\(5, 3\).*\(4, 3\)"):
        model.load_state_dict(sd)


def test_buffers_in_state_dict_and_not_in_parameters():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert names(bn) == ["weight", "bias"]
    assert bn.state_dict()["num_batches_tracked"].dtype == np.int64

    class WithTemp(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("kept", ef.zeros(2))
            self.register_buffer("scratch", ef.zeros(2), persistent=False)
    module = WithTemp()
    assert list(module.state_dict()) == ["kept"]
    assert [name for name, _ in module.named_buffers()] == ["kept", "scratch"]


def test_to_dtype_converts_parameters_and_buffers_in_place():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    weight = model[0].weight
    model.double()
    assert weight.dtype == np.float64 and model[0].weight is weight
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    model.to(np.float32)
    assert weight.dtype == np.float32


def test_repr_is_a_tree_with_extra_repr():
    text = repr(TwoLayer())
    assert text == ("TwoLayer(\n"
                    "  (first): Linear(in_features=3, out_features=4, bias=True)\n"
                    "  (act): ReLU()\n"
                    "  (second): Linear(in_features=4, out_features=2, bias=True)\n"
                    ")")
    nested = repr(nn.Sequential(nn.Sequential(nn.Identity())))
    assert "  (0): Sequential(\n    (0): Identity()\n  )" in nested


def test_subclass_without_super_init_still_works():
    class Lazy(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

        def forward(self, x):
            return self.layer(x)

    model = Lazy()
    assert model.training and names(model) == ["layer.weight", "layer.bias"]
    model.eval()
    assert not model.layer.training


def test_parameter_is_a_tensor_that_requires_grad():
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    assert isinstance(p, ef.Tensor) and p.requires_grad
    assert repr(p).startswith("Parameter containing:")
    y = p * 2
    assert type(y) is ef.Tensor


def test_pytorch_style_registration_helpers_and_deepcopy():
    import copy
    model = nn.Module()
    model.add_module("body", nn.Linear(2, 3))
    model.register_parameter("gain", nn.Parameter(np.ones(3, dtype=np.float32)))
    assert names(model) == ["gain", "body.weight", "body.bias"]
    assert model.get_submodule("body") is model.body
    with pytest.raises(TypeError, match="expected a Parameter"):
        model.register_parameter("bad", ef.zeros(2))
    seq = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    clone = copy.deepcopy(seq)
    assert clone[0].weight is not seq[0].weight
    np.testing.assert_array_equal(clone[0].weight.numpy(), seq[0].weight.numpy())
    assert list(clone.state_dict()) == list(seq.state_dict())
