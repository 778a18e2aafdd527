"""RNN, LSTM, GRU and their cells: against PyTorch, finite differences and their own fast paths.

Every test runs twice: with the LSTM/GRU gate kernels compiled (numba, the `fast` extra;
skipped without numba) and on the NumPy path (`numba_disabled()`, also what runs with
EASYFIT_NUMBA=0, on CuPy arrays and in float16)."""
import warnings

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core import Tensor, compiled, gradcheck, gradgradcheck
from easyfit.nn import functional as F
from easyfit.nn.recurrent import GRUSequence, LSTMSequence, RNNSequence

@pytest.fixture(params=["numba", "numpy"], autouse=True)
def kernel_path(request):
    """Runs every test of this file once on each path of the LSTM/GRU step loops."""
    if request.param == "numba":
        pytest.importorskip("numba")
        assert compiled.numba_enabled()
        yield "numba"
    else:
        with compiled.numba_disabled():
            yield "numpy"


SEQUENCE_LAYERS = [("LSTM", {}), ("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})]


def torch_or_skip():
    return pytest.importorskip("torch")


def copy_from_torch(mine, theirs):
    """Load a PyTorch module's state dict (as NumPy arrays), checking names and order first."""
    state = {name: value.detach().numpy() for name, value in theirs.state_dict().items()}
    assert list(state) == [name for name, _ in mine.named_parameters()]
    mine.load_state_dict(state)


def assert_close(mine, theirs, atol=1e-10, what=""):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    mine = mine.numpy() if isinstance(mine, Tensor) else mine
    assert mine.shape == theirs.shape, what
    np.testing.assert_allclose(mine, theirs, rtol=1e-7, atol=atol, err_msg=what)


def run_both(kind, kwargs, batch_first, bidirectional, with_state, torch, num_layers=2, dtype="float64",
             shape=None):
    """Run one easyfit and one PyTorch layer with the same weights; return both sides' results."""
    rng = np.random.default_rng(1)
    theirs = getattr(torch.nn, kind)(3, 4, num_layers=num_layers, batch_first=batch_first,
                                     bidirectional=bidirectional, **kwargs)
    mine = getattr(nn, kind)(3, 4, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional,
                             **kwargs)
    if dtype == "float64":
        theirs, mine = theirs.double(), mine.double()
    copy_from_torch(mine, theirs)
    if shape is None:
        shape = (2, 5, 3) if batch_first else (5, 2, 3)
    x = rng.standard_normal(shape).astype(dtype)
    states = []
    if with_state:
        layers = num_layers * (2 if bidirectional else 1)
        state_shape = (layers, 2, 4) if len(shape) == 3 else (layers, 4)
        states = [rng.standard_normal(state_shape).astype(dtype) for _ in range(2 if kind == "LSTM" else 1)]
    results = []
    for module, lib in ((mine, "easyfit"), (theirs, "torch")):
        make = (lambda a: ef.tensor(a, requires_grad=True)) if lib == "easyfit" else \
            (lambda a: torch.tensor(a, requires_grad=True))
        xt = make(x)
        st = [make(s) for s in states]
        if kind == "LSTM":
            output, (h_n, c_n) = module(xt, tuple(st) if st else None)
            finals = [h_n, c_n]
        else:
            output, h_n = module(xt, st[0] if st else None)
            finals = [h_n]
        # A loss that weights every output and final state differently.
        loss = (output * output).sum() + sum((f * (k + 2.0)).sum() for k, f in enumerate(finals)) \
            + (finals[-1] ** 3).sum()
        loss.backward()
        grads = [xt.grad] + [s.grad for s in st] + [p.grad for p in module.parameters()]
        results.append((output, finals, grads))
    return results


@pytest.mark.parametrize("kind,kwargs", SEQUENCE_LAYERS)
@pytest.mark.parametrize("batch_first,bidirectional,with_state", [
    (False, False, False), (False, True, True), (True, False, True), (True, True, False)])
def test_sequence_layers_match_torch(kind, kwargs, batch_first, bidirectional, with_state):
    torch = torch_or_skip()
    (output, finals, grads), (t_output, t_finals, t_grads) = run_both(
        kind, kwargs, batch_first, bidirectional, with_state, torch)
    assert_close(output, t_output, what="output")
    for mine, theirs in zip(finals, t_finals):
        assert_close(mine, theirs, what="final state")
    assert len(grads) == len(t_grads)
    for index, (mine, theirs) in enumerate(zip(grads, t_grads)):
        assert_close(mine, theirs, what=f"gradient {index}")


def test_lstm_float32_matches_torch():
    torch = torch_or_skip()
    (output, finals, grads), (t_output, t_finals, t_grads) = run_both(
        "LSTM", {}, False, True, True, torch, dtype="float32")
    assert output.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert_close(output, t_output, atol=1e-5)
    for mine, theirs in zip(grads, t_grads):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,kwargs", SEQUENCE_LAYERS)
def test_unbatched_sequence_matches_torch(kind, kwargs):
    torch = torch_or_skip()
    (output, finals, grads), (t_output, t_finals, t_grads) = run_both(
        kind, kwargs, False, True, True, torch, shape=(5, 3))
    assert output.shape == (5, 8) and finals[0].shape == (4, 4)
    assert_close(output, t_output)
    for mine, theirs in zip(finals + grads, t_finals + t_grads):
        assert_close(mine, theirs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_without_bias_matches_torch(kind):
    torch = torch_or_skip()
    theirs = getattr(torch.nn, kind)(3, 4, num_layers=2, bias=False).double()
    mine = getattr(nn, kind)(3, 4, num_layers=2, bias=False).double()
    assert [n for n, _ in mine.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]
    copy_from_torch(mine, theirs)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    assert_close(mine(ef.tensor(x))[0], theirs(torch.tensor(x))[0])


@pytest.mark.parametrize("kind,gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_parameter_names_shapes_and_init_follow_torch(kind, gates):
    torch = torch_or_skip()
    mine = getattr(nn, kind)(3, 5, num_layers=2, bidirectional=True)
    theirs = getattr(torch.nn, kind)(3, 5, num_layers=2, bidirectional=True)
    assert [(n, tuple(p.shape)) for n, p in mine.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert mine.weight_ih_l0.shape == (gates * 5, 3) and mine.weight_ih_l1_reverse.shape == (gates * 5, 10)
    bound = 1 / np.sqrt(5)
    values = np.concatenate([p.numpy().ravel() for p in mine.parameters()])
    assert values.dtype == np.float32
    assert np.abs(values).max() <= bound and values.std() > bound / 3   # uniform(-b, b) has std b/sqrt(3)
    # Seeded: the same seed gives the same weights.
    ef.manual_seed(3)
    first = getattr(nn, kind)(3, 5).weight_hh_l0.numpy().copy()
    ef.manual_seed(3)
    np.testing.assert_array_equal(getattr(nn, kind)(3, 5).weight_hh_l0.numpy(), first)


def test_state_dict_moves_to_torch():
    torch = torch_or_skip()
    mine = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    theirs = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in mine.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(mine(ef.tensor(x))[0].numpy(), theirs(torch.tensor(x))[0].detach().numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("cell,kwargs", [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}),
                                         ("RNNCell", {"nonlinearity": "relu"}), ("GRUCell", {"bias": False})])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_cells_match_torch(cell, kwargs, batched, with_state):
    torch = torch_or_skip()
    theirs = getattr(torch.nn, cell)(3, 4, **kwargs).double()
    mine = getattr(nn, cell)(3, 4, **kwargs).double()
    copy_from_torch(mine, theirs)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) if batched else (3,))
    states = [rng.standard_normal((2, 4) if batched else (4,)) for _ in range(2 if cell == "LSTMCell" else 1)]
    results = []
    for module, make in ((mine, lambda a: ef.tensor(a, requires_grad=True)),
                         (theirs, lambda a: torch.tensor(a, requires_grad=True))):
        xt, st = make(x), [make(s) for s in states]
        if cell == "LSTMCell":
            out = module(xt, tuple(st) if with_state else None)
            loss = (out[0] * out[0]).sum() + (out[1] * 3.0).sum()
        else:
            out = (module(xt, st[0] if with_state else None),)
            loss = (out[0] * out[0]).sum()
        loss.backward()
        grads = [xt.grad] + ([s.grad for s in st] if with_state else []) + [p.grad for p in module.parameters()]
        results.append((out, grads))
    (out, grads), (t_out, t_grads) = results
    for mine_value, theirs_value in zip(list(out) + grads, list(t_out) + t_grads):
        assert_close(mine_value, theirs_value)


# ----- the fused ops against finite differences ------------------------------------------

def sequence_inputs(kind, length=3, batch=2, hidden=2, seed=0):
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]

    def make(*shape, scale=1.0):
        return Tensor(rng.standard_normal(shape) * scale, requires_grad=True)

    inputs = [make(length, batch, gates * hidden), make(batch, hidden)]
    if kind == "LSTM":
        inputs.append(make(batch, hidden))
    inputs.append(make(gates * hidden, hidden, scale=0.5))
    if kind == "GRU":
        inputs.append(make(gates * hidden))
    return inputs


def sequence_op(kind, reverse, nonlinearity="tanh"):
    if kind == "LSTM":
        return lambda *xs: LSTMSequence(reverse)(*xs)
    if kind == "GRU":
        return lambda *xs: GRUSequence(reverse)(*xs)
    return lambda *xs: RNNSequence(nonlinearity, reverse)(*xs)


OPS = [("LSTM", "tanh"), ("GRU", "tanh"), ("RNN", "tanh"), ("RNN", "relu")]


@pytest.mark.parametrize("kind,nonlinearity", OPS)
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_ops_gradcheck(kind, nonlinearity, reverse):
    assert gradcheck(sequence_op(kind, reverse, nonlinearity), sequence_inputs(kind))


@pytest.mark.parametrize("kind,nonlinearity", OPS)
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_ops_gradgradcheck(kind, nonlinearity, reverse):
    assert gradgradcheck(sequence_op(kind, reverse, nonlinearity), sequence_inputs(kind, length=2))


@pytest.mark.parametrize("kind,nonlinearity", OPS)
@pytest.mark.parametrize("reverse", [False, True])
def test_differentiable_backward_equals_fast_backward(kind, nonlinearity, reverse):
    """create_graph=True takes the op-composed backward; it must give the array path's values."""
    inputs = sequence_inputs(kind, length=4, batch=3, hidden=3, seed=5)
    op = sequence_op(kind, reverse, nonlinearity)
    weights = [Tensor(np.random.default_rng(k).standard_normal(o.shape)) for k, o in enumerate(op(*inputs))]

    def gradients(create_graph):
        outputs = op(*inputs)
        return ef.grad(list(outputs), inputs, grad_outputs=weights, create_graph=create_graph)

    for fast, composed in zip(gradients(False), gradients(True)):
        np.testing.assert_allclose(composed.numpy(), fast.numpy(), rtol=1e-12, atol=1e-12)


def test_lstm_cell_gradgradcheck():
    cell = nn.LSTMCell(2, 3).double()
    rng = np.random.default_rng(0)
    x, h, c = (Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((2, 2), (2, 3), (2, 3)))
    assert gradgradcheck(lambda x, h, c: cell(x, (h, c)), [x, h, c])


def test_stacked_bidirectional_lstm_gradcheck():
    lstm = nn.LSTM(2, 2, num_layers=2, bidirectional=True).double()
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    c0 = Tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)

    def run(x, h0, c0):
        output, (h_n, c_n) = lstm(x, (h0, c0))
        return output, h_n, c_n

    assert gradcheck(run, [x, h0, c0])


def test_parameter_gradients_against_finite_differences():
    """Every weight of a bidirectional GRU, checked through leaf tensors put in the parameters' place."""
    gru = nn.GRU(2, 3, bidirectional=True).double()
    x = ef.tensor(np.random.default_rng(0).standard_normal((3, 2, 2)))
    original = dict(gru.named_parameters())
    leaves = [Tensor(p.array.copy(), requires_grad=True) for p in original.values()]

    def with_leaves(*values):
        for name, value in zip(original, values):
            setattr(gru, name, value)
        try:
            return gru(x)[0]
        finally:
            for name, param in original.items():
                setattr(gru, name, param)

    assert gradcheck(with_leaves, leaves)


# ----- training-mode behaviour and errors --------------------------------------------------

def test_dropout_between_layers_only_in_training():
    lstm = nn.LSTM(3, 4, num_layers=3, dropout=0.5)
    x = ef.randn(5, 2, 3)
    lstm.eval()
    evaluated = lstm(x)[0].numpy()
    # Eval mode: the same as running the layers without dropout.
    reference = nn.LSTM(3, 4, num_layers=3)
    reference.load_state_dict(lstm.state_dict())
    np.testing.assert_array_equal(evaluated, reference(x)[0].numpy())
    # Train mode: dropout (PyTorch's: mask from easyfit's generator, scaled by 1/(1-p)) after
    # every layer but the last, reproduced here layer by layer.
    lstm.train()
    ef.manual_seed(7)
    trained = lstm(x)[0].numpy()
    assert not np.allclose(trained, evaluated)
    singles = [nn.LSTM(3 if layer == 0 else 4, 4) for layer in range(3)]   # built before seeding
    for layer, single in enumerate(singles):
        single.load_state_dict({name[:-1] + "0": value for name, value in lstm.state_dict().items()
                                if name.endswith(f"_l{layer}")})
    ef.manual_seed(7)
    h = x
    for layer, single in enumerate(singles):
        h = single(h)[0]
        if layer < 2:
            h = F.dropout(h, 0.5, True)
    np.testing.assert_allclose(trained, h.numpy(), rtol=1e-6)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(3, 4, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.GRU(3, 4, num_layers=2, dropout=0.2)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_wrong_input_size_names_layer_and_shapes(kind):
    layer = getattr(nn, kind)(10, 20, num_layers=2)
    with pytest.raises(ValueError, match=rf"{kind}\(10, 20, num_layers=2\).*input_size=10.*\(5, 3, 7\)"):
        layer(ef.randn(5, 3, 7))
    with pytest.raises(ValueError, match=r"3-D input.*\(5,\)"):
        layer(ef.randn(5))


def test_wrong_initial_state_shape_is_named():
    lstm = nn.LSTM(3, 4, bidirectional=True)
    x = ef.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(x, (ef.zeros(1, 2, 4), ef.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \(2, 2, 4\), got \(2, 2, 5\)"):
        lstm(x, (ef.zeros(2, 2, 4), ef.zeros(2, 2, 5)))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm(x, ef.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"GRUCell\(3, 4\).*\(batch, 3\).*\(2, 5\)"):
        nn.GRUCell(3, 4)(ef.randn(2, 5))


def test_dtype_mismatch_is_an_error_not_a_silent_upcast():
    with pytest.raises(TypeError, match="float64 does not match the parameters' dtype float32"):
        nn.LSTM(3, 4)(ef.randn(5, 2, 3, dtype=np.float64))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        nn.LSTM(3, 0)
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1\\], got 1.5"):
        nn.GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")


def test_shapes_repr_and_no_grad():
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    assert repr(lstm) == "LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)"
    output, (h_n, c_n) = lstm(ef.randn(2, 7, 3))
    assert output.shape == (2, 7, 8) and h_n.shape == (4, 2, 4) and c_n.shape == (4, 2, 4)
    with ef.no_grad():
        output, _ = lstm(ef.randn(2, 7, 3))
    assert not output.requires_grad and output.creator is None
    assert repr(nn.RNNCell(3, 4, nonlinearity="relu")) == "RNNCell(3, 4, nonlinearity='relu')"


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    lstm = nn.LSTM(3, 4, bidirectional=True)
    x = ef.randn(5, 2, 3, requires_grad=True)
    loss = (lstm(x)[0] ** 2).sum()
    loss.backward(retain_graph=True)
    first = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in lstm.parameters()]
    x.grad = None
    lstm.zero_grad()
    loss.backward()
    for before, after in zip(first, [x.grad] + [p.grad for p in lstm.parameters()]):
        np.testing.assert_array_equal(after.numpy(), before)
