"""learn.export_onnx, `easyfit export RUN OUT.onnx`, and the recipes' models in onnxruntime."""
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from harness import Lambda, check_export, session

import easyfit as ef
from easyfit.learner import load_learner

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from recipes import cli  # noqa: E402
from recipes.run import MODEL_FILE  # noqa: E402


def _image_folder(root, n_per_class=10, size=8):
    rng = np.random.default_rng(0)
    for label, name in enumerate(("top", "bottom")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            image = rng.integers(0, 60, (size, size), dtype=np.uint8)
            image[slice(0, size // 2) if label == 0 else slice(size // 2, size)] += 180
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_cli_export_of_a_trained_vision_run_matches_load_learner(tmp_path, capsys, arch):
    data = _image_folder(tmp_path / "images")
    run = tmp_path / "run"
    assert cli.main(["train", "vision", "--data", str(data), "--epochs", "1", "--bs", "8", "--out", str(run),
                     "--arch", arch, "--set", "size=8", "--set", "width=4", "--set", "mode=L"]) == 0
    out = tmp_path / "exported" / "model.onnx"
    assert cli.main(["export", str(run), str(out)]) == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    import onnx
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == ["bottom", "top"]
    assert len(json.loads(props["normalize_mean"])) == 1 and "NCHW" in props["input_layout"]
    assert props["easyfit_version"] == ef.__version__
    learn = load_learner(run / MODEL_FILE)
    learn.model.eval()
    runner = session(out)
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 1, 8, 8)).astype(np.float32)
        with ef.no_grad():
            expected = learn.model(ef.tensor(x)).numpy()
        np.testing.assert_allclose(runner.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_cli_export_of_a_missing_run_exits_3(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.onnx")]) == cli.EXIT_NOT_FOUND
    assert not (tmp_path / "x.onnx").exists()


def test_learner_export_onnx_takes_an_example_from_the_data(tmp_path):
    from easyfit import nn
    from easyfit.data import ArrayDataset, DataLoader, DataLoaders
    from easyfit.learner import Learner
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 6)).astype(np.float32), rng.integers(0, 3, 32)
    dls = DataLoaders(DataLoader(ArrayDataset(x, y), batch_size=8), DataLoader(ArrayDataset(x, y), batch_size=8))
    learn = Learner(dls, nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), nn.CrossEntropyLoss(),
                    path=tmp_path)
    learn.fit(1)
    path = learn.export_onnx("m.onnx")
    assert pathlib.Path(path) == tmp_path / "m.onnx"
    with ef.no_grad():
        expected = learn.model(ef.tensor(x[:5])).numpy()
    np.testing.assert_allclose(session(path).run(None, {"input": x[:5]})[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_text_recipe_models(tmp_path, arch):
    from recipes import text
    config = text.Config(arch=arch, emb_dim=8, hidden=8, heads=2, ff_dim=12, layers=2, max_len=16)
    model = text.build_model(config, 30, 4, pad_idx=1)

    def tokens(n, length=7):
        rng = np.random.default_rng(n)
        ids = rng.integers(2, 30, size=(n, length))
        ids[0, length - 3:] = 1    # padding at the end of the first text
        return (ids,)
    check_export(model, tokens, tmp_path, dynamic_axes={"input": {0: "batch", 1: "time"}})
    runner = session(tmp_path / "model.onnx")
    for n, length in ((2, 4), (3, 11)):
        (ids,) = tokens(n, length)
        with ef.no_grad():
            expected = model(ef.tensor(ids)).numpy()
        np.testing.assert_allclose(runner.run(None, {"input": ids})[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_char_rnn_model(tmp_path, arch):
    from recipes import char_rnn
    model = char_rnn.CharRNN(20, arch=arch, emb_size=6, hidden_size=8, num_layers=2)

    def tokens(n, length=5):
        return (np.random.default_rng(n).integers(0, 20, size=(n, length)),)

    # a fresh state for every call (the recipe carries the state between training batches)
    fresh = Lambda(lambda m, x: (m.net.reset_state(), m.net(x))[1], net=model)
    check_export(fresh, tokens, tmp_path, dynamic_axes={"input": {0: "batch", 1: "time"}})


def _compare_run_with_onnx(run, onnx_path, token_batches):
    learn = load_learner(run / MODEL_FILE)
    learn.model.eval()
    runner = session(onnx_path)
    for ids in token_batches:
        reset = getattr(learn.model, "reset_state", None)
        if reset:
            reset()
        with ef.no_grad():
            expected = learn.model(ef.tensor(ids)).numpy()
        np.testing.assert_allclose(runner.run(None, {"input": ids})[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_cli_export_of_a_trained_text_run(tmp_path, capsys, arch):
    import csv
    rng = np.random.default_rng(0)
    words = {"tech": "kernel compiler python bug server".split(), "food": "bread soup cheese garlic tomato".split()}
    path = tmp_path / "topics.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for label, vocabulary in words.items():
            for _ in range(24):
                writer.writerow([" ".join(rng.choice(vocabulary, int(rng.integers(2, 9)))), label])
    run = tmp_path / "run"
    assert cli.main(["train", "text", "--data", str(path), "--arch", arch, "--epochs", "1", "--out", str(run),
                     "--set", "min_freq=1", "--set", "emb_dim=8", "--set", "hidden=8", "--set", "ff_dim=16",
                     "--set", "heads=2", "--bs", "8"]) == 0, capsys.readouterr().err
    out = tmp_path / "text.onnx"
    assert cli.main(["export", str(run), str(out)]) == 0, capsys.readouterr().err
    import onnx
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    vocab = json.loads(props["vocab"])
    assert json.loads(props["classes"]) == ["food", "tech"] and "kernel" in vocab and props["pad_idx"] == "1"
    ids = rng.integers(2, len(vocab), (3, 10))
    ids[0, 6:] = 1   # padding
    _compare_run_with_onnx(run, out, [ids, ids[:1, :4]])


def test_cli_export_of_a_trained_char_rnn_run(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40, encoding="utf-8")
    run = tmp_path / "run"
    assert cli.main(["train", "char-rnn", "--data", str(corpus), "--epochs", "1", "--out", str(run),
                     "--set", "bptt=16", "--set", "emb_size=8", "--set", "hidden_size=16", "--set", "num_layers=2",
                     "--set", "chunk_chars=200", "--bs", "4"]) == 0, capsys.readouterr().err
    out = tmp_path / "chars.onnx"
    assert cli.main(["export", str(run), str(out)]) == 0, capsys.readouterr().err
    vocab_size = len(json.loads({p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}["vocab"]))
    rng = np.random.default_rng(1)
    _compare_run_with_onnx(run, out, [rng.integers(0, vocab_size, (2, 7)), rng.integers(0, vocab_size, (5, 3))])


def test_an_exported_onnx_file_gets_the_usual_permissions(tmp_path):
    """A user trial found exports written 0600 (tempfile's mode), unreadable to a server's user."""
    import os
    import easyfit as ef
    from easyfit import nn
    import easyfit.onnx as eo
    mask = os.umask(0o022)
    try:
        path = tmp_path / "m.onnx"
        eo.export(nn.Linear(3, 2), ef.randn(2, 3), path)
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)          # replacing a file keeps its mode, as easyfit.save does
        eo.export(nn.Linear(3, 2), ef.randn(2, 3), path)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)
