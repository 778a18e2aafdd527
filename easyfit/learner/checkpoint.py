"""Learner checkpoints: `name.safetensors` (arrays) plus `name.json` (everything else).

The safetensors file (written by `easyfit.save`) holds the model's state dict, the
optimizer's state dict, the callbacks' states and, mid-fit, the gradients accumulated
so far. The JSON sidecar holds where the fit stands (epoch, stage, batches done),
the random generators, the data loaders' positions and the SHA-256 of the
safetensors file, so a sidecar never pairs with a different weights file. Both
files are written atomically, weights first: a crash leaves either the old pair or
the new one (a mismatch is detected and reported on load).

Resuming: the fit restores the model and optimizer at its start, then the rest
(callbacks, generators, loader positions) at the exact point the checkpoint was taken
— after the `before_*` events of the epoch it was taken in — and continues from
the next batch, so every later step sees the same numbers as an uninterrupted run.
"""
import datetime
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np

from ..core.random import get_rng_state, set_rng_state
from ..core.serialization import save as _save_arrays, load as _load_arrays
from .parallel import is_main_process, wait_for_main

FORMAT = "easyfit-learner-checkpoint"
VERSION = 1


def checkpoint_paths(learn, name):
    """(safetensors path, json path) of checkpoint `name` under learn.path/learn.model_dir."""
    name = os.fspath(name)
    base = Path(name) if os.path.isabs(name) else learn.path / learn.model_dir / name
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_learner(learn, name, with_opt=True):
    weights_path, sidecar_path = checkpoint_paths(learn, name)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    if learn.in_fit and learn.training and not learn._batch_done:
        raise RuntimeError(f"save({name!r}) was called in the middle of training batch {learn.iter} (before its "
                           "step finished); a checkpoint there cannot be resumed exactly. Save from after_batch, "
                           "after_train or after_epoch.")
    if not is_main_process(learn):
        return weights_path  # data-parallel: rank 0 writes the checkpoint
    arrays = {"model": dict(learn.model.state_dict())}
    if with_opt and learn.opt is not None:
        arrays["opt"] = learn.opt.state_dict()
    states = {cb.name: cb.state_dict() for cb in learn.cbs}
    arrays["callbacks"] = {name: state for name, state in states.items() if state}
    if learn.in_fit:
        grads = {key: p.grad.array for key, p in learn.model.named_parameters() if p.grad is not None}
        if grads:
            arrays["grads"] = grads
    _save_arrays(arrays, weights_path)
    sidecar = {
        "format": FORMAT, "version": VERSION,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights": weights_path.name, "weights_sha256": _sha256(weights_path),
        "model": type(learn.model).__name__,
        "optimizer": type(learn.opt).__name__ if (with_opt and learn.opt is not None) else None,
        "frozen_to": learn.frozen_to,
        "progress": _progress(learn),
        "rng": _rng_state(),
        "data": _data_state(learn),
    }
    _write_json_atomically(sidecar_path, sidecar)
    return weights_path


def _progress(learn):
    if not learn.in_fit:
        return {"in_fit": False}
    return {"in_fit": True, "n_epoch": learn.n_epoch, "epoch": learn.epoch, "stage": learn._epoch_stage,
            "batches_done": learn._batches_done if learn._epoch_stage == 0 else None,
            "train_iter": learn.train_iter, "lr_finding": learn.lr_finding}


def _rng_state():
    legacy = np.random.get_state()
    python_state = random.getstate()
    return {"easyfit": get_rng_state(),
            "numpy": [legacy[0], legacy[1].tolist(), int(legacy[2]), int(legacy[3]), float(legacy[4])],
            "python": [python_state[0], list(python_state[1]), python_state[2]]}


def _set_rng_state(state):
    set_rng_state(state["easyfit"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _data_state(learn):
    state = {}
    for split in ("train", "valid"):
        dl = getattr(learn.dls, split, None)
        if dl is not None and hasattr(dl, "state_dict"):
            state[split] = dl.state_dict()
    return state


def _set_data_state(learn, state):
    for split, dl_state in state.items():
        dl = getattr(learn.dls, split, None)
        if dl is None:
            continue
        if not hasattr(dl, "load_state_dict"):
            raise TypeError(f"the {split} data loader ({type(dl).__name__}) has no load_state_dict, so its position "
                            "cannot be restored")
        dl.load_state_dict(dl_state)


def read_checkpoint(learn, name):
    """(arrays, sidecar) of checkpoint `name`, after checking the pair belongs together."""
    wait_for_main(learn)  # data-parallel: rank 0 may still be writing it
    weights_path, sidecar_path = checkpoint_paths(learn, name)
    if not weights_path.exists():
        raise FileNotFoundError(f"checkpoint {str(name)!r} not found: {weights_path} does not exist")
    if not sidecar_path.exists():
        raise FileNotFoundError(f"checkpoint {str(name)!r} is incomplete: {sidecar_path} (its JSON sidecar) is missing")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except ValueError as error:
        raise ValueError(f"{sidecar_path} is not valid JSON ({error})") from None
    if sidecar.get("format") != FORMAT:
        raise ValueError(f"{sidecar_path} is not an easyfit learner checkpoint (format {sidecar.get('format')!r})")
    if sidecar.get("version", 0) > VERSION:
        raise ValueError(f"{sidecar_path} was written by a newer easyfit (version {sidecar['version']})")
    digest = _sha256(weights_path)
    if digest != sidecar.get("weights_sha256"):
        raise ValueError(f"{weights_path} does not match its sidecar {sidecar_path.name} (SHA-256 differs): the "
                         "files come from different saves, or a save was interrupted")
    return _load_arrays(weights_path), sidecar


def load_learner_state(learn, name, with_opt=True, strict=True, training_state=True):
    arrays, sidecar = read_checkpoint(learn, name)
    _restore_model_and_opt(learn, arrays, sidecar, with_opt, strict, name)
    if training_state:
        _restore_callbacks(learn, arrays.get("callbacks", {}))
        _set_rng_state(sidecar["rng"])
        _set_data_state(learn, sidecar["data"])


def _restore_model_and_opt(learn, arrays, sidecar, with_opt, strict, name):
    learn.model.load_state_dict(arrays["model"], strict=strict)
    learn.frozen_to = sidecar.get("frozen_to", 0)
    if learn.opt is None:
        learn.create_opt()
    else:
        learn._apply_freeze()
    if with_opt:
        if "opt" not in arrays:
            if with_opt == "required":
                raise ValueError(f"checkpoint {str(name)!r} holds no optimizer state")
        else:
            learn.opt.load_state_dict(arrays["opt"])


def _restore_callbacks(learn, states):
    by_name = {cb.name: cb for cb in learn.cbs}
    for cb_name, state in states.items():
        if cb_name in by_name:
            by_name[cb_name].load_state_dict(state)


class Resume:
    """What a fit resumed from a checkpoint still has to restore, and where."""

    def __init__(self, arrays, sidecar):
        progress = sidecar["progress"]
        self.epoch, self.stage = progress["epoch"], progress["stage"]
        self.batches_done, self.train_iter = progress["batches_done"], progress["train_iter"]
        self.start_epoch = self.epoch + 1 if self.stage == 2 else self.epoch
        self.callbacks = arrays.get("callbacks", {})
        self.grads = arrays.get("grads", {})
        self.sidecar = sidecar
        self.done = False

    def restore_if_due(self, learn, point):
        """Restore the training state at `point` ('fit', 'epoch' or 'train') if it is the one the
        checkpoint was taken at; returns the number of training batches to skip."""
        due = {2: "fit", 1: "epoch", 0: "train"}[self.stage]
        if self.done or point != due:
            return 0
        self.done = True
        _restore_callbacks(learn, self.callbacks)
        _set_rng_state(self.sidecar["rng"])
        _set_data_state(learn, self.sidecar["data"])
        learn.train_iter = self.train_iter
        if self.grads:
            from ..core.tensor import Tensor
            from ..core.backend import to_device
            params = dict(learn.model.named_parameters())
            for key, grad in self.grads.items():
                params[key].grad = Tensor(to_device(np.array(grad, dtype=params[key].dtype), params[key].device))
        return self.batches_done if point == "train" else 0


def start_resume(learn, name, n_epoch):
    """Load model and optimizer from checkpoint `name` for a fit of `n_epoch` epochs; returns a Resume."""
    arrays, sidecar = read_checkpoint(learn, name)
    progress = sidecar["progress"]
    if not progress.get("in_fit"):
        raise ValueError(f"checkpoint {str(name)!r} was not written during a fit, so there is no fit to resume; "
                         f"use learn.load({str(name)!r}) and start a new fit")
    if progress.get("lr_finding"):
        raise ValueError(f"checkpoint {str(name)!r} was written during lr_find, not during a fit")
    if progress["n_epoch"] != n_epoch:
        raise ValueError(f"checkpoint {str(name)!r} was written during a fit of {progress['n_epoch']} epochs; resume "
                         f"it with the same call (n_epoch={progress['n_epoch']}), got n_epoch={n_epoch}")
    _restore_model_and_opt(learn, arrays, sidecar, "required", True, name)
    return Resume(arrays, sidecar)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomically(path, obj):
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(obj, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    try:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:
        pass
