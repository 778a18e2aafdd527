"""What the `easyfit` verbs do, as functions a script or notebook can call too.

A run's output folder holds everything about it:

    OUT/config.json            the fully resolved config (and the recipe's name)
    OUT/models/checkpoint*.safetensors   resumable training checkpoints (one file each)
    OUT/model.safetensors      the exported model (weights + JSON description, no pickle)
    OUT/results.json           final metrics and timings
    OUT/tensorboard/           TensorBoard logs (unless --logdir says elsewhere)
"""
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

import easyfit
from easyfit import distributed
from easyfit.core import compiled
from easyfit.learner import Callback, SaveModelCallback, TensorBoardCallback, load_learner

from . import get_recipe
from .runs import is_numbered_run
from .config import ConfigError, read_config_file, resolve, save_config, to_dict

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RESULTS_FILE = "results.json"
CHECKPOINT = "checkpoint"           # written at the end of training
RESUMABLE = CHECKPOINT + "_last"    # written every few batches while training


def default_out_dir(recipe_name):
    """The recipe's folder under easyfit-runs (lr-find writes its plot there; training runs get run-NNN inside)."""
    return Path("easyfit-runs") / recipe_name


def resolve_config(recipe, config_file=None, overrides=(), **arguments):
    settings = read_config_file(config_file) if config_file else {}
    settings.pop("recipe", None)
    return resolve(recipe.Config, settings, overrides, **arguments)


def read_run(out_dir):
    """(recipe module, config) of a finished or interrupted run's folder."""
    out_dir = Path(out_dir)
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} is not an easyfit run folder: it has no {CONFIG_FILE}")
    settings = read_config_file(path)
    name = settings.pop("recipe", None)
    if name is None:
        raise ConfigError(f"{path} does not name its recipe")
    recipe = get_recipe(name)
    return recipe, resolve(recipe.Config, settings)


def is_finished(out_dir):
    """Whether `out_dir` holds a run that finished training (results and exported model written)."""
    out_dir = Path(out_dir)
    return (out_dir / RESULTS_FILE).is_file() and (out_dir / MODEL_FILE).is_file()


def write_config(recipe, config, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / CONFIG_FILE, recipe=recipe.NAME)


def _checkpoint_every(learn):
    """Write a resumable checkpoint about four times an epoch (at least every 500 batches)."""
    return max(1, min(500, len(learn.dls.train) // 4 or 1))


def train(recipe, config, out_dir, logdir=None, lr_find=False, resume=False, log=print):
    """Train `recipe` with `config`, writing everything to `out_dir`; returns the results dict.

    With `resume=True`, continue the interrupted run in `out_dir` from its last
    checkpoint (the same call, the same schedule: the result equals an uninterrupted run).
    Under `mpiexec -n N` it trains data-parallel (`Learner.distrib_ctx`; `config.bs` is
    per process) and rank 0 alone logs and writes files.
    """
    if not distributed.is_main():
        log = _silent
    out_dir = Path(out_dir)
    resume_name = None
    if resume:
        checkpoint = out_dir / "models" / f"{RESUMABLE}.safetensors"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"nothing to resume: {checkpoint} does not exist")
        resume_name = RESUMABLE
    if distributed.is_main():
        write_config(recipe, config, out_dir)
    compiled.load_in_background()   # numba's first-use setup overlaps reading the data
    easyfit.manual_seed(config.seed)
    learn = recipe.build_learner(config, out_dir)
    _check_validation_data(learn, config)
    logdir = Path(logdir) if logdir else out_dir / "tensorboard"
    hparams = {k: v for k, v in to_dict(config).items() if isinstance(v, (int, float, str, bool))}
    last_validation = LastValidation()
    callbacks = [TensorBoardCallback(str(logdir), hparams=hparams),
                 SaveModelCallback(fname=CHECKPOINT, every_n_batches=_checkpoint_every(learn), at_end=True),
                 last_validation]
    lr = config.lr
    with learn.distrib_ctx():  # data-parallel under mpiexec; a world of one trains as usual
        if lr_find and not resume:
            suggestions = learn.lr_find()
            lr = float(suggestions.valley)
            log(f"lr_find: valley {suggestions.valley:.2e}, slide {suggestions.slide:.2e}, "
                f"minimum {suggestions.minimum:.2e}, steep {suggestions.steep:.2e}; training with lr {lr:.2e}")
        start = time.perf_counter()
        learn.fit_one_cycle(config.epochs, lr_max=lr, cbs=callbacks, resume=resume_name)
        seconds = time.perf_counter() - start
        values = last_validation.results_if_unchanged(learn)
        if values is None:
            values = learn.validate()
    if not distributed.is_main():
        return None  # rank 0 exports and reports
    names = ["valid_loss"] + [m.name for m in learn.metrics]
    results = {"recipe": recipe.NAME, **{n: float(v) for n, v in zip(names, values)},
               "epochs": config.epochs, "lr": lr, "train_seconds": round(seconds, 2),
               "seconds_per_epoch": round(seconds / max(config.epochs, 1), 2)}
    skipped = skipped_files(learn)
    if skipped:
        results["skipped_files"] = len(skipped)
        log(f"skipped {len(skipped)} unreadable file(s) (on_error=skip): {', '.join(skipped[:5])}"
            f"{', ...' if len(skipped) > 5 else ''}")
    diverged = _divergence(learn, values)
    if diverged:
        results["diverged"] = diverged
        write_results(out_dir / RESULTS_FILE, results)
        raise TrainingDiverged(f"{diverged} No model was exported; the checkpoints in {out_dir / 'models'} are "
                               "kept. Train again with a lower --lr (easyfit lr-find suggests one).")
    learn.export((out_dir / MODEL_FILE).resolve())
    write_results(out_dir / RESULTS_FILE, results)
    metrics = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, values))
    log(f"final: {metrics}")
    log(f"model: {out_dir / MODEL_FILE}; checkpoints: {out_dir / 'models'}")
    # numbered runs of a recipe sit side by side: point TensorBoard at all of them, to compare
    view = out_dir.parent if is_numbered_run(out_dir) and logdir == out_dir / "tensorboard" else logdir
    log(f"TensorBoard logs: {logdir}  (view them with: tensorboard --logdir {view})")
    return results


class LastValidation(Callback):
    """Keeps the last epoch's validation results with a fingerprint of the model's state
    (weights and buffers), so that the final metrics of a run reuse them when nothing
    changed since: the last epoch just measured that model on that loader, and a second
    pass (about 6% of a one-epoch Fashion-MNIST run) would give the same numbers."""
    order = 100          # after the other callbacks' after_epoch
    run_lr_find = False

    def __init__(self):
        self.kept = None
        self.batches = 0

    def before_fit(self):
        self.kept = None

    def before_validate(self):
        self.batches = 0

    def after_batch(self):
        if not self.learner.training:
            self.batches += 1

    def after_epoch(self):
        learn = self.learner
        results, valid = learn.valid_results, learn.dls.valid
        complete = results is not None and valid is not None and self.batches == len(valid)  # not cut short
        self.kept = (list(results), valid, model_fingerprint(learn.model)) if complete else None

    def results_if_unchanged(self, learn):
        """The kept results when `learn`'s model and validation loader are still those measured, else None."""
        if self.kept is None:
            return None
        results, loader, fingerprint = self.kept
        if loader is not learn.dls.valid or fingerprint != model_fingerprint(learn.model):
            return None
        return list(results)


def model_fingerprint(model):
    """A digest of every weight and buffer of `model` (names, shapes, dtypes and bytes)."""
    digest = hashlib.blake2b(digest_size=32)
    for name, value in model.state_dict().items():
        array = np.ascontiguousarray(value.numpy_cpu() if hasattr(value, "numpy_cpu") else np.asarray(value))
        digest.update(f"{name}:{array.shape}:{array.dtype.str};".encode())
        digest.update(memoryview(array.reshape(-1)).cast("B"))
    return digest.hexdigest()


def skipped_files(learn):
    """Names of the files the data loaders left out (on_error='skip'), training and validation together."""
    names = []
    for loader in (learn.dls.train, learn.dls.valid):
        files = getattr(getattr(loader, "dataset", None), "files", None)
        for index in sorted(getattr(loader, "skipped", {}) or {}):
            names.append(str(files[index]) if files is not None else f"item {index}")
    return names


def _check_validation_data(learn, config):
    """The final metrics need validation batches: find out now, not after training."""
    valid = getattr(learn.dls, "valid", None)
    if valid is None or len(valid) == 0:
        share = f" (valid_pct={config.valid_pct})" if hasattr(config, "valid_pct") else ""
        raise ConfigError(f"the validation set is empty{share}: the run would train and then have nothing to "
                          "measure. Hold out more data (a larger valid_pct) or give data with a validation split")


class TrainingDiverged(RuntimeError):
    """Training ended with a non-finite loss, gradient or metric: the model is not usable."""


def _divergence(learn, values):
    """Why the trained model is unusable (a sentence), or None when it is fine."""
    stopper = next((cb for cb in learn.cbs if getattr(cb, "diverged", False)), None)
    if stopper is not None:
        return learn.stop_reason
    if not all(math.isfinite(float(v)) for v in values):
        return f"Training diverged: the final validation values are {[float(v) for v in values]}."
    return None


def write_results(path, results):
    """results.json as strict JSON: a non-finite number (NaN, inf) is written as null."""
    strict = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
              for key, value in results.items()}
    path.write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")


def _silent(*args, **kwargs):
    pass


def find_lr(recipe, config, out_dir, log=print):
    """Run the learning-rate finder and report its suggestions (and a plot when matplotlib is there)."""
    out_dir = Path(out_dir)
    easyfit.manual_seed(config.seed)
    learn = recipe.build_learner(config, out_dir)
    suggestions = learn.lr_find()
    for name in ("valley", "slide", "minimum", "steep"):
        log(f"{name:>8}: {getattr(suggestions, name):.3e}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        learn.recorder.plot_lr_find(path=str(out_dir / "lr_find.png"), suggestions=suggestions)
        log(f"plot: {out_dir / 'lr_find.png'}")
    except ImportError:
        log("(install matplotlib, pip install 'easyfit[plot]', for a plot of the curve)")
    return suggestions


def load_run(out_dir):
    """(recipe, config, learner) for a trained run folder."""
    recipe, config = read_run(out_dir)
    model = Path(out_dir) / MODEL_FILE
    if not model.is_file():
        raise FileNotFoundError(f"{model} does not exist: the run in {out_dir} has not finished training")
    return recipe, config, load_learner(model)


def info(out_dir, log=print):
    recipe, config = read_run(out_dir)
    out_dir = Path(out_dir)
    log(f"recipe: {recipe.NAME} ({recipe.DESCRIPTION})")
    log("config:")
    for key, value in sorted(to_dict(config).items()):
        log(f"  {key} = {value!r}")
    results = out_dir / RESULTS_FILE
    if results.is_file():
        log("results:")
        for key, value in json.loads(results.read_text()).items():
            log(f"  {key} = {value}")
    else:
        log("results: none yet (training has not finished)")
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    log(f"files: {len(files)} ({', '.join(f for f in files if os.sep not in f)})")
