"""Pictures: dls.show_batch, learn.show_results, interp.plot_top_losses (issue 14, item 6).

Checked by what they write: a PNG of the expected size with non-blank content, and the
figure's artists (one image per item, titles with labels and file names)."""
import sys

import numpy as np
import pytest
from PIL import Image

import easyfit as ef
from easyfit import nn
from easyfit.data import ImageDataLoaders, Normalize, TextDataLoaders
from easyfit.learner import ClassificationInterpretation, Learner

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture
def learn(tmp_path):
    rng = np.random.default_rng(0)
    for label, colour in (("red", 0), ("blue", 2)):
        (tmp_path / label).mkdir()
        for i in range(6):
            image = rng.integers(0, 80, (10, 10, 3), dtype=np.uint8)
            image[:, :, colour] += 170
            Image.fromarray(image).save(tmp_path / label / f"{label}_{i}.png")
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.5, seed=0, size=8, bs=4,
                                       batch_tfms=[Normalize([0.5], [0.25])])
    ef.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    return Learner(dls, model, nn.CrossEntropyLoss(), default_cbs=False)


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def assert_png(path, min_width, min_height):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= min_width and image.shape[0] >= min_height
    assert image.std() > 10                                   # not blank
    assert (image.min(axis=2) < 200).mean() > 0.05            # a fair share of non-white pixels


def test_show_batch_draws_the_images_with_their_labels(learn, tmp_path):
    fig = learn.dls.show_batch(max_n=4)
    axes = image_axes(fig)
    assert len(axes) == 4
    assert {ax.get_title() for ax in axes} <= {"red", "blue"}
    shown = axes[0].images[0].get_array()
    assert shown.shape == (8, 8, 3) and 0.0 <= shown.min() and shown.max() <= 1.0   # normalisation undone
    path = learn.dls.show_batch(max_n=4, path=tmp_path / "batch.png")
    assert_png(path, 200, 200)


def test_show_results_draws_target_prediction_and_file_name(learn, tmp_path):
    fig = learn.show_results(n=4)
    axes = image_axes(fig)
    assert len(axes) == 4
    files = learn.dls.valid.dataset.files
    for ax, path in zip(axes, files):
        title = ax.get_title()
        target, prediction = title.split("\n")[0].split(" / ")
        assert target == path.parent.name and prediction in ("red", "blue")
        assert title.split("\n")[1] == path.name
    assert_png(learn.show_results(n=6, path=tmp_path / "results.png"), 200, 200)


def test_plot_top_losses_draws_the_worst_items_with_their_files(learn, tmp_path):
    interp = ClassificationInterpretation.from_learner(learn)
    losses, indices, items = interp.top_losses(3, with_items=True)
    fig = interp.plot_top_losses(3)
    axes = image_axes(fig)
    assert len(axes) == 3
    for ax, loss, item in zip(axes, losses, items):
        first, name = ax.get_title().split("\n")
        predicted, actual, shown_loss, prob = first.split(" / ")
        assert name == item.name and actual == item.parent.name and float(shown_loss) == pytest.approx(loss, abs=0.01)
    assert_png(interp.plot_top_losses(3, path=tmp_path / "top.png"), 150, 100)


def test_text_batches_are_printed_with_labels(capsys):
    dls = TextDataLoaders.from_texts(["the cat sat", "a dog ran", "cats sit", "dogs run"] * 3, ["c", "d"] * 6,
                                     valid_pct=0.25, seed=0, bs=4, min_freq=1)
    lines = dls.show_batch(max_n=3)
    printed = capsys.readouterr().out
    assert len(lines) == 3 and all(line.split("\t")[0] in ("c", "d") for line in lines) and "xxbos" in printed


def test_pictures_without_matplotlib_name_the_extra(learn, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'easyfit\[plot\]'"):
        learn.dls.show_batch()
