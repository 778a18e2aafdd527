"""The text recipe: models (padding-invariant, equal to PyTorch), data sources, the CLI verbs,
and (slow) training on the fortunes against its PyTorch twin in bench/.

(Named test_text_recipe.py, not test_text.py: tests/data/test_text.py has that basename and
the test folders have no __init__.py.)
"""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import easyfit
from easyfit.data import datasets
from easyfit.learner import CancelFitException, Callback, load_learner
from recipes import cli, run
from recipes import text as recipe
from recipes.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "emb_dim=16", "--set", "hidden=16", "--set", "ff_dim=32", "--set", "heads=2", "--bs", "16"]

TOPICS = {
    "tech": "kernel compiler python bug server network byte cache thread linux code debugger".split(),
    "food": "bread cheese apple soup pasta garlic butter sugar tomato rice pepper onion".split(),
    "sea": "ocean wave boat sailor tide whale harbor fish anchor island storm coral".split(),
}


def _tiny_texts(n_per_class=30, seed=0):
    """Short texts whose words name their topic (plus shared filler words), labels = topic."""
    rng = np.random.default_rng(seed)
    filler = "the a of and is to in it".split()
    texts, labels = [], []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            length = int(rng.integers(3, 15))
            tokens = [str(rng.choice(words)) if rng.random() < 0.6 else str(rng.choice(filler))
                      for _ in range(length)]
            texts.append(" ".join(tokens).capitalize() + ".")
            labels.append(label)
    return texts, labels


@pytest.fixture
def tiny_csv(tmp_path):
    texts, labels = _tiny_texts()
    path = tmp_path / "topics.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "sentence", "topic"])
        for i, (text, label) in enumerate(zip(texts, labels)):
            writer.writerow([i, text, label])
    return path


@pytest.fixture
def tiny_folder(tmp_path):
    texts, labels = _tiny_texts(n_per_class=60, seed=1)
    root = tmp_path / "topics"
    for i, (text, label) in enumerate(zip(texts, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


def _tiny_config(arch="lstm", **overrides):
    return recipe.Config(arch=arch, emb_dim=16, hidden=16, ff_dim=32, heads=2, layers=2, **overrides)


def _padded_batch(n_classes=3, vocab_size=50, pad_idx=1, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([9, 4, 1, 7])
    tokens = np.full((len(lengths), lengths.max()), pad_idx, dtype=np.int64)
    for row, length in enumerate(lengths):
        tokens[row, :length] = rng.integers(2, vocab_size, length)
    return tokens, lengths


# ----- models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_a_text_gets_the_same_output_alone_or_padded_in_a_batch(arch):
    """The backward RNN reads each text from its own end, and attention and pooling skip padding."""
    easyfit.manual_seed(0)
    model = recipe.build_model(_tiny_config(arch), 50, 3, pad_idx=1)
    model.eval()
    tokens, lengths = _padded_batch()
    batched = model(easyfit.tensor(tokens)).numpy()
    for row, length in enumerate(lengths):
        alone = model(easyfit.tensor(tokens[row:row + 1, :length])).numpy()
        np.testing.assert_allclose(alone[0], batched[row], rtol=1e-5, atol=1e-6)


def test_the_rnn_encoder_equals_a_packed_bidirectional_torch_lstm():
    """The two one-way RNNs with per-row reversal compute PyTorch's packed bidirectional LSTM."""
    torch = pytest.importorskip("torch")
    easyfit.manual_seed(0)
    model = recipe.build_model(_tiny_config("lstm", dropout=0.0), 50, 3, pad_idx=1)
    model.eval()
    tokens, lengths = _padded_batch()
    states, _, _ = model.encode(easyfit.tensor(tokens))
    reference = torch.nn.LSTM(16, 16, num_layers=2, batch_first=True, bidirectional=True)
    weights = {}
    for layer in range(2):
        for name, value in model.forward_rnns[layer].state_dict().items():
            weights[name.replace("l0", f"l{layer}")] = value.numpy()
        for name, value in model.backward_rnns[layer].state_dict().items():
            weights[name.replace("l0", f"l{layer}") + "_reverse"] = value.numpy()
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    embedded = torch.from_numpy(model.embedding(easyfit.tensor(tokens)).numpy().copy())
    packed = torch.nn.utils.rnn.pack_padded_sequence(embedded, torch.from_numpy(lengths), batch_first=True,
                                                     enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True)
    expected = expected.detach().numpy()
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(states.numpy()[row, :length], expected[row, :length], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_models_match_the_pytorch_twin_forward_and_backward(arch):
    torch = pytest.importorskip("torch")
    twin = _load_twin()
    config = _tiny_config(arch, dropout=0.0)
    easyfit.manual_seed(0)
    model = recipe.build_model(config, 50, 3, pad_idx=1)
    reference = twin.build_torch_model(torch, config, 50, 3, 1)
    twin.load_easyfit_weights(torch, reference, model)
    tokens, _ = _padded_batch()
    labels = np.array([0, 2, 1, 2])
    out = model(easyfit.tensor(tokens))
    loss = easyfit.nn.CrossEntropyLoss()(out, easyfit.tensor(labels))
    loss.backward()
    expected = reference(torch.from_numpy(tokens))
    torch.nn.functional.cross_entropy(expected, torch.from_numpy(labels)).backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    grads = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad.numpy(), grads[name].grad.numpy(), rtol=1e-3, atol=1e-5,
                                   err_msg=name)


def test_the_transformer_cuts_texts_longer_than_its_position_table():
    easyfit.manual_seed(0)
    model = recipe.build_model(_tiny_config("transformer", max_len=8), 50, 3, pad_idx=1)
    model.eval()
    tokens = np.arange(2, 22, dtype=np.int64)[None]
    np.testing.assert_allclose(model(easyfit.tensor(tokens)).numpy(), model(easyfit.tensor(tokens[:, :8])).numpy())


# ----- data -----------------------------------------------------------------------------------

def test_csv_and_folder_data(tiny_csv, tiny_folder):
    dls = recipe.build_dataloaders(recipe.Config(data=str(tiny_csv), text_col="sentence", label_col="topic",
                                                 bs=8, min_freq=1))
    assert dls.classes == ["food", "sea", "tech"]
    assert len(dls.train.dataset) + len(dls.valid.dataset) == 90
    assert len(dls.valid.dataset) == 18                     # valid_pct 0.2
    assert "kernel" in dls.vocab
    dls = recipe.build_dataloaders(recipe.Config(data=str(tiny_folder), valid_pct=0.25, bs=8))
    assert dls.classes == ["food", "sea", "tech"]
    assert len(dls.valid.dataset) == 45


def test_max_len_cuts_the_training_texts(tiny_csv):
    dls = recipe.build_dataloaders(recipe.Config(data=str(tiny_csv), text_col="sentence", label_col="topic",
                                                 max_len=5))
    assert dls.train.dataset.lengths.max() == 5


def test_the_default_data_is_the_chosen_fortune_categories():
    try:
        texts, labels, names = datasets.fortunes(categories=list(recipe.FORTUNE_CATEGORIES))
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"Debian's fortunes are not installed (apt-get install fortunes): {error}")
    config = recipe.Config()
    dls = recipe.build_dataloaders(config)
    assert dls.classes == sorted(recipe.FORTUNE_CATEGORIES)
    n_train, n_valid = len(dls.train.dataset), len(dls.valid.dataset)
    assert n_train + n_valid == len(texts)
    assert n_valid == round(len(texts) * config.valid_pct)
    again = recipe.build_dataloaders(config)                 # the split is a function of the seed
    assert [list(x) for x in again.valid.dataset.ids[:20]] == [list(x) for x in dls.valid.dataset.ids[:20]]


# ----- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_train_then_predict_through_the_cli(arch, tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "text", "--data", str(tiny_csv), "--arch", arch, "--epochs", "1", "--out", str(out),
                     "--set", "text_col=sentence", "--set", "label_col=topic", "--set", "min_freq=1", *TINY])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "text" and saved["arch"] == arch and saved["hidden"] == 16
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["valid_loss"])
    capsys.readouterr()
    code = cli.main(["predict", str(out), "the kernel compiler has a bug", "garlic bread\nand tomato soup"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert len(lines) == 2
    assert lines[1].startswith("garlic bread and tomato soup\t")     # one line per text, newlines folded
    for line in lines:
        _, label, probability = line.split("\t")
        assert label in TOPICS and 1 / 3 <= float(probability) <= 1.0


def test_a_trained_run_predicts_its_topics_and_the_export_reloads(tiny_folder, tmp_path, capsys):
    """A few epochs on the folder data learn the topics; load_learner gives the same predictions."""
    out = tmp_path / "run"
    code = cli.main(["train", "text", "--data", str(tiny_folder), "--epochs", "8", "--out", str(out),
                     "--set", "min_freq=1", "--set", "lr=1e-2", "--set", "dropout=0", *TINY])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["accuracy"] >= 0.9
    learner = load_learner(out / run.MODEL_FILE)
    assert learner.dls.classes == ["food", "sea", "tech"]
    lines = recipe.predict(learner, recipe.Config(), ["python kernel code", "whale boat ocean", "cheese soup"])
    assert [line.split("\t")[1] for line in lines] == ["tech", "sea", "food"]
    capsys.readouterr()
    assert cli.main(["predict", str(out), "python kernel code"]) == 0
    assert capsys.readouterr().out.strip() == lines[0]


def test_config_errors_exit_2_and_missing_data_exits_3(tiny_csv, tmp_path, capsys):
    base = ["train", "text", "--epochs", "1", "--out", str(tmp_path / "run")]
    assert cli.main(base + ["--set", "hiden=16"]) == 2
    assert "unknown config key 'hiden'" in capsys.readouterr().err
    assert cli.main(base + ["--set", "hidden=wide"]) == 2
    assert "config key 'hidden' expects int" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tiny_csv), "--arch", "cnn"]) == 2
    assert "unknown arch 'cnn' for the text recipe" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path / "missing.csv")]) == 3
    assert "missing.csv" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tiny_csv)]) == 2     # no 'text'/'label' columns in this CSV
    assert "has no column 'text'; its columns are ['id', 'sentence', 'topic']" in capsys.readouterr().err


def test_config_file_and_overrides_resolve(tmp_path):
    settings = tmp_path / "text.toml"
    settings.write_text('arch = "gru"\ncategories = "zippy, science"\nlayers = 2\n')
    config = run.resolve_config(recipe, settings, ["dropout=0.1"], epochs=2)
    assert (config.arch, config.layers, config.dropout, config.epochs) == ("gru", 2, 0.1, 2)
    assert recipe.fortune_categories(config) == ["zippy", "science"]
    config = run.resolve_config(recipe, settings, ["categories=linux,perl,startrek"])
    assert recipe.fortune_categories(config) == ["linux", "perl", "startrek"]
    with pytest.raises(ConfigError, match="names no fortune category"):
        recipe.fortune_categories(run.resolve_config(recipe, None, ["categories=,"]))


# ----- end to end against PyTorch (slow) ------------------------------------------------------

def _load_twin():
    spec = importlib.util.spec_from_file_location("recipe_text_torch", ROOT / "bench" / "recipe_text_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_fortunes():
    try:
        datasets.fortunes(categories=list(recipe.FORTUNE_CATEGORIES))
    except datasets.DatasetNotFoundError as error:
        pytest.skip(f"Debian's fortunes are not installed (apt-get install fortunes): {error}")


class _StopAfter(Callback):
    def __init__(self, n_batches):
        self.n_batches = n_batches

    def before_batch(self):
        if self.learner.training and self.learner.train_iter >= self.n_batches:
            raise CancelFitException()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_the_first_training_steps_equal_pytorchs(arch, tmp_path):
    """Same init, batches, schedule, clipping and Adam: the per-batch training losses of the
    recipe's Learner and of the PyTorch twin agree step by step (dropout off: its masks are
    the one thing the two cannot share)."""
    _require_fortunes()
    pytest.importorskip("torch", reason="PyTorch (the oracle for this comparison) is not installed")
    twin = _load_twin()
    config = recipe.Config(arch=arch, dropout=0.0, epochs=2)
    steps = 12
    easyfit.manual_seed(config.seed)
    learn = recipe.build_learner(config, tmp_path)
    learn.fit_one_cycle(config.epochs, lr_max=config.lr, cbs=[_StopAfter(steps)])
    ours = np.array([float(loss) for loss in learn.recorder.losses[:steps]])
    theirs = np.array(twin.train_torch(config, threads=1, log=lambda m: None,
                                       max_steps=steps)["train_losses"])
    assert len(ours) == len(theirs) == steps
    np.testing.assert_allclose(ours, theirs, rtol=2e-3)


@pytest.mark.slow
def test_fortunes_training_matches_pytorch():
    """The default recipe on the fortunes, easyfit against the PyTorch twin (same init, split,
    batches and one-cycle schedule): mean accuracy over three seeds within 1 point.

    Why three seeds and half the data held out: after a few hundred steps two runs that
    differ only in float rounding disagree on a tenth of the held-out texts, which moves
    one run's accuracy by about a point (PyTorch against itself with 1 and 2 threads
    differs that much); the mean over seeds on 2,425 held-out texts is steady to ~0.5 point.
    PyTorch runs on one thread: on 2 busy cores its 2-thread default is 5x slower here.
    """
    _require_fortunes()
    pytest.importorskip("torch", reason="PyTorch (the oracle for this comparison) is not installed")
    twin = _load_twin()
    ours, theirs = [], []
    for seed in E2E_SEEDS:
        config = recipe.Config(seed=seed, valid_pct=0.5)
        ours.append(twin.train_easyfit(config, log=lambda message: None))
        theirs.append(twin.train_torch(config, threads=1, log=lambda message: None))
    report = [(a["accuracy"], b["accuracy"], a["valid_loss"], b["valid_loss"]) for a, b in zip(ours, theirs)]
    print("seed, easyfit accuracy, torch accuracy, easyfit valid loss, torch valid loss:",
          list(zip(E2E_SEEDS, report)))
    accuracy = np.mean([r["accuracy"] for r in ours])
    assert min(r["accuracy"] for r in ours) >= 0.65, report
    assert abs(accuracy - np.mean([r["accuracy"] for r in theirs])) <= 0.01, report
    loss = np.mean([r["valid_loss"] for r in ours])
    assert abs(loss - np.mean([r["valid_loss"] for r in theirs])) <= 0.05 * loss, report


E2E_SEEDS = (0, 1, 2)
