"""Export a model, check the file with onnx's full checker, and compare onnxruntime with easyfit."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import easyfit.onnx as eo  # noqa: E402  (after the skips)

RTOL, ATOL = 1e-4, 1e-5


class Lambda(nn.Module):
    """A module whose forward is a function of its inputs (to export single ops)."""

    def __init__(self, function, **modules):
        super().__init__()
        self.function = function
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, *inputs):
        return self.function(self, *inputs)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def flat(result):
    if isinstance(result, ef.Tensor):
        return [result]
    out = []
    for item in result:
        out.extend(flat(item))
    return out


def check_export(model, make_inputs, tmp_path, sizes=(2, 1, 3, 6), export_size=None, **export_kwargs):
    """Export with inputs of size sizes[0] (or export_size), then compare at every size.

    make_inputs(n) returns a tuple of NumPy arrays whose dynamic axes have size n.
    """
    model.eval()
    path = tmp_path / "model.onnx"
    example = make_inputs(export_size if export_size is not None else sizes[0])
    eo.export(model, tuple(ef.tensor(a) for a in example), path, **export_kwargs)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    runner = session(path)
    for n in sizes:
        arrays = make_inputs(n)
        with ef.no_grad():
            expected = flat(model(*[ef.tensor(a) for a in arrays]))
        got = runner.run(None, {i.name: a for i, a in zip(runner.get_inputs(), arrays)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape, (n, g.shape, e.shape)
            assert g.dtype == e.dtype, (n, g.dtype, e.dtype)
            np.testing.assert_allclose(g, e.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"size {n}")
    return proto


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
