"""The vision recipe's small CNN pools before its ReLU: the same function and gradients as
the usual conv-BN-ReLU-pool order, with ReLU on a quarter of the activations."""
import numpy as np

import easyfit as ef
from easyfit import nn
from recipes.vision import small_cnn


def test_pool_then_relu_equals_relu_then_pool():
    ef.manual_seed(0)
    ours = small_cnn(1, 10, 12, width=4, dropout=0.0)
    usual = nn.Sequential(*[ours[i] for i in (0, 1, 3, 2, 4, 5, 7, 6)], *list(ours)[8:])
    assert [type(m).__name__ for m in list(usual)[:4]] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert list(ours.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                       "1.running_var", "1.num_batches_tracked", "4.weight", "4.bias", "5.weight",
                                       "5.bias", "5.running_mean", "5.running_var", "5.num_batches_tracked",
                                       "9.weight", "9.bias", "12.weight", "12.bias"]
    x = np.maximum(np.random.default_rng(0).standard_normal((3, 1, 12, 12)), -0.5).astype(np.float64)
    grads = []
    for model in (ours, usual):
        model.double() if hasattr(model, "double") else model.to(np.float64)
        model.zero_grad()
        xt = ef.tensor(x, requires_grad=True)
        out = model(xt)
        out.backward(ef.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape)))
        grads.append([out.numpy().copy(), xt.grad.numpy().copy()] + [p.grad.numpy().copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
