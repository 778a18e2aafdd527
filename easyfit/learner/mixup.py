"""MixUp and CutMix: train on blends of pairs of images, with the loss blended alike (fastai's callbacks).

Both act on training batches only. Each batch is paired with a shuffled copy of
itself; the inputs are mixed with weight `lam` (MixUp: a per-item weighted average of the
two images; CutMix: a rectangle of the partner pasted in, `lam` = the share of the
image kept), and the loss becomes `lam * loss(pred, y) + (1 - lam) * loss(pred, y_partner)`.
Draws come from easyfit's global generator, so `manual_seed` and checkpoints reproduce them.
"""
import copy

import numpy as np

from ..core.backend import get_array_module, to_device
from ..core.random import default_generator
from ..core.tensor import Tensor
from .callback import Callback


class _MixHandler(Callback):
    """Shared part: the partner permutation, the blended loss, putting the loss back after training."""
    run_valid = False
    order = 10   # before the progress, recorder and other batch callbacks see the batch

    def __init__(self, alpha):
        if not alpha > 0:
            raise ValueError(f"{type(self).__name__}: alpha must be > 0 (the Beta distribution's parameter), "
                             f"got {alpha!r}")
        self.alpha = float(alpha)
        self.lam = None

    def before_train(self):
        learn = self.learner
        if not hasattr(learn.loss_func, "reduction"):
            raise TypeError(f"{type(self).__name__} needs a loss with a `reduction` option (per-item losses), "
                            f"such as nn.CrossEntropyLoss(); got {type(learn.loss_func).__name__}")
        self.old_loss = learn.loss_func
        self.unreduced = copy.copy(learn.loss_func)
        self.unreduced.reduction = "none"
        learn.loss_func = self.mixed_loss

    def after_train(self):
        self._restore()

    def after_fit(self):
        self._restore()

    def _restore(self):
        old = getattr(self, "old_loss", None)
        if old is not None:
            self.learner.loss_func = old
            self.old_loss = None

    def _partner(self, n):
        self.permutation = default_generator().permutation(n)

    def mixed_loss(self, pred, target):
        """lam * loss(pred, target) + (1 - lam) * loss(pred, partner's target), averaged over the batch."""
        ours = self.unreduced(pred, target)
        theirs = self.unreduced(pred, self.partner_target)
        if ours.ndim > 1:   # e.g. per-position losses: average all but the batch axis
            axes = tuple(range(1, ours.ndim))
            ours, theirs = ours.mean(axis=axes), theirs.mean(axis=axes)
        lam = self._lam_tensor(ours)
        return (ours * lam + theirs * (1 - lam)).mean()

    def _lam_tensor(self, like):
        lam = np.asarray(self.lam, dtype=like.dtype)
        return Tensor(to_device(lam, like.device))


class MixUp(_MixHandler):
    """Blend each training image with a partner: `lam * x + (1 - lam) * x_partner`, lam ~ Beta(alpha, alpha)
    per item and at least 0.5 (so each item stays mostly itself, as fastai does)."""

    def __init__(self, alpha=0.4):
        super().__init__(alpha)

    def before_batch(self):
        learn = self.learner
        x = learn.xb[0]
        n = x.shape[0]
        lam = default_generator().beta(self.alpha, self.alpha, size=n)
        self.lam = np.maximum(lam, 1 - lam).astype(np.float32)
        self._partner(n)
        xp = get_array_module(x.array)
        permutation = xp.asarray(self.permutation)
        shape = (n,) + (1,) * (x.ndim - 1)
        lam = xp.asarray(self.lam, dtype=x.array.dtype).reshape(shape)
        mixed = x.array * lam + x.array[permutation] * (1 - lam)
        learn.xb = (Tensor(mixed),) + tuple(learn.xb[1:])
        self.partner_target = learn.yb[permutation]


class CutMix(_MixHandler):
    """Paste a random rectangle of a partner image into each training image (one box per batch,
    area (1 - lam) of the image with lam ~ Beta(alpha, alpha)); lam is then the share kept."""

    def __init__(self, alpha=1.0):
        super().__init__(alpha)

    def before_batch(self):
        learn = self.learner
        x = learn.xb[0]
        if x.ndim != 4:
            raise ValueError(f"CutMix works on image batches (N, C, H, W), got shape {tuple(x.shape)}")
        n, _, height, width = x.shape
        generator = default_generator()
        lam = float(generator.beta(self.alpha, self.alpha))
        self._partner(n)
        cut = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        centre_y, centre_x = int(generator.integers(height)), int(generator.integers(width))
        top, bottom = np.clip([centre_y - cut_h // 2, centre_y + cut_h // 2], 0, height)
        left, right = np.clip([centre_x - cut_w // 2, centre_x + cut_w // 2], 0, width)
        xp = get_array_module(x.array)
        permutation = xp.asarray(self.permutation)
        mixed = x.array.copy()
        mixed[:, :, top:bottom, left:right] = x.array[permutation][:, :, top:bottom, left:right]
        self.box = (int(top), int(bottom), int(left), int(right))
        self.lam = np.full(n, 1.0 - (bottom - top) * (right - left) / float(height * width), dtype=np.float32)
        learn.xb = (Tensor(mixed),) + tuple(learn.xb[1:])
        self.partner_target = learn.yb[permutation]
