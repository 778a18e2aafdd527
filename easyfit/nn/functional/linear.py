"""The fused linear op: x @ W.T + b in one Function."""
from ...core.autograd import _grad_enabled
from ...core.tensor import _wrap, Function, matmul, reshape, sum, transpose


class Linear(Function):
    """y = x @ weight.T + bias, for x of shape (..., in_features)."""

    def forward(self, x, weight, bias=None):
        if x.ndim == 2:
            y = x @ weight.T
        else:
            y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
        if bias is not None:
            y += bias
        return y

    def backward(self, gy):
        x, weight = self.inputs[0], self.inputs[1]
        has_bias = len(self.inputs) == 3
        out_features, in_features = weight.shape
        if not _grad_enabled[0]:  # first-order: plain arrays, no graph
            g2 = gy.array.reshape(-1, out_features)
            gx = _wrap((g2 @ weight.array).reshape(x.shape)) if x.requires_grad else None
            gw = _wrap(g2.T @ x.array.reshape(-1, in_features)) if weight.requires_grad else None
            gb = _wrap(g2.sum(axis=0)) if has_bias and self.inputs[2].requires_grad else None
        else:
            g2 = reshape(gy, (-1, out_features))
            gx = reshape(matmul(g2, weight), x.shape) if x.requires_grad else None
            gw = matmul(transpose(g2), reshape(x, (-1, in_features))) if weight.requires_grad else None
            gb = sum(g2, axis=0) if has_bias and self.inputs[2].requires_grad else None
        return (gx, gw, gb) if has_bias else (gx, gw)


def linear(x, weight, bias=None):
    """x @ weight.T + bias (weight has PyTorch's shape (out_features, in_features))."""
    return Linear()(x, weight, bias) if bias is not None else Linear()(x, weight)
