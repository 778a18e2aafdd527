"""Run folders: every training run keeps its own folder, and "latest" names the newest.

    easyfit-runs/vision/run-001/     config.json, model.safetensors, results.json, models/, tensorboard/
    easyfit-runs/vision/run-002/
    easyfit-runs/vision/latest       -> run-002 (a symbolic link, or a one-line file naming
                                        the run where links cannot be made)

A RUN argument (`predict`, `info`, `generate`, `--resume`) may be a run folder, a recipe
folder such as `easyfit-runs/vision` (its latest run), or `.../latest`. A folder written by
an earlier easyfit, with its config.json directly inside and no runs, is a run folder as
before.
"""
import os
import re
from pathlib import Path

RUNS_ROOT = Path("easyfit-runs")
LATEST = "latest"
_RUN_NAME = re.compile(r"^run-(\d+)$")


def recipe_folder(recipe_name, root=RUNS_ROOT):
    """The folder that holds one recipe's runs."""
    return Path(root) / recipe_name


def is_numbered_run(path):
    """Whether `path` is named like a run folder made by `new_run_dir` (run-001, run-002...)."""
    return bool(_RUN_NAME.match(Path(path).name))


def new_run_dir(recipe_name, root=RUNS_ROOT):
    """Create the next numbered run folder of a recipe (run-001, run-002, ...) and return it.

    Numbers are never reused, and two runs starting at once get different folders
    (creating the folder is the claim). `finish_run` marks it latest once it holds a
    checkpoint or a model.
    """
    parent = recipe_folder(recipe_name, root)
    parent.mkdir(parents=True, exist_ok=True)
    numbers = [int(match.group(1)) for match in (_RUN_NAME.match(p.name) for p in parent.iterdir()) if match]
    number = max(numbers, default=0) + 1
    while True:
        run_dir = parent / f"run-{number:03d}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            number += 1
            continue
        return run_dir


def finish_run(run_dir):
    """After a training command, successful or not: a run that wrote a checkpoint or a model
    becomes the latest; one that stopped before writing any (bad data, an error at once)
    is removed, so it neither takes a number's place as "latest" nor litters the folder."""
    run_dir = Path(run_dir)
    if (run_dir / "models").is_dir() or (run_dir / "model.safetensors").is_file():
        mark_latest(run_dir)
    elif run_dir.is_dir():
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)


def mark_latest(run_dir):
    """Point `<recipe folder>/latest` at `run_dir`: a relative symbolic link, or a file naming it."""
    run_dir = Path(run_dir)
    pointer = run_dir.parent / LATEST
    if pointer.is_dir() and not pointer.is_symlink():
        return  # a real folder called "latest" belongs to the user: leave it alone
    temporary = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        os.symlink(run_dir.name, temporary, target_is_directory=True)
    except (OSError, NotImplementedError):   # no symbolic links here (some Windows setups, some file systems)
        temporary.write_text(run_dir.name + "\n", encoding="utf-8")
    os.replace(temporary, pointer)


def resolve_run_dir(path):
    """The run folder that a RUN argument names (see the module's docstring)."""
    path = Path(path)
    if path.name == LATEST and path.is_file() and not path.is_symlink():
        return path.parent / path.read_text(encoding="utf-8").strip()
    if path.is_symlink() and path.name == LATEST:
        return path.parent / os.readlink(path)
    pointer = path / LATEST
    if path.is_dir() and (pointer.is_symlink() or pointer.is_file()):
        return resolve_run_dir(pointer)
    return path
