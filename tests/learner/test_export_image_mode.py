"""The export carries what preprocessing needs, the colour mode included (issue 14, item 2)."""
import json

import numpy as np
import pytest
from PIL import Image

import easyfit as ef
from easyfit import nn
from easyfit.data import ImageDataLoaders, Normalize
from easyfit.learner import Learner, load_learner


def image_folder(root, mode, n=4):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            shape = (10, 12) if mode == "L" else (10, 12, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / label / f"{i}.png")
    return root


def trained(root, mode):
    dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, size=8, bs=4, mode=mode,
                                       batch_tfms=[Normalize([0.5], [0.25])])
    channels = 3 if mode == "RGB" else 1
    ef.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), path=root, default_cbs=False)
    learn.fit(1)
    return learn


@pytest.mark.parametrize("train_mode, other_mode", [("RGB", "L"), ("L", "RGB")])
def test_load_learner_predicts_a_file_of_the_other_colour_mode(tmp_path, train_mode, other_mode):
    learn = trained(image_folder(tmp_path / "data", train_mode), train_mode)
    path = learn.export(tmp_path / "export.safetensors")
    from safetensors import safe_open
    with safe_open(path, framework="np") as reader:
        description = json.loads(reader.metadata()["easyfit.export"])
    assert description["preprocessing"]["mode"] == train_mode
    loaded = load_learner(path)
    assert loaded.dls.mode == train_mode
    other = tmp_path / f"other.png"
    shape = (10, 12) if other_mode == "L" else (10, 12, 3)
    Image.fromarray(np.full(shape, 128, np.uint8), other_mode).save(other)
    label, index, probs = loaded.predict(str(other))
    assert label in ("cat", "dog") and probs.shape == (2,)
    assert loaded.predict(other)[1] == learn.predict(other)[1]  # the training learner converts too
    # an array in the other layout is converted as a decoded file would be
    array = np.asarray(Image.open(other).convert(other_mode))
    array = array[:, :, None] if array.ndim == 2 else array
    np.testing.assert_allclose(loaded.predict(array)[2], probs, rtol=1e-5)
