"""`learn.export(path)` and `load_learner(path)`: a trained model for inference, without pickle.

The export is one safetensors file: the weights as arrays, and in its metadata header
a JSON description of everything else — the architecture (a tree of module class
names and constructor arguments), the loss (for activation and decoding), the
validation preprocessing (transform classes and their settings), the class names and
the vocabulary. Loading rebuilds modules only from classes in a registry (easyfit.nn's
layers plus those you `register_module`), so opening a file never runs code from it.

A module's constructor arguments are read from its attributes of the same names
(PyTorch's convention: `Linear.in_features`...), or from an `export_args()` method it
defines. Export rebuilds the model from the description and checks that every
parameter name and shape matches before writing, so a model it cannot describe
faithfully is refused with the reason rather than exported wrongly.
"""
import inspect
import json
import os

import numpy as np

from ..core.serialization import save as _save_arrays
from ..core.tensor import Tensor

FORMAT = "easyfit-export"
VERSION = 1
METADATA_KEY = "easyfit.export"

_REGISTRY = {}
# Constructor arguments a module need not store: they do not change what it computes.
_IGNORABLE = {"inplace": False, "padding_mode": "zeros"}


def register_module(cls, name=None):
    """Allow `cls` (a Module subclass, or a loss) in exported architectures, under `name`.

    The class must store its constructor arguments as attributes of the same names, or
    define `export_args(self) -> dict`. Register it again before `load_learner`.
    """
    _REGISTRY[name or cls.__name__] = cls
    return cls


def _register_builtins():
    if _REGISTRY.get("Sequential") is not None:
        return
    from .. import nn
    from ..nn import recurrent
    for name, value in vars(nn).items():
        if isinstance(value, type) and issubclass(value, nn.Module) and not name.startswith("_"):
            _REGISTRY.setdefault(name, value)
    for name in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
        if hasattr(recurrent, name):
            _REGISTRY.setdefault(name, getattr(recurrent, name))


class ExportError(ValueError):
    """The learner cannot be described without pickle; the message says which part and why."""


# ----- describing -----------------------------------------------------------------------------

def describe_module(module, where, arrays):
    """A JSON tree for `module`; tensor-valued arguments go to `arrays` (key -> array)."""
    _register_builtins()
    from ..nn import Sequential, ModuleList
    cls = type(module)
    name = cls.__name__
    if isinstance(module, (Sequential, ModuleList)) and _REGISTRY.get(name) is cls:
        return {"class": name, "children": [describe_module(child, f"{where}.{i}", arrays)
                                            for i, child in enumerate(module)]}
    if _REGISTRY.get(name) is not cls:
        raise ExportError(f"export: {where} is a {cls.__module__}.{name}, which is not a registered module class; "
                          f"call easyfit.learner.register_module({name}) (before export and before load_learner)")
    if hasattr(module, "export_args"):
        raw_args = dict(module.export_args())
    else:
        raw_args = _args_from_attributes(module, where)
    return {"class": name, "args": {key: _encode_value(value, f"{where}.{key}", arrays)
                                    for key, value in raw_args.items()}}


def _args_from_attributes(module, where):
    cls = type(module)
    signature = inspect.signature(cls.__init__)
    args = {}
    for key, parameter in signature.parameters.items():
        if key == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if key == "dtype":
            first = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
            if first is not None:
                args[key] = str(first.dtype)
            continue
        if hasattr(module, key):
            value = getattr(module, key)
            if key == "bias" and (value is None or isinstance(value, Tensor)) and not isinstance(
                    parameter.default, Tensor):
                value = value is not None  # a bias parameter (or None) stands for bias=True/False
            args[key] = value
        elif key in _IGNORABLE and parameter.default == _IGNORABLE[key]:
            continue
        elif parameter.default is parameter.empty:
            raise ExportError(f"export: {where} ({cls.__name__}) has no attribute {key!r} for its required "
                              f"constructor argument; define {cls.__name__}.export_args() returning its arguments")
        else:
            raise ExportError(f"export: {where} ({cls.__name__}) does not store its constructor argument {key!r}, so "
                              f"it cannot be rebuilt faithfully; store it as self.{key} or define export_args()")
    return args


def _encode_value(value, where, arrays):
    from ..nn import Module
    if isinstance(value, Module):
        return {"module": describe_module(value, where, arrays)}
    if isinstance(value, Tensor):
        value = value.numpy_cpu()
    if isinstance(value, np.ndarray):
        arrays[where] = value
        return {"tensor": where}
    if isinstance(value, np.generic):
        return {"value": value.item()}
    if isinstance(value, tuple):
        return {"tuple": [_encode_value(v, f"{where}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return {"list": [_encode_value(v, f"{where}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode_value(v, f"{where}.{k}", arrays) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise ExportError(f"export: {where} is a {type(value).__name__}, which cannot be stored as JSON")


def _decode_value(node, arrays):
    if "module" in node:
        return _build_module(node["module"], arrays)
    if "tensor" in node:
        return arrays[node["tensor"]]
    if "tuple" in node:
        return tuple(_decode_value(v, arrays) for v in node["tuple"])
    if "list" in node:
        return [_decode_value(v, arrays) for v in node["list"]]
    if "dict" in node:
        return {k: _decode_value(v, arrays) for k, v in node["dict"].items()}
    return node["value"]


def build_module(spec, arrays):
    """Rebuild a module from `describe_module`'s tree, using registered classes only.

    Building initialises parameters (overwritten by the saved weights afterwards); the
    global random generators are put back so exporting or loading never shifts them.
    """
    from .checkpoint import _rng_state, _set_rng_state
    state = _rng_state()
    try:
        return _build_module(spec, arrays)
    finally:
        _set_rng_state(state)


def _build_module(spec, arrays):
    _register_builtins()
    name = spec["class"]
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ExportError(f"load_learner: the export uses module class {name!r}, which is not registered here; "
                          f"import it and call easyfit.learner.register_module({name}) first")
    if "children" in spec:
        children = [_build_module(child, arrays) for child in spec["children"]]
        return cls(*children) if name == "Sequential" else cls(children)
    args = {key: _decode_value(value, arrays) for key, value in spec["args"].items()}
    if "dtype" in args:
        args["dtype"] = np.dtype(args["dtype"])
    return cls(**args)


# ----- preprocessing -----------------------------------------------------------------------------

def _describe_transforms(transforms, where):
    from ..data import transforms as transform_module
    described = []
    for index, transform in enumerate(transforms or ()):
        cls = type(transform)
        if getattr(transform_module, cls.__name__, None) is not cls:
            raise ExportError(f"export: {where}[{index}] is {transform!r}, not a transform class of "
                              "easyfit.data.transforms, so it cannot be stored without pickle; apply it in the "
                              "dataset instead, or use the built-in transforms")
        described.append({"class": cls.__name__, "state": _plain_json(vars(transform), f"{where}[{index}]")})
    return described


def _describe_tokenizer(tokenizer):
    if tokenizer is None:
        return None
    from ..data import text
    cls = type(tokenizer)
    if getattr(text, cls.__name__, None) is not cls:
        raise ExportError(f"export: the data's tokenizer {tokenizer!r} is not one of easyfit.data.text's tokenizers, "
                          "so it cannot be stored without pickle")
    return {"class": cls.__name__, "state": _plain_json(vars(tokenizer), "tokenizer")}


def _build_tokenizer(described):
    if described is None:
        return None
    from ..data import text
    cls = getattr(text, described["class"], None)
    if not isinstance(cls, type) or not described["class"].endswith("Tokenizer"):
        raise ExportError(f"load_learner: unknown tokenizer class {described['class']!r}")
    tokenizer = cls.__new__(cls)
    tokenizer.__dict__.update(_from_plain_json(described["state"]))
    return tokenizer


def _build_transforms(described):
    from ..data import transforms as transform_module
    built = []
    for item in described:
        cls = getattr(transform_module, item["class"], None)
        if not isinstance(cls, type):
            raise ExportError(f"load_learner: unknown transform class {item['class']!r}")
        transform = cls.__new__(cls)
        transform.__dict__.update(_from_plain_json(item["state"]))
        built.append(transform)
    return built


def _plain_json(value, where):
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_plain_json(v, where) for v in value]}
    if isinstance(value, list):
        return [_plain_json(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_json(v, where) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ExportError(f"export: {where} holds a {type(value).__name__}, which cannot be stored as JSON")


def _from_plain_json(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_from_plain_json(v) for v in value["__tuple__"])
        return {k: _from_plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain_json(v) for v in value]
    return value


# ----- export and load_learner ----------------------------------------------------------------

def export_learner(learn, path):
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.fspath(learn.path / path)
    arrays = {}
    model_spec = describe_module(learn.model, "model", arrays)
    _check_rebuild(learn.model, model_spec, arrays)
    loss_spec = describe_module(learn.loss_func, "loss_func", arrays)
    dls = learn.dls
    valid = getattr(dls, "valid", None)
    valid = valid if valid is not None else getattr(dls, "train", None)
    vocab = getattr(dls, "vocab", None)
    description = {
        "format": FORMAT, "version": VERSION, "model": model_spec, "loss_func": loss_spec,
        "classes": _plain_json(list(dls.classes), "classes") if getattr(dls, "classes", None) else None,
        "vocab": vocab.to_dict() if hasattr(vocab, "to_dict") else (list(vocab) if vocab is not None else None),
        "preprocessing": {
            "item_tfms": _describe_transforms(getattr(valid, "item_tfms", ()), "item_tfms"),
            "batch_tfms": _describe_transforms(getattr(valid, "batch_tfms", ()), "batch_tfms"),
            "tokenizer": _describe_tokenizer(getattr(dls, "tokenizer", None)),
            "mode": image_mode_of(dls),
            "item_ndim": item_ndim_of(dls),
        },
    }
    tensors = {"model": {key: value.numpy_cpu() for key, value in learn.model.state_dict().items()},
               "args": arrays}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _save_arrays(tensors, path, metadata={METADATA_KEY: json.dumps(description)})
    return path


def onnx_metadata(learn, example):
    """What a deployer of the ONNX file needs, as metadata_props strings (JSON values)."""
    dls = learn.dls
    valid = getattr(dls, "valid", None)
    valid = valid if valid is not None else getattr(dls, "train", None)
    metadata = {"model_class": type(learn.model).__name__}
    classes = getattr(dls, "classes", None)
    if classes:
        metadata["classes"] = json.dumps(_plain_json(list(classes), "classes"))
    vocab = getattr(dls, "vocab", None)
    if vocab is not None:
        metadata["vocab"] = json.dumps(list(vocab.itos) if hasattr(vocab, "itos") else list(vocab))
        if getattr(vocab, "pad_idx", None) is not None:
            metadata["pad_idx"] = str(int(vocab.pad_idx))
    from ..data.transforms import Normalize
    for transform in list(getattr(valid, "batch_tfms", None) or ()) + list(getattr(valid, "item_tfms", None) or ()):
        if isinstance(transform, Normalize):
            metadata["normalize_mean"] = json.dumps(np.asarray(transform.mean).ravel().tolist())
            metadata["normalize_std"] = json.dumps(np.asarray(transform.std).ravel().tolist())
    if example.ndim == 4 and example.dtype.kind == "f":
        metadata["input_layout"] = "NCHW float (batch, channels, height, width), normalized: (x - mean) / std"
    elif example.dtype.kind in "iu":
        metadata["input_layout"] = "token ids (batch, time) int64" if example.ndim == 2 else "integer ids"
    else:
        metadata["input_layout"] = f"{example.dtype} array of shape (batch, {', '.join(map(str, example.shape[1:]))})"
    tokenizer = getattr(dls, "tokenizer", None)
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(_describe_tokenizer(tokenizer))
    return metadata


# easyfit.onnx sits above the learner (DESIGN.md), so the learner cannot import it; the package
# root (`import easyfit`) hands easyfit.onnx.export in, and `export_onnx` writes through it.
_onnx_exporter = [None]


def register_onnx_exporter(export):
    """Called by `import easyfit`: `export(model, args, f, **kwargs)` writes an ONNX file."""
    _onnx_exporter[0] = export


def export_learner_onnx(learn, path, example=None, **export_kwargs):
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.fspath(learn.path / path)
    if example is None:
        valid = getattr(learn.dls, "valid", None)
        loader = valid if valid is not None and len(valid) else getattr(learn.dls, "train", None)
        if loader is None or not len(loader):
            raise ValueError("export_onnx: this learner has no data to take an example batch from (a learner from "
                             "load_learner); pass example= (an input batch)")
        example = next(iter(loader))[0]
    if isinstance(example, (tuple, list)):
        example = example[0]
    example = example if isinstance(example, Tensor) else Tensor(np.asarray(example))
    if "dynamic_axes" not in export_kwargs:
        axes = {0: "batch", 1: "time"} if example.dtype.kind in "iu" and example.ndim == 2 else {0: "batch"}
        export_kwargs["dynamic_axes"] = {"input": axes}
    metadata = onnx_metadata(learn, example)
    metadata.update(export_kwargs.pop("metadata", None) or {})
    export = _onnx_exporter[0]
    if export is None:
        raise RuntimeError("export_onnx: no ONNX exporter registered (import easyfit registers easyfit.onnx.export)")
    reset = getattr(learn.model, "reset_state", None)
    if callable(reset):   # a stateful model (char-RNN) exports its stateless step from a fresh state
        reset()
    model = learn.model
    device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else "cpu"
    if device != "cpu":
        raise ValueError("export_onnx: move the model to the CPU first (learn.model.to('cpu'))")
    export(model, example.to("cpu"), path, input_names=["input"], metadata=metadata, **export_kwargs)
    if callable(reset):
        reset()
    return path


def _check_rebuild(model, spec, arrays):
    rebuilt = build_module(spec, arrays)
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    new = {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()}
    if own != new:
        differing = sorted(set(own.items()) ^ set(new.items()))[:6]
        raise ExportError(f"export: the model rebuilt from its description differs from the model "
                          f"(parameter names/shapes {differing}); a module does not store all of its constructor "
                          "arguments — define export_args() on it")


def image_mode_of(dls):
    """The colour mode ('RGB' or 'L') image files are decoded to for this data, or None."""
    mode = getattr(dls, "mode", None)
    if mode is None:
        loader = getattr(dls, "valid", None)
        loader = loader if loader is not None else getattr(dls, "train", None)
        mode = getattr(getattr(loader, "dataset", None), "mode", None)
    return mode


def item_ndim_of(dls):
    """The number of axes of one input item of the data (before its transforms), or None if unknown."""
    if hasattr(dls, "item_ndim"):
        return dls.item_ndim
    loader = getattr(dls, "valid", None)
    loader = loader if loader is not None else getattr(dls, "train", None)
    dataset = getattr(loader, "dataset", None)
    if dataset is None or getattr(dls, "tokenizer", None) is not None:
        return None
    try:
        sample = dataset[0]
    except Exception:  # an unreadable first item (skipped later) or an empty dataset: no check
        return None
    x = sample[0] if isinstance(sample, (tuple, list)) else sample
    return int(np.ndim(x.numpy_cpu() if isinstance(x, Tensor) else x))


class InferenceData:
    """What an exported learner keeps of its data: the validation preprocessing, classes,
    vocabulary, tokenizer and the colour mode images are decoded to."""

    def __init__(self, item_tfms, batch_tfms, classes, vocab, tokenizer=None, mode=None, item_ndim=None,
                 device=None):
        self.train = None
        self.valid = _Preprocessing(item_tfms, batch_tfms, device)
        self.classes, self.vocab, self.tokenizer, self.mode = classes, vocab, tokenizer, mode
        self.item_ndim = item_ndim

    def test_dl(self, items, bs=64, device=None, num_workers=0):
        """A loader over unlabelled `items` with the exported preprocessing (see `DataLoaders.test_dl`)."""
        from ..data.inference import test_dataloader
        return test_dataloader(self, items, bs=bs, device=device, num_workers=num_workers)


class _Preprocessing:
    def __init__(self, item_tfms, batch_tfms, device=None):
        self.item_tfms, self.batch_tfms, self.device = item_tfms, batch_tfms, device

    def __iter__(self):
        raise TypeError("a learner from load_learner has no data loaders; pass one to get_preds(dl=...)")

    def __len__(self):
        return 0


def load_learner(path, device=None):
    """A Learner for inference from `learn.export(path)`: same model, loss, preprocessing, classes.

    Nothing is unpickled: architecture and settings are JSON, weights safetensors. The
    file's SHA-256 is verified, and the model described must not need more memory than
    the weights the file holds (checked as it is built, before anything is initialised).
    The model is on the CPU unless `device` ('cuda', 'cuda:1') is given.
    """
    from ..core.serialization import load_with_metadata, parse_json
    from ..nn.module import allocation_limit, AllocationLimitError
    from .learner import Learner
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_learner: {path} does not exist")
    tensors, metadata = load_with_metadata(path, caller="load_learner")
    if METADATA_KEY not in metadata:
        raise ExportError(f"load_learner: {path} is not an easyfit export (no {METADATA_KEY!r} metadata); "
                          "a checkpoint from learn.save is loaded with learn.load instead")
    try:
        description = parse_json(metadata[METADATA_KEY], f"the {METADATA_KEY!r} header of {path}")
    except ValueError as error:
        raise ExportError(f"load_learner: {error}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT or \
            not isinstance(description.get("version", 0), int) or description.get("version", 0) > VERSION:
        got = (description.get("format"), description.get("version")) if isinstance(description, dict) else description
        raise ExportError(f"load_learner: {path} has an unknown export format {got!r}")
    if not isinstance(tensors, dict) or not isinstance(tensors.get("model"), dict):
        raise ExportError(f"load_learner: {path} holds no model weights")
    arrays = tensors.get("args", {})
    stored = {key: tuple(value.shape) for key, value in tensors["model"].items()}
    stored_bytes = sum(int(v.nbytes) for v in tensors["model"].values()) + sum(
        int(v.nbytes) for v in arrays.values() if hasattr(v, "nbytes"))
    try:
        with allocation_limit(stored_bytes + (1 << 20)):
            model = build_module(description["model"], arrays)
            loss_func = build_module(description["loss_func"], arrays)
        built = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        if built != stored:
            differing = sorted(set(built.items()) ^ set(stored.items()))[:6]
            raise ExportError(f"load_learner: {path} describes a model whose parameters differ from the weights "
                              f"it holds ({differing}); the file is damaged or was not written by learn.export")
        model.load_state_dict(tensors["model"])
        vocab = description.get("vocab")
        if isinstance(vocab, dict):
            from ..data.text import Vocab
            vocab = Vocab.from_dict(vocab)
        classes = description.get("classes")
        preprocessing = description["preprocessing"]
        data = InferenceData(_build_transforms(preprocessing["item_tfms"]),
                             _build_transforms(preprocessing["batch_tfms"]),
                             _from_plain_json(classes) if classes is not None else None, vocab,
                             _build_tokenizer(preprocessing.get("tokenizer")), preprocessing.get("mode"),
                             preprocessing.get("item_ndim"), device)
    except ExportError:
        raise
    except AllocationLimitError as error:
        raise ExportError(f"load_learner: {path} describes a model larger than the weights it holds "
                          f"({stored_bytes:,} bytes): {error}; the file is damaged or crafted") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, MemoryError) as error:
        raise ExportError(f"load_learner: {path} has a damaged description ({type(error).__name__}: {error})") from None
    if device is not None:
        model.to(device)
    model.eval()
    return Learner(data, model, loss_func, default_cbs=False)
