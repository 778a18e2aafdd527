"""TensorBoardCallback: training curves, histograms, sample images, hyper-parameters and
the op graph, written with tensorboardX (no PyTorch needed).

tensorboardX's `add_graph` traces PyTorch modules, so the graph is built here from
easyfit's own autograd graph instead: the ops recorded while computing the first
training batch's predictions become a GraphDef (one node per op, named after its
class inside its module's path, `layer1/0/conv1/Conv2d_3`, so TensorBoard draws each
module as a group; plus the input and one node per parameter).
"""
import numpy as np

from .callback import Callback
from .decoding import to_numpy
from .recorder import momentum_of


def _import_summary_writer():
    """tensorboardX's SummaryWriter, imported without importing PyTorch.

    When torch is installed, tensorboardX imports it at import time (to accept torch
    tensors), which takes 1.5-2 s; easyfit only passes NumPy arrays. Unless the program
    has imported torch already, torch is hidden for that one import (a None entry in
    sys.modules makes `import torch` raise ImportError, which tensorboardX handles) and
    then made importable again.
    """
    import sys
    hide = "torch" not in sys.modules and "tensorboardX" not in sys.modules
    if hide:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("TensorBoardCallback needs tensorboardX, which is not installed. Install it with: "
                          "pip install tensorboardX (a core dependency of easyfit)") from None
    finally:
        if hide and "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return SummaryWriter


def _summary_writer(log_dir):
    return _import_summary_writer()(log_dir=str(log_dir))


class TensorBoardCallback(Callback):
    """Logs to TensorBoard event files in `log_dir` (default: `learn.path/runs`).

    Scalars `train/loss`, `train/lr`, `train/mom` per batch (every `log_every` batches),
    `valid/loss` and `valid/<metric>` per epoch (step = training batches so far);
    weight and gradient histograms (`weights/<name>`, `grads/<name>`) every
    `hist_every` batches and at the last batch of every epoch (0: never); `n_images` sample input images at the start when
    the inputs are image batches (N, C, H, W) with 1 or 3 channels; the op graph
    (`log_graph`); and at the end one set of hyper-parameters (the learner's, with any
    `hparams` you give replacing their synonyms: `bs` for `batch_size`...) next to the
    final `valid/` metrics in the HParams tab, all in the one run of `log_dir`.
    """
    order = 70
    main_process_only = True  # data-parallel: rank 0 alone prints / writes
    run_lr_find = False

    def __init__(self, log_dir=None, log_every=1, hist_every=100, n_images=8, log_graph=True, hparams=None):
        self.log_dir, self.log_every, self.hist_every = log_dir, log_every, hist_every
        self.n_images, self.log_graph, self.hparams = n_images, log_graph, dict(hparams or {})
        self.writer = None
        self.graph_written = False
        self._trace = None

    @property
    def name(self):
        return "tensorboard"

    def before_fit(self):
        learn = self.learner
        if self.log_dir is None:
            self.log_dir = learn.path / "runs"
        self.writer = _summary_writer(self.log_dir)
        self._images_written = False

    def before_batch(self):
        # The first training forward pass runs under a trace that notes each op's module
        # path, so that the graph shows the modules as scopes (groups that open in TensorBoard).
        if self.log_graph and not self.graph_written and self.learner.training and self._trace is None:
            from ..nn.tracing import Trace
            self._trace = Trace(self.learner.model, whole_modules={})
            self._trace.__enter__()

    def _stop_trace(self):
        trace, self._trace = self._trace, None
        if trace is None:
            return {}
        trace.__exit__(None, None, None)
        return {id(node.op): node.scope for node in trace.nodes}

    def after_pred(self):
        learn = self.learner
        scopes = self._stop_trace()
        if not learn.training:
            return
        if self.log_graph and not self.graph_written:
            write_graph(self.writer, learn.pred, dict(learn.model.named_parameters()), scopes)
            self.graph_written = True
        if self.n_images and not self._images_written:
            self._write_images(learn.xb[0])
            self._images_written = True

    def _write_images(self, xb):
        images = to_numpy(xb)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            return
        images = images[:self.n_images].astype(np.float32)
        low, high = images.min(), images.max()
        images = (images - low) / (high - low) if high > low else np.zeros_like(images)
        self.writer.add_images("train/images", images, global_step=self.learner.train_iter, dataformats="NCHW")

    def after_step(self):
        learn = self.learner
        step = learn.train_iter + 1  # this batch counts as done, as for the scalars
        # every hist_every batches, and at the last batch of every epoch: a short fit gets some too
        last_of_epoch = learn.iter == learn.n_iter - 1
        if self.hist_every and (step % self.hist_every == 0 or last_of_epoch):
            for name, p in self.learner.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", to_numpy(p), step)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", to_numpy(p.grad), step)

    def after_batch(self):
        self._stop_trace()   # the batch was cancelled before its prediction
        learn = self.learner
        if not learn.training or learn.loss is None or learn.train_iter % self.log_every:
            return
        step = learn.train_iter
        self.writer.add_scalar("train/loss", float(learn.loss.item()), step)
        if learn.opt is not None:
            self.writer.add_scalar("train/lr", float(learn.opt.param_groups[-1]["lr"]), step)
            mom = momentum_of(learn)
            if mom is not None:
                self.writer.add_scalar("train/mom", mom, step)

    def after_epoch(self):
        learn = self.learner
        if learn.valid_results is None:
            return
        step = learn.train_iter
        self.writer.add_scalar("valid/loss", learn.valid_results[0], step)
        for metric, value in zip(learn.metrics, learn.valid_results[1:]):
            self.writer.add_scalar(f"valid/{metric.name}", value, step)
        self.writer.flush()

    def after_fit(self):
        self._stop_trace()
        learn = self.learner
        if self.writer is None:
            return
        if learn.valid_results is not None:
            write_hparams(self.writer, self.run_hparams(),
                          {"valid/loss": float(learn.valid_results[0]),
                           **{f"valid/{m.name}": float(v) for m, v in zip(learn.metrics, learn.valid_results[1:])}})
        self.writer.flush()
        self.writer.close()
        self.writer = None

    def run_hparams(self):
        """The run's hyper-parameters: the learner's own, then `hparams` (whose names win: a
        given `bs` replaces the learner's `batch_size`, `epochs` its `n_epoch`, and so on)."""
        learn = self.learner
        own = {"n_epoch": learn.n_epoch, "opt": type(learn.opt).__name__ if learn.opt is not None else "none",
               "model": type(learn.model).__name__, "loss": type(learn.loss_func).__name__}
        if learn.opt is not None:
            own["lr_max"] = float(max(g["lr"] for g in learn.opt.param_groups))
            own["weight_decay"] = float(learn.opt.param_groups[-1].get("weight_decay", 0.0))
        batch_size = getattr(learn.dls.train, "batch_size", None)
        if batch_size is not None:
            own["batch_size"] = int(batch_size)
        for name, synonyms in _HPARAM_SYNONYMS.items():
            if any(s in self.hparams for s in synonyms):
                own.pop(name, None)
        return {**own, **self.hparams}


# The learner's own hyper-parameter names and the names a config commonly gives them.
_HPARAM_SYNONYMS = {"n_epoch": ("epochs", "n_epochs", "epoch"), "batch_size": ("bs",),
                    "lr_max": ("lr", "learning_rate"), "weight_decay": ("wd",)}


def write_hparams(writer, hparams, metrics):
    """The HParams tab's records, in the run's own event file (no 'hparams' sub-run, no extra scalars).

    `metrics` names scalar tags the run already logs (`valid/loss`...), so the tab shows
    their final values. Integers are written as text, so the table shows 64, not 64.000.
    """
    from tensorboardX.summary import hparams as hparams_summaries
    values = {}
    for name, value in hparams.items():
        if isinstance(value, (bool, np.bool_)):
            values[name] = bool(value)
        elif isinstance(value, (int, np.integer)):
            values[name] = str(int(value))
        elif isinstance(value, (float, np.floating)):
            values[name] = float(value)
        elif value is not None:
            values[name] = str(value)
    experiment, start, end = hparams_summaries(values, metrics)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)


def write_graph(writer, output, named_parameters, scopes=None):
    """Write the op graph that produced `output` (a Tensor) as a TensorBoard GraphDef."""
    from tensorboardX.proto import event_pb2
    writer._get_file_writer().add_event(event_pb2.Event(graph_def=graph_def(output, named_parameters, scopes)
                                                        .SerializeToString()))


def graph_def(output, named_parameters, scopes=None):
    """A GraphDef of the ops between the inputs/parameters and `output`.

    `scopes` maps id(op) to the path of the module that ran it ('layer1.0.conv1'); such an
    op is named 'layer1/0/conv1/Conv2d_3', which TensorBoard draws inside nested groups.
    """
    scopes = scopes or {}
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.versions_pb2 import VersionDef
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

    param_names = {id(p): name for name, p in named_parameters.items()}
    names, nodes, counts = {}, [], {}

    def shape_attr(tensor):
        dims = [TensorShapeProto.Dim(size=int(d)) for d in tensor.shape]
        return {"_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)])),
                "dtype": AttrValue(s=str(tensor.dtype).encode())}

    def leaf_name(tensor):
        key = ("leaf", id(tensor))
        if key not in names:
            if id(tensor) in param_names:
                name, op = "params/" + param_names[id(tensor)], "Parameter"
            else:
                counts["input"] = counts.get("input", -1) + 1
                name, op = f"input_{counts['input']}" if counts["input"] else "input", "Input"
            names[key] = name
            nodes.append(NodeDef(name=name, op=op, attr=shape_attr(tensor)))
        return names[key]

    # iterative post-order walk: inputs get their nodes before the ops that use them
    stack = [(output, False)]
    while stack:
        tensor, expanded = stack.pop()
        creator = tensor.creator
        if creator is None:
            leaf_name(tensor)
            continue
        key = ("op", id(creator))
        if key in names:
            continue
        inputs = getattr(creator, "inputs", ())
        if not expanded:
            stack.append((tensor, True))
            for item in reversed(inputs):
                stack.append((item, False))
            continue
        op = type(creator).__name__
        counts[op] = counts.get(op, -1) + 1
        scope = scopes.get(id(creator))
        name = f"{scope.replace('.', '/')}/{op}_{counts[op]}" if scope else f"{op}_{counts[op]}"
        names[key] = name
        input_names = [names[("op", id(x.creator))] if x.creator is not None else leaf_name(x) for x in inputs]
        nodes.append(NodeDef(name=name, op=op, input=input_names, attr=shape_attr(tensor)))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))
