"""PyTorch's in-place `*_` methods and the `.data` / `.grad` idioms of hand-written training
code, against PyTorch's rules: allowed under no_grad or outside the graph, refused on a
leaf that requires grad and on a tensor computed in a graph."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn


def _pair(values):
    torch = pytest.importorskip("torch")
    return ef.tensor(np.array(values, dtype=np.float32)), torch.tensor(np.array(values, dtype=np.float32))


@pytest.mark.parametrize("call", [
    lambda t, mod: t.add_(mod.tensor([1.0, 2.0, 3.0]), alpha=2),
    lambda t, mod: t.sub_(0.5),
    lambda t, mod: t.mul_(mod.tensor([2.0, 0.0, -1.0])),
    lambda t, mod: t.div_(4),
    lambda t, mod: t.pow_(2),
    lambda t, mod: t.neg_(),
    lambda t, mod: t.abs_(),
    lambda t, mod: t.clamp_(-0.5, 0.5),
    lambda t, mod: t.clamp_(min=0.0),
    lambda t, mod: t.fill_(7),
    lambda t, mod: t.zero_(),
    lambda t, mod: t.copy_(mod.tensor([9.0, 8.0, 7.0])),
    lambda t, mod: t.copy_(mod.tensor(2.0)),
    lambda t, mod: t.masked_fill_(mod.tensor([True, False, True]), -3.0),
    lambda t, mod: t.addcmul_(mod.tensor([1.0, 2.0, 3.0]), mod.tensor([2.0, 2.0, 2.0]), value=0.5),
    lambda t, mod: t.addcdiv_(mod.tensor([1.0, 2.0, 3.0]), mod.tensor([2.0, 4.0, 8.0]), value=-1),
    lambda t, mod: t.lerp_(mod.tensor([1.0, 1.0, 1.0]), 0.25),
    lambda t, mod: t.exp_(),
    lambda t, mod: t.tanh_(),
    lambda t, mod: t.sigmoid_(),
    lambda t, mod: t.relu_(),
    lambda t, mod: t.scatter_(0, mod.tensor([2, 0]), mod.tensor([5.0, 6.0])),
])
def test_in_place_methods_match_pytorch_and_keep_identity(call):
    ours, theirs = _pair([0.25, -1.5, 2.0])
    storage = ours.array
    view = ours.data
    result = call(ours, ef)
    call(theirs, __import__("torch"))
    assert result is ours and ours.array is storage  # the same tensor, changed in place
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    np.testing.assert_allclose(view.numpy(), theirs.numpy(), rtol=1e-6)  # .data shares the change


def test_initialisation_idioms_through_data():
    ef.manual_seed(0)
    m = nn.Linear(50, 40)
    m.weight.data.normal_(0, 0.02)
    m.bias.data.fill_(0)
    assert m.weight.requires_grad and m.weight.is_leaf
    assert abs(float(m.weight.numpy().std()) - 0.02) < 0.002 and not m.bias.numpy().any()
    m.weight.data.uniform_(-0.1, 0.1)
    assert -0.1 <= m.weight.numpy().min() and m.weight.numpy().max() < 0.1
    ef.manual_seed(3)
    a = ef.empty(5).normal_()
    ef.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(), ef.empty(5).normal_().numpy())  # the seeded generator


def test_hand_written_sgd_with_data_and_grad_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, x, y = rng.standard_normal((3, 1)), rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    w, tw = ef.tensor(w0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    for _ in range(3):
        for p, mod, xs, ys in ((w, ef, ef.tensor(x), ef.tensor(y)), (tw, torch, torch.tensor(x), torch.tensor(y))):
            loss = ((xs.mm(p) - ys) ** 2).mean()
            loss.backward()
            p.data.add_(p.grad.data, alpha=-0.1)
            p.grad.data.zero_()
            assert not p.grad.numpy().any()
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-12)


def test_copy_between_models_through_data():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    for p, q in zip(a.parameters(), b.parameters()):
        p.data.copy_(q.data)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert a.weight.array is not b.weight.array


def test_leaf_that_requires_grad_refuses_outside_no_grad():
    w = ef.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"add_\(\) on a leaf tensor that requires grad .*no_grad"):
        w.add_(1)
    with ef.no_grad():
        w.mul_(3)
    w.data.sub_(1)
    np.testing.assert_array_equal(w.numpy(), [2.0, 2.0, 2.0])
    assert w.requires_grad


def test_a_tensor_computed_in_a_graph_refuses_in_place_changes():
    w = ef.ones(3, requires_grad=True)
    y = w * 2
    with pytest.raises(RuntimeError, match=r"mul_\(\) on a tensor computed in a graph \(by MulScalar\)"):
        y.mul_(2)
    with pytest.raises(RuntimeError, match="operand that does"):
        ef.zeros(3).add_(w)
    y.data.mul_(0)  # .data is outside the graph, as in PyTorch
    assert not y.numpy().any()


def test_in_place_refuses_a_cast_it_cannot_make():
    t = ef.tensor([1, 2])
    with pytest.raises(TypeError, match=r"add_\(\) on a tensor of shape \(2,\) int64"):
        t.add_(0.5)
