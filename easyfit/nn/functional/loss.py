"""Losses: cross-entropy (ignore_index, label_smoothing, weight), NLL, MSE, L1, smooth L1,
Huber, KL divergence, BCE."""
import warnings

import numpy as np

from ...core.autograd import _grad_enabled
from ...core.backend import get_array_module, to_device
from ...core.functions import abs, exp, log, maximum, sigmoid, where
from ...core.tensor import _wrap, Function, mean, reshape, sum, Tensor, transpose
from ._arguments import _check_reduction, _check_reduction_name, _legacy_reduction
from .activation import log_softmax, softmax, softplus


def _reduce(loss, reduction):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    return loss


class SoftmaxCrossEntropy(Function):
    """Cross-entropy of logits (M, C) with class indices or class probabilities, fused.

    Loss per row: -sum_c q_c * log_softmax(z)_c with q the (weighted, smoothed) target
    distribution; the gradient is softmax(z) * sum(q) - q, computed from the softmax
    that the forward pass already has.
    """

    def __init__(self, target, weight, ignore_index, reduction, label_smoothing):
        self.target, self.weight = target, weight
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, logits, soft_target=None):
        xp = get_array_module(logits)
        rows, classes = logits.shape
        logp = logits - logits.max(axis=1, keepdims=True)
        probs = xp.exp(logp)
        total = probs.sum(axis=1, keepdims=True)
        logp -= xp.log(total)
        probs /= total
        self.probs = probs
        eps, weight = self.label_smoothing, self.weight
        if soft_target is None:
            target = self.target
            valid = target != self.ignore_index
            safe = xp.where(valid, target, 0)
            picked = logp[xp.arange(rows), safe]
            w_target = weight[safe] * valid if weight is not None else valid.astype(logits.dtype)
            loss = -(1.0 - eps) * picked * w_target
            if eps:
                smooth = -(logp @ weight) if weight is not None else -logp.sum(axis=1)
                loss += (eps / classes) * smooth * valid
            self.valid, self.safe, self.w_target = valid, safe, w_target
            self.denominator = w_target.sum()
        else:
            q = soft_target * (1.0 - eps) + eps / classes if eps else soft_target
            if weight is not None:
                q = q * weight
            loss = -(q * logp).sum(axis=1)
            self.denominator = rows
        loss = loss.astype(logits.dtype, copy=False)
        if self.reduction == "mean":
            return xp.asarray(loss.sum() / self.denominator, dtype=logits.dtype)
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def _row_scale(self, gy):
        """d loss / d per-row loss as an (M, 1)-broadcastable tensor."""
        if self.reduction == "mean":
            return gy * (1.0 / self.denominator)
        if self.reduction == "sum":
            return gy
        return reshape(gy, (-1, 1))

    def backward(self, gy):
        logits = self.inputs[0]
        rows, classes = logits.shape
        eps, weight = self.label_smoothing, self.weight
        xp = get_array_module(logits.array)
        if len(self.inputs) == 1:
            # a_i = sum of the row's target distribution; q = (1-eps) w_t e_t + valid * (eps/C) w
            weight_sum = weight.sum() if weight is not None else classes
            a = (1.0 - eps) * self.w_target + (eps / classes) * weight_sum * self.valid
            if not _grad_enabled[0]:
                scale = self._row_scale(gy).array
                g = self.probs * a[:, None]
                if eps:
                    g -= (eps / classes) * (self.valid[:, None] * (weight if weight is not None else 1.0))
                g[xp.arange(rows), self.safe] -= (1.0 - eps) * self.w_target
                g *= scale
                return _wrap(g.astype(logits.dtype, copy=False))
            q = xp.zeros((rows, classes), dtype=logits.dtype)
            if eps:
                q += (eps / classes) * (self.valid[:, None] * (weight if weight is not None else 1.0))
            q[xp.arange(rows), self.safe] += (1.0 - eps) * self.w_target
            p = softmax(logits, axis=1)
            return (p * _wrap(a[:, None].astype(logits.dtype)) - _wrap(q)) * self._row_scale(gy)
        target = self.inputs[1]
        scale = self._row_scale(gy)
        w = _wrap(weight) if weight is not None else None
        q = target * (1.0 - eps) + eps / classes if eps else target
        if w is not None:
            q = q * w
        p = softmax(logits, axis=1) if _grad_enabled[0] else _wrap(self.probs)
        g_logits = (p * sum(q, axis=1, keepdims=True) - q) * scale if logits.requires_grad else None
        g_target = None
        if target.requires_grad:
            g_target = -log_softmax(logits, axis=1) * (1.0 - eps) * scale
            if w is not None:
                g_target = g_target * w
        return g_logits, g_target


def _class_axis_last(x):
    """(N, C, d1, ...) -> (N*d1*..., C) through differentiable ops."""
    axes = (0,) + tuple(range(2, x.ndim)) + (1,)
    return reshape(transpose(x, axes), (-1, x.shape[1]))


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits `input` (N, C) or (N, C, d1, ...) or (C,).

    `target` holds class indices (N,) / (N, d1, ...), or class probabilities with the
    input's shape. `weight` (C,) weighs classes; rows whose target is `ignore_index` are
    left out (and out of the mean's denominator); `label_smoothing` mixes the target
    with the uniform distribution. PyTorch's semantics throughout.
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    target_array = target.array if isinstance(target, Tensor) else np.asarray(target)
    soft = target_array.dtype.kind == "f"
    unbatched = input.ndim == 1
    classes = input.shape[0] if unbatched else input.shape[1]
    if soft:
        if target_array.shape != input.shape:
            raise ValueError(f"cross_entropy: class-probability targets must have the input's shape "
                             f"{input.shape}, got {target_array.shape}")
    else:
        expected = input.shape[:1] + input.shape[2:] if not unbatched else ()
        if target_array.shape != expected:
            raise ValueError(f"cross_entropy: for input of shape {input.shape} the class-index target must have "
                             f"shape {expected}, got {target_array.shape}")
        if target_array.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: class-index targets must be integers, got dtype {target_array.dtype}")
        valid = target_array[target_array != ignore_index]
        if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= classes):
            raise IndexError(f"cross_entropy: target class indices must lie in [0, {classes}) (or equal "
                             f"ignore_index={ignore_index}), got values in [{int(valid.min())}, {int(valid.max())}]")
    if weight is not None:
        weight_array = weight.array if isinstance(weight, Tensor) else np.asarray(weight)
        if weight_array.shape != (classes,):
            raise ValueError(f"cross_entropy: weight must have shape ({classes},), got {weight_array.shape}")
        weight_array = weight_array.astype(input.dtype, copy=False)
    else:
        weight_array = None
    logits = reshape(input, (1, classes)) if unbatched else (input if input.ndim == 2 else _class_axis_last(input))
    if soft:
        target_t = target if isinstance(target, Tensor) else Tensor(target_array)
        target_t = reshape(target_t, (1, classes)) if unbatched else (
            target_t if input.ndim == 2 else _class_axis_last(target_t))
        fn = SoftmaxCrossEntropy(None, weight_array, ignore_index, reduction, label_smoothing)
        loss = fn(logits, target_t)
    else:
        flat_target = to_device(target_array.reshape(-1), input.device)
        fn = SoftmaxCrossEntropy(flat_target, weight_array, ignore_index, reduction, label_smoothing)
        loss = fn(logits)
    if reduction == "none":
        return reshape(loss, input.shape[:1] + input.shape[2:] if not unbatched else ())
    return loss


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities `input` (N, C) or (N, C, d1, ...) at `target`."""
    _check_reduction(reduction)
    target_array = target.array if isinstance(target, Tensor) else np.asarray(target)
    if target_array.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: targets must be integer class indices, got dtype {target_array.dtype}")
    classes = input.shape[1]
    expected = input.shape[:1] + input.shape[2:]
    if target_array.shape != expected:
        raise ValueError(f"nll_loss: for input of shape {input.shape} the target must have shape {expected}, "
                         f"got {target_array.shape}")
    logp = input if input.ndim == 2 else _class_axis_last(input)
    flat = target_array.reshape(-1)
    valid = flat != ignore_index
    if valid.any() and (int(flat[valid].min()) < 0 or int(flat[valid].max()) >= classes):
        raise IndexError(f"nll_loss: target class indices must lie in [0, {classes}), got values in "
                         f"[{int(flat[valid].min())}, {int(flat[valid].max())}]")
    safe = np.where(valid, flat, 0)
    if weight is not None:
        weight_array = weight.array if isinstance(weight, Tensor) else np.asarray(weight)
        w_target = weight_array.astype(input.dtype)[safe] * valid
    else:
        w_target = valid.astype(input.dtype)
    xp = get_array_module(input.array)
    picked = logp[(xp.asarray(np.arange(flat.size)), xp.asarray(safe))]
    loss = -picked * _wrap(xp.asarray(w_target))
    if reduction == "mean":
        return sum(loss) * (1.0 / w_target.sum())
    if reduction == "sum":
        return sum(loss)
    return reshape(loss, expected)


def _check_same_shape(name, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{name}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ; "
                         "reshape one of them (broadcasting here is almost always a bug)")


def _as_target(target, like):
    return target if isinstance(target, Tensor) else Tensor(np.asarray(target, dtype=like.dtype))


def mse_loss(input, target, reduction="mean"):
    """Mean squared error."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("l1_loss", input, target)
    return _reduce(abs(input - target), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """Squared error below `beta`, absolute error above (0.5 d^2 / beta if |d| < beta, else
    |d| - 0.5 beta): robust to outliers, smooth near 0. `beta=0` is the L1 loss."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be a number >= 0, got {beta!r}")
    target = _as_target(target, input)
    _check_same_shape("smooth_l1_loss", input, target)
    if beta == 0:
        return l1_loss(input, target, reduction=reduction)
    diff = input - target
    size = abs(diff)
    loss = where(size < beta, diff * diff * (0.5 / beta), size - 0.5 * beta)
    return _reduce(loss, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 if |d| < delta, else delta (|d| - 0.5 delta): smooth_l1_loss times `delta`
    (with beta = delta)."""
    _check_reduction(reduction)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta <= 0:
        raise ValueError(f"huber_loss: delta must be a number > 0, got {delta!r}")
    target = _as_target(target, input)
    _check_same_shape("huber_loss", input, target)
    diff = input - target
    size = abs(diff)
    loss = where(size < delta, diff * diff * 0.5, (size - 0.5 * delta) * delta)
    return _reduce(loss, reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL(target || input) with `input` given as log-probabilities, pointwise
    target * (log target - input) (0 where target is 0), or with `log_target=True`
    exp(target) * (target - input).

    `reduction='batchmean'` (sum / batch size) is the mathematical KL divergence of a batch;
    'mean' divides by the number of elements as well (PyTorch's default, with its warning).
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce, "mean")
    _check_reduction_name(reduction, ("mean", "batchmean", "sum", "none"))
    target = _as_target(target, input)
    if log_target:
        loss = exp(target) * (target - input)
    else:
        positive = target > 0
        safe = where(positive, target, 1.0)  # target * log(target) is 0 where target is 0
        loss = target * log(safe) - target * input
    if reduction == "batchmean":
        if input.ndim == 0:
            return sum(loss)
        if loss.ndim and loss.shape[0] == input.shape[0]:
            # the per-item sums' mean: sum / batch size, with the batch size read by an op (so a
            # traced model, ONNX export, keeps it dynamic)
            return mean(sum(loss, tuple(range(1, loss.ndim)))) if loss.ndim > 1 else mean(loss)
        return sum(loss) * (1.0 / input.shape[0])
    if reduction == "mean":
        warnings.warn("kl_div: reduction='mean' divides the total loss by both the batch size and the support "
                      "size; 'batchmean' divides only by the batch size and gives the KL divergence. 'mean' will "
                      "behave like 'batchmean' in a future PyTorch release.", UserWarning, stacklevel=2)
    return _reduce(loss, reduction)


class BCEWithLogits(Function):
    """Binary cross-entropy of logits, stable for any magnitude:
    loss = (1 - y) x + (1 + (pw - 1) y) softplus(-x)."""

    def __init__(self, pos_weight):
        self.pos_weight = pos_weight

    def forward(self, x, y):
        xp = get_array_module(x)
        softplus_neg = xp.logaddexp(0, -x).astype(x.dtype, copy=False)
        if self.pos_weight is None:
            return (1 - y) * x + softplus_neg
        return (1 - y) * x + (1 + (self.pos_weight - 1) * y) * softplus_neg

    def backward(self, gy):
        x, y = self.inputs
        pw = self.pos_weight
        gx = gy_target = None
        if x.requires_grad:
            if pw is None:
                gx = gy * (sigmoid(x) - y)
            else:
                coefficient = (y * _wrap(pw - 1)) + 1.0
                gx = gy * ((1.0 - y) - coefficient * sigmoid(-x))
        if y.requires_grad:
            gy_target = -gy * x if pw is None else gy * (softplus(-x) * _wrap(pw - 1) - x)
        return gx, gy_target


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable op (PyTorch semantics)."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    pw = None
    if pos_weight is not None:
        pw = (pos_weight.array if isinstance(pos_weight, Tensor) else np.asarray(pos_weight)).astype(input.dtype)
    loss = BCEWithLogits(pw)(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


class BinaryCrossEntropy(Function):
    """-(y log x + (1 - y) log(1 - x)) with each log clamped at -100, as in PyTorch."""

    def forward(self, x, y):
        xp = get_array_module(x)
        with np.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100.0)
            log_1mx = xp.maximum(xp.log1p(-x), -100.0)
        return -(y * log_x + (1 - y) * log_1mx)

    def backward(self, gy):
        x, y = self.inputs
        gx = gy * (x - y) / maximum((1.0 - x) * x, 1e-12) if x.requires_grad else None
        g_target = None
        if y.requires_grad:
            g_target = gy * (maximum(log(1.0 - x), -100.0) - maximum(log(x), -100.0))
        return gx, g_target


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities in [0, 1] (PyTorch semantics)."""
    _check_reduction(reduction)
    target = _as_target(target, input)
    _check_same_shape("binary_cross_entropy", input, target)
    if input.array.size and (float(input.array.min()) < 0 or float(input.array.max()) > 1):
        raise ValueError("binary_cross_entropy: input must hold probabilities in [0, 1]; "
                         "for logits use binary_cross_entropy_with_logits")
    loss = BinaryCrossEntropy()(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
