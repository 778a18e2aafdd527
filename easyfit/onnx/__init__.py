"""ONNX export and import: `easyfit.onnx.export(model, args, f)` and `easyfit.onnx.load(path)`.

Export traces one forward pass (plus one per dynamic axis name) and writes the recorded
ops as an ONNX graph that onnxruntime runs without easyfit; import builds a trainable
`nn.Module` from an ONNX graph, so a model trained elsewhere can be fine-tuned with a
Learner. The onnx package (and onnxruntime, to run the result) is the `onnx` extra:
`pip install 'easyfit[onnx]'`; it is imported only when these functions are called.
See docs/onnx.md.
"""
from .export import export, ExportError, default_opset
from .importer import load, OnnxModule, OnnxImportError

__all__ = ["export", "load", "ExportError", "OnnxModule", "OnnxImportError", "default_opset"]
