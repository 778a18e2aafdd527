"""Metrics over the whole validation set, with uneven batches."""
import functools
import math

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.data import DataLoader, DataLoaders, ArrayDataset
from easyfit.learner import (Learner, accuracy, error_rate, top_k_accuracy, perplexity, F1Score, AvgMetric,
                             GatherMetric)
from easyfit.learner.metrics import as_metric


class FixedScores(nn.Module):
    """Returns stored scores for the items whose index is the input."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores
        self.unused = nn.Parameter(np.zeros(1, dtype=np.float32))

    def forward(self, index):
        return ef.tensor(self.scores[index.numpy().astype(np.int64)]) + self.unused * 0


def learner_on(scores, targets, batch_size, metrics):
    index = np.arange(len(targets), dtype=np.float32)
    dl = DataLoader(ArrayDataset(index, targets), batch_size=batch_size, num_workers=0)
    return Learner(DataLoaders(dl, dl), FixedScores(scores), nn.CrossEntropyLoss(), metrics=metrics,
                   default_cbs=False)


def test_metrics_are_exact_over_uneven_batches():
    rng = np.random.default_rng(0)
    n, classes = 11, 4  # batches of 4, 4, 3
    scores = rng.normal(size=(n, classes)).astype(np.float32)
    targets = rng.integers(0, classes, n)
    targets[8:] = scores[8:].argmax(1)  # the short last batch is all correct: batch means would differ
    top2 = functools.partial(top_k_accuracy, k=2)
    learn = learner_on(scores, targets, 4, [accuracy, error_rate, top2, F1Score(), perplexity])
    valid_loss, acc, err, top_2, f1, ppl = learn.validate()

    log_probs = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    expected_loss = -log_probs[np.arange(n), targets].mean()
    assert valid_loss == pytest.approx(expected_loss, rel=1e-6)
    assert acc == pytest.approx((scores.argmax(1) == targets).mean())
    batch_mean = np.mean([(scores[i:i + 4].argmax(1) == targets[i:i + 4]).mean() for i in range(0, n, 4)])
    assert acc != pytest.approx(batch_mean)  # the test data does tell the two apart
    assert err == pytest.approx(1 - acc)
    top = np.argsort(-scores, 1)[:, :2]
    assert top_2 == pytest.approx((top == targets[:, None]).any(1).mean())
    assert ppl == pytest.approx(math.exp(expected_loss), rel=1e-6)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert f1 == pytest.approx(sklearn.f1_score(targets, scores.argmax(1), average="macro"))


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_f1_matches_sklearn(average):
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 5))
    targets = rng.integers(0, 5, 50)
    metric = F1Score(average=average)
    for start in range(0, 50, 7):
        metric.accumulate(scores[start:start + 7], targets[start:start + 7], 0.0)
    assert metric.value == pytest.approx(sklearn.f1_score(targets, scores.argmax(1), average=average))


def test_binary_f1_from_logits():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    logits = rng.normal(size=30)
    targets = rng.integers(0, 2, 30)
    metric = F1Score(average="binary")
    metric.accumulate(logits[:13], targets[:13], 0.0)
    metric.accumulate(logits[13:], targets[13:], 0.0)
    assert metric.value == pytest.approx(sklearn.f1_score(targets, (logits > 0).astype(int)))


def test_any_function_is_called_once_on_the_whole_set():
    calls = []

    def median_abs_error(pred, target):
        calls.append(len(target))
        return float(np.median(np.abs(pred.numpy().argmax(1) - target.numpy())))

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(10, 3)).astype(np.float32)
    targets = rng.integers(0, 3, 10)
    learn = learner_on(scores, targets, 3, [median_abs_error])
    _, value = learn.validate()
    assert calls == [10]
    assert value == pytest.approx(np.median(np.abs(scores.argmax(1) - targets)))
    assert learn.metrics[0].name == "median_abs_error"


def test_as_metric_picks_exact_accumulation():
    assert isinstance(as_metric(accuracy), AvgMetric)
    assert isinstance(as_metric(functools.partial(top_k_accuracy, k=3)), AvgMetric)
    assert isinstance(as_metric(lambda p, t: 0.0), GatherMetric)
    with pytest.raises(TypeError, match="metric"):
        as_metric(3)


def test_metric_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)"):
        accuracy(np.zeros((4, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(np.zeros((4, 3)), np.zeros(4, dtype=int), k=4)
