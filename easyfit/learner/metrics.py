"""Metrics computed over the whole validation set.

A metric is either a function `(pred, target) -> scalar` or a `Metric` object that
accumulates over batches. The Learner turns functions into metrics with `as_metric`:
the built-in per-item means (`accuracy`, `error_rate`, `top_k_accuracy`) are summed
item by item, any other function is called once on the concatenated predictions and
targets of the whole set — never averaged over batches of unequal size.
"""
import functools
import math

import numpy as np

from ..core.tensor import Tensor


def _array(x):
    """A NumPy array on the CPU from a Tensor, array or number."""
    if isinstance(x, Tensor):
        return x.numpy_cpu()
    if hasattr(x, "get"):  # a CuPy array
        return x.get()
    return np.asarray(x)


def _check_class_axis(pred, target, name):
    if pred.ndim != target.ndim + 1 or pred.shape[:-1] != target.shape:
        raise ValueError(
            f"{name}: predictions of shape {pred.shape} do not fit targets of shape {target.shape}; "
            "expected predictions with one more (last) axis of class scores than the targets")


def _per_item_mean(func):
    """Mark a function whose value is the mean of a per-item quantity (exact to accumulate)."""
    func.per_item_mean = True
    return func


@_per_item_mean
def accuracy(pred, target, axis=-1):
    """Fraction of items whose highest-scoring class (along `axis`) equals the target."""
    pred, target = _array(pred), _array(target)
    _check_class_axis(pred, target, "accuracy")
    return float((pred.argmax(axis=axis) == target).mean())


@_per_item_mean
def error_rate(pred, target, axis=-1):
    """1 - accuracy."""
    return 1.0 - accuracy(pred, target, axis=axis)


@_per_item_mean
def top_k_accuracy(pred, target, k=5):
    """Fraction of items whose target is among the `k` highest-scoring classes (last axis)."""
    pred, target = _array(pred), _array(target)
    _check_class_axis(pred, target, "top_k_accuracy")
    n_classes = pred.shape[-1]
    if not 1 <= k <= n_classes:
        raise ValueError(f"top_k_accuracy: k must be between 1 and the number of classes ({n_classes}), got {k}")
    if k == n_classes:
        return 1.0
    top = np.argpartition(-pred, k - 1, axis=-1)[..., :k]
    return float((top == target[..., None]).any(axis=-1).mean())


def metric_name(metric):
    """The column name of a metric: its `name`, a function's name, or a partial's function name."""
    name = getattr(metric, "name", None)
    if isinstance(name, str):
        return name
    func = metric
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


class Metric:
    """Accumulates over the batches of one validation pass; `value` is the result.

    Subclasses define `reset()`, `accumulate(pred, target, loss)` (`loss` is the batch's
    mean loss as a float, `pred`/`target` the batch's Tensors) and `value`.
    """
    @property
    def name(self):
        return _snake(type(self).__name__)

    def reset(self):
        raise NotImplementedError

    def accumulate(self, pred, target, loss):
        raise NotImplementedError

    @property
    def value(self):
        raise NotImplementedError

    def sync(self, all_gather):
        """Make this metric's state that of the whole validation set (data-parallel validation).

        Each process has accumulated its share; `all_gather(obj)` returns every
        process's `obj` as a list indexed by rank. Shares are strided: rank r of N held
        items r, r+N, r+2N, ... of every batch. A metric defines this to be usable in
        `Learner.distrib_ctx`, combining counts (sums) rather than averaging values.
        """
        raise NotImplementedError(f"metric {self.name!r} ({type(self).__name__}) cannot be combined across "
                                  "processes: define sync(all_gather) to use it in data-parallel training")


def _sum_totals(metric, all_gather):
    """Sum (total, count) over processes: exact for means of per-item quantities."""
    shares = all_gather((metric.total, metric.count))
    metric.total = float(sum(total for total, _ in shares))
    metric.count = int(sum(count for _, count in shares))


def _interleave(shares):
    """The batch whose strided shares (rank r held items r, r+N, ...) are `shares`.

    Shares whose sizes cannot come from that rule (whole batches dealt out by a batch
    sampler) are concatenated in rank order.
    """
    shares = [share for share in shares if share is not None]
    total = sum(len(share) for share in shares)
    if any(len(share) != len(range(rank, total, len(shares))) for rank, share in enumerate(shares)):
        return np.concatenate(shares)
    out = np.empty((total,) + shares[0].shape[1:], dtype=shares[0].dtype)
    for rank, share in enumerate(shares):
        out[rank::len(shares)] = share
    return out


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _item_count(target):
    return int(np.prod(target.shape)) if target.shape else 1


class AvgMetric(Metric):
    """A per-item-mean function accumulated exactly: sum of value x items / total items."""

    def __init__(self, func):
        self.func = func
        self.reset()

    @property
    def name(self):
        return metric_name(self.func)

    def reset(self):
        self.total, self.count = 0.0, 0

    def accumulate(self, pred, target, loss):
        n = _item_count(target)
        self.total += float(self.func(pred, target)) * n
        self.count += n

    @property
    def value(self):
        return self.total / self.count if self.count else float("nan")

    def sync(self, all_gather):
        _sum_totals(self, all_gather)


class GatherMetric(Metric):
    """Any function `(pred, target) -> scalar`, called once on the whole set's predictions."""

    def __init__(self, func):
        self.func = func
        self.reset()

    @property
    def name(self):
        return metric_name(self.func)

    def reset(self):
        self.preds, self.targets = [], []

    def accumulate(self, pred, target, loss):
        self.preds.append(_array(pred))
        self.targets.append(_array(target))

    @property
    def value(self):
        if not self.preds:
            return float("nan")
        pred = Tensor(np.concatenate(self.preds))
        target = Tensor(np.concatenate(self.targets))
        result = self.func(pred, target)
        return float(result.item() if isinstance(result, Tensor) else result)

    def sync(self, all_gather):
        """Gather every process's predictions and put each batch back in one process's item order."""
        shares = all_gather((self.preds, self.targets))
        n_batches = max(len(preds) for preds, _ in shares)
        def batch(field, k):
            return _interleave([s[field][k] if k < len(s[field]) else None for s in shares])
        self.preds = [batch(0, k) for k in range(n_batches)]
        self.targets = [batch(1, k) for k in range(n_batches)]


class Perplexity(Metric):
    """exp(mean loss per item) over the whole set: the language-model metric."""
    name = "perplexity"

    def __init__(self):
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0

    def accumulate(self, pred, target, loss):
        n = _item_count(target)
        self.total += loss * n
        self.count += n

    @property
    def value(self):
        return math.exp(self.total / self.count) if self.count else float("nan")

    def sync(self, all_gather):
        _sum_totals(self, all_gather)


perplexity = Perplexity()


class F1Score(Metric):
    """F1 from the confusion counts of the whole set (sklearn's definitions).

    `average`: 'macro' (unweighted mean over classes), 'weighted' (by support),
    'micro' (global counts) or 'binary' (the class `pos_label` only). Predictions are
    class scores with a last class axis (argmax is taken) or, with the same shape as
    the targets, binary scores thresholded at `threshold` (0.0 suits logits).
    """
    name = "f1_score"

    def __init__(self, average="macro", pos_label=1, threshold=0.0):
        if average not in ("macro", "micro", "weighted", "binary"):
            raise ValueError(f"F1Score: average must be 'macro', 'micro', 'weighted' or 'binary', got {average!r}")
        self.average, self.pos_label, self.threshold = average, pos_label, threshold
        self.reset()

    def reset(self):
        self.confusion = np.zeros((0, 0), dtype=np.int64)

    def accumulate(self, pred, target, loss):
        pred, target = _array(pred), _array(target)
        if pred.ndim == target.ndim + 1:
            labels = pred.argmax(axis=-1)
            n_classes = pred.shape[-1]
        elif pred.shape == target.shape or pred.reshape(-1).shape == target.reshape(-1).shape:
            labels = (pred.reshape(target.shape) > self.threshold).astype(np.int64)
            n_classes = 2
        else:
            raise ValueError(f"F1Score: predictions of shape {pred.shape} do not fit targets of shape "
                             f"{target.shape}")
        target = target.astype(np.int64).reshape(-1)
        labels = labels.reshape(-1)
        n_classes = max(n_classes, int(target.max()) + 1 if target.size else 0, self.confusion.shape[0])
        counts = np.bincount(target * n_classes + labels, minlength=n_classes * n_classes)
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        old = self.confusion.shape[0]
        confusion[:old, :old] = self.confusion
        self.confusion = confusion + counts.reshape(n_classes, n_classes)

    def sync(self, all_gather):
        """Sum the confusion matrices (grown to the largest number of classes seen anywhere)."""
        matrices = all_gather(self.confusion)
        n_classes = max(m.shape[0] for m in matrices)
        total = np.zeros((n_classes, n_classes), dtype=np.int64)
        for matrix in matrices:
            total[:matrix.shape[0], :matrix.shape[0]] += matrix
        self.confusion = total

    @property
    def value(self):
        confusion = self.confusion
        if confusion.size == 0:
            return float("nan")
        true_pos = np.diag(confusion).astype(np.float64)
        false_pos = confusion.sum(axis=0) - true_pos
        false_neg = confusion.sum(axis=1) - true_pos
        if self.average == "micro":
            return _f1(true_pos.sum(), false_pos.sum(), false_neg.sum())
        per_class = np.array([_f1(t, p, n) for t, p, n in zip(true_pos, false_pos, false_neg)])
        if self.average == "binary":
            if self.pos_label >= len(per_class):
                return 0.0
            return float(per_class[self.pos_label])
        support = confusion.sum(axis=1)
        present = (support + confusion.sum(axis=0)) > 0  # sklearn averages over labels seen anywhere
        if self.average == "weighted":
            return float((per_class * support).sum() / support.sum()) if support.sum() else 0.0
        return float(per_class[present].mean())


def _f1(true_pos, false_pos, false_neg):
    denominator = 2 * true_pos + false_pos + false_neg
    return float(2 * true_pos / denominator) if denominator else 0.0


def as_metric(metric):
    """A `Metric` from a metric object or a function `(pred, target) -> scalar`."""
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise TypeError(f"a metric must be a Metric or a function (pred, target) -> scalar, got {metric!r}")
    func = metric
    while isinstance(func, functools.partial):
        func = func.func
    if getattr(func, "per_item_mean", False):
        return AvgMetric(metric)
    return GatherMetric(metric)
