"""Tensor's methods live by family in mixin modules (arithmetic, comparison, reductions, shapes,
inplace); the split keeps every name where it was and Tensor as it was."""
import importlib
import inspect

import easyfit as ef
from easyfit.core.tensor import Tensor

# Every public name easyfit.core.tensor defined before its families moved out, and the private
# helpers other modules import from it: all keep this import path.
NAMES_BEFORE_THE_SPLIT = """
    DEFAULT_FLOAT Tensor Function set_op_hook set_write_hook Cast ToDevice Compare
    Add Sub Mul Div AddScalar RSubScalar MulScalar DivScalar RDivScalar PowScalar RPowScalar Neg Pow Abs Log log
    Clip clip MatMul matmul expand_dims Reshape reshape Transpose transpose swapaxes squeeze BroadcastTo
    broadcast_to SumTo sum_to Sum sum Mean mean var std RootWithZeroSlope root_with_zero_slope Max max min amax
    amin ArgMax argmax argmin sort argsort GetItem IndexAdd
    _wrap _to_array _operand _constant _normalize_axis
""".split()
FAMILIES = ["arithmetic", "comparison", "reductions", "shapes", "inplace"]


def test_every_name_keeps_its_import_path():
    tensor_module = importlib.import_module("easyfit.core.tensor")
    missing = [name for name in NAMES_BEFORE_THE_SPLIT if not hasattr(tensor_module, name)]
    assert not missing, f"no longer importable from easyfit.core.tensor: {missing}"
    public = {name for name in NAMES_BEFORE_THE_SPLIT if not name.startswith("_")}
    assert set(tensor_module.__all__) == public


def test_each_family_is_a_base_of_tensor_and_defines_each_method_once():
    owners = {}
    for family in FAMILIES:
        module = importlib.import_module(f"easyfit.core.{family}")
        mixins = [cls for name, cls in vars(module).items()
                  if inspect.isclass(cls) and name.endswith("Methods") and cls.__module__ == module.__name__]
        assert len(mixins) == 1 and mixins[0] in Tensor.__bases__, family
        assert module.__doc__, f"{family}.py says what lives there"
        for klass in (mixins[0], Tensor):
            for name in vars(klass):
                if name not in ("__module__", "__qualname__", "__doc__", "__slots__", "__dict__", "__weakref__"):
                    owners.setdefault(name, set()).add(klass.__name__)
    shadowed = {name: sorted(classes) for name, classes in owners.items() if len(classes) > 1}
    assert not shadowed, f"methods defined in two places, one hiding the other: {shadowed}"


def test_tensors_stay_slotted_and_hash_by_identity():
    x = ef.tensor([1.0, 2.0])
    assert not hasattr(x, "__dict__"), "a mixin without __slots__ = () gives every tensor a __dict__"
    y = ef.tensor([1.0, 2.0])
    assert len({x, y, x}) == 2 and {x: 1}[x] == 1


def test_methods_of_every_family_work_on_one_tensor():
    x = ef.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    y = ((x * 2 + 1).abs().exp() / 10).sum(dim=1).max() + x.view(4)[1:].mean() + x.T.masked_fill(x.T < 0, 0).sum()
    y.backward()
    assert x.grad.shape == (2, 2) and bool((x < 3).any()) and x.clamp(0, 1).eq(x.clamp(0, 1)).all()
    with ef.no_grad():
        z = x.detach().clone()
        z += 1
        z.mul_(2).zero_()
    assert z.sum().item() == 0.0
