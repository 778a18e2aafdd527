"""The `easyfit` command line and the vision recipe, end to end."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from recipes import cli
from recipes.run import CONFIG_FILE, MODEL_FILE, RESULTS_FILE

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def _image_folder(root, n_per_class=12, size=8):
    """Two classes that a CNN separates easily: bright top half vs bright bottom half."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("top", "bottom")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            image = rng.integers(0, 60, (size, size), dtype=np.uint8)
            rows = slice(0, size // 2) if label == 0 else slice(size // 2, size)
            image[rows] += 180
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and "easyfit" in capsys.readouterr().out
    assert cli.main([]) == cli.EXIT_USAGE


def test_recipes_lists_vision_with_default_data(capsys):
    assert cli.main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "vision" in out and "default data: digits" in out


def test_train_predict_info_on_an_image_folder(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    code = cli.main(["train", "vision", "--data", str(data), "--epochs", "2", "--bs", "8", "--out", str(out),
                     "--set", "size=8", "--set", "width=8", "--lr", "0.01"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "final: valid_loss" in printed and "tensorboard --logdir" in printed
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["recipe"] == "vision" and config["size"] == 8 and config["lr"] == 0.01
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["epochs"] == 2 and 0.0 <= results["accuracy"] <= 1.0
    assert (out / MODEL_FILE).is_file()
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "models" / "checkpoint.safetensors").is_file()

    images = sorted(str(p) for p in (data / "top").glob("*.png"))[:3]
    assert cli.main(["predict", str(out)] + images) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, images):
        name, label, prob = line.split("\t")
        assert name == path and label in ("top", "bottom") and 0 < float(prob) <= 1

    assert cli.main(["info", str(out)]) == 0
    assert "recipe: vision" in capsys.readouterr().out


def test_lr_find_prints_the_suggestions(tmp_path, capsys):
    out = tmp_path / "finder"
    assert cli.main(["lr-find", "vision", "--out", str(out), "--set", "width=8"]) == 0
    printed = capsys.readouterr().out
    for name in ("valley", "slide", "minimum", "steep"):
        line = next(line for line in printed.splitlines() if line.strip().startswith(name + ":"))
        assert float(line.split(":")[1]) > 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install 'easyfit[plot]'" in printed
    else:
        assert (out / "lr_find.png").stat().st_size > 0


@pytest.mark.parametrize("argv, code, message", [
    (["train", "nope"], cli.EXIT_USAGE, "unknown recipe 'nope'"),
    (["train", "vision", "--set", "lrr=1"], cli.EXIT_USAGE, "unknown config key 'lrr'"),
    (["train", "vision", "--set", "epochs=many"], cli.EXIT_USAGE, "config key 'epochs' expects int"),
    (["train", "vision", "--set", "epochs"], cli.EXIT_USAGE, "--set expects key=value"),
    (["train", "vision", "--data", "/no/such/folder"], cli.EXIT_NOT_FOUND, "neither a known dataset"),
    (["predict", "/no/such/run", "x.png"], cli.EXIT_NOT_FOUND, "not an easyfit run folder"),
    (["train", "vision", "--resume", "/no/such/run"], cli.EXIT_NOT_FOUND, "not an easyfit run folder"),
    (["train", "vision", "--arch", "vgg", "--epochs", "1"], cli.EXIT_USAGE, "unknown arch 'vgg'"),
])
def test_errors_are_one_line_with_exit_codes(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.startswith("easyfit: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_config_file_then_set_overrides(tmp_path):
    from recipes import vision
    from recipes.run import resolve_config
    path = tmp_path / "cfg.toml"
    path.write_text('epochs = 7\nlr = 0.5\narch = "resnet"\n')
    config = resolve_config(vision, str(path), ["lr=0.25"], bs=16)
    assert (config.epochs, config.lr, config.arch, config.bs) == (7, 0.25, "resnet", 16)
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochs": "x"}')
    with pytest.raises(ValueError, match="config key 'epochs' expects int"):
        resolve_config(vision, str(bad))


def test_console_script_runs_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "recipes.cli", "recipes"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "vision" in result.stdout


def _final_weights(run):
    from easyfit.core.serialization import load
    return load(run / MODEL_FILE)["model"]


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    """Kill a CLI run after its first mid-epoch checkpoint; --resume ends byte-identical."""
    common = ["train", "vision", "--epochs", "2", "--bs", "32", "--set", "width=8"]
    reference = tmp_path / "reference"
    assert cli.main(common + ["--out", str(reference)]) == 0

    interrupted = tmp_path / "interrupted"
    script = ("import sys; from recipes import cli; from easyfit.learner import SaveModelCallback\n"
              "original = SaveModelCallback.after_batch\n"
              "def after_batch(self):\n"
              "    original(self)\n"
              "    if self.learner.train_iter == 2 * self.every_n_batches + 1:\n"
              "        raise SystemExit(9)  # dies right after its second resumable checkpoint\n"
              "SaveModelCallback.after_batch = after_batch\n"
              f"sys.exit(cli.main({common + ['--out', str(interrupted)]!r}))\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert not (interrupted / MODEL_FILE).exists()
    assert cli.main(["train", "vision", "--resume", str(interrupted)]) == 0
    ours, theirs = _final_weights(interrupted), _final_weights(reference)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert np.array_equal(ours[key], theirs[key]), key


@pytest.mark.slow
def test_digits_quick_start_reaches_97_percent(tmp_path):
    pytest.importorskip("sklearn", reason="the digits come from scikit-learn (pip install scikit-learn)")
    assert cli.main(["train", "vision", "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert results["accuracy"] >= 0.97, results


@pytest.mark.slow
@pytest.mark.realdata
def test_fashion_mnist_small_cnn_reaches_91_percent_in_3_epochs(tmp_path):
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION} (apt-get install dataset-fashion-mnist)")
    assert cli.main(["train", "vision", "--data", "fashion-mnist", "--epochs", "3",
                     "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert results["accuracy"] >= 0.91, results


@pytest.mark.parametrize("setting,message", [
    ("lr=inf", "config key 'lr' must be a finite number"),
    ("lr=nan", "config key 'lr' must be a finite number"),
    ("lr=0", "config key 'lr' must be a positive"),
    ("width=0", "config key 'width' must be at least 1"),
    ("valid_pct=0", "config key 'valid_pct' must be between 0 and 1"),
    ("epochs=0", "config key 'epochs' must be at least 1"),
    ("label_smoothing=1", "config key 'label_smoothing' must be in [0, 1)"),
    ("label_smoothing=-0.1", "config key 'label_smoothing' must be in [0, 1)"),
])
def test_unusable_settings_are_refused_before_training(setting, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vision", "--out", str(out), "--set", setting]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (out / "models").exists()  # refused before any training


def test_a_diverged_run_fails_and_writes_strict_json(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    code = cli.main(["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "8", "--out", str(out),
                     "--set", "size=8", "--set", "width=8", "--lr", "1e30"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE, err
    assert "Training stopped" in err or "diverged" in err
    assert not (out / MODEL_FILE).exists()
    text = (out / RESULTS_FILE).read_text()
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"results.json holds bare {name}"))
    assert results["diverged"]


def test_results_json_is_strict_json(tmp_path):
    from recipes.run import write_results
    write_results(tmp_path / "r.json", {"valid_loss": float("nan"), "perplexity": float("inf"), "accuracy": 0.5})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "valid_loss": None, "perplexity": None, "accuracy": 0.5}


def test_resume_refuses_options_that_would_change_the_run_and_says_when_it_finished(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    common = ["--data", str(data), "--epochs", "1", "--bs", "8", "--set", "size=8", "--set", "width=8"]
    assert cli.main(["train", "vision", "--out", str(out)] + common) == 0
    capsys.readouterr()
    for extra in (["--epochs", "9"], ["--set", "lr=0.1"], ["--bs", "4"]):
        assert cli.main(["train", "vision", "--resume", str(out)] + extra) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert f"{extra[0]} cannot change it" in err, err
    assert cli.main(["train", "vision", "--resume", str(out)]) == cli.EXIT_USAGE
    assert "has already finished" in capsys.readouterr().err
    assert cli.main(["train", "vision", "--out", str(out)] + common) == 0
    assert "holds a finished run; training again replaces it" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "must hold a table of key = value settings at its top level, not a list"),
    ("[" * 100_000 + "]" * 100_000, "nests deeper than"),
    ('"text"', "not a str"),
], ids=["list", "deeply-nested", "string"])
def test_config_files_that_are_not_tables_are_usage_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert cli.main(["train", "vision", "--config", str(path), "--out", str(tmp_path / "run")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1


def test_a_deeply_nested_toml_config_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert cli.main(["train", "vision", "--config", str(path), "--out", str(tmp_path / "run")]) == cli.EXIT_USAGE
    assert str(path) in capsys.readouterr().err


def test_predict_on_a_missing_image_exits_3(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    assert cli.main(["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "8", "--out", str(out),
                     "--set", "size=8", "--set", "width=8"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(out), str(tmp_path / "nope.png")]) == cli.EXIT_NOT_FOUND
    assert "no such image file" in capsys.readouterr().err


def test_an_empty_validation_set_is_refused_before_training(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")  # 24 images: valid_pct=0.01 holds out none
    out = tmp_path / "run"
    code = cli.main(["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "8", "--out", str(out),
                     "--set", "size=8", "--set", "width=8", "--set", "valid_pct=0.01"])
    assert code == cli.EXIT_USAGE
    assert "the validation set is empty (valid_pct=0.01)" in capsys.readouterr().err
    assert not (out / "models").exists()
