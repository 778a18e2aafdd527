"""The optimizer base class: parameter groups, per-parameter state, checkpoints.

As in PyTorch, an optimizer holds `param_groups` (a list of dicts, each with its
`params` and its own hyper-parameters, which schedules change between steps) and
`state` (a dict from parameter to that parameter's buffers). Subclasses implement
`_update(group, param, grad, state, scratch)`, which changes `param.array` in place.

Updates run under no graph recording, on the raw arrays, with `out=` into the state
buffers and two shared scratch arrays, so after the first step an optimizer step
allocates no array memory.
"""
import math
import numbers

import numpy as np

from ..core import no_grad, enable_grad
from ..core.backend import get_array_module, device_of, to_device
from ..core.tensor import Tensor


# CPU parameters of more than 4 slices are updated this many elements at a time, so that
# the passes of an update over parameter, gradient, state and scratch stay in cache. Measured
# here: Adam on 1.6M weights 6.0 -> 4.3 ms, SGD with momentum 1.8 -> 1.6 ms; below about a
# million weights the arrays stay in cache anyway and slicing only adds overhead.
_UPDATE_CHUNK = 1 << 18


class Optimizer:
    """Base class: subclasses set `defaults` and define `_init_state` and `_update`.

    A subclass whose `_update` is elementwise (each element of the result depends only on
    the same element of parameter, gradient and state) sets `_elementwise = True`; large
    parameters are then updated in cache-sized slices.
    """
    _elementwise = False

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        self.state = {}
        self.param_groups = []
        self._workspace = _Workspace()
        if isinstance(params, Tensor):
            raise TypeError(f"{self._name}: params must be an iterable of Tensors or of dicts (parameter groups), "
                            f"got a single Tensor of shape {params.shape}; pass [tensor] or model.parameters()")
        if isinstance(params, dict):
            raise TypeError(f"{self._name}: params must be an iterable of Tensors or of dicts (parameter groups), "
                            f"got a dict; pass [dict] for one parameter group")
        params = list(params)
        if not params:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    @property
    def _name(self):
        return type(self).__name__

    # ----- hyper-parameters ------------------------------------------------------------
    def _validate(self, hyper):
        """Check the hyper-parameters of a group (or the defaults); raise naming the bad one."""

    def _check_range(self, hyper, name, low, high=None, low_open=False, high_open=True):
        """Require low <= hyper[name] (< or <=) high; the message gives the received value."""
        value = hyper[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise TypeError(f"{self._name}: {name} must be a real number, got {value!r}")
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            if high is None:
                wanted = f"{'>' if low_open else '>='} {low}"
            else:
                wanted = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise ValueError(f"{self._name}: {name} must be {wanted}, got {value!r}")

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyper-parameters (defaults fill the rest).

        Typical use: a different learning rate for a pretrained body, or adding the
        parameters of layers unfrozen during training.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"{self._name}: a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError(f"{self._name}: a parameter group needs a 'params' entry; got keys {sorted(group)}")
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: parameters must be an ordered collection (a set has no fixed order, "
                            f"so checkpoints could not be matched to parameters); use a list")
        else:
            params = list(params)
        seen = set()
        for index, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{self._name}: can only optimize Tensors, but parameter {index} of the group "
                                f"is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{self._name}: can't optimize a non-leaf Tensor (parameter {index} of the group, "
                                 f"shape {p.shape}, made by {type(p.creator).__name__}); optimize the leaf it came from")
            if p.array.dtype.kind not in "fc":
                raise TypeError(f"{self._name}: parameter {index} of the group has dtype {p.array.dtype}; "
                                f"only floating point tensors can be optimized")
            if id(p) in seen:
                raise ValueError(f"{self._name}: parameter {index} (shape {p.shape}) appears twice in one parameter group")
            seen.add(id(p))
        for other in self.param_groups:
            for p in other["params"]:
                if id(p) in seen:
                    raise ValueError(f"{self._name}: some parameters appear in more than one parameter group "
                                     f"(one has shape {p.shape})")
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        self._validate(group)
        group["params"] = params
        self.param_groups.append(group)
        self._workspace.invalidate()

    # ----- the step ---------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget the gradients before the next backward (set them to None by default).

        With `set_to_none=False` each gradient becomes a fresh zero array instead; it is
        never zeroed in place, because a gradient array may be shared with other tensors.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None if set_to_none else Tensor(get_array_module(p.array).zeros_like(p.array))

    def step(self, closure=None):
        """Update every parameter that has a gradient (those whose `.grad` is None are skipped).

        `closure`, if given, re-evaluates the model and returns the loss (run with grad
        mode on); `step` returns that loss.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            workspace = self._workspace
            if not workspace.ready:
                workspace.reserve(p.array for group in self.param_groups for p in group["params"]
                                  if not self._sliced(p.array))
            for group in self.param_groups:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    grad = grad.array if isinstance(grad, Tensor) else grad
                    if grad.shape != p.array.shape:
                        raise ValueError(f"{self._name}: a parameter of shape {p.array.shape} has a gradient of "
                                         f"shape {grad.shape}")
                    state = self.state.get(p)
                    if state is None:
                        state = self.state[p] = self._init_state(group, p.array)
                    state["step"] += 1
                    if self._sliced(p.array) and _can_slice(p.array, grad, state):
                        self._update_in_slices(group, p.array, grad, state, workspace.chunks(p.array))
                    else:
                        self._update(group, p.array, grad, state, workspace.views(p.array))
        return loss

    def _sliced(self, param):
        """Whether `param` is updated in slices (its scratch is then one slice long)."""
        return self._elementwise and param.size > 4 * _UPDATE_CHUNK and type(param) is np.ndarray

    def _update_in_slices(self, group, param, grad, state, scratch):
        """`_update` on consecutive slices of the flattened arrays.

        Each slice sees the state as it was before this step: a buffer that `_update`
        creates on first use (SGD's momentum buffer) is absent for every slice, and the
        slices it creates are gathered into one full buffer afterwards.
        """
        flat = {name: value.reshape(-1) for name, value in state.items() if name != "step"}
        param_flat, grad_flat = param.reshape(-1), grad.reshape(-1)
        first, second = (buffer.reshape(-1) for buffer in scratch)
        created = {}
        for start in range(0, param_flat.size, _UPDATE_CHUNK):
            stop = min(param_flat.size, start + _UPDATE_CHUNK)
            sliced = {name: value[start:stop] for name, value in flat.items()}
            sliced["step"] = state["step"]
            self._update(group, param_flat[start:stop], grad_flat[start:stop], sliced,
                         (first[:stop - start], second[:stop - start]))
            for name, value in sliced.items():
                if name not in flat and name != "step":
                    if name not in created:
                        created[name] = np.empty(param_flat.size, dtype=value.dtype)  # NumPy: see _can_slice
                    created[name][start:stop] = value
        for name, value in created.items():
            state[name] = value.reshape(param.shape)

    # Every name a parameter's state may hold (checked when a checkpoint is loaded).
    _state_names = ("step",)

    def _init_state(self, group, param):
        """The state of a parameter before its first step (`step` plus zeroed buffers)."""
        return {"step": 0}

    def _update(self, group, param, grad, state, scratch):
        raise NotImplementedError(f"{self._name} must define _update")

    # ----- checkpoints ------------------------------------------------------------------
    def state_dict(self):
        """A checkpoint of the optimizer, independent of later steps.

        `{'state': {index: {name: array}}, 'param_groups': [{hyper-parameters, 'params':
        [index, ...]}]}`: parameters are numbered in group order; state values are
        arrays (copies; `step` is a 0-d int64 array), hyper-parameters plain JSON-able
        values, so `easyfit.save(opt.state_dict(), path)` writes it without pickle.
        """
        index_of = {}
        groups = []
        for group in self.param_groups:
            saved = {name: _plain(value) for name, value in group.items() if name != "params"}
            saved["params"] = []
            for p in group["params"]:
                index_of[id(p)] = len(index_of)
                saved["params"].append(index_of[id(p)])
            groups.append(saved)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                entry = self.state.get(p)
                if entry is None:
                    continue
                state[index_of[id(p)]] = {name: (np.array(value, dtype=np.int64) if name == "step" else value.copy())
                                          for name, value in entry.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a checkpoint from `state_dict()` (possibly through `easyfit.save`/`load`).

        The optimizer must have been built over the same parameters in the same groups;
        hyper-parameters (learning rates included) are taken from the checkpoint, and
        state buffers are moved to each parameter's device and dtype.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{self._name}.load_state_dict expects a dict with 'state' and 'param_groups' "
                             f"(from state_dict()), got {_describe(state_dict)}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{self._name}.load_state_dict: the checkpoint has {len(saved_groups)} parameter "
                             f"group(s), this optimizer has {len(self.param_groups)}")
        param_of = {}
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            indices = list(saved["params"])
            if len(indices) != len(group["params"]):
                raise ValueError(f"{self._name}.load_state_dict: parameter group {number} has "
                                 f"{len(group['params'])} parameters, the checkpoint's has {len(indices)}")
            for index, p in zip(indices, group["params"]):
                param_of[int(index)] = (p, number)
        new_groups = []
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            missing = sorted(set(self.defaults) - set(saved))
            if missing:
                raise ValueError(f"{self._name}.load_state_dict: parameter group {number} of the checkpoint lacks "
                                 f"{missing}; was the checkpoint written by another optimizer?")
            new_group = {name: _restore_hyper(name, value, group.get(name)) for name, value in saved.items()
                         if name != "params"}
            new_group["params"] = group["params"]
            self._validate(new_group)
            new_groups.append(new_group)
        new_state = {}
        for key, entry in state_dict["state"].items():
            index = int(key)
            if index not in param_of:
                raise ValueError(f"{self._name}.load_state_dict: the checkpoint has state for parameter {index}, "
                                 f"which none of its parameter groups lists")
            p, number = param_of[index]
            required = set(self._init_state(new_groups[number], p.array))
            if not required <= set(entry) <= set(self._state_names):
                raise ValueError(f"{self._name}.load_state_dict: the state of parameter {index} has entries "
                                 f"{sorted(entry)}, but {self._name} with the checkpoint's hyper-parameters keeps "
                                 f"{sorted(required)} (and may keep {sorted(set(self._state_names) - required)}); "
                                 f"was the checkpoint written by another optimizer?")
            restored = {}
            for name, value in entry.items():
                if name == "step":
                    restored[name] = int(np.asarray(value))
                    continue
                value = value.array if isinstance(value, Tensor) else value
                if tuple(value.shape) != p.array.shape:
                    raise ValueError(f"{self._name}.load_state_dict: state '{name}' of parameter {index} has shape "
                                     f"{tuple(value.shape)}, the parameter has shape {p.array.shape}")
                value = to_device(value, device_of(p.array))
                restored[name] = get_array_module(p.array).array(value, dtype=p.array.dtype, copy=True)
            new_state[p] = restored
        self.param_groups = new_groups
        self.state = new_state
        self._workspace.invalidate()

    def __repr__(self):
        lines = [f"{self._name} ("]
        for number, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {number}")
            for name in sorted(group):
                if name != "params":
                    lines.append(f"    {name}: {group[name]}")
        lines.append(")")
        return "\n".join(lines)


def _plain(value):
    """Hyper-parameter values as JSON-able Python values (tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _restore_hyper(name, value, current):
    """Undo JSON's tuple-to-list change where the live group holds a tuple (Adam's betas)."""
    if isinstance(value, list) and (isinstance(current, tuple) or name == "betas"):
        return tuple(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _describe(value):
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def _can_slice(param, grad, state):
    """True when parameter, gradient and state buffers are C-contiguous NumPy arrays (so
    that flattening them gives views, and writes into slices reach the real buffers)."""
    arrays = [param, grad] + [value for name, value in state.items() if name != "step"]
    return all(type(a) is np.ndarray and a.flags.c_contiguous and a.shape == param.shape for a in arrays)


class _Workspace:
    """Two scratch arrays per (device, dtype), as large as the largest parameter updated
    whole (one slice, `_UPDATE_CHUNK` elements, is enough for those updated in slices).

    Updates write intermediate results into views of these instead of allocating
    temporaries, so a step touches no new memory (no page faults, no allocator churn).
    """

    def __init__(self):
        self.buffers = {}
        self.ready = False

    def invalidate(self):
        self.ready = False

    def reserve(self, arrays):
        sizes = {}
        modules = {}
        for array in arrays:
            key = (device_of(array), array.dtype)
            sizes[key] = max(sizes.get(key, 0), array.size)
            modules[key] = get_array_module(array)
        self.reserve_sizes(sizes, modules)

    def reserve_sizes(self, sizes, modules):
        for key, size in sizes.items():
            current = self.buffers.get(key)
            if current is None or current[0].size < size:
                xp = modules[key]
                if key[0] == "cpu":
                    self.buffers[key] = (xp.empty(size, key[1]), xp.empty(size, key[1]))
                else:
                    with xp.cuda.Device(int(key[0][5:])):
                        self.buffers[key] = (xp.empty(size, key[1]), xp.empty(size, key[1]))
        self.ready = True

    def chunks(self, param):
        """Two flat scratch arrays of `_UPDATE_CHUNK` elements, for an update in slices:
        a 20,000 x 64 embedding table's Adam step needs 2 MB of scratch, not 10."""
        key = (device_of(param), param.dtype)
        buffers = self.buffers.get(key)
        if buffers is None or buffers[0].size < _UPDATE_CHUNK:
            self.reserve_sizes({key: _UPDATE_CHUNK}, {key: get_array_module(param)})
            buffers = self.buffers[key]
        return buffers[0][:_UPDATE_CHUNK], buffers[1][:_UPDATE_CHUNK]

    def views(self, param):
        buffers = self.buffers.get((device_of(param), param.dtype))
        if buffers is None or buffers[0].size < param.size:  # a parameter whose data was replaced since
            self.reserve([param])
            buffers = self.buffers[(device_of(param), param.dtype)]
        first, second = buffers
        size, shape = param.size, param.shape
        return first[:size].reshape(shape), second[:size].reshape(shape)
