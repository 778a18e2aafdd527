"""`learn.summary()`: the model's layers with output shapes and parameter counts, as fastai shows it."""
import numpy as np

from ..core import no_grad
from ..core.tensor import Tensor


class ModelSummary(str):
    """The summary text; shown as itself (not as a quoted string) in a notebook or the REPL."""

    def __repr__(self):
        return str(self)


def _leaf_modules(model):
    """(name, module) of every module without children (the layers that compute), in order."""
    return [(name, module) for name, module in model.named_modules()
            if name and not list(module.children())] or [("", model)]


def _shape_of(output):
    if isinstance(output, Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return tuple(output[0].shape)   # an RNN's (output, state): the output
    return None


def summary_rows(learn, xb):
    """One row per layer: (name, class, output shape, parameter count, trainable)."""
    model = learn.model
    shapes = {}
    handles = []
    for name, module in _leaf_modules(model):
        def record(module, inputs, output, name=name):
            shapes.setdefault(name, _shape_of(output))
        handles.append(module.register_forward_hook(record))
    was_training = getattr(model, "training", False)
    try:
        model.eval()
        with no_grad():
            model(*xb)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    rows = []
    for name, module in _leaf_modules(model):
        params = list(module.parameters())
        count = int(sum(int(np.prod(p.shape)) for p in params))
        trainable = any(p.requires_grad for p in params) if params else None
        rows.append((name, type(module).__name__, shapes.get(name), count, trainable))
    return rows


def model_summary(learn):
    """The table `Learner.summary` returns."""
    loader = learn.dls.valid if getattr(learn.dls, "valid", None) is not None else learn.dls.train
    batch = loader.one_batch()
    xb = tuple(batch[:-1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else \
        (tuple(batch) if isinstance(batch, (tuple, list)) else (batch,))
    rows = summary_rows(learn, xb)
    header = ("layer", "type", "output shape", "params", "trainable")
    cells = [header] + [(name, kind, str(shape) if shape is not None else "-", f"{count:,}",
                         "-" if trainable is None else ("yes" if trainable else "no"))
                        for name, kind, shape, count, trainable in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"{type(learn.model).__name__} (input shape {tuple(xb[0].shape)})"]
    for index, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip())
        if index == 0:
            lines.append("-" * len(lines[-1]))
    params = list(learn.model.parameters())
    total = sum(int(np.prod(p.shape)) for p in params)
    trainable = sum(int(np.prod(p.shape)) for p in params if p.requires_grad)
    lines.append("")
    lines.append(f"total parameters: {total:,}; trainable: {trainable:,}; frozen: {total - trainable:,}")
    if learn.opt is not None:
        lines.append(f"optimizer: {type(learn.opt).__name__}; loss: {type(learn.loss_func).__name__}")
    return ModelSummary("\n".join(lines))
