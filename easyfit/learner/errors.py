"""Errors that say what went wrong, with the shapes, dtypes and batch index involved."""
from ..core.tensor import Tensor


class LossError(ValueError):
    """The loss function could not be applied to the model's output and the targets."""


class BatchError(RuntimeError):
    """A data loader failed, or yielded something that is not a batch; `batch_index` says which."""

    def __init__(self, message, batch_index=None):
        super().__init__(message)
        self.batch_index = batch_index


# Losses comparing output and target element by element: shapes must match exactly,
# otherwise broadcasting silently computes something else ((N, 1) against (N,) gives (N, N)).
_ELEMENTWISE_LOSSES = ("MSELoss", "L1Loss", "BCEWithLogitsLoss", "BCELoss", "SmoothL1Loss", "HuberLoss")
# Losses taking class scores (N, C, ...) and integer class targets (N, ...).
_CLASS_INDEX_LOSSES = ("CrossEntropyLoss", "NLLLoss")


def check_loss_inputs(loss_func, pred, target):
    """Check, before the first step, that the model's output fits the loss and the targets.

    Catches the mistakes a loss would accept silently or report without context:
    elementwise losses broadcasting mismatched shapes, integer targets for a regression
    loss, float or out-of-range class targets for cross-entropy.
    """
    loss_name = type(loss_func).__name__
    if not isinstance(pred, Tensor):
        raise LossError(f"the model returned a {type(pred).__name__}, but {loss_name} needs a Tensor; "
                        "make forward() return the output Tensor")
    if not isinstance(target, Tensor):
        raise LossError(f"the target is a {type(target).__name__}, expected a Tensor from the data loader")
    pred_desc = f"model output of shape {tuple(pred.shape)} (dtype {pred.dtype})"
    target_desc = f"targets of shape {tuple(target.shape)} (dtype {target.dtype})"
    if loss_name in _ELEMENTWISE_LOSSES:
        if tuple(pred.shape) != tuple(target.shape):
            hint = ""
            if pred.shape[-1:] == (1,) and tuple(pred.shape[:-1]) == tuple(target.shape):
                hint = " (the output has a trailing axis of size 1: flatten it, e.g. end the model with Flatten(0))"
            raise LossError(f"{loss_name} compares output and target element by element, but got a {pred_desc} "
                            f"and {target_desc}; they must have the same shape{hint}")
        if target.dtype.kind not in "fc":
            raise LossError(f"{loss_name} needs floating point targets, got {target_desc} with a {pred_desc}; "
                            "convert the targets to float32")
    elif loss_name in _CLASS_INDEX_LOSSES:
        if target.dtype.kind in "fc" and tuple(target.shape) == tuple(pred.shape):
            return  # class probabilities as targets
        if target.dtype.kind not in "iu":
            raise LossError(f"{loss_name} needs integer class indices as targets, got {target_desc} with a "
                            f"{pred_desc}; convert the targets to int64 (or use MSELoss for regression)")
        if pred.ndim != target.ndim + 1 or pred.shape[:1] != target.shape[:1] or pred.shape[2:] != target.shape[1:]:
            raise LossError(f"{loss_name} expects an output of shape (N, C) or (N, C, d1, ...) and targets of shape "
                            f"(N,) or (N, d1, ...), but got a {pred_desc} and {target_desc}")
        values = target.numpy_cpu()
        ignore = getattr(loss_func, "ignore_index", None)
        if ignore is not None:
            values = values[values != ignore]
        n_classes = pred.shape[1]
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise LossError(f"{loss_name}: the targets hold class indices from {int(values.min())} to "
                            f"{int(values.max())}, but the {pred_desc} scores {n_classes} classes (0..{n_classes - 1}); "
                            "the model's last layer needs one output per class")
