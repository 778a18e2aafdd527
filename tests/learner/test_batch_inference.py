"""predict takes one item; batches go through dls.test_dl + get_preds (issue 14, item 5)."""
import numpy as np
import pytest
from PIL import Image

import easyfit as ef
from easyfit import nn
from easyfit.data import ImageDataLoaders, Normalize, TextDataLoaders
from easyfit.learner import Learner, load_learner
from conftest import make_data, make_dls, make_model


def test_predict_refuses_a_batch_of_arrays_and_points_to_test_dl():
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    _, _, x_valid, _ = make_data()
    learn.predict(x_valid[0])                                 # one item is fine
    with pytest.raises(ValueError, match=r"predict takes one item, got an array of shape \(5, 6\).*test_dl"):
        learn.predict(x_valid[:5])
    with pytest.raises(ValueError, match=r"a list of 2 items"):
        learn.predict([x_valid[0], x_valid[1]])
    preds, targets = learn.get_preds(dl=learn.dls.test_dl(x_valid[:5]))
    assert preds.shape == (5, 3) and targets is None
    for i in range(5):
        np.testing.assert_allclose(preds[i], learn.predict(x_valid[i])[2], rtol=1e-5, atol=1e-7)


def image_folder(root, n=4):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_image_files_and_folders_in_test_dl_match_predict_also_after_export(tmp_path):
    root = image_folder(tmp_path / "data")
    dls = ImageDataLoaders.from_folder(root, valid_pct=0.25, seed=0, size=8, bs=4,
                                       batch_tfms=[Normalize([0.5], [0.25])])
    ef.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), default_cbs=False)
    files = sorted((root / "cat").glob("*.png"))
    with pytest.raises(ValueError, match="a list of 4 items"):
        learn.predict([str(f) for f in files])
    preds, _, decoded = learn.get_preds(dl=learn.dls.test_dl(files), with_decoded=True)
    assert preds.shape == (4, 2)
    for f, p in zip(files, preds):
        np.testing.assert_allclose(p, learn.predict(f)[2], rtol=1e-5, atol=1e-7)
    loaded = load_learner(learn.export(tmp_path / "model.safetensors"))
    from_folder, _ = loaded.get_preds(dl=loaded.dls.test_dl(root / "cat"))
    np.testing.assert_allclose(from_folder, preds, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"an array of shape \(2, 10, 12, 3\)"):
        loaded.predict(np.zeros((2, 10, 12, 3), np.uint8))


def test_texts_in_test_dl_keep_their_order_and_match_predict():
    texts = ["the cat sat", "a dog ran far away", "cats and dogs", "the dog", "sat ran", "far far away cat"] * 3
    labels = ["a", "b", "a", "b", "a", "b"] * 3
    dls = TextDataLoaders.from_texts(texts, labels, valid_pct=0.3, seed=0, bs=4, min_freq=1)
    ef.manual_seed(0)

    class Bag(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.vocab_size = vocab_size
            self.embedding = nn.Embedding(vocab_size, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, tokens):
            return self.head(self.embedding(tokens).mean(axis=1))

    learn = Learner(dls, Bag(len(dls.vocab)), nn.CrossEntropyLoss(), default_cbs=False)
    queries = ["the cat", "a dog ran far away", "cats"]
    with pytest.raises(ValueError, match="a list of 3 items"):
        learn.predict(queries)
    preds, _ = learn.get_preds(dl=dls.test_dl(queries, bs=1))
    for q, p in zip(queries, preds):
        np.testing.assert_allclose(p, learn.predict(q)[2], rtol=1e-5, atol=1e-7)
