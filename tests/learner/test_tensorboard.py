"""TensorBoardCallback's records, read back with the tensorboard package's event reader."""
import numpy as np
import pytest

from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import Learner, TensorBoardCallback, accuracy

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def image_dls():
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 6, 6)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    train = DataLoader(ArrayDataset(x[:32], y[:32]), batch_size=8, shuffle=True, seed=1, num_workers=0)
    valid = DataLoader(ArrayDataset(x[32:], y[32:]), batch_size=8, num_workers=0)
    return DataLoaders(train, valid)


def read(log_dir):
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def test_every_kind_of_record_reads_back(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    tb = TensorBoardCallback(tmp_path / "runs", hist_every=2, n_images=4, hparams={"note": "test"})
    learn = Learner(image_dls(), model, nn.CrossEntropyLoss(), metrics=accuracy, cbs=[tb])
    learn.fit_one_cycle(2, lr_max=1e-2)

    events = read(tmp_path / "runs")
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/mom", "valid/loss", "valid/accuracy"} <= set(tags["scalars"])
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 9))
    assert [e.value for e in losses] == pytest.approx(learn.recorder.losses, rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(learn.recorder.lrs, rel=1e-6)
    assert [e.value for e in events.Scalars("train/mom")] == pytest.approx(learn.recorder.moms, rel=1e-6)
    assert [e.value for e in events.Scalars("valid/loss")] == pytest.approx([v[1] for v in learn.recorder.values])
    assert [e.step for e in events.Scalars("valid/accuracy")] == [4, 8]

    assert {"weights/0.weight", "grads/0.weight", "weights/3.bias"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("weights/0.weight")] == [2, 4, 6, 8]
    histogram = events.Histograms("weights/3.weight")[-1].histogram_value
    assert histogram.num == 64 and histogram.min == pytest.approx(learn.model[3].weight.numpy().min())

    images = events.Images("train/images")
    assert len(images) == 1 and images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].width >= 6 * 2 and images[0].height >= 6  # a grid of the 4 first 6x6 inputs

    graph = events.Graph()
    ops = [node.op for node in graph.node]
    assert "Parameter" in ops and "Input" in ops and len(graph.node) > 6
    assert {"params/0.weight", "params/3.bias"} <= {node.name for node in graph.node}
    # ops are named inside their module's scope: TensorBoard groups them per module
    assert any(node.name.startswith("0/Conv2d") for node in graph.node)
    assert any(node.name.startswith("3/Linear") for node in graph.node)

    assert not (tmp_path / "runs" / "hparams").exists()   # one run, not a second 'hparams' one
    plugin = events.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    assert hparams["note"].string_value == "test" and hparams["n_epoch"].string_value == "2"
    assert hparams["opt"].string_value == "Adam"


def test_images_are_skipped_for_non_image_inputs(tmp_path):
    from conftest import make_dls, make_model
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), cbs=[TensorBoardCallback(tmp_path, hist_every=0)])
    learn.fit(1)
    tags = read(tmp_path).Tags()
    assert tags["images"] == [] and tags["histograms"] == []
    assert "train/loss" in tags["scalars"]


def test_tensorboard_does_not_import_pytorch(tmp_path):
    """tensorboardX would import an installed torch (1.5-2 s); easyfit keeps it out, and
    torch stays importable afterwards."""
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed, so there is nothing to keep out")
    code = ("import sys\n"
            "from easyfit.learner.tensorboard import _summary_writer\n"
            f"writer = _summary_writer({str(tmp_path)!r})\n"
            "writer.add_scalar('x', 1.0, 0)\n"
            "writer.close()\n"
            "assert 'torch' not in sys.modules, 'tensorboardX imported torch'\n"
            "import torch\n"
            "assert torch.zeros(1).shape == (1,)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_a_recipe_run_is_one_clear_run_with_one_set_of_hparams_and_histograms(tmp_path, monkeypatch):
    """Issue 14, item 11: no '.'/'hparams' runs, no bs/batch_size twins, integers as integers,
    no stray 'hparam/' scalars, histograms even when a fit is shorter than hist_every batches."""
    from recipes import cli
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli.main(["train", "vision", "--epochs", "1", "--set", "width=4"]) == 0
    root = tmp_path / "easyfit-runs" / "vision"
    run_names = sorted(str(p.parent.relative_to(root)) for p in root.rglob("events.out.tfevents.*"))
    assert run_names == ["run-001/tensorboard", "run-002/tensorboard"]
    events = read(root / "run-002" / "tensorboard")
    tags = events.Tags()
    assert not [tag for tag in tags["scalars"] if tag.startswith("hparam")]
    assert "weights/0.weight" in tags["histograms"]      # 23 batches < hist_every=100: once per epoch
    from tensorboard.plugins.hparams import plugin_data_pb2
    plugin = events.PluginTagToContent("hparams")
    hparams = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]) \
        .session_start_info.hparams
    assert "bs" in hparams and "batch_size" not in hparams
    assert "epochs" in hparams and "n_epoch" not in hparams and "lr_max" not in hparams and "wd" in hparams
    assert hparams["bs"].string_value == "64" and hparams["epochs"].string_value == "1"
    from recipes import vision
    assert hparams["lr"].number_value == pytest.approx(vision.Config().lr)   # the recipe's default
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"valid/loss", "valid/accuracy"}
