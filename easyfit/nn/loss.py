"""Loss modules: CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
BCEWithLogitsLoss, BCELoss."""
from ..core.tensor import Tensor
from . import functional as F
from .functional._arguments import _check_reduction_name, _legacy_reduction
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
           "BCEWithLogitsLoss", "BCELoss"]


class _Loss(Module):
    """Base of the loss layers (PyTorch's `torch.nn.modules.loss._Loss`): keeps `reduction`,
    set from PyTorch's deprecated `size_average`/`reduce` pair when those are given."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = _legacy_reduction(size_average, reduce, reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits with class indices or probabilities (see F.cross_entropy)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction=reduction)
        # `weight` is a constant, kept as a buffer (as in PyTorch) so it follows .to(device).
        if weight is not None:
            self.register_buffer("weight", weight if isinstance(weight, Tensor) else Tensor(weight))
        else:
            self.weight = None
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (use after LogSoftmax), with class weights and ignore_index."""
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction=reduction)
        if weight is not None:
            self.register_buffer("weight", weight if isinstance(weight, Tensor) else Tensor(weight))
        else:
            self.weight = None
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    """Mean squared error (or its sum, or per element, by `reduction`)."""
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Mean absolute error (or its sum, or per element, by `reduction`)."""
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    """Squared error below `beta`, absolute error above it (see F.smooth_l1_loss)."""
    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this loss without pickle."""
        return {"reduction": self.reduction, "beta": self.beta}

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    """Squared error below `delta`, `delta` times the absolute error above it (see F.huber_loss)."""
    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(_Loss):
    """KL divergence of log-probabilities `input` from `target` (see F.kl_div); use
    reduction='batchmean' for the true KL divergence of a batch."""
    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        Module.__init__(self)
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce, "mean")
        _check_reduction_name(reduction, ("mean", "batchmean", "sum", "none"))
        self.reduction, self.log_target = reduction, log_target

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this loss without pickle."""
        return {"reduction": self.reduction, "log_target": self.log_target}

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits, computed stably; `pos_weight` weighs the positive class."""
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction=reduction)
        for name, value in (("weight", weight), ("pos_weight", pos_weight)):
            if value is not None:
                self.register_buffer(name, value if isinstance(value, Tensor) else Tensor(value))
            else:
                setattr(self, name, None)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities in [0, 1] (log clamped at -100, as PyTorch)."""
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction=reduction)
        if weight is not None:
            self.register_buffer("weight", weight if isinstance(weight, Tensor) else Tensor(weight))
        else:
            self.weight = None

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)
