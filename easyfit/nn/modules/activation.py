"""torch.nn.modules.activation: the activation layers (easyfit.nn.activation) and, as in PyTorch,
MultiheadAttention (easyfit.nn.attention)."""
from ..activation import ReLU, GELU, Tanh, Sigmoid, Softmax, LogSoftmax, LeakyReLU, SiLU
from ..attention import MultiheadAttention

__all__ = ["ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "LeakyReLU", "SiLU", "MultiheadAttention"]
