"""Every op has an ONNX form or a documented refusal; unknown ops are refused before writing."""
import importlib
import pkgutil

import numpy as np
import pytest

from harness import Lambda, check_export, randn

import easyfit as ef
import easyfit.onnx as eo
from easyfit.onnx.symbolics import SYMBOLICS, REFUSED, REFUSED_BY_NAME


def all_function_classes():
    for module in pkgutil.walk_packages(ef.__path__, "easyfit."):
        if not module.name.startswith(("easyfit.onnx", "easyfit.distributed")):
            importlib.import_module(module.name)
    importlib.import_module("easyfit.distributed.sync_batchnorm")  # its op is refused by name (no MPI needed)
    found, todo = set(), [ef.Function]
    while todo:
        for cls in todo.pop().__subclasses__():
            if cls not in found:
                found.add(cls)
                todo.append(cls)
    return sorted((c for c in found if c.__module__.startswith("easyfit.")), key=lambda c: c.__qualname__)


def test_every_function_has_an_onnx_form_or_a_documented_refusal():
    classes = all_function_classes()
    assert len(classes) > 40
    names = {f"{c.__module__}.{c.__qualname__}" for c in classes}
    missing = [f"{c.__module__}.{c.__qualname__}" for c in classes
               if c not in SYMBOLICS and c not in REFUSED and f"{c.__module__}.{c.__qualname__}" not in REFUSED_BY_NAME]
    assert not missing, f"Functions with neither an ONNX form nor a refusal: {missing}"
    assert not set(SYMBOLICS) & set(REFUSED)
    assert set(REFUSED_BY_NAME) <= names, "a refusal by name names no Function class"
    assert all(len(reason) > 20 for reason in [*REFUSED.values(), *REFUSED_BY_NAME.values()])


class Cube(ef.Function):
    def forward(self, a):
        return a * a * a

    def backward(self, gy):
        x = self.inputs[0]
        return gy * x * x * 3.0


class CubeWithOnnxForm(Cube):
    @staticmethod
    def symbolic(g, op, x):
        return g.op("Mul", x, g.op("Mul", x, x))


def test_unknown_function_is_refused_naming_the_class_and_the_line_before_writing(tmp_path):
    model = Lambda(lambda m, x: Cube.apply(x) + 1.0)  # the refused line
    path = tmp_path / "refused.onnx"
    with pytest.raises(eo.ExportError) as info:
        eo.export(model, ef.tensor(randn(2, 3)), path)
    message = str(info.value)
    assert "Cube" in message and "test_coverage_and_refusal.py" in message and "the refused line" in message
    assert "symbolic" in message
    assert not path.exists()


def test_a_function_with_its_own_symbolic_exports(tmp_path):
    model = Lambda(lambda m, x: CubeWithOnnxForm.apply(x) + 1.0)
    proto = check_export(model, lambda n: (randn(n, 3, seed=n),), tmp_path)
    assert [n.op_type for n in proto.graph.node][:2] == ["Mul", "Mul"]


def test_backward_only_ops_are_refused_with_their_reason(tmp_path):
    from easyfit.core.tensor import IndexAdd
    model = Lambda(lambda m, x: IndexAdd((slice(0, 2),), (4, 3))(x))
    with pytest.raises(eo.ExportError, match="gradient graphs"):
        eo.export(model, ef.tensor(randn(2, 3)), tmp_path / "x.onnx", dynamic_axes={})


def test_control_flow_over_a_dynamic_axis_is_refused(tmp_path):
    def unrolled(m, x):
        h = x[0]
        for t in range(1, x.shape[0]):
            h = ef.tanh(h + x[t])
        return h
    with pytest.raises(eo.ExportError, match="control flow"):
        eo.export(Lambda(unrolled), ef.tensor(randn(3, 4)), tmp_path / "x.onnx")
    # with that axis static, it exports (the loop unrolled, as PyTorch's tracer does)
    check_export(Lambda(unrolled), lambda n: (randn(3, 4, seed=n),), tmp_path, sizes=(1, 2),
                 dynamic_axes={})


def test_values_computed_outside_the_traced_ops_are_refused_not_frozen(tmp_path):
    model = Lambda(lambda m, x: x - ef.tensor(x.numpy().mean(axis=0)))
    with pytest.raises(eo.ExportError, match="outside easyfit's ops|made outside"):
        eo.export(model, ef.tensor(randn(3, 4)), tmp_path / "x.onnx")


def test_importing_easyfit_does_not_import_onnx():
    import subprocess
    import sys
    code = "import sys, easyfit, easyfit.nn, easyfit.learner; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_missing_onnx_names_the_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r"easyfit\[onnx\]"):
        eo.export(Lambda(lambda m, x: x), ef.tensor(np.zeros(2, np.float32)), "unused.onnx")


def test_ops_of_other_threads_are_not_traced(tmp_path):
    import threading
    from easyfit.nn.tracing import Trace
    model = Lambda(lambda m, x: ef.tanh(x) * 2.0)
    done = []
    with Trace(model, whole_modules={}) as trace:
        worker = threading.Thread(target=lambda: done.append(ef.exp(ef.ones(3)).numpy()))
        worker.start()
        worker.join()
        model(ef.ones(2))
    assert [type(node.op).__name__ for node in trace.nodes] == ["Tanh", "MulScalar"]
    assert np.allclose(done[0], np.e)


def test_in_place_writes_into_graph_values_are_refused_not_exported_wrong(tmp_path):
    """An in-place method records no op: exported, the graph would skip it and compute other
    numbers than the model. It is refused, naming the method and the line."""
    for forward in (lambda m, x: x.clone().mul_(2.0) + 1.0,            # into an op's output
                    lambda m, x: (x * 1.0).relu_(),
                    lambda m, x: ef.zeros(x.shape).copy_(x) * 3.0):      # a graph value copied out
        path = tmp_path / "x.onnx"
        with pytest.raises(eo.ExportError, match=r"in-place write.*out-of-place") as info:
            eo.export(Lambda(forward), ef.tensor(randn(2, 3)), path)
        assert "test_coverage_and_refusal.py" in str(info.value)
        assert not path.exists()


def test_a_constant_filled_in_place_before_use_exports(tmp_path):
    def forward(m, x):
        bias = ef.zeros(3)
        bias.fill_(0.5)
        return x + bias
    check_export(Lambda(forward), lambda n: (randn(n, 3, seed=n),), tmp_path)
