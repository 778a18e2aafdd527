"""Dropout."""
from . import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zeroes elements with probability p in training (scaling the rest); identity in eval."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p!r}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
