"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from ..core import blas
from ..core.backend import get_array_module
from .optimizer import Optimizer


class SGD(Optimizer):
    """PyTorch's SGD, step for step::

        g = grad + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g (later steps)
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)   # doctest: +SKIP
    """
    _elementwise = True

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _validate(self, hyper):
        self._check_range(hyper, "lr", 0.0)
        self._check_range(hyper, "momentum", 0.0)
        self._check_range(hyper, "dampening", 0.0, 1.0, high_open=False)
        self._check_range(hyper, "weight_decay", 0.0)
        if not isinstance(hyper["nesterov"], bool):
            raise TypeError(f"SGD: nesterov must be True or False, got {hyper['nesterov']!r}")
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"SGD: nesterov momentum requires momentum > 0 and dampening = 0, "
                             f"got momentum={hyper['momentum']!r}, dampening={hyper['dampening']!r}")

    # The momentum buffer is made on the first step with momentum, as a copy of the gradient.
    _state_names = ("step", "momentum_buffer")

    def _update(self, group, param, grad, state, scratch):
        xp = get_array_module(param)
        first, second = scratch
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if weight_decay != 0:
            xp.multiply(param, weight_decay, out=first)
            xp.add(grad, first, out=first)
            grad = first
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = xp.array(grad, dtype=param.dtype, copy=True)
            else:
                dampening = group["dampening"]
                if not blas.axpby(1 - dampening, grad, momentum, buffer):   # one pass where BLAS applies
                    buffer *= momentum
                    if dampening != 0:
                        xp.multiply(grad, 1 - dampening, out=second)
                        buffer += second
                    else:
                        buffer += grad
            if group["nesterov"]:
                xp.multiply(buffer, momentum, out=second)
                xp.add(grad, second, out=first)
                grad = first
            else:
                grad = buffer
        if not blas.axpy(-group["lr"], grad, param):
            xp.multiply(grad, -group["lr"], out=second)
            param += second
