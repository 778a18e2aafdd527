"""Progress output with and without a terminal, and errors that name what is wrong."""
import io

import numpy as np
import pytest

from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset, Dataset
from easyfit.learner import Learner, ProgressCallback, LossError, BatchError, accuracy
from conftest import make_dls, make_model


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def learner_with_progress(stream):
    return Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), metrics=accuracy, default_cbs=False,
                   cbs=[_recorder(), ProgressCallback(file=stream)])


def _recorder():
    from easyfit.learner import Recorder
    return Recorder()


def test_without_a_terminal_one_plain_line_per_epoch():
    stream = io.StringIO()
    learner_with_progress(stream).fit(3)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2"]
    assert len(lines) == 4


def test_on_a_terminal_tqdm_bars_and_the_table():
    stream = FakeTerminal()
    learner_with_progress(stream).fit(2)
    text = stream.getvalue()
    assert "\r" in text  # tqdm redraws its bars in place
    assert "fit:" in text and "train:" in text  # the epoch bar and the batch bar
    assert "train_loss" in text and "valid_loss" in text


def test_training_outside_jupyter_does_not_import_ipython(tmp_path):
    """Asking "are we in a notebook?" must not import IPython (0.4 s) in a plain program."""
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("IPython") is None:
        pytest.skip("IPython is not installed, so it cannot be imported by mistake")
    code = ("import sys\n"
            "import numpy as np\n"
            "from easyfit import nn\n"
            "from easyfit.data import ArrayDataset, DataLoader, DataLoaders\n"
            "from easyfit.learner import Learner\n"
            "x = np.random.default_rng(0).random((32, 4)).astype(np.float32)\n"
            "y = (x[:, 0] > 0.5).astype(np.int64)\n"
            "data = ArrayDataset(x, y)\n"
            "dls = DataLoaders(DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))\n"
            "Learner(dls, nn.Linear(4, 2), nn.CrossEntropyLoss(), path=sys.argv[1]).fit(1)\n"
            "assert 'IPython' not in sys.modules, 'IPython was imported'\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_progress_is_silent_during_lr_find():
    stream = io.StringIO()
    learn = learner_with_progress(stream)
    learn.lr_find(num_it=10)
    assert stream.getvalue() == ""


def test_mse_shape_mismatch_names_both_shapes_before_the_first_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype(np.float32), rng.normal(size=20).astype(np.float32)
    dl = DataLoader(ArrayDataset(x, y), batch_size=5, num_workers=0)
    model = nn.Sequential(nn.Linear(3, 1))
    learn = Learner(DataLoaders(dl, dl), model, nn.MSELoss(), default_cbs=False)
    before = model[0].weight.numpy().copy()
    with pytest.raises(LossError, match=r"\(5, 1\).*\(5,\).*same shape.*Flatten"):
        learn.fit(1)
    assert np.array_equal(model[0].weight.numpy(), before)  # refused before any step


def test_cross_entropy_with_float_targets_or_too_few_outputs():
    x_train = np.zeros((8, 6), np.float32)
    float_targets = DataLoader(ArrayDataset(x_train, np.zeros(8, np.float32)), batch_size=4, num_workers=0)
    learn = Learner(DataLoaders(float_targets, float_targets), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    with pytest.raises(LossError, match=r"integer class indices.*float32"):
        learn.fit(1)
    five_classes = DataLoader(ArrayDataset(x_train, np.arange(8) % 5), batch_size=4, num_workers=0)
    learn = Learner(DataLoaders(five_classes, five_classes), make_model(n_classes=3), nn.CrossEntropyLoss(),
                    default_cbs=False)
    with pytest.raises(LossError, match=r"from 0 to 3.*scores 3 classes"):
        learn.fit(1)


def test_a_failing_loss_is_reported_with_shapes_and_dtypes():
    def broken_loss(pred, target):
        raise RuntimeError("boom")

    learn = Learner(make_dls(), make_model(), broken_loss, default_cbs=False)
    with pytest.raises(LossError, match=r"broken_loss failed on the model's output of shape \(16, 3\) .*float32.*"
                                        r"targets of shape \(16,\) \(dtype int64\).*boom"):
        learn.fit(1)


def test_a_data_loader_failure_names_the_batch():
    class BadSample(Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, index):
            if index == 13:
                raise OSError("corrupt record")
            return np.zeros(6, np.float32), np.int64(0)

    dl = DataLoader(BadSample(), batch_size=4, num_workers=0)
    learn = Learner(DataLoaders(dl, dl), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    with pytest.raises(BatchError, match=r"training data loader failed producing batch 3 \(epoch 0\)") as info:
        learn.fit(1)
    assert info.value.batch_index == 3


def test_a_batch_that_is_not_a_tuple_is_explained():
    class DictLoader:
        def __len__(self):
            return 1

        def __iter__(self):
            yield {"x": 1}

    learn = Learner(DataLoaders(DictLoader(), None), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    with pytest.raises(BatchError, match="batch 0 .* is a dict"):
        learn.fit(1)


def test_data_on_another_device_than_the_model_is_explained(monkeypatch):
    import easyfit.learner.learner as learner_module
    monkeypatch.setattr(learner_module, "_model_device", lambda model: "cuda:0")  # no GPU needed to check the message
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), default_cbs=False)
    with pytest.raises(BatchError, match=r"parameters are on cuda:0 but the batch's input 0 is on cpu.*dls.to"):
        learn.fit(1)
