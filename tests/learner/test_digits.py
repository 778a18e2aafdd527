"""End to end: the UCI handwritten digits (scikit-learn's load_digits) to a stated accuracy."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import Learner, accuracy, F1Score


@pytest.mark.slow
def test_digits_reach_95_percent_validation_accuracy():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn provides the digits data")
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, valid = order[:1500], order[1500:]
    dls = DataLoaders(DataLoader(ArrayDataset(x[train], y[train]), batch_size=64, shuffle=True, seed=0),
                      DataLoader(ArrayDataset(x[valid], y[valid]), batch_size=128))
    ef.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
    learn = Learner(dls, model, nn.CrossEntropyLoss(), metrics=[accuracy, F1Score()])
    learn.fit_one_cycle(6, lr_max=1e-2)
    valid_loss, acc, f1 = learn.validate()
    assert acc >= 0.95, f"accuracy {acc:.4f} on {len(valid)} held-out digits"
    assert f1 >= 0.94 and valid_loss < 0.2
