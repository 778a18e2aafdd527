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
from .conv import Conv2d
from .pooling import MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .dropout import Dropout
from .embedding import Embedding
from .loss import (CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
                   BCEWithLogitsLoss, BCELoss)
from .distance import CosineSimilarity
from .recurrent import RNN, LSTM, GRU, RNNCell, LSTMCell, GRUCell
from .attention import MultiheadAttention
from .transformer import (Transformer, TransformerEncoder, TransformerDecoder, TransformerEncoderLayer,
                          TransformerDecoderLayer)

__all__ = [
    "functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Linear",
    "Identity", "Flatten", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU", "Conv2d",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout",
    "Embedding", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
    "BCEWithLogitsLoss", "BCELoss", "CosineSimilarity",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "MultiheadAttention",
    "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
]
