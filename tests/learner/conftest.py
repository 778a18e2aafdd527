"""Small data and models for the Learner tests (fast: a few ms per epoch)."""
import numpy as np
import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset


def make_data(n_train=96, n_valid=40, n_features=6, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n_train + n_valid)
    x = (centers[y] + rng.normal(size=(len(y), n_features))).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def make_dls(batch_size=16, valid_batch_size=None, seed=0, shuffle=True, **kwargs):
    x_train, y_train, x_valid, y_valid = make_data(seed=seed, **kwargs)
    train = DataLoader(ArrayDataset(x_train, y_train), batch_size=batch_size, shuffle=shuffle, seed=seed + 1,
                       num_workers=0)
    valid = DataLoader(ArrayDataset(x_valid, y_valid), batch_size=valid_batch_size or batch_size, num_workers=0)
    return DataLoaders(train, valid, classes=["a", "b", "c"][:int(max(y_train.max(), y_valid.max())) + 1])


def make_model(n_features=6, n_classes=3, hidden=16, dropout=0.0, seed=0):
    ef.manual_seed(seed)
    layers = [nn.Linear(n_features, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, n_classes))
    return nn.Sequential(*layers)


def weights(model):
    """Copies of every parameter and buffer array, by name."""
    return {key: value.numpy_cpu().copy() for key, value in model.state_dict().items()}


def assert_bytes_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
