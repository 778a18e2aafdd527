"""Every run keeps its own folder; "latest" names the newest, with or without symlinks (issue 14, item 4)."""
import json
import os
import shutil

import pytest

from recipes import cli, runs
from recipes.run import CONFIG_FILE, MODEL_FILE, RESULTS_FILE

FAST = ["--epochs", "1", "--set", "width=4"]


def test_reruns_keep_every_run_and_latest_names_the_newest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "vision", *FAST, "--seed", "1"]) == 0
    first_out = capsys.readouterr().out
    assert "easyfit-runs/vision/run-001/model.safetensors" in first_out
    assert "(view them with: tensorboard --logdir easyfit-runs/vision)" in first_out
    assert cli.main(["train", "vision", *FAST, "--seed", "2"]) == 0
    capsys.readouterr()
    root = tmp_path / "easyfit-runs" / "vision"
    for name, seed in (("run-001", 1), ("run-002", 2)):
        assert json.loads((root / name / CONFIG_FILE).read_text())["seed"] == seed
        assert (root / name / MODEL_FILE).is_file() and (root / name / RESULTS_FILE).is_file()
        assert any((root / name / "tensorboard").rglob("events.out.tfevents.*"))
    assert runs.resolve_run_dir(root) == root / "run-002"
    assert runs.resolve_run_dir(root / "latest") == root / "run-002"
    for run_arg in ("easyfit-runs/vision", "easyfit-runs/vision/latest", "easyfit-runs/vision/run-001"):
        assert cli.main(["info", run_arg]) == 0
        assert "recipe: vision" in capsys.readouterr().out
    assert cli.main(["info", "easyfit-runs/vision"]) == 0
    assert "seed = 2" in capsys.readouterr().out


def test_a_run_that_fails_at_once_leaves_no_folder_and_does_not_become_latest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "vision", *FAST]) == 0
    assert cli.main(["train", "vision", "--data", str(tmp_path / "missing")]) == cli.EXIT_NOT_FOUND
    root = tmp_path / "easyfit-runs" / "vision"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("run-")) == ["run-001"]
    assert runs.resolve_run_dir(root) == root / "run-001"


def test_latest_works_where_symlinks_cannot_be_made(tmp_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    root = tmp_path / "easyfit-runs"
    first = runs.new_run_dir("vision", root)
    runs.mark_latest(first)
    second = runs.new_run_dir("vision", root)
    runs.mark_latest(second)
    pointer = root / "vision" / "latest"
    assert pointer.is_file() and not pointer.is_symlink()
    assert runs.resolve_run_dir(root / "vision") == second
    assert runs.resolve_run_dir(pointer) == second
    assert (first.name, second.name) == ("run-001", "run-002")


def test_a_single_run_folder_from_an_earlier_version_still_works(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    legacy = tmp_path / "easyfit-runs" / "vision"
    assert cli.main(["train", "vision", *FAST, "--out", str(legacy)]) == 0   # the old fixed layout
    assert (legacy / MODEL_FILE).is_file()
    capsys.readouterr()
    assert cli.main(["info", str(legacy)]) == 0
    assert "results:" in capsys.readouterr().out
    assert runs.resolve_run_dir(legacy) == legacy


def test_resume_accepts_the_recipe_folder_for_the_latest_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "vision", *FAST]) == 0
    root = tmp_path / "easyfit-runs" / "vision"
    checkpoint = root / "run-001" / "models" / "checkpoint_last.safetensors"
    assert checkpoint.is_file()
    (root / "run-001" / MODEL_FILE).unlink()
    assert cli.main(["train", "vision", "--resume", "easyfit-runs/vision"]) == 0
    assert (root / "run-001" / MODEL_FILE).is_file()
    assert not (root / "run-002").exists()
