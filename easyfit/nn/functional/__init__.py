"""Functional forms of the layers and losses: `easyfit.nn.functional` (import as F).

One module per family (linear, activation, conv, pooling, normalization, loss,
distance, upsampling, embedding, dropout, shape); the public names are re-exported here.

The ops that dominate training time are fused into single `Function`s whose backward
is computed directly on arrays in first-order backward and, when a graph of the
backward is requested (`create_graph=True`), through differentiable ops, so higher-order
gradients still work:

- `linear`: x @ W.T + b in one op;
- `conv2d`: strided windows (im2col) and one BLAS matmul; backward is one matmul for the
  weight and a col2im that loops only over the kernel offsets;
- `max_pool2d` / `avg_pool2d`: loops over the kernel offsets only, argmax backward;
- `batch_norm` / `layer_norm`: forward and closed-form backward in one op each;
- `cross_entropy`: log-softmax and NLL (ignore_index, label_smoothing, class weight);
- `embedding`: a row gather whose backward is a fast scatter-add.

Convolution and pooling compute in channels-last memory and return NCHW views of it,
so a stack of them never transposes activations back and forth.
"""
from .linear import linear
from .activation import erf, gelu, leaky_relu, log_softmax, logsumexp, relu, silu, softmax, softplus
from .conv import conv1d, conv2d, conv_transpose2d
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .normalization import batch_norm, group_norm, layer_norm
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div, l1_loss,
                   mse_loss, nll_loss, smooth_l1_loss)
from .distance import cosine_similarity
from .upsampling import interpolate
from .embedding import embedding
from .dropout import dropout
from .shape import flatten, one_hot, pad
from ...core.functions import sigmoid, tanh
# The op classes, for code that inspects a graph (ONNX export, profiling).
from .linear import Linear
from .activation import Erf, GELU, LogSoftmax, LogSumExp, Softmax
from .conv import Conv2d, Conv2dGradInput, Conv2dGradWeight
from .pooling import AvgPool2d, AvgPool2dGrad, MaxPool2d, MaxPool2dGather, MaxPool2dGrad
from .normalization import BatchNormTrain, LayerNormFunction
from .loss import BCEWithLogits, BinaryCrossEntropy, SoftmaxCrossEntropy
from .embedding import EmbeddingGrad, EmbeddingLookup

__all__ = [
    "linear", "conv1d", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "batch_norm", "layer_norm", "group_norm",
    "dropout", "embedding", "one_hot", "pad", "relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu", "softplus",
    "erf", "softmax", "log_softmax", "logsumexp", "flatten", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "smooth_l1_loss", "huber_loss", "kl_div",
    "cosine_similarity", "interpolate",
]
