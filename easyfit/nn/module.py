"""Module, Parameter and the containers Sequential and ModuleList.

A module finds its parameters, buffers and sub-modules by walking its attributes in
insertion order: a `Parameter`, a `Module`, or a list, tuple or dict holding them (at
any depth) is found without registration and without `__setattr__` magic. Buffers
(tensors that are state but not trained, such as BatchNorm's running statistics) are
the one thing that needs naming, through `register_buffer`. Names follow PyTorch
(`0.weight`, `layers.1.bias`, `bn.running_mean`), so a state dict moves between easyfit
and PyTorch unchanged.
"""
import contextlib
import contextvars
from collections import OrderedDict, namedtuple

import numpy as np

from ..core.backend import parse_device, to_device
from ..core.tensor import Tensor, _to_array

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "IncompatibleKeys"]


# A tracer (easyfit.onnx) sees every module call through this hook: when set,
# Module.__call__ hands it (module, args, kwargs) and returns what it returns. None when
# nothing traces: one list lookup per call.
_call_hook = [None]


def set_call_hook(hook):
    """Install `hook(module, args, kwargs)` to run in place of every module call (None
    removes it); the hook calls `module.forward` itself, or returns NotImplemented to let
    the call run as usual. Returns the previous hook."""
    previous = _call_hook[0]
    _call_hook[0] = hook
    return previous


class Parameter(Tensor):
    """A tensor that a Module trains: `requires_grad=True` and found by `parameters()`."""
    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.array
        array = _to_array(data, None)
        _charge_allocation(array, "a parameter")
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def check_input_dtype(module, x, weight):
    """Refuse an input whose dtype differs from the layer's weight, as PyTorch does.

    NumPy would silently promote float32 weights with a float64 input to a float64
    result (twice the memory, and a model whose output dtype depends on its input);
    the error names the layer and both dtypes instead.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is not None and dtype != weight.dtype:
        raise TypeError(f"{module!r}: the input is {np.dtype(dtype).name} but the layer's weight is "
                        f"{np.dtype(weight.dtype).name}; convert one to the other, e.g. "
                        f"x.astype(easyfit.{np.dtype(weight.dtype).name}), or the model with model.to(easyfit.{np.dtype(dtype).name})")

# ----- a bound on what building modules may allocate (load_learner; issue 15) -------------

class AllocationLimitError(MemoryError):
    """Building modules inside `allocation_limit` asked for more parameter memory than allowed."""


_allocation_budget = contextvars.ContextVar("easyfit_allocation_budget", default=None)


@contextlib.contextmanager
def allocation_limit(max_bytes):
    """Within the block, creating Parameters and persistent buffers of more than `max_bytes` in
    total raises AllocationLimitError as each is created, before a layer initialises (writes)
    it: a file that describes a huge model next to small weights is refused, not allocated."""
    token = _allocation_budget.set([int(max_bytes)])
    try:
        yield
    finally:
        _allocation_budget.reset(token)


def _charge_allocation(array, what):
    budget = _allocation_budget.get()
    if budget is None:
        return
    budget[0] -= int(array.nbytes)
    if budget[0] < 0:
        raise AllocationLimitError(f"{what} of shape {tuple(array.shape)} ({array.nbytes:,} bytes) goes past the "
                                   "allowed total")


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# Attributes that Module itself keeps; never walked.
_INTERNAL = frozenset(("training", "_buffer_names", "_non_persistent_buffers", "_forward_hooks"))


class RemovableHandle:
    """What `register_forward_hook` returns: `remove()` unregisters the hook (also as a context manager)."""
    _next_id = 0

    def __init__(self, hooks):
        self.hooks, self.id = hooks, RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def _walk_members(prefix, value, out):
    """Append (name, member) for every Module/Parameter in `value` (containers recursed)."""
    if isinstance(value, (Module, Parameter)):
        out.append((prefix, value))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _walk_members(f"{prefix}.{index}", item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_members(f"{prefix}.{key}", item, out)


class Module:
    """Base class of layers and models, with PyTorch's semantics.

    Subclass it, set parameters and sub-modules as attributes in `__init__` and define
    `forward`. Calling `super().__init__()` is recommended (it sets `training`) but a
    subclass that forgets it still works.
    """
    training = True

    def __init__(self):
        self.training = True

    # ----- calling -------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if _call_hook[0] is not None:  # a tracer (easyfit.onnx) follows module calls
            result = _call_hook[0](self, args, kwargs)
            if result is not NotImplemented:
                return result
        output = self.forward(*args, **kwargs)
        hooks = self.__dict__.get("_forward_hooks")
        if hooks:
            for hook in list(hooks.values()):
                result = hook(self, args, output)
                if result is not None:
                    output = result
        return output

    def register_forward_hook(self, hook):
        """Call `hook(module, inputs, output)` after every forward (PyTorch's API); a non-None
        return value replaces the output. Returns a handle whose `remove()` unregisters it."""
        hooks = self.__dict__.setdefault("_forward_hooks", {})
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    # ----- walking the attributes ----------------------------------------------------
    def _member_items(self):
        """(name, value) of the attributes that may hold parameters or modules, in order."""
        return [(name, value) for name, value in vars(self).items() if name not in _INTERNAL]

    def _direct_members(self):
        """(name, Module or Parameter) held directly by this module, in insertion order."""
        out = []
        for name, value in self._member_items():
            _walk_members(name, value, out)
        return out

    def named_children(self):
        """Direct sub-modules with their names; one module held twice is yielded once."""
        seen = set()
        for name, value in self._direct_members():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix="", memo=None):
        """This module and every sub-module, depth first, each once."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """Parameters with their state-dict names; shared ones once.

        Order as in PyTorch: a module's own parameters in attribute order, then each
        sub-module's, in attribute order.
        """
        seen = set()
        for name, param in self._named_parameters(prefix, recurse, frozenset()):
            if remove_duplicate:
                if id(param) in seen:
                    continue
                seen.add(id(param))
            yield name, param

    def _named_parameters(self, prefix, recurse, visiting):
        if id(self) in visiting:  # a module that contains itself is walked once
            return
        visiting = visiting | {id(self)}
        dot = prefix + "." if prefix else ""
        for name, value in self._direct_members():
            if isinstance(value, Parameter):
                yield dot + name, value
        if recurse:
            for name, child in self.named_children():
                yield from child._named_parameters(dot + name, True, visiting)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def add_module(self, name, module):
        """setattr(self, name, module), for code written against PyTorch's API."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.add_module({name!r}): expected a Module, got "
                            f"{type(module).__name__}")
        setattr(self, name, module)

    register_module = add_module

    def register_parameter(self, name, param):
        """setattr(self, name, param), for code written against PyTorch's API."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}.register_parameter({name!r}): expected a Parameter, got "
                            f"{type(param).__name__}")
        setattr(self, name, param)

    def get_submodule(self, target):
        """The sub-module at a dotted path such as 'layers.0' or 'encoder.conv1'."""
        if target == "":
            return self
        modules = dict(self.named_modules())
        if target not in modules:
            raise AttributeError(f"{type(self).__name__} has no sub-module {target!r}")
        return modules[target]

    def register_buffer(self, name, tensor, persistent=True):
        """Keep `tensor` as state (saved in state_dict when persistent) but not trained."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}.register_buffer: invalid buffer name {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"{type(self).__name__}.register_buffer({name!r}): expected a Tensor or None, "
                            f"got {type(tensor).__name__}")
        if "_buffer_names" not in vars(self):
            self._buffer_names = []
            self._non_persistent_buffers = set()
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        if persistent:
            if tensor is not None:
                _charge_allocation(tensor.array, f"buffer {name!r}")
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        setattr(self, name, tensor)

    def named_buffers(self, prefix="", recurse=True, persistent_only=False):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            names = vars(module).get("_buffer_names", ())
            skip = vars(module).get("_non_persistent_buffers", ()) if persistent_only else ()
            for name in names:
                value = getattr(module, name, None)
                if value is not None and name not in skip:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def buffers(self, recurse=True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    # ----- modes ---------------------------------------------------------------------
    def train(self, mode=True):
        """Switch this module and every sub-module to training mode (or eval with False)."""
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad.array[...] = 0

    def apply(self, fn):
        """Call fn(module) on every sub-module (children first) and on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ----- state ---------------------------------------------------------------------
    def state_dict(self, prefix="", keep_vars=False):
        """Parameters and persistent buffers by name, in PyTorch's order.

        Values are tensors sharing memory with the module (detached unless keep_vars).
        A parameter or module shared under two names appears under both, as in PyTorch.
        """
        state = OrderedDict()
        self._save_state(state, prefix, keep_vars, frozenset())
        return state

    def _save_state(self, state, prefix, keep_vars, visiting):
        if id(self) in visiting:
            return
        visiting = visiting | {id(self)}
        dot = prefix + "." if prefix else ""
        for name, value in self._direct_members():
            if isinstance(value, Parameter):
                state[dot + name] = value if keep_vars else Tensor(value.array)
        for name, value in self.named_buffers(recurse=False, persistent_only=True):
            state[dot + name] = value if keep_vars else Tensor(value.array)
        for name, child in self._direct_members():  # no de-duplication: PyTorch saves shared modules twice
            if isinstance(child, Module):
                child._save_state(state, dot + name, keep_vars, visiting)

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (Tensors, NumPy arrays, or anything np.asarray accepts) in place.

        Parameters keep their identity, so an optimizer built before loading keeps
        working. With strict=True, missing or unexpected keys raise an error naming
        them; a shape mismatch always raises, naming the key and both shapes.
        """
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
            raise KeyError(f"Error loading state_dict into {type(self).__name__}: " + "; ".join(parts))
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, Tensor):
                array = value.array
            elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
                array = value.detach().cpu().numpy()
            else:
                array = value
            if not (hasattr(array, "shape") and hasattr(array, "dtype")):
                array = np.asarray(array)
            if tuple(array.shape) != tuple(target.shape):
                raise ValueError(f"Error loading state_dict into {type(self).__name__}: size mismatch for "
                                 f"{key!r}: the checkpoint has shape {tuple(array.shape)}, the model has "
                                 f"shape {tuple(target.shape)}")
            target.array[...] = to_device(array, target.device)
        return IncompatibleKeys(missing, unexpected)

    # ----- devices and dtypes --------------------------------------------------------
    def _convert(self, convert):
        """Replace every parameter's and buffer's array (and gradient) by convert(array), in place."""
        done = set()
        for module in self.modules():
            tensors = [value for _, value in module._direct_members() if isinstance(value, Parameter)]
            tensors += [value for _, value in module.named_buffers(recurse=False)]
            for t in tensors:
                if id(t) in done:
                    continue
                done.add(id(t))
                t.array = convert(t.array)
                if t.grad is not None:
                    t.grad = Tensor(convert(t.grad.array))
        return self

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to `device` and/or cast floating ones to `dtype`, in place.

        `model.to('cuda')`, `model.to(dtype=np.float64)` and `model.to(np.float64)` all work.
        """
        if device is not None and not (isinstance(device, str) and (device == "cpu" or device.startswith("cuda"))):
            device, dtype = None, device
        if device is not None:
            device = parse_device(device)
            self._convert(lambda a: to_device(a, device))
        if dtype is not None:
            dtype = np.dtype(dtype)
            self._convert(lambda a: a.astype(dtype) if a.dtype.kind == "f" and a.dtype != dtype else a)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # ----- printing ------------------------------------------------------------------
    def extra_repr(self):
        """The arguments shown inside this module's parentheses when printed."""
        return ""

    def __repr__(self):
        children = list(self.named_children())
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = [extra] if extra else []
        for name, child in children:
            lines.append(f"({name}): " + repr(child).replace("\n", "\n  "))
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _check_module(owner, value, position):
    if not isinstance(value, Module):
        raise TypeError(f"{owner} expects Module instances, got {type(value).__name__} at {position}")
    return value


class Sequential(Module):
    """Modules called in order, each on the previous one's output.

    `Sequential(a, b, c)` names them '0', '1', '2'; `Sequential(OrderedDict(name=module))`
    keeps the given names (state-dict keys like PyTorch's).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            items = [(str(k), _check_module("Sequential", m, repr(k))) for k, m in modules[0].items()]
        else:
            items = [(str(i), _check_module("Sequential", m, f"position {i}")) for i, m in enumerate(modules)]
        self._names = [name for name, _ in items]
        self._layers = [module for _, module in items]

    def _member_items(self):
        return list(zip(self._names, self._layers)) + [
            (name, value) for name, value in vars(self).items()
            if name not in _INTERNAL and name not in ("_names", "_layers")]

    def forward(self, x):
        for layer in self._layers:
            x = layer(x)
        return x

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(zip(self._names[index], self._layers[index])))
        if isinstance(index, str):
            return self._layers[self._names.index(index)]
        return self._layers[index]

    def __getattr__(self, name):
        # Only reached when normal lookup fails: lets `model.conv1` reach an OrderedDict entry.
        names = vars(self).get("_names")
        if names is not None and name in names:
            return self._layers[names.index(name)]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def append(self, module):
        self._names.append(str(len(self._layers)))
        self._layers.append(_check_module("Sequential.append", module, f"position {len(self._layers)}"))
        return self


class ModuleList(Module):
    """A list of modules whose parameters are found (names '0', '1', ... like PyTorch)."""

    def __init__(self, modules=()):
        super().__init__()
        self._layers = [_check_module("ModuleList", m, f"position {i}") for i, m in enumerate(modules)]

    def _member_items(self):
        return [(str(i), m) for i, m in enumerate(self._layers)] + [
            (name, value) for name, value in vars(self).items() if name not in _INTERNAL and name != "_layers"]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is a container; iterate over it in the parent's forward")

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._layers[index])
        return self._layers[index]

    def __setitem__(self, index, module):
        self._layers[index] = _check_module("ModuleList", module, f"position {index}")

    def append(self, module):
        self._layers.append(_check_module("ModuleList.append", module, f"position {len(self._layers)}"))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        self._layers.insert(index, _check_module("ModuleList.insert", module, f"position {index}"))


class ModuleDict(Module):
    """A dict of modules whose parameters are found (state-dict names start with the key, like PyTorch)."""

    def __init__(self, modules=None):
        super().__init__()
        self._by_key = {}
        if modules is not None:
            self.update(modules)

    def _member_items(self):
        return list(self._by_key.items()) + [
            (name, value) for name, value in vars(self).items() if name not in _INTERNAL and name != "_by_key"]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container; call its modules in the parent's forward")

    def __len__(self):
        return len(self._by_key)

    def __iter__(self):
        return iter(self._by_key)

    def __contains__(self, key):
        return key in self._by_key

    def __getitem__(self, key):
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"ModuleDict has no module {key!r}; it has {list(self._by_key)}") from None

    def __setitem__(self, key, module):
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict keys must be non-empty strings without '.', got {key!r}")
        self._by_key[key] = _check_module("ModuleDict", module, f"key {key!r}")

    def __delitem__(self, key):
        del self._by_key[key]

    def keys(self):
        return self._by_key.keys()

    def values(self):
        return self._by_key.values()

    def items(self):
        return self._by_key.items()

    def pop(self, key):
        return self._by_key.pop(key)

    def clear(self):
        self._by_key.clear()

    def update(self, modules):
        """Add (key, module) pairs from a mapping or an iterable of pairs, in their order."""
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module
