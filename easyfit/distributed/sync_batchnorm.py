"""SyncBatchNorm: batch normalization whose training statistics cover the global batch.

It lives in easyfit.distributed rather than easyfit.nn because it talks to the other
processes, and nn sits below distributed: nn never imports upward. It is an
`nn.Module` like BatchNorm, with the same parameters, buffers and state-dict keys,
so a checkpoint moves between the two.

In training, each process sums x and x*x over its share of the batch; one allreduce
(differentiable: its backward is an allreduce of the gradients) gives the global
mean and variance, so the output, the gradients and the running statistics equal
those of BatchNorm on the whole global batch in one process. In eval mode, and in a
world of one, it is plain BatchNorm.
"""
import numpy as np

from ..core.backend import to_device
from ..core.tensor import Function, Tensor
from ..core import functions as _ops
from ..nn.module import Module
from ..nn.normalization import _BatchNorm
from . import world


class AllReduceSum(Function):
    """Sum over processes, differentiable: the gradient of a sum over ranks is the sum of the gradients."""

    def forward(self, x):
        return world.all_reduce(x, "sum")

    def backward(self, grad):
        return AllReduceSum.apply(grad)


def all_reduce_sum(x):
    """`x` summed over every process, keeping it in the autograd graph."""
    return AllReduceSum.apply(x)


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over inputs (N, C), (N, C, L) or (N, C, H, W) with statistics over all processes.

    Same arguments, parameters and buffers as `nn.BatchNorm1d/2d`. Every process must
    run the layer in the same order (as for any collective).
    """
    expected_ndims = (2, 3, 4)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """`module` with every BatchNorm1d/2d in it replaced by a SyncBatchNorm (PyTorch's name).

        Each SyncBatchNorm takes over its BatchNorm's settings, mode, Parameters (the
        same objects, so an optimizer built earlier still holds them) and buffers, so
        the state dict is unchanged. Modules held twice are converted once; containers
        (Sequential, ModuleList, lists, tuples and dicts in attributes) are updated in
        place. Returns the converted module: a new one when `module` itself is a
        BatchNorm, else `module`. There are no process groups: all processes take part.

        >>> from easyfit import nn
        >>> model = SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
        >>> type(model[1]).__name__
        'SyncBatchNorm'
        """
        if process_group is not None:
            raise ValueError("SyncBatchNorm.convert_sync_batchnorm: easyfit has no process groups; every process "
                             f"takes part (leave process_group=None), got {process_group!r}")
        return _convert(module, cls, {})

    def forward(self, x):
        """Normalise with the global batch's statistics in training, the running ones in eval."""
        if not self.training or world.world_size() == 1:
            return super().forward(x)
        if x.ndim not in self.expected_ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.num_features}, ...); got {tuple(x.shape)}")
        axes = (0,) + tuple(range(2, x.ndim))
        local_count = x.numel() // x.shape[1] if x.numel() else 0
        counts = Tensor(to_device(np.full(1, local_count, dtype=x.dtype), x.device))
        local = _ops.concatenate([x.sum(axis=axes), (x * x).sum(axis=axes), counts], axis=0)
        total = all_reduce_sum(local)
        channels = self.num_features
        count = float(total.array[-1])
        if count <= 1:
            raise ValueError(f"{self!r}: expected more than 1 value per channel over all processes, got {count:g}")
        mean = total[:channels] / count
        # E[x^2] - E[x]^2 in one message; rounding can take it just below 0 for a constant channel
        var = _ops.maximum(total[channels:2 * channels] / count - mean * mean, 0.0)
        shape = (1, channels) + (1,) * (x.ndim - 2)
        invstd = (var + self.eps) ** -0.5
        y = (x - mean.reshape(shape)) * invstd.reshape(shape)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            self.num_batches_tracked.array += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked.array)
            batch_mean = mean.array.astype(self.running_mean.dtype)
            batch_var = var.array.astype(self.running_var.dtype) * (count / (count - 1))
            self.running_mean.array *= 1 - momentum
            self.running_mean.array += momentum * batch_mean
            self.running_var.array *= 1 - momentum
            self.running_var.array += momentum * batch_var
        return y


def _convert(value, cls, done):
    """`value` with its BatchNorms replaced (see SyncBatchNorm.convert_sync_batchnorm); `done` maps id -> result."""
    if isinstance(value, _BatchNorm) and not isinstance(value, SyncBatchNorm):
        if id(value) not in done:
            done[id(value)] = _sync_from(value, cls)
        return done[id(value)]
    if isinstance(value, Module):
        if id(value) not in done:
            done[id(value)] = value
            for name, member in list(vars(value).items()):
                converted = _convert(member, cls, done)
                if converted is not member:
                    setattr(value, name, converted)
        return done[id(value)]
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _convert(item, cls, done)
        return value
    if isinstance(value, dict):
        for key, item in list(value.items()):
            value[key] = _convert(item, cls, done)
        return value
    if isinstance(value, tuple):
        items = [_convert(item, cls, done) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # a namedtuple, or not
    return value


def _sync_from(batchnorm, cls):
    sync = cls(batchnorm.num_features, eps=batchnorm.eps, momentum=batchnorm.momentum, affine=batchnorm.affine,
               track_running_stats=batchnorm.track_running_stats)
    sync.weight, sync.bias = batchnorm.weight, batchnorm.bias
    sync.running_mean, sync.running_var = batchnorm.running_mean, batchnorm.running_var
    sync.num_batches_tracked = batchnorm.num_batches_tracked
    sync.training = batchnorm.training
    return sync
