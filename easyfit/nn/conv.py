"""Conv1d, Conv2d and ConvTranspose2d."""
import math

import numpy as np

from ..core.tensor import expand_dims, squeeze
from . import functional as F
from .functional._arguments import _pair
from .functional.conv import _single
from . import init
from .module import Module, Parameter

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]


def _check_channels(owner, in_channels, out_channels, groups, padding_mode):
    if padding_mode != "zeros":
        raise ValueError(f"{owner}: only padding_mode='zeros' is supported, got {padding_mode!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{owner}: groups must be a positive integer, got {groups!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{owner}: in_channels ({in_channels}) and out_channels ({out_channels}) must both "
                         f"be divisible by groups ({groups})")


def _reset_conv_parameters(weight, bias):
    """PyTorch's default for every conv: kaiming_uniform_(a=sqrt(5)), bias in +-1/sqrt(fan_in)
    (fan_in from the weight's shape: for a transposed conv that is out_channels/groups * kernel)."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution with PyTorch's arguments, parameter shapes and initialisation.

    weight: (out_channels, in_channels // groups, kh, kw); bias: (out_channels,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", dtype=None):
        super().__init__()
        _check_channels("Conv2d", in_channels, out_channels, groups, padding_mode)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                                         dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)), bias in +-1/sqrt(fan_in)."""
        _reset_conv_parameters(self.weight, self.bias)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_channels}, H, W); "
                             f"got shape {tuple(x.shape)}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv1d(Module):
    """1-D convolution with PyTorch's arguments, parameter shapes and initialisation.

    weight: (out_channels, in_channels // groups, kernel_size); bias: (out_channels,).
    Input (N, C, L) or an unbatched (C, L).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        _check_channels("Conv1d", in_channels, out_channels, groups, padding_mode)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = (_single(kernel_size, "kernel_size"),)
        self.stride = (_single(stride, "stride"),)
        self.padding = padding if isinstance(padding, str) else (_single(padding, "padding"),)
        self.dilation = (_single(dilation, "dilation"),)
        self.groups = int(groups)
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                                         dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self):
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)), bias in +-1/sqrt(fan_in)."""
        _reset_conv_parameters(self.weight, self.bias)

    def forward(self, x):
        if x.ndim not in (2, 3) or x.shape[-2] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_channels}, L) or "
                             f"({self.in_channels}, L); got shape {tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = expand_dims(x, 0)
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        out = F.conv1d(x, self.weight, self.bias, self.stride[0], padding, self.dilation[0], self.groups)
        return squeeze(out, 0) if unbatched else out

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this layer without pickle."""
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size[0],
                    stride=self.stride[0], padding=self.padding if isinstance(self.padding, str) else self.padding[0],
                    dilation=self.dilation[0], groups=self.groups, bias=self.bias is not None,
                    dtype=str(self.weight.dtype))

    def extra_repr(self):
        return _conv_repr(self, (0,), (1,))


class ConvTranspose2d(Module):
    """Transposed 2-D convolution (the gradient of Conv2d with respect to its input; used to
    upsample in decoders and GANs), with PyTorch's arguments, shapes and initialisation.

    weight: (in_channels, out_channels // groups, kh, kw); bias: (out_channels,).
    `forward(x, output_size=None)`: `output_size` picks the output_padding that gives that size.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        _check_channels("ConvTranspose2d", in_channels, out_channels, groups, padding_mode)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.output_padding = _pair(output_padding, "output_padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        for extra, s, d in zip(self.output_padding, self.stride, self.dilation):
            if not 0 <= extra < max(s, d):
                raise ValueError(f"ConvTranspose2d: output_padding must be smaller than stride or dilation, got "
                                 f"output_padding={self.output_padding}, stride={self.stride}, "
                                 f"dilation={self.dilation}")
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        self.weight = Parameter(np.empty((self.in_channels, self.out_channels // self.groups) + self.kernel_size,
                                         dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self):
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)), bias in +-1/sqrt(fan_in)."""
        _reset_conv_parameters(self.weight, self.bias)

    def forward(self, x, output_size=None):
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_channels}, H, W) or "
                             f"({self.in_channels}, H, W); got shape {tuple(x.shape)}")
        unbatched = x.ndim == 3
        if unbatched:
            x = expand_dims(x, 0)
        output_padding = self._output_padding(x.shape[2:], output_size)
        out = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                 self.dilation)
        return squeeze(out, 0) if unbatched else out

    def _output_padding(self, input_size, output_size):
        if output_size is None:
            return self.output_padding
        output_size = tuple(int(n) for n in output_size)[-2:]
        if len(output_size) != 2:
            raise ValueError(f"{self!r}: output_size must give the height and width, got {output_size!r}")
        padding = []
        for axis in range(2):
            smallest = ((input_size[axis] - 1) * self.stride[axis] - 2 * self.padding[axis]
                        + self.dilation[axis] * (self.kernel_size[axis] - 1) + 1)
            largest = smallest + self.stride[axis] - 1
            if not smallest <= output_size[axis] <= largest:
                raise ValueError(f"{self!r}: requested output_size {output_size} is not reachable from input size "
                                 f"{tuple(input_size)}: axis {axis} allows sizes {smallest} to {largest}")
            padding.append(output_size[axis] - smallest)
        return tuple(padding)

    def export_args(self):
        """Constructor arguments, so `learn.export` can rebuild this layer without pickle."""
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, output_padding=self.output_padding, groups=self.groups,
                    bias=self.bias is not None, dilation=self.dilation, dtype=str(self.weight.dtype))

    def extra_repr(self):
        text = _conv_repr(self, (0, 0), (1, 1))
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        return text


def _conv_repr(conv, no_padding, no_dilation):
    text = f"{conv.in_channels}, {conv.out_channels}, kernel_size={conv.kernel_size}, stride={conv.stride}"
    if conv.padding != no_padding:
        text += f", padding={conv.padding}"
    if conv.dilation != no_dilation:
        text += f", dilation={conv.dilation}"
    if conv.groups != 1:
        text += f", groups={conv.groups}"
    if conv.bias is None:
        text += ", bias=False"
    return text
