"""The char-RNN recipe: data split, carried hidden state, export, generate/predict, the CLI,
and (slow) parity with its PyTorch twin on the fortunes corpus."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import easyfit
from easyfit.core.tensor import Tensor
from easyfit.data import BOS, CharTokenizer
from easyfit.learner import Callback, CancelFitException, SaveModelCallback, load_learner
from recipes import char_rnn
from recipes.cli import main

REPO = Path(__file__).resolve().parents[2]
LINES = ["the cat sat on the mat.", "a dog ran to the park!", "we like tea and cake,", "so do they; ok?"]


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES[i] for i in rng.integers(0, len(LINES), 150)) + "\n", encoding="utf-8")
    return path


def tiny_config(path, **changes):
    settings = dict(data=str(path), epochs=1, bs=4, bptt=16, emb_size=8, hidden_size=16, num_layers=1,
                    dropout=0.0, chunk_chars=400, max_chars=None, lr=1e-2, seed=3)
    settings.update(changes)
    return char_rnn.Config(**settings)


def tiny_learner(path, tmp_path, **changes):
    easyfit.manual_seed(0)
    learn = char_rnn.build_learner(tiny_config(path, **changes), tmp_path / "run")
    learn.remove_cb(learn.progress)
    return learn


# ----- data -----------------------------------------------------------------------------

def test_split_is_contiguous_chunks_seeded_and_covers_the_stream():
    train, valid = char_rnn.split_chunks(1050, 100, 0.2, seed=5)
    assert len(train) + len(valid) == 11 and len(valid) == 2
    assert sorted(train + valid) == [(s, min(s + 100, 1050)) for s in range(0, 1050, 100)]
    assert char_rnn.split_chunks(1050, 100, 0.2, seed=5) == (train, valid)
    assert char_rnn.split_chunks(1050, 100, 0.2, seed=6) != (train, valid)
    with pytest.raises(ValueError, match="too few to hold out"):
        char_rnn.split_chunks(150, 100, 0.1, seed=0)


def test_dataloaders_stream_the_text_as_characters(text_file):
    config = tiny_config(text_file)
    dls = char_rnn.build_dataloaders(config)
    text = text_file.read_text(encoding="utf-8")
    tokens = [BOS] + list(text)
    assert isinstance(dls.tokenizer, CharTokenizer) and dls.tokenizer.add_bos
    train_bounds, valid_bounds = char_rnn.split_chunks(len(tokens), 400, 0.1, config.seed)
    # the loaders hold exactly the chunks, in stream order, encoded with the vocab
    train_ids = np.concatenate(dls.train.dataset.documents)
    assert dls.vocab.decode(train_ids) == [t for a, b in train_bounds for t in tokens[a:b]]
    valid_ids = np.concatenate(dls.valid.dataset.documents)
    assert dls.vocab.decode(valid_ids) == [t for a, b in valid_bounds for t in tokens[a:b]]
    # the batches: targets are the inputs shifted by one, rows continue across batches
    batches = list(dls.train)
    x0, y0 = batches[0][0].numpy(), batches[0][1].numpy()
    x1 = batches[1][0].numpy()
    assert x0.shape == (4, 16)
    np.testing.assert_array_equal(x0[:, 1:], y0[:, :-1])
    np.testing.assert_array_equal(y0[:, -1], x1[:, 0])


def test_max_chars_caps_the_corpus(text_file):
    dls = char_rnn.build_dataloaders(tiny_config(text_file, max_chars=2000, chunk_chars=200))
    assert len(dls.train.dataset) + len(dls.valid.dataset) == 2000


# ----- model and hidden state -----------------------------------------------------------

@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_consecutive_windows_continue_each_other(arch):
    model = char_rnn.CharRNN(20, arch, emb_size=6, hidden_size=10, num_layers=2, dropout=0.3).eval()
    ids = np.random.default_rng(1).integers(0, 20, (3, 12))
    whole = model(Tensor(ids)).numpy()
    model.reset_state()
    parts = [model(Tensor(ids[:, :5])).numpy(), model(Tensor(ids[:, 5:9])).numpy(), model(Tensor(ids[:, 9:])).numpy()]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-5)
    # the state is not a parameter: nothing of it in the state dict; a new batch size starts afresh
    assert model.hidden_state is not None
    assert all("hidden" not in key for key in model.state_dict())
    fresh = char_rnn.CharRNN(20, arch, emb_size=6, hidden_size=10, num_layers=2, dropout=0.3).eval()
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_allclose(model(Tensor(ids[:1, :4])).numpy(), fresh(Tensor(ids[:1, :4])).numpy(), rtol=1e-6)


def test_gradients_stop_at_the_window_start():
    model = char_rnn.CharRNN(10, "lstm", emb_size=4, hidden_size=6, num_layers=1, dropout=0.0)
    ids = np.random.default_rng(2).integers(0, 10, (2, 5))
    model(Tensor(ids))
    assert all(not s.requires_grad for s in model.hidden_state)   # detached: a constant for the next window
    model(Tensor(ids)).sum().backward()
    assert model.encoder.weight.grad is not None


def test_loss_is_cross_entropy_over_every_position():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    scores, targets = rng.standard_normal((3, 7, 11)).astype(np.float32), rng.integers(0, 11, (3, 7))
    ours = char_rnn.SequenceCrossEntropyLoss()(Tensor(scores), Tensor(targets)).item()
    theirs = torch.nn.functional.cross_entropy(torch.tensor(scores).permute(0, 2, 1), torch.tensor(targets)).item()
    assert ours == pytest.approx(theirs, rel=1e-5)


class StateProbe(Callback):
    """Records, per phase, whether the model had a carried state at the first and later batches."""
    order = 0

    def __init__(self):
        self.seen = []

    def before_batch(self):
        learn = self.learner
        self.seen.append((learn.training, learn.iter, learn.model.hidden_state is None))


def test_state_is_carried_in_an_epoch_and_reset_for_each_epoch_and_validation(text_file, tmp_path):
    learn = tiny_learner(text_file, tmp_path)
    probe = StateProbe()
    learn.fit(2, cbs=[probe])
    firsts = [empty for training, index, empty in probe.seen if index == 0]
    later = [empty for training, index, empty in probe.seen if index > 0]
    assert len(firsts) == 4 and all(firsts)        # 2 epochs x (train, validate)
    assert later and not any(later)


def test_mid_epoch_resume_restores_the_carried_state(text_file, tmp_path):
    class StopAt(Callback):
        order = 100

        def after_batch(self):
            if self.learner.training and self.learner.train_iter == 7:
                raise CancelFitException()

    reference = tiny_learner(text_file, tmp_path / "a")
    reference.fit_one_cycle(2)
    interrupted = tiny_learner(text_file, tmp_path / "b")
    interrupted.fit_one_cycle(2, cbs=[SaveModelCallback(fname="ck", every_n_batches=5), StopAt()])
    resumed = tiny_learner(text_file, tmp_path / "b")
    resumed.fit_one_cycle(2, cbs=[SaveModelCallback(fname="ck", every_n_batches=5)], resume="ck_last")
    for (name, ours), (_, theirs) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items()):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=name)


# ----- export, generate, predict --------------------------------------------------------

@pytest.fixture
def trained(text_file, tmp_path):
    learn = tiny_learner(text_file, tmp_path, epochs=2)
    learn.fit_one_cycle(2, lr_max=2e-2)
    path = learn.export(tmp_path / "model.safetensors")
    return learn, load_learner(path), tiny_config(text_file)


def test_export_round_trips_model_vocab_and_tokenizer(trained):
    learn, loaded, _ = trained
    assert loaded.dls.vocab == learn.dls.vocab
    assert isinstance(loaded.dls.tokenizer, CharTokenizer) and loaded.dls.tokenizer.add_bos
    assert isinstance(loaded.model, char_rnn.CharRNN) and loaded.model.hidden_state is None
    learn.model.eval()
    learn.model.reset_state()
    ids = learn.dls.vocab.encode(learn.dls.tokenizer("the cat"))[None]
    np.testing.assert_allclose(loaded.model(Tensor(ids)).numpy(), learn.model(Tensor(ids)).numpy(), rtol=1e-6)
    label, decoded, probs = loaded.predict("the ca")   # per-position next-character predictions
    assert probs.shape == (7, len(learn.dls.vocab)) and decoded.shape == (7,)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_greedy_generation_equals_rescoring_the_whole_prefix(trained):
    _, loaded, config = trained
    text = char_rnn.generate(loaded, config, "the ", length=25, top_k=1, seed=0)
    assert text.startswith("the ") and len(text) == 29 and BOS not in text
    vocab, model = loaded.dls.vocab, loaded.model
    ids = list(vocab.encode(loaded.dls.tokenizer("the ")))
    for _ in range(25):   # no carried state: rerun the model on the full prefix every step
        model.reset_state()
        ids.append(int(model(Tensor(np.array([ids]))).numpy()[0, -1].argmax()))
    assert "the " + "".join(vocab.decode(ids[5:])) == text


def test_sampling_is_seeded_and_follows_temperature_and_top_k(trained):
    _, loaded, config = trained
    a = char_rnn.generate(loaded, config, "", length=80, temperature=1.0, seed=7)
    assert a == char_rnn.generate(loaded, config, "", length=80, temperature=1.0, seed=7)
    assert a != char_rnn.generate(loaded, config, "", length=80, temperature=1.0, seed=8)
    rng = np.random.default_rng(0)
    scores = np.array([3.0, 2.0, 1.0, 0.0, -1.0])
    draws = [char_rnn.sample_next(scores, 1.0, 2, rng) for _ in range(300)]
    assert set(draws) == {0, 1}
    cold = [char_rnn.sample_next(scores, 0.05, None, rng) for _ in range(50)]
    assert set(cold) == {0}
    assert set(char_rnn.sample_next(scores, 1.0, None, rng, banned=[0, 1]) for _ in range(50)) <= {2, 3, 4}
    with pytest.raises(ValueError, match="temperature"):
        char_rnn.generate(loaded, config, "x", temperature=0)


def test_a_sampled_document_start_is_a_fortune_break_and_never_drawn_for_a_file(trained):
    _, loaded, config = trained
    bos = loaded.dls.vocab.stoi[BOS]
    loaded.model.decoder.bias.array[bos] = 100.0     # the model now always predicts a new document
    fortunes_config = dataclasses.replace(config, data="fortunes")
    assert char_rnn.generate(loaded, fortunes_config, "ab", length=3, seed=0) == "ab" + char_rnn.DOCUMENT_BREAK * 3
    from_file = char_rnn.generate(loaded, config, "ab", length=3, seed=0)
    assert len(from_file) == 5 and "%" not in from_file


def test_predict_prints_the_loss_of_each_text(trained):
    _, loaded, config = trained
    lines = char_rnn.predict(loaded, config, ["the cat sat on the mat.", "qqzx vvvj"])
    assert len(lines) == 2
    losses = [float(line.split("\tloss ")[1].split("\t")[0]) for line in lines]
    assert losses[0] < losses[1]
    ids = loaded.dls.vocab.encode(loaded.dls.tokenizer("qqzx vvvj"))
    loaded.model.reset_state()
    expected = char_rnn.SequenceCrossEntropyLoss()(loaded.model(Tensor(ids[None, :-1])), Tensor(ids[None, 1:]))
    assert losses[1] == pytest.approx(expected.item(), abs=1e-4)
    assert float(lines[1].rsplit("perplexity ", 1)[1]) == pytest.approx(np.exp(expected.item()), rel=1e-3)


# ----- the command line -----------------------------------------------------------------

def cli_args(text_file, out):
    return ["train", "char-rnn", "--data", str(text_file), "--epochs", "1", "--bs", "4", "--out", str(out),
            "--set", "bptt=16", "--set", "emb_size=8", "--set", "hidden_size=16", "--set", "num_layers=1",
            "--set", "chunk_chars=400", "--set", "max_chars=none"]


def test_cli_train_generate_predict_info(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(text_file, out) + ["--arch", "gru"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "char-rnn" and saved["arch"] == "gru" and saved["hidden_size"] == 16
    assert saved["max_chars"] is None and saved["epochs"] == 1
    results = json.loads((out / "results.json").read_text())
    assert {"valid_loss", "accuracy", "perplexity"} <= set(results)
    assert results["perplexity"] == pytest.approx(np.exp(results["valid_loss"]), rel=1e-4)
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "the ", "--length", "40", "--seed", "1", "--top-k", "5"]) == 0
    assert capsys.readouterr().out.startswith("the ")
    assert main(["predict", str(out), "the cat", "a dog ran"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[0].startswith("the cat\tloss ")
    assert main(["info", str(out)]) == 0
    assert "recipe: char-rnn" in capsys.readouterr().out


@pytest.mark.parametrize("extra, code, message", [
    (["--set", "no_such_key=1"], 2, "unknown config key 'no_such_key'"),
    (["--set", "bptt=ten"], 2, "expects int"),
    (["--arch", "transformer"], 2, "unknown arch 'transformer'"),
    (["--set", "chunk_chars=100000"], 2, "too few to hold out"),
])
def test_cli_config_errors_exit_2_in_one_line(text_file, tmp_path, capsys, extra, code, message):
    assert main(cli_args(text_file, tmp_path / "run") + extra) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_missing_data_file_exits_3(tmp_path, capsys):
    assert main(["train", "char-rnn", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r")]) == 3
    assert "missing.txt" in capsys.readouterr().err


# ----- parity with PyTorch on the fortunes corpus (slow) ----------------------------------

def _bench_module():
    spec = importlib.util.spec_from_file_location("recipe_char_rnn_torch", REPO / "bench" / "recipe_char_rnn_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytorch_twin_follows_the_recipe_step_for_step(text_file):
    """Same batches, state carrying, clipping and schedule: from the same weights, without dropout,
    the two frameworks' training curves agree to float32 rounding."""
    pytest.importorskip("torch", reason="the PyTorch twin needs torch")
    bench = _bench_module()
    config = tiny_config(text_file, epochs=2, num_layers=2, clip=0.5)
    ours = bench.train_easyfit(config, log=lambda line: None)
    theirs = bench.train_torch(config, bench.easyfit_initial_state(config), log=lambda line: None)
    np.testing.assert_allclose(ours["train_losses"], theirs["train_losses"], rtol=2e-3)
    assert ours["valid_loss"] == pytest.approx(theirs["valid_loss"], rel=2e-3)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=0.01)


@pytest.mark.slow
def test_fortunes_matches_the_pytorch_twin():
    """The recipe (2-layer LSTM, dropout, one-cycle, clipping) on 120,000 fortune characters, against
    PyTorch from the same initial weights: loss within 2%, accuracy within 1 point."""
    from easyfit.data.datasets import DatasetNotFoundError
    config = dataclasses.replace(char_rnn.Config(), max_chars=120_000, chunk_chars=2_000, epochs=2, hidden_size=128,
                                 bptt=50, lr=1e-2)
    try:
        char_rnn.read_corpus(config)
    except DatasetNotFoundError as error:
        pytest.skip(f"the fortunes corpus is not installed (apt-get install fortunes): {error}")
    bench = _bench_module()
    ours = bench.train_easyfit(config)
    # it learnt context: better than the characters' frequencies alone (a unigram model)
    dls = char_rnn.build_dataloaders(config)
    counts = np.bincount(np.concatenate(dls.train.dataset.documents), minlength=len(dls.vocab)) + 1.0
    valid_ids = np.concatenate(dls.valid.dataset.documents)
    unigram_perplexity = float(np.exp(-np.log(counts / counts.sum())[valid_ids].mean()))
    assert ours["perplexity"] < 0.8 * unigram_perplexity, (ours, unigram_perplexity)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed: the easyfit half ran, the comparison with the twin did not")
    theirs = bench.train_torch(config, bench.easyfit_initial_state(config))
    assert abs(ours["valid_loss"] / theirs["valid_loss"] - 1) <= 0.02, (ours, theirs)
    assert abs(ours["accuracy"] - theirs["accuracy"]) <= 0.01, (ours, theirs)


def _count_validations(monkeypatch):
    """Counts Learner._do_epoch_validate calls (the last epoch's and any final validate())."""
    from easyfit.learner import Learner
    calls = []
    original = Learner._do_epoch_validate

    def counted(self, dl=None):
        calls.append(dl)
        return original(self, dl)

    monkeypatch.setattr(Learner, "_do_epoch_validate", counted)
    return calls


def test_train_reports_the_last_epochs_validation_without_validating_again(text_file, tmp_path, monkeypatch):
    from recipes import run
    built = []
    original = char_rnn.build_learner
    monkeypatch.setattr(char_rnn, "build_learner", lambda *a: built.append(original(*a)) or built[-1])
    calls = _count_validations(monkeypatch)
    config = tiny_config(text_file, epochs=2)
    results = run.train(char_rnn, config, tmp_path / "out", log=lambda *a, **k: None)
    assert len(calls) == 2                  # one per epoch; the final metrics reuse the last
    again = built[0].validate()             # the same pass on the final weights
    assert results["valid_loss"] == pytest.approx(float(again[0]), rel=1e-6)
    assert results["accuracy"] == pytest.approx(float(again[1]), rel=1e-6)
