"""Optimizers against torch.optim on the same parameters and gradients, plus their API."""
import json
import tracemalloc

import numpy as np
import pytest

import easyfit as ef
from easyfit.optim import SGD, Adam, AdamW, RMSprop, Optimizer

SHAPES = [(5, 4), (4,), (3, 2, 2)]


def make_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def gradient(step, index, param):
    """A gradient that depends on the parameter (so errors would compound) plus fixed noise."""
    rng = np.random.default_rng(1000 * step + index)
    noise = rng.standard_normal(param.shape).astype(np.float32)
    return (np.float32(0.5) * param + noise).astype(np.float32)


def run_easyfit(cls, kwargs, steps, group_kwargs=None, skip=None):
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    if group_kwargs:
        groups = [dict(params=params[:1], **group_kwargs[0]), dict(params=params[1:], **group_kwargs[1])]
        opt = cls(groups, **kwargs)
    else:
        opt = cls(params, **kwargs)
    history = []
    for step in range(steps):
        for index, p in enumerate(params):
            if skip and skip(step, index):
                p.grad = None
            else:
                p.grad = ef.tensor(gradient(step, index, p.array))
        opt.step()
        history.append([p.array.copy() for p in params])
    return history


def run_torch(torch, cls_name, kwargs, steps, group_kwargs=None, skip=None):
    params = [torch.tensor(a, requires_grad=True) for a in make_arrays()]
    cls = getattr(torch.optim, cls_name)
    if group_kwargs:
        groups = [dict(params=params[:1], **group_kwargs[0]), dict(params=params[1:], **group_kwargs[1])]
        opt = cls(groups, **kwargs)
    else:
        opt = cls(params, **kwargs)
    history = []
    for step in range(steps):
        for index, p in enumerate(params):
            if skip and skip(step, index):
                p.grad = None
            else:
                p.grad = torch.from_numpy(gradient(step, index, p.detach().numpy()))
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history


CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True)),
    (SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, weight_decay=0.05)),
    (Adam, dict(lr=0.01, amsgrad=True)),
    (Adam, dict(lr=0.02, betas=(0.3, 0.8), eps=1e-6, weight_decay=0.01, amsgrad=True)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, centered=True)),
    (RMSprop, dict(lr=0.01, momentum=0.9)),
    (RMSprop, dict(lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    (RMSprop, dict(lr=0.005, alpha=0.3, centered=True, eps=1e-4)),
]


def assert_same_history(ours, theirs, rtol=2e-5, atol=2e-6):
    for step, (a_params, b_params) in enumerate(zip(ours, theirs)):
        for index, (a, b) in enumerate(zip(a_params, b_params)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {step}, parameter {index}")


@pytest.mark.parametrize("cls, kwargs", CASES, ids=[f"{c.__name__}-{k}" for c, k in CASES])
def test_matches_torch(cls, kwargs):
    torch = pytest.importorskip("torch")
    ours = run_easyfit(cls, kwargs, steps=12)
    theirs = run_torch(torch, cls.__name__, kwargs, steps=12)
    assert_same_history(ours, theirs)
    assert not np.allclose(ours[-1][0], make_arrays()[0])  # the parameters did move


@pytest.mark.parametrize("cls, kwargs, groups", [
    (SGD, dict(lr=0.1, momentum=0.9), [dict(lr=0.01), dict(nesterov=True)]),
    (Adam, dict(lr=0.01), [dict(betas=(0.8, 0.99)), dict(lr=0.03, weight_decay=0.1)]),
    (RMSprop, dict(lr=0.01), [dict(centered=True), dict(momentum=0.5)]),
])
def test_param_groups_match_torch(cls, kwargs, groups):
    torch = pytest.importorskip("torch")
    ours = run_easyfit(cls, kwargs, steps=8, group_kwargs=groups)
    theirs = run_torch(torch, cls.__name__, kwargs, steps=8, group_kwargs=groups)
    assert_same_history(ours, theirs)


@pytest.mark.parametrize("cls", [SGD, Adam, RMSprop])
def test_parameters_without_grad_are_skipped_like_torch(cls):
    torch = pytest.importorskip("torch")
    kwargs = dict(lr=0.01, momentum=0.9) if cls is not Adam else dict(lr=0.01)

    def skip(step, index):
        return (index == 1 and step < 3) or (index == 2 and step % 2 == 1)

    ours = run_easyfit(cls, kwargs, steps=8, skip=skip)
    theirs = run_torch(torch, cls.__name__, kwargs, steps=8, skip=skip)
    assert_same_history(ours, theirs)
    np.testing.assert_array_equal(ours[2][1], make_arrays()[1])  # untouched while its grad was None


def test_sgd_known_values():
    w = ef.tensor([1.0, -2.0], requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.5)
    for _ in range(2):
        w.grad = ef.tensor([1.0, 1.0])
        opt.step()
    # buf: 1 then 0.5 * 1 + 1 = 1.5; w: 1 - 0.1 - 0.15
    np.testing.assert_allclose(w.array, [0.75, -2.25], rtol=1e-6)


def test_adam_first_step_is_lr_times_sign():
    w = ef.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = Adam([w], lr=0.1)
    w.grad = ef.tensor([0.5, -4.0, 0.0])
    opt.step()
    np.testing.assert_allclose(w.array, [0.9, -1.9, 3.0], rtol=1e-5)


# ----- state dicts ---------------------------------------------------------------------

STATE_CASES = [
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    (AdamW, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
]


def train(opt, params, steps, start):
    for step in range(start, start + steps):
        for index, p in enumerate(params):
            p.grad = ef.tensor(gradient(step, index, p.array))
        opt.step()


@pytest.mark.parametrize("cls, kwargs", STATE_CASES, ids=[c.__name__ for c, _ in STATE_CASES])
def test_state_dict_round_trip_resumes_exactly(cls, kwargs, tmp_path):
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    opt = cls([dict(params=params[:2]), dict(params=params[2:], lr=0.002)], **kwargs)
    train(opt, params, 5, 0)
    ef.save({"model": {str(i): p for i, p in enumerate(params)}, "opt": opt.state_dict()}, tmp_path / "ckpt.safetensors")
    train(opt, params, 5, 5)

    checkpoint = ef.load(tmp_path / "ckpt.safetensors")
    resumed = [ef.tensor(checkpoint["model"][str(i)], requires_grad=True) for i in range(len(params))]
    opt2 = cls([dict(params=resumed[:2]), dict(params=resumed[2:])], **kwargs)  # groups' lrs come from the checkpoint
    opt2.load_state_dict(checkpoint["opt"])
    assert opt2.param_groups[1]["lr"] == 0.002
    train(opt2, resumed, 5, 5)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.array, b.array)


def test_state_dict_layout_is_arrays_and_json():
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    opt = Adam(params, lr=0.01)
    train(opt, params[:2], 2, 0)  # the third parameter never had a gradient
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1]
    assert sorted(sd["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
    assert int(sd["state"][0]["step"]) == 2 and sd["state"][0]["step"].dtype == np.int64
    assert all(isinstance(v, np.ndarray) for entry in sd["state"].values() for v in entry.values())
    groups = json.loads(json.dumps(sd["param_groups"]))
    assert groups == [{"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                       "params": [0, 1, 2]}]
    # state_dict() is a snapshot: later steps do not change it
    before = sd["state"][0]["exp_avg"].copy()
    train(opt, params[:2], 1, 2)
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)
    # JSON's lists come back as the tuple betas
    opt.load_state_dict({"state": sd["state"], "param_groups": groups})
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_state_dict_matches_torch_names():
    torch = pytest.importorskip("torch")
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    tparams = [torch.tensor(a, requires_grad=True) for a in make_arrays()]
    for ours, theirs in [(Adam(params, amsgrad=True), torch.optim.Adam(tparams, amsgrad=True)),
                         (RMSprop(params, momentum=0.1, centered=True),
                          torch.optim.RMSprop(tparams, momentum=0.1, centered=True)),
                         (SGD(params, momentum=0.9), torch.optim.SGD(tparams, momentum=0.9))]:
        for p, tp in zip(params, tparams):
            p.grad = ef.ones_like(p)
            tp.grad = torch.ones_like(tp)
        ours.step()
        theirs.step()
        # SGD also counts steps, which PyTorch's SGD does not
        assert set(ours.state_dict()["state"][0]) - {"step"} == set(theirs.state_dict()["state"][0]) - {"step"}


def test_load_state_dict_errors():
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    opt = Adam(params)
    train(opt, params, 1, 0)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="checkpoint has 1 parameter group.*this optimizer has 2"):
        Adam([dict(params=params[:1]), dict(params=params[1:])]).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameter group 0 has 2 parameters, the checkpoint's has 3"):
        Adam(params[:2]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"state 'exp_avg' of parameter 0 has shape \(5, 4\), the parameter has shape \(4,\)"):
        Adam([params[1], params[0], params[2]]).load_state_dict(sd)
    with pytest.raises(ValueError, match="another optimizer"):
        RMSprop(params).load_state_dict(sd)
    with pytest.raises(ValueError, match="expects a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"weight": np.zeros(3)})


# ----- arguments -------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda p: SGD(p, lr=-1), "SGD: lr must be >= 0.0, got -1"),
    (lambda p: SGD(p, momentum=-0.5), "SGD: momentum must be >= 0.0, got -0.5"),
    (lambda p: SGD(p, weight_decay=-1e-4), "SGD: weight_decay must be >= 0.0, got -0.0001"),
    (lambda p: SGD(p, nesterov=True), "SGD: nesterov momentum requires momentum > 0 and dampening = 0, got momentum=0.0"),
    (lambda p: SGD(p, lr="fast"), "SGD: lr must be a real number, got 'fast'"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"Adam: betas\[1\] must be in \[0.0, 1.0\), got 1.0"),
    (lambda p: Adam(p, betas=0.9), r"Adam: betas must be a pair \(beta1, beta2\), got 0.9"),
    (lambda p: Adam(p, eps=-1e-8), "Adam: eps must be >= 0.0, got -1e-08"),
    (lambda p: AdamW(p, lr=float("nan")), "AdamW: lr must be a real number, got nan"),
    (lambda p: RMSprop(p, alpha=-0.1), "RMSprop: alpha must be >= 0.0, got -0.1"),
    (lambda p: RMSprop(p, centered=1), "RMSprop: centered must be True or False, got 1"),
    (lambda p: SGD([dict(params=p[:1]), dict(params=p[1:], lr=-3)]), "SGD: lr must be >= 0.0, got -3"),
])
def test_arguments_are_validated_with_the_received_value(make, message):
    params = [ef.tensor(a, requires_grad=True) for a in make_arrays()]
    with pytest.raises((ValueError, TypeError), match=message):
        make(params)


def test_params_errors():
    w = ef.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="got a single Tensor of shape"):
        SGD(w)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([])
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([w * 2])
    with pytest.raises(TypeError, match="parameter 1 of the group is a ndarray"):
        SGD([w, np.zeros(2)])
    with pytest.raises(ValueError, match="appears twice"):
        SGD([w, w])
    opt = SGD([w])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w]})
    with pytest.raises(ValueError, match="needs a 'params' entry"):
        opt.add_param_group({"lr": 0.1})


def test_add_param_group_uses_defaults_and_trains_new_params():
    a = ef.tensor([1.0], requires_grad=True)
    b = ef.tensor(np.ones((300, 3), np.float32), requires_grad=True)  # larger than any earlier parameter
    opt = SGD([a], lr=0.1, momentum=0.9)
    a.grad = ef.tensor([1.0])
    opt.step()
    opt.add_param_group({"params": [b], "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    b.grad = ef.ones_like(b)
    opt.step()
    np.testing.assert_allclose(b.array, 0.5)


def test_zero_grad_and_closure():
    w = ef.tensor([3.0], requires_grad=True)
    opt = SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with ef.no_grad():  # the closure still records its graph
        loss = opt.step(closure)
    assert loss.item() == 9.0
    np.testing.assert_allclose(w.array, [1.5])
    opt.zero_grad()
    assert w.grad is None
    w.grad = ef.tensor([1.0])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad.array, [0.0])


def test_step_does_not_record_a_graph_and_keeps_identity():
    w = ef.tensor([1.0, 2.0], requires_grad=True)
    data = w.array
    opt = Adam([w])
    (w * w).sum().backward()
    opt.step()
    assert w.array is data and w.is_leaf and w.requires_grad


def test_gradient_arrays_are_not_modified():
    """Gradient arrays may be shared between tensors (Add passes one to both inputs)."""
    a = ef.tensor([1.0, 2.0], requires_grad=True)
    b = ef.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    grads = [a.grad.array.copy(), b.grad.array.copy()]
    SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True).step()
    np.testing.assert_array_equal(a.grad.array, grads[0])
    np.testing.assert_array_equal(b.grad.array, grads[1])


@pytest.mark.parametrize("opt_factory", [
    lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: Adam(p, amsgrad=True, weight_decay=1e-4),
    lambda p: AdamW(p),
    lambda p: RMSprop(p, momentum=0.9, centered=True, weight_decay=1e-4),
], ids=["SGD", "Adam", "AdamW", "RMSprop"])
def test_steps_after_the_first_allocate_no_arrays(opt_factory):
    params = [ef.tensor(np.ones((256, 256), np.float32), requires_grad=True),
              ef.tensor(np.ones(256, np.float32), requires_grad=True)]
    for p in params:
        p.grad = ef.tensor(np.full(p.shape, 0.1, np.float32))
    opt = opt_factory(params)
    opt.step()
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024, f"a step allocated {peak} bytes (one parameter is {256 * 256 * 4})"


def test_repr_lists_groups():
    w = ef.tensor([1.0], requires_grad=True)
    text = repr(SGD([w], lr=0.5))
    assert text.startswith("SGD (") and "lr: 0.5" in text and "Parameter Group 0" in text


def test_optimizer_subclass_extension_point():
    class SignSGD(Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        def _update(self, group, param, grad, state, scratch):
            param -= group["lr"] * np.sign(grad)

    w = ef.tensor([1.0, -1.0], requires_grad=True)
    w.grad = ef.tensor([3.0, -0.5])
    opt = SignSGD([w])
    opt.step()
    np.testing.assert_allclose(w.array, [0.9, -0.9])
    assert opt.state_dict()["state"][0]["step"] == 1


def test_package_doctests():
    import doctest
    import easyfit.optim
    result = doctest.testmod(easyfit.optim)
    assert result.attempted > 3 and result.failed == 0


def test_a_parameter_whose_data_was_replaced_still_steps():
    w = ef.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = SGD([w], lr=0.5)
    w.grad = ef.ones_like(w)
    opt.step()
    w.array = np.ones(10, np.float64)  # e.g. reassigned by user code: larger and another dtype
    w.grad = ef.tensor(np.ones(10, np.float64))
    opt.step()
    np.testing.assert_allclose(w.array, 0.5)


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.1),
    lambda ps: Adam(ps, lr=0.01, weight_decay=0.01, amsgrad=True),
    lambda ps: AdamW(ps, lr=0.01),
    lambda ps: RMSprop(ps, lr=0.01, centered=True, momentum=0.5),
], ids=["sgd-nesterov", "sgd-dampening", "adam-amsgrad", "adamw", "rmsprop-centered"])
def test_large_parameters_updated_in_slices_match_whole_updates(monkeypatch, make):
    """Slices of 7 elements (first-step buffers included) give bit-identical results and state."""
    from easyfit.optim import optimizer as base
    rng = np.random.default_rng(0)
    start = rng.standard_normal((5, 9)).astype(np.float32)
    grads = [rng.standard_normal((5, 9)).astype(np.float32) for _ in range(3)]

    def run(chunk):
        monkeypatch.setattr(base, "_UPDATE_CHUNK", chunk)
        p = ef.tensor(start.copy(), requires_grad=True)
        opt = make([p])
        calls = []
        update = opt._update
        opt._update = lambda *args: calls.append(1) or update(*args)
        for g in grads:
            p.grad = ef.tensor(g)
            opt.step()
        return p.numpy(), opt.state_dict()["state"][0], len(calls)

    whole, whole_state, whole_calls = run(1 << 20)
    sliced, sliced_state, sliced_calls = run(7)
    assert (whole_calls, sliced_calls) == (3, 3 * 7)  # 45 elements: 7 slices per step
    np.testing.assert_array_equal(sliced, whole)
    assert sorted(sliced_state) == sorted(whole_state)
    for name in whole_state:
        np.testing.assert_array_equal(sliced_state[name], whole_state[name], err_msg=name)
        assert np.shape(sliced_state[name]) == np.shape(whole_state[name])


def test_parameters_updated_in_slices_need_only_one_slice_of_scratch(monkeypatch):
    """An embedding-sized table's Adam step: scratch of one slice, not of the whole table."""
    from easyfit.optim import optimizer as base
    monkeypatch.setattr(base, "_UPDATE_CHUNK", 16)
    rng = np.random.default_rng(0)
    table = ef.tensor(rng.standard_normal((40, 8)).astype(np.float32), requires_grad=True)   # 320 > 4 * 16
    head = ef.tensor(rng.standard_normal((3, 3)).astype(np.float32), requires_grad=True)
    opt = Adam([table, head], lr=0.01)
    reference = Adam([ef.tensor(table.numpy().copy(), requires_grad=True),
                      ef.tensor(head.numpy().copy(), requires_grad=True)], lr=0.01)
    for _ in range(2):
        for params in (opt.param_groups[0]["params"], reference.param_groups[0]["params"]):
            for p in params:
                p.grad = ef.tensor(np.cos(p.numpy() * 3.0))
        opt.step()
        monkeypatch.setattr(base, "_UPDATE_CHUNK", 1 << 20)
        reference.step()
        monkeypatch.setattr(base, "_UPDATE_CHUNK", 16)
    (first, second), = opt._workspace.buffers.values()
    assert first.size == second.size == 16
    for ours, theirs in zip(opt.param_groups[0]["params"], reference.param_groups[0]["params"]):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
