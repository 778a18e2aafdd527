"""PyTorch's module paths (`torch.nn.modules.linear.Linear`, `...loss._Loss`, ...), so code that
imports layers from there runs with only `torch` replaced by `easyfit`.

Each submodule only re-exports the classes from where easyfit defines them (no second copy):
`easyfit.nn.modules.conv.Conv2d is easyfit.nn.Conv2d`.
"""
from . import (activation, batchnorm, container, conv, distance, dropout, flatten, linear, loss, module,
               normalization, pooling, rnn, sparse, transformer, upsampling)
from .module import Module
from .container import Sequential, ModuleList, ModuleDict
from .linear import Linear, Identity, NonDynamicallyQuantizableLinear
from .flatten import Flatten
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .activation import ReLU, GELU, Tanh, Sigmoid, Softmax, LogSoftmax, LeakyReLU, SiLU, Softplus, MultiheadAttention
from .loss import (CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
                   BCEWithLogitsLoss, BCELoss)
from .distance import CosineSimilarity
from .batchnorm import BatchNorm1d, BatchNorm2d
from .normalization import LayerNorm, GroupNorm
from .pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from .dropout import Dropout
from .sparse import Embedding
from .rnn import RNNBase, RNN, LSTM, GRU, RNNCellBase, RNNCell, LSTMCell, GRUCell
from .transformer import (Transformer, TransformerEncoder, TransformerDecoder, TransformerEncoderLayer,
                          TransformerDecoderLayer)
from .upsampling import Upsample, UpsamplingNearest2d, UpsamplingBilinear2d

__all__ = [
    "Module", "Sequential", "ModuleList", "ModuleDict", "Linear", "Identity", "NonDynamicallyQuantizableLinear",
    "Flatten", "Conv1d", "Conv2d", "ConvTranspose2d", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU", "Softplus",
    "MultiheadAttention", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
    "KLDivLoss", "BCEWithLogitsLoss", "BCELoss", "CosineSimilarity", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
    "GroupNorm", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Dropout", "Embedding", "RNNBase", "RNN", "LSTM",
    "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer", "Upsample", "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
]
