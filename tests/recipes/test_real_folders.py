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


def test_the_recipe_trains_colour_by_default_and_grey_when_asked(tmp_path, capsys):
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
