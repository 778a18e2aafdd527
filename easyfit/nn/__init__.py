"""Layers, losses and initialisation: `easyfit.nn` (PyTorch's names and semantics).

>>> import easyfit as ef
>>> from easyfit import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> loss = nn.CrossEntropyLoss()(model(ef.randn(2, 4)), ef.tensor([0, 2]))
>>> loss.backward()
>>> model[0].weight.grad.shape
(8, 4)
"""
from . import functional, init, utils
from .module import Module, Parameter, Sequential, ModuleList, ModuleDict
from .linear import Linear, Identity, Flatten
from .activation import ReLU, GELU, Tanh, Sigmoid, Softmax, LogSoftmax, LeakyReLU, SiLU
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm, GroupNorm
from .dropout import Dropout
from .upsampling import Upsample, UpsamplingNearest2d, UpsamplingBilinear2d
from .embedding import Embedding
from .loss import (CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
                   BCEWithLogitsLoss, BCELoss)
from .distance import CosineSimilarity
from .recurrent import RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell
from .attention import MultiheadAttention
from .transformer import (Transformer, TransformerEncoder, TransformerDecoder, TransformerEncoderLayer,
                          TransformerDecoderLayer)
from . import modules  # PyTorch's paths: easyfit.nn.modules.linear.Linear, ...loss._Loss, ...

__all__ = [
    "functional", "init", "utils", "modules", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "Linear", "Identity", "Flatten", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU",
    "Conv1d", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d",
    "BatchNorm2d", "LayerNorm", "GroupNorm", "Dropout", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
    "Embedding", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
    "BCEWithLogitsLoss", "BCELoss", "CosineSimilarity", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
    "TransformerDecoderLayer",
]
