"""export / load_learner without pickle, predict/get_preds, ClassificationInterpretation."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import ImageDataLoaders
from easyfit.data.transforms import Normalize
from easyfit.learner import Learner, ClassificationInterpretation, load_learner, register_module
from easyfit.learner.export import ExportError
from conftest import make_dls, make_model


def test_export_and_load_learner_predict_the_same(tmp_path):
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    learn = Learner(make_dls(), model, nn.CrossEntropyLoss(label_smoothing=0.1), path=tmp_path)
    learn.fit(2, lr=1e-2)
    rng_state = ef.core.random.get_rng_state()
    path = learn.export("model.safetensors")
    raw = open(path, "rb").read()
    assert b"pickle" not in raw and raw[8:9] == b"{"  # a plain safetensors header

    loaded = load_learner(path)
    assert ef.core.random.get_rng_state() == rng_state  # rebuilding modules drew no random numbers
    x = make_dls().valid.dataset[0][0]
    label, index, probs = learn.predict(x)
    label2, index2, probs2 = loaded.predict(x)
    assert (label, index) == (label2, index2) and label in ("a", "b", "c")
    np.testing.assert_array_equal(probs, probs2)
    preds, targets = learn.get_preds()
    preds2, targets2 = loaded.get_preds(dl=learn.dls.valid)
    np.testing.assert_array_equal(preds, preds2)
    assert loaded.loss_func.label_smoothing == 0.1
    assert type(loaded.model[1]).__name__ == "BatchNorm1d"


def test_export_keeps_image_preprocessing_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(24, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 24)
    dls = ImageDataLoaders.from_arrays(images, labels, bs=8, seed=0, num_workers=0, classes=["cat", "dog"],
                                       batch_tfms=[Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), path=tmp_path)
    learn.fit(1)
    loaded = load_learner(learn.export("vision.safetensors"))
    assert loaded.dls.classes == ["cat", "dog"]
    for image in images[:3]:
        first, second = learn.predict(image), loaded.predict(image)
        assert first[0] == second[0] and first[0] in ("cat", "dog")
        np.testing.assert_array_equal(first[2], second[2])


class TwoBranch(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width
        self.left, self.right = nn.Linear(6, width), nn.Linear(6, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(ef.tanh(self.left(x)) + ef.relu(self.right(x)))


def test_a_custom_module_needs_registering(tmp_path):
    learn = Learner(make_dls(), TwoBranch(5), nn.CrossEntropyLoss(), path=tmp_path, default_cbs=False)
    with pytest.raises(ExportError, match="register_module"):
        learn.export("custom.safetensors")
    register_module(TwoBranch)
    loaded = load_learner(learn.export("custom.safetensors"))
    x = np.ones((2, 6), np.float32)
    np.testing.assert_array_equal(loaded.model(ef.tensor(x)).numpy(), learn.model(ef.tensor(x)).numpy())


def test_a_module_that_hides_its_arguments_is_refused(tmp_path):
    class Hidden(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.layer = nn.Linear(6, width)

        def forward(self, x):
            return self.layer(x)

    register_module(Hidden)
    learn = Learner(make_dls(), Hidden(3), nn.CrossEntropyLoss(), path=tmp_path, default_cbs=False)
    with pytest.raises(ExportError, match="width"):
        learn.export("hidden.safetensors")


def test_load_learner_rejects_a_checkpoint(tmp_path):
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path, default_cbs=False)
    path = learn.save("ckpt")
    with pytest.raises(ExportError, match="learn.load"):
        load_learner(path)


def test_get_preds_with_inputs_losses_and_decoded():
    learn = Learner(make_dls(valid_batch_size=7), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    learn.fit(1, lr=1e-2)
    inputs, preds, targets, decoded, losses = learn.get_preds(with_input=True, with_loss=True, with_decoded=True)
    assert inputs.shape == (40, 6) and preds.shape == (40, 3) and targets.shape == (40,)
    np.testing.assert_allclose(preds.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(decoded, preds.argmax(1))
    expected = -np.log(preds[np.arange(40), targets])
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert losses.mean() == pytest.approx(learn.validate()[0], rel=1e-5)


def test_classification_interpretation():
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    learn.fit(1, lr=3e-3)
    interp = ClassificationInterpretation.from_learner(learn)
    matrix = interp.confusion_matrix()
    preds, targets = learn.get_preds()
    assert matrix.sum() == 40 and np.trace(matrix) == (preds.argmax(1) == targets).sum()
    for actual, predicted, count in interp.most_confused():
        assert count == matrix[["a", "b", "c"].index(actual), ["a", "b", "c"].index(predicted)] and actual != predicted
    losses, indices = interp.top_losses(5)
    assert list(losses) == sorted(losses, reverse=True) and losses[0] == interp.losses.max()


def test_show_results_prints_a_table(capsys):
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    learn.show_results(n=4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["item", "target", "prediction", "confidence"] and len(lines) == 5


class MeanEmbedding(nn.Module):
    """Text classifier: mean of the token embeddings, then a linear layer."""

    def __init__(self, vocab_size, n_classes):
        super().__init__()
        self.vocab_size, self.n_classes = vocab_size, n_classes
        self.embedding = nn.Embedding(vocab_size, 8)
        self.head = nn.Linear(8, n_classes)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(axis=1))


def test_text_export_keeps_tokenizer_and_vocab(tmp_path):
    from easyfit.data import TextDataLoaders
    texts = ["good film", "great fun", "bad plot", "awful acting", "good fun", "bad film"] * 4
    labels = ["pos", "pos", "neg", "neg", "pos", "neg"] * 4
    dls = TextDataLoaders.from_lists(texts[:18], labels[:18], texts[18:], labels[18:], bs=4, min_freq=1, seed=0)
    register_module(MeanEmbedding)
    learn = Learner(dls, MeanEmbedding(len(dls.vocab), 2), nn.CrossEntropyLoss(), path=tmp_path)
    learn.fit(3, lr=0.05)
    loaded = load_learner(learn.export("text.safetensors"))
    assert loaded.dls.vocab == dls.vocab and type(loaded.dls.tokenizer) is type(dls.tokenizer)
    for text in ("a good film", "awful plot"):
        first, second = learn.predict(text), loaded.predict(text)
        assert first[0] == second[0] and first[0] in ("pos", "neg")
        np.testing.assert_array_equal(first[2], second[2])
    assert learn.predict("good good fun")[0] == "pos"
