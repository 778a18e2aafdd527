"""The graph and the engine: accumulation, retain_graph, no_grad, long chains, memory,
user Functions, higher-order gradients, anomaly detection and error messages."""
import gc
import os
import tracemalloc
import weakref

import numpy as np
import pytest

import easyfit as ef
from easyfit.core import Function


def test_gradients_accumulate_over_two_backward_calls():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])


def test_second_backward_needs_retain_graph():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    y = (ef.exp(x) * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]), rtol=1e-6)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_graph_buffers_are_freed_after_backward():
    x = ef.tensor(np.ones(4), requires_grad=True)
    hidden = x * 2
    y = ef.tanh(hidden).sum()
    mul = hidden.creator
    y.backward()
    assert mul.inputs is None and not hasattr(mul, "saved_output_arrays")


def test_detach_and_no_grad_record_nothing():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.creator is None
    with ef.no_grad():
        y = x * 2
        with ef.enable_grad():
            z = x * 2
    assert y.creator is None and not y.requires_grad
    assert z.creator is not None and z.requires_grad
    assert ef.is_grad_enabled()


def test_no_grad_as_decorator():
    @ef.no_grad()
    def f(t):
        return t * 2
    assert f(ef.tensor([1.0], requires_grad=True)).creator is None


def test_leaf_grads_are_private_writable_arrays():
    a = ef.tensor([1.0, 2.0], requires_grad=True)
    b = ef.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()          # both grads come from one broadcast view
    assert a.grad is not b.grad
    a.grad.array *= 10                 # in-place (as clipping does) must not touch b
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])


def test_grad_assignable_and_clearable():
    x = ef.tensor([1.0], requires_grad=True)
    x.grad = ef.tensor([5.0])
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [7.0])
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])


def test_chain_of_100000_ops_backward_without_recursion_error():
    x = ef.tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_memory_is_stable_over_a_long_training_loop():
    rng = np.random.default_rng(0)
    w = ef.tensor(rng.standard_normal((64, 64)).astype(np.float32) * 0.1, requires_grad=True)
    xb = ef.tensor(rng.standard_normal((32, 64)).astype(np.float32))

    def step():
        loss = (ef.tanh(xb @ w) ** 2).mean()
        loss.backward()
        w.array -= 0.01 * w.grad.array
        w.grad = None

    for _ in range(50):
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(200):
        step()
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(1000):
        step()
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert second - first < 256 * 1024, f"memory grew by {second - first} bytes over 1000 steps"


def test_graph_is_collected_by_refcount_alone():
    gc.disable()
    try:
        x = ef.tensor(np.ones(3), requires_grad=True)
        y = ef.exp(x * 2)
        ref = weakref.ref(y.creator)
        del y
        assert ref() is None
    finally:
        gc.enable()


class Cube(Function):
    """A user op: x ** 3 with a hand-written backward built from ops."""

    def forward(self, x):
        return x ** 3

    def backward(self, gy):
        x, = self.inputs
        return gy * 3 * x * x


class ScaledAdd(Function):
    def __init__(self, alpha):
        self.alpha = alpha

    def forward(self, a, b):
        return a + self.alpha * b

    def backward(self, gy):
        return gy, gy * self.alpha


def test_user_function_first_and_second_order():
    x = ef.tensor([1.0, -2.0, 0.5], dtype=np.float64, requires_grad=True)
    y = Cube.apply(x)
    np.testing.assert_allclose(y.numpy(), x.numpy() ** 3)
    (g,) = ef.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    (h,) = ef.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.numpy())
    assert ef.gradcheck(Cube.apply, [x])
    assert ef.core.gradgradcheck(Cube.apply, [x])


def test_user_function_with_params_and_array_inputs():
    a = ef.tensor([1.0, 2.0], requires_grad=True)
    y = ScaledAdd.apply(a, np.array([10.0, 20.0], dtype=np.float32), alpha=0.5)
    np.testing.assert_allclose(y.numpy(), [6.0, 12.0])
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1.0, 1.0])


def test_user_function_returning_wrong_number_of_grads():
    class Bad(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, gy):
            return gy

    a = ef.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward returned 1 gradients for 2 inputs"):
        Bad.apply(a, a).sum().backward()


def test_hessian_vector_product():
    # f(x) = sum(x^2 * y) + sum(exp(x)): H = diag(2 y + exp(x))
    rng = np.random.default_rng(0)
    x = ef.tensor(rng.standard_normal(5), requires_grad=True)
    y = ef.tensor(rng.standard_normal(5))
    v = ef.tensor(rng.standard_normal(5))
    f = (x * x * y).sum() + ef.exp(x).sum()
    (g,) = ef.grad(f, x, create_graph=True)
    (hv,) = ef.grad((g * v).sum(), x)
    np.testing.assert_allclose(hv.numpy(), (2 * y.numpy() + np.exp(x.numpy())) * v.numpy(), rtol=1e-10)


def test_third_order_derivative():
    x = ef.tensor(0.3, dtype=np.float64, requires_grad=True)
    y = ef.tanh(x)
    (d1,) = ef.grad(y, x, create_graph=True)
    (d2,) = ef.grad(d1, x, create_graph=True)
    (d3,) = ef.grad(d2, x)
    t = np.tanh(0.3)
    np.testing.assert_allclose(d3.item(), -2 * (1 - t * t) * (1 - 3 * t * t), rtol=1e-10)


def test_grad_does_not_touch_dot_grad_and_reports_unused_inputs():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    unused = ef.tensor([1.0], requires_grad=True)
    y = (x * x).sum()
    (g,) = ef.grad(y, x, retain_graph=True)
    assert x.grad is None
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])
    with pytest.raises(RuntimeError, match="was not used"):
        ef.grad(y, [x, unused], retain_graph=True)
    g, none = ef.grad(y, [x, unused], allow_unused=True)
    assert none is None


def test_grad_with_respect_to_an_intermediate_tensor():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = (h * h).sum()
    gh, gx = ef.grad(y, [h, x])
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(gx.numpy(), 18 * x.numpy())


def test_backward_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ef.tensor([1.0]).backward()
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="grad has shape"):
        (x * 2).backward(ef.ones(3))
    with pytest.raises(TypeError, match="floating point"):
        ef.tensor([1, 2], requires_grad=True)


def test_backward_with_explicit_grad():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).backward(ef.tensor([1.0, 10.0]))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 30.0])


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_detect_anomaly_names_op_and_user_line():
    x = ef.tensor([0.0, 1.0], requires_grad=True)
    with ef.detect_anomaly():
        y = ef.sqrt(x).sum()  # the gradient of sqrt at 0 is inf
        with pytest.raises(ef.AnomalyError) as info:
            y.backward()
    message = str(info.value)
    assert "Sqrt" in message
    assert f"{os.path.basename(__file__)}:" in message and "ef.sqrt(x).sum()" in message


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_without_detect_anomaly_nan_flows_silently():
    x = ef.tensor([0.0, 1.0], requires_grad=True)
    ef.sqrt(x).sum().backward()
    assert np.isinf(x.grad.numpy()[0])


def test_shape_error_names_op_shapes_and_user_line():
    a = ef.ones(2, 3)
    b = ef.ones(4, 5)
    with pytest.raises(ValueError) as info:
        a + b  # noqa: the line under test
    message = str(info.value)
    assert message.startswith("Add:") and "(2, 3)" in message and "(4, 5)" in message
    assert "test_autograd.py" in message and "a + b" in message
    with pytest.raises(ValueError, match=r"MatMul: .*\(2, 3\) and \(4, 5\)"):
        a @ b


def test_float32_is_not_promoted_by_scalars():
    x = ef.ones(3)
    assert x.dtype == np.float32
    for y in (x * 2.5, x + np.float64(1.0), 2.0 / x, x ** 2, x - np.float32(1), np.float64(3.0) * x,
              ef.maximum(x, 0.5), ef.where(x.array > 0, x, 0.0)):
        assert y.dtype == np.float32, y
    assert (ef.ones(2, dtype=np.float64) * 2.0).dtype == np.float64
    assert (ef.arange(3) * 2).dtype == np.int64
    assert (ef.arange(3) * 0.5).dtype.kind == "f"


def test_comparisons_give_bool_without_grad():
    x = ef.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype == np.bool_ and not m.requires_grad and m.creator is None
    np.testing.assert_array_equal((x == 2.0).numpy(), [False, True, False])
    np.testing.assert_array_equal((x <= ef.tensor([1.0, 1.0, 5.0])).numpy(), [True, False, True])


def test_numpy_array_on_the_left_defers_to_tensor():
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0], dtype=np.float32) * x
    assert isinstance(y, ef.Tensor) and y.requires_grad
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_setitem_refused_on_graph_tensors_allowed_on_plain():
    x = ef.zeros(3)
    x[1] = 5.0
    np.testing.assert_allclose(x.numpy(), [0.0, 5.0, 0.0])
    w = ef.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w[0] = 1.0
    with ef.no_grad():  # as PyTorch: a leaf may be changed in place where nothing is recorded
        w[0] = 1.0
    np.testing.assert_allclose(w.numpy(), [1.0, 0.0, 0.0])
    y = w * 2
    with ef.no_grad(), pytest.raises(RuntimeError, match="in-place"):
        y[0] = 1.0  # y's graph may need its value


def test_hand_written_sgd_step_updates_parameters_in_place():
    """`p -= lr * p.grad` under no_grad, PyTorch's idiom for a manual optimizer step."""
    from easyfit import nn
    layer = nn.Linear(3, 2)
    weight = layer.weight
    before = weight.numpy().copy()
    (layer(ef.ones(4, 3)) ** 2).sum().backward()
    expected = before - 0.1 * weight.grad.numpy()
    with ef.no_grad():
        for p in layer.parameters():
            p -= 0.1 * p.grad
            p *= 1.0
            p += 0.0
            p /= 1.0
    assert layer.weight is weight and weight.requires_grad and weight.is_leaf
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    assert any(p is weight for p in layer.parameters())


def test_augmented_assignment_where_a_graph_is_recorded():
    w = ef.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w += 1.0
    total = ef.zeros(3)
    alias = total
    total += w * 2  # recorded out of place: the name now holds a graph tensor
    assert total is not alias and total.requires_grad
    np.testing.assert_allclose(alias.numpy(), [0.0, 0.0, 0.0])
    y = w * 3
    y += w  # a non-leaf: out of place too, so y's saved values stay intact
    y *= w
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [8.0, 8.0, 8.0])  # d/dw (4w * w) = 8w


def test_augmented_assignment_on_plain_tensors_is_in_place_and_checks_shapes():
    data = np.zeros(3, np.float32)
    t = ef.from_numpy(data)
    t += np.array([1.0, 2.0, 3.0], np.float32)
    t *= 2
    np.testing.assert_allclose(data, [2.0, 4.0, 6.0])  # the shared array changed, as in PyTorch
    assert t.dtype == np.float32
    with pytest.raises(ValueError, match=r"in-place \+= on a tensor of shape \(3,\)"):
        t += ef.ones(2, 3)


def test_multi_output_op_with_unused_outputs():
    x = ef.tensor(np.arange(6.0), requires_grad=True)
    a, b, c = ef.split(x, 2)  # chunks of two, as in PyTorch
    (b * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 0, 2, 2, 0, 0])


def test_a_second_backward_accumulates_into_the_grad_in_place_as_pytorch_does():
    w = ef.tensor([1.0, 2.0], requires_grad=True)
    (w * 3.0).sum().backward()
    grad, memory = w.grad, w.grad.array
    (w * w).sum().backward()             # two paths reach w in this pass: 2 w, plus the earlier 3
    assert w.grad is grad and w.grad.array is memory
    assert w.grad.tolist() == [5.0, 7.0]


def test_accumulation_never_writes_into_a_gradient_of_the_same_pass_or_of_a_graph():
    a = ef.tensor([1.0, 2.0], requires_grad=True)
    b = ef.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()             # a.grad and b.grad come from one array: b's is a copy
    (a * 2.0).sum().backward()
    assert a.grad.tolist() == [3.0, 3.0] and b.grad.tolist() == [1.0, 1.0]
    x = ef.tensor([1.0, 2.0], requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    first = x.grad
    (x * 1.0).sum().backward()
    assert first.tolist() == [3.0, 12.0] and x.grad.tolist() == [4.0, 13.0]


def test_a_tensor_used_twice_sums_its_gradients_with_and_without_create_graph():
    x = ef.tensor([0.5, 1.5], requires_grad=True)
    y = ef.tanh(x)
    (g,) = ef.grad((y * y + y).sum(), x, create_graph=True)
    (gg,) = ef.grad(g.sum(), x)
    (g_plain,) = ef.grad((ef.tanh(x) * ef.tanh(x) + ef.tanh(x)).sum(), x)
    np.testing.assert_allclose(g.numpy(), g_plain.numpy(), rtol=1e-6)
    t = np.tanh(np.array([0.5, 1.5]))
    np.testing.assert_allclose(g_plain.numpy(), (2 * t + 1) * (1 - t * t), rtol=1e-6)
    np.testing.assert_allclose(gg.numpy(), (2 * (1 - t * t) ** 2 - (2 * t + 1) * 2 * t * (1 - t * t)), rtol=1e-5)


def test_a_leafs_gradient_is_stored_as_the_leaf_is():
    """PyTorch's layout rule: a channels-last leaf gets a channels-last .grad (no transposing copy)."""
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 3).transpose(0, 3, 1, 2)
    x = ef.tensor(nchw, requires_grad=True)
    assert x.array.strides == nchw.strides
    (x * 2.0).sum().backward()
    assert x.grad.array.strides == x.array.strides
    np.testing.assert_array_equal(x.grad.array, np.full(nchw.shape, 2.0, np.float32))
    y = ef.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    (y.T * 3.0).sum().backward()          # a transposed gradient, stored C-order as y is
    assert y.grad.array.flags.c_contiguous


class _TransposedGradient(Function):
    """Identity whose backward returns its gradient as a transposed view of a fresh array,
    as layers do that compute in another layout; `kept` (a list, when given) also holds on
    to that array. `returned` records the view."""

    def __init__(self, returned, kept=None):
        self.returned, self.kept = returned, kept

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        fresh = np.ascontiguousarray(gy.numpy().transpose(0, 2, 3, 1)) * 1.0
        if self.kept is not None:
            self.kept.append(fresh)
        view = fresh.transpose(0, 3, 1, 2)
        self.returned.append(view)
        return ef.from_numpy(view)    # shares the memory (ef.tensor would copy)


def _channels_last(shape):
    n, c, h, w = shape
    return np.arange(n * c * h * w, dtype=np.float32).reshape(n, h, w, c).transpose(0, 3, 1, 2)


def test_a_gradient_that_is_a_view_only_it_holds_becomes_the_leafs_grad_uncopied():
    """A channels-last layer's gradient comes back as a transposed view of a fresh array:
    the leaf's .grad takes it as it is (a copy cost batch norm's leaf input 0.5 ms a step)."""
    x = ef.tensor(_channels_last((2, 3, 4, 5)), requires_grad=True)
    returned = []
    _TransposedGradient.apply(x, returned=returned).backward(ef.tensor(np.ones((2, 3, 4, 5), np.float32)))
    assert x.grad.array.ctypes.data == returned[0].ctypes.data
    assert x.grad.array.strides == x.array.strides


def test_a_gradient_whose_memory_the_layer_keeps_is_copied_into_the_leafs_grad():
    x = ef.tensor(_channels_last((2, 3, 4, 5)), requires_grad=True)
    kept = []
    _TransposedGradient.apply(x, returned=[], kept=kept).backward(ef.tensor(np.ones((2, 3, 4, 5), np.float32)))
    assert not np.shares_memory(x.grad.array, kept[0])
    x.grad.array *= 10                 # in place, as an optimizer does: the layer's array is untouched
    np.testing.assert_array_equal(kept[0], np.ones((2, 4, 5, 3), np.float32))
