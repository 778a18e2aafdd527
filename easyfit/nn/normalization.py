"""BatchNorm1d, BatchNorm2d, LayerNorm and GroupNorm."""
import numpy as np

from ..core.tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"]


class _BatchNorm(Module):
    """Batch normalization over the channel axis 1, with PyTorch's buffers and defaults.

    Training mode normalizes with batch statistics and updates running_mean and
    running_var (momentum=None: a cumulative average); eval mode uses the running ones.
    """
    expected_ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype=dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        if x.ndim not in self.expected_ndims or x.shape[1] != self.num_features:
            shapes = " or ".join(["(N, C)", "(N, C, L)", "(N, C, H, W)"][n - 2] for n in self.expected_ndims)
            raise ValueError(f"{self!r}: expected input of shape {shapes.replace('C', str(self.num_features))}; "
                             f"got shape {tuple(x.shape)}")
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked.array)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=True,
                                momentum=momentum, eps=self.eps)
        if self.training or not self.track_running_stats:  # batch statistics, nothing to update
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """For inputs (N, C) or (N, C, L)."""
    expected_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """For inputs (N, C, H, W)."""
    expected_ndims = (4,)


class LayerNorm(Module):
    """Normalizes over the trailing `normalized_shape` axes; weight/bias have that shape."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype))
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if bias else None
        else:
            self.weight = self.bias = None

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        if tuple(x.shape[x.ndim - len(self.normalized_shape):]) != self.normalized_shape:
            raise ValueError(f"{self!r}: expected input of shape (..., {', '.join(map(str, self.normalized_shape))}); "
                             f"got shape {tuple(x.shape)}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalizes each group of num_channels/num_groups channels over its channels and positions,
    per sample (independent of the batch size); weight/bias (num_channels,) as in PyTorch."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 \
                or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups!r})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, int(num_channels), eps, affine
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if affine:
            self.weight = Parameter(np.ones(self.num_channels, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_channels, dtype=dtype)) if bias else None
        else:
            self.weight = self.bias = None
        if device is not None:
            self.to(device)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this layer without pickle."""
        args = dict(num_groups=self.num_groups, num_channels=self.num_channels, eps=self.eps, affine=self.affine,
                    bias=self.bias is not None or not self.affine)
        if self.weight is not None:
            args["dtype"] = str(self.weight.dtype)
        return args

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.num_channels}, *); got shape "
                             f"{tuple(x.shape)}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        text = f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
        return text + f", bias={self.bias is not None}"
