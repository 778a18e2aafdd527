"""Learner checkpoints: one file, `name.safetensors`, switched from old to new in one rename.

The file (written by `easyfit.save`) holds the model's state dict, the optimizer's
state dict, the callbacks' states and, mid-fit, the gradients accumulated so far as
arrays; its metadata header holds, as JSON under `easyfit.checkpoint`, where the fit
stands (epoch, stage, batches done), the random generators and the data loaders'
positions. One file means one atomic step: it is written to a temporary file in the
same folder, fsynced, renamed over the old one and the folder fsynced, so a save that is
killed or runs out of disk leaves the previous checkpoint intact, and the SHA-256 that
`easyfit.save` stores catches any later damage on load. Temporary files of killed saves
are removed by the next save or load.

Checkpoints of easyfit versions before this format (`name.safetensors` plus a JSON
sidecar `name.json` holding the weights' SHA-256) still load; saving over one removes
its sidecar.

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
from pathlib import Path

import numpy as np

from ..core.random import get_rng_state, set_rng_state
from ..core.serialization import save as _save_arrays, load_with_metadata as _load_with_metadata, parse_json
from .parallel import is_main_process, wait_for_main

FORMAT = "easyfit-learner-checkpoint"
VERSION = 1
METADATA_KEY = "easyfit.checkpoint"
_REQUIRED = ("format", "progress", "rng", "data")


def checkpoint_paths(learn, name):
    """(safetensors path, legacy JSON sidecar path) of checkpoint `name` under learn.path/learn.model_dir."""
    name = os.fspath(name)
    base = Path(name) if os.path.isabs(name) else learn.path / learn.model_dir / name
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_learner(learn, name, with_opt=True):
    weights_path, legacy_sidecar = checkpoint_paths(learn, name)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    if learn.in_fit and learn.training and not learn._batch_done:
        raise RuntimeError(f"save({name!r}) was called in the middle of training batch {learn.iter} (before its "
                           "step finished); a checkpoint there cannot be resumed exactly. Save from after_batch, "
                           "after_train or after_epoch.")
    # Asked in every process, before only rank 0 goes on to write: in data-parallel training a
    # callback may gather state that each process holds a part of (a char-RNN's recurrent state).
    states = {cb.name: cb.state_dict() for cb in learn.cbs}
    if not is_main_process(learn):
        return weights_path  # data-parallel: rank 0 writes the checkpoint
    arrays = {"model": dict(learn.model.state_dict())}
    if with_opt and learn.opt is not None:
        arrays["opt"] = learn.opt.state_dict()
    arrays["callbacks"] = {name: state for name, state in states.items() if state}
    if learn.in_fit:
        grads = {key: p.grad.array for key, p in learn.model.named_parameters() if p.grad is not None}
        if grads:
            arrays["grads"] = grads
    description = {
        "format": FORMAT, "version": VERSION,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": type(learn.model).__name__,
        "optimizer": type(learn.opt).__name__ if (with_opt and learn.opt is not None) else None,
        "frozen_to": learn.frozen_to,
        "progress": _progress(learn),
        "rng": _rng_state(),
        "data": _data_state(learn),
    }
    _save_arrays(arrays, weights_path, metadata={METADATA_KEY: json.dumps(description)})
    try:  # a sidecar of the old two-file format no longer describes this file
        legacy_sidecar.unlink()
    except FileNotFoundError:
        pass
    _remove_legacy_sidecar_temporaries(weights_path.parent)
    return weights_path


def _remove_legacy_sidecar_temporaries(folder):
    """Temporary sidecars (`.tmp-XXXXXXXX.json`) that killed saves of easyfit before one-file
    checkpoints left in the checkpoint folder; nothing writes that pattern any more."""
    for path in folder.glob(".tmp-*.json"):
        if len(path.name) == len(".tmp-XXXXXXXX.json"):
            try:
                path.unlink()
            except OSError:
                pass


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
    """(arrays, description) of checkpoint `name`, after checking it is whole and ours."""
    wait_for_main(learn)  # data-parallel: rank 0 may still be writing it
    weights_path, legacy_sidecar = checkpoint_paths(learn, name)
    if not weights_path.exists():
        raise FileNotFoundError(f"checkpoint {str(name)!r} not found: {weights_path} does not exist")
    arrays, metadata = _load_with_metadata(weights_path, caller=f"checkpoint {str(name)!r}")
    if METADATA_KEY in metadata:
        description = parse_json(metadata[METADATA_KEY], f"the {METADATA_KEY!r} header of {weights_path}")
        source = weights_path
    else:
        description, source = _read_legacy_sidecar(weights_path, legacy_sidecar, name)
    _check_description(description, source)
    if not isinstance(arrays, dict) or not isinstance(arrays.get("model"), dict):
        raise ValueError(f"{weights_path} is not an easyfit learner checkpoint (it holds no model state)")
    return arrays, description


def _read_legacy_sidecar(weights_path, sidecar_path, name):
    """The JSON sidecar of a checkpoint written by an easyfit before one-file checkpoints."""
    if not sidecar_path.exists():
        raise FileNotFoundError(f"checkpoint {str(name)!r}: {weights_path} is not a learner checkpoint (no "
                                f"{METADATA_KEY!r} metadata) and has no JSON sidecar {sidecar_path.name} either")
    sidecar = parse_json(sidecar_path.read_bytes(), str(sidecar_path))
    if not isinstance(sidecar, dict):
        raise ValueError(f"{sidecar_path} is not an easyfit learner checkpoint sidecar (a JSON object)")
    if _sha256(weights_path) != sidecar.get("weights_sha256"):
        raise ValueError(f"{weights_path} does not match its sidecar {sidecar_path.name} (SHA-256 differs): the "
                         "files come from different saves, or a save was interrupted")
    return sidecar, sidecar_path


def _check_description(description, source):
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        got = description.get("format") if isinstance(description, dict) else type(description).__name__
        raise ValueError(f"{source} is not an easyfit learner checkpoint (format {got!r})")
    version = description.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{source} was written by a newer easyfit (checkpoint version {version!r})")
    missing = [key for key in _REQUIRED if key not in description]
    if missing:
        raise ValueError(f"{source} is damaged: its checkpoint description lacks {missing}")
    progress = description["progress"]
    if not isinstance(progress, dict) or "in_fit" not in progress:
        raise ValueError(f"{source} is damaged: its 'progress' entry is {progress!r}")
    if progress["in_fit"]:
        lacking = [key for key in ("n_epoch", "epoch", "stage", "batches_done", "train_iter") if key not in progress]
        if lacking or progress.get("stage") not in (0, 1, 2):
            raise ValueError(f"{source} is damaged: its 'progress' entry lacks {lacking or 'a valid stage'}")
    rng = description["rng"]
    if not isinstance(rng, dict) or any(key not in rng for key in ("easyfit", "numpy", "python")):
        raise ValueError(f"{source} is damaged: its 'rng' entry lacks the easyfit, numpy or python state")
    if not (isinstance(rng["numpy"], list) and len(rng["numpy"]) == 5 and isinstance(rng["python"], list)
            and len(rng["python"]) == 3):
        raise ValueError(f"{source} is damaged: its 'rng' entry holds malformed numpy or python generator states")
    if not isinstance(description["data"], dict):
        raise ValueError(f"{source} is damaged: its 'data' entry is not an object")


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
