"""The vision recipe on a real, messy folder: mixed colour modes, corrupt files (issue 14, items 1-3)."""
import json

import numpy as np
import pytest
from PIL import Image

from recipes import cli
from recipes.run import CONFIG_FILE, RESULTS_FILE


def messy_folder(root, n_per_class=8, size=8, corrupt=2):
    """Two classes (bright top / bright bottom) saved as grey PNG, RGB JPEG and RGBA PNG, plus corrupt files."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("top", "bottom")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            grey = rng.integers(0, 60, (size, size), dtype=np.uint8)
            grey[slice(0, size // 2) if label == 0 else slice(size // 2, size)] += 180
            kind = i % 3
            if kind == 0:
                Image.fromarray(grey).save(folder / f"{i}.png")
            elif kind == 1:
                Image.fromarray(np.stack([grey] * 3, axis=2)).save(folder / f"{i}.jpg", quality=95)
            else:
                Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=2)).save(folder / f"{i}.png")
    for i in range(corrupt):
        (root / "top" / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_train_skips_corrupt_files_when_asked_and_reports_how_many(tmp_path, capsys, monkeypatch):
    data = messy_folder(tmp_path / "images")
    out = tmp_path / "run"
    common = ["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "4", "--out", str(out),
              "--set", "size=8", "--set", "width=4"]
    assert cli.main(common) == cli.EXIT_FAILURE          # on_error=raise (the default) stops at the first one
    assert "broken" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="skipped sample"):
        assert cli.main(common + ["--set", "on_error=skip"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 unreadable file(s) (on_error=skip)" in printed and "broken0.png" in printed
    run = out if (out / RESULTS_FILE).is_file() else out / "latest"
    results = json.loads((run / RESULTS_FILE).read_text())
    assert results["skipped_files"] == 2
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["on_error"] == "skip" and config["mode"] == "RGB"


def test_the_recipe_trains_colour_by_default_and_grey_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from recipes import vision
    from recipes.config import resolve
    data = messy_folder(tmp_path / "images", corrupt=0)
    for mode, channels in (("RGB", 3), ("L", 1)):
        config = resolve(vision.Config, {}, [f"mode={mode}", "size=8", "width=4"], data=str(data))
        learn = vision.build_learner(config, tmp_path / mode)
        assert learn.model[0].in_channels == channels
        assert learn.dls.one_batch()[0].shape[1] == channels
    assert cli.main(["train", "vision", "--data", str(data), "--set", "mode=CMYK"]) == cli.EXIT_USAGE
    assert "config key 'mode' must be 'RGB'" in capsys.readouterr().err
    assert cli.main(["train", "vision", "--data", str(data), "--set", "on_error=ignore"]) == cli.EXIT_USAGE


def _run_folder(out):
    return out if (out / RESULTS_FILE).is_file() else out / "latest"


def test_predict_takes_several_files_or_a_folder_and_a_missing_image_exits_3(tmp_path, capsys):
    data = messy_folder(tmp_path / "images", corrupt=0)
    out = tmp_path / "run"
    assert cli.main(["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "4", "--out", str(out),
                     "--set", "size=8", "--set", "width=4"]) == 0
    capsys.readouterr()
    files = sorted(str(p) for p in (data / "top").iterdir())
    assert cli.main(["predict", str(out), str(data / "top"), files[0]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files + [files[0]]
    assert all(line.split("\t")[1] in ("top", "bottom") for line in lines)
    assert lines[0].split("\t")[1:] == lines[-1].split("\t")[1:]     # the same file, the same answer
    assert cli.main(["predict", str(out), str(tmp_path / "no-such.png")]) == cli.EXIT_NOT_FOUND
    assert "no-such.png does not exist" in capsys.readouterr().err


def test_text_predict_reads_the_text_column_of_a_csv_file(tmp_path, capsys):
    import csv
    words = {"tech": "kernel compiler python bug server".split(), "food": "bread cheese apple soup pasta".split()}
    rng = np.random.default_rng(0)
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "topic"])
        for _ in range(20):
            for topic, vocabulary in words.items():
                writer.writerow([" ".join(rng.choice(vocabulary, 4)), topic])
    out = tmp_path / "run"
    assert cli.main(["train", "text", "--data", str(path), "--epochs", "1", "--out", str(out), "--bs", "8",
                     "--set", "text_col=review", "--set", "label_col=topic", "--set", "min_freq=1",
                     "--set", "emb_dim=8", "--set", "hidden=8"]) == 0
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,stars\nkernel bug in the server,1\napple soup and bread,5\npython,3\n")
    capsys.readouterr()
    assert cli.main(["predict", str(out), str(reviews), "cheese pasta"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["kernel bug in the server", "apple soup and bread", "python",
                                                       "cheese pasta"]
    assert cli.main(["predict", str(out), str(tmp_path / "missing.csv")]) == cli.EXIT_NOT_FOUND
    assert "looks like a CSV file but does not exist" in capsys.readouterr().err


def test_augment_adds_rotation_zoom_and_lighting_for_training_only(tmp_path):
    from easyfit.data import RandomLighting, RandomRotateZoom
    from recipes import vision
    from recipes.config import resolve
    data = messy_folder(tmp_path / "images", corrupt=0)
    config = resolve(vision.Config, {}, ["augment=true", "size=8"], data=str(data))
    dls = vision.build_dataloaders(config)
    kinds = [type(t) for t in dls.train.item_tfms]
    assert RandomRotateZoom in kinds and RandomLighting in kinds
    assert not {RandomRotateZoom, RandomLighting} & {type(t) for t in dls.valid.item_tfms}
    assert dls.one_batch()[0].shape[1:] == (3, 8, 8)
