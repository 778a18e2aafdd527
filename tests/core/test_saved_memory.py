"""What a graph keeps alive between forward and backward (weakref checks, no timing)."""
import gc
import weakref

import numpy as np
import pytest

import easyfit as ef
from easyfit.core.autograd import stand_in


def _pre_activation(rng, shape=(8, 16)):
    w = ef.tensor(rng.standard_normal(shape), requires_grad=True)
    return w, w * 2.0 - 0.5          # a non-leaf tensor, as a conv or batch-norm output is


def test_relu_frees_its_input_after_forward():
    rng = np.random.default_rng(0)
    w, h = _pre_activation(rng)
    alive = weakref.ref(h.array)
    y = ef.relu(h)
    del h
    gc.collect()
    assert alive() is None            # only y's array (the mask source) is kept
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2.0 * (w.numpy() * 2.0 - 0.5 > 0))


def test_relu_gradient_reaches_a_captured_pre_activation_and_second_order():
    rng = np.random.default_rng(1)
    w, h = _pre_activation(rng)
    y = ef.relu(h)
    (g,) = ef.grad((y * y).sum(), [h], create_graph=True)     # stand-in still maps to h
    np.testing.assert_allclose(g.numpy(), 2 * np.maximum(h.numpy(), 0))
    g.sum().backward()                                          # d/dw of sum(2 relu(h)) = 4 [h > 0]
    np.testing.assert_allclose(w.grad.numpy(), 4.0 * (h.numpy() > 0))


def test_relu_of_a_leaf_keeps_the_leaf():
    x = ef.tensor(np.array([-1.0, 2.0]), requires_grad=True)
    ef.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0])


def test_stand_in_has_shape_dtype_and_graph_place_but_no_memory():
    rng = np.random.default_rng(2)
    _, h = _pre_activation(rng, (300, 400))
    s = stand_in(h)
    assert s.shape == h.shape and s.dtype == h.dtype and s.creator is h.creator
    assert s.requires_grad and s.output_index == h.output_index
    assert s.array.strides == (0, 0) and s.array.base.nbytes == h.array.itemsize


def test_stand_in_of_a_dropped_tensor_is_not_captured():
    rng = np.random.default_rng(3)
    w, h = _pre_activation(rng)
    y = ef.relu(h)
    del h
    gc.collect()
    (g,) = ef.grad(y.sum(), [w])
    np.testing.assert_array_equal(g.numpy(), 2.0 * (w.numpy() * 2.0 - 0.5 > 0))


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)])
def test_relu_matches_torch(shape):
    torch = pytest.importorskip("torch")
    w, h = _pre_activation(np.random.default_rng(4), shape)
    ef.relu(h).sum().backward()
    tw = torch.tensor(w.numpy(), requires_grad=True)
    torch.relu(tw * 2.0 - 0.5).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy())


@pytest.mark.parametrize("op", [
    lambda a, b: ef.where(ef.tensor(np.arange(12).reshape(3, 4) % 2 == 0), a, b),
    lambda a, b: ef.cat([a, b], dim=1),
    lambda a, b: ef.pad(a, ((1, 0), (2, 2))) * 1.0 + ef.pad(b, ((0, 1), (2, 2))).sum(),
], ids=["where", "cat", "pad"])
def test_ops_that_read_only_shapes_in_backward_free_their_inputs(op):
    rng = np.random.default_rng(5)
    wa, a = _pre_activation(rng, (3, 4))
    wb, b = _pre_activation(rng, (3, 4))
    alive = [weakref.ref(a.array), weakref.ref(b.array)]
    out = op(a, b)
    del a, b
    gc.collect()
    assert [ref() for ref in alive] == [None, None]
    (out * out).sum().backward()
    # the same gradients as a graph that kept its inputs
    wa2 = ef.tensor(wa.numpy(), requires_grad=True)
    wb2 = ef.tensor(wb.numpy(), requires_grad=True)
    a2, b2 = wa2 * 2.0 - 0.5, wb2 * 2.0 - 0.5
    keep = (a2, b2)
    out2 = op(*keep)
    (out2 * out2).sum().backward()
    np.testing.assert_array_equal(wa.grad.numpy(), wa2.grad.numpy())
    np.testing.assert_array_equal(wb.grad.numpy(), wb2.grad.numpy())


def test_an_op_keeps_the_inputs_it_says_backward_reads():
    from easyfit.core.autograd import KeepsStandIns

    class Scale(KeepsStandIns, ef.Function):      # a * b, as Mul would declare it
        def input_values_needed(self):
            a, b = self.inputs
            return (b.requires_grad, a.requires_grad)

        def forward(self, a, b):
            return a * b

        def backward(self, gy):
            a, b = self.inputs
            return (gy * b if a.requires_grad else None), (gy * a if b.requires_grad else None)

    rng = np.random.default_rng(6)
    w, h = _pre_activation(rng)
    constant = ef.tensor(rng.standard_normal((8, 16)))
    alive, kept = weakref.ref(h.array), weakref.ref(constant.array)
    y = Scale()(h, constant)
    del h, constant
    gc.collect()
    assert alive() is None and kept() is not None
    expected = 2.0 * kept()
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), expected)
