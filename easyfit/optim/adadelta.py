"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from ..core.backend import get_array_module
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """PyTorch's Adadelta, step for step::

        g = grad + weight_decay * p
        v = rho * v + (1 - rho) * g * g
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta

    The ratio of the two running averages sets the step's scale, so `lr=1.0` (the
    default) is the usual choice.
    """
    _elementwise = True
    _state_names = ("step", "square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _validate(self, hyper):
        self._check_range(hyper, "lr", 0.0)
        self._check_range(hyper, "rho", 0.0, 1.0, high_open=False)
        self._check_range(hyper, "eps", 0.0)
        self._check_range(hyper, "weight_decay", 0.0)

    def _init_state(self, group, param):
        xp = get_array_module(param)
        return {"step": 0, "square_avg": xp.zeros_like(param), "acc_delta": xp.zeros_like(param)}

    def _update(self, group, param, grad, state, scratch):
        xp = get_array_module(param)
        first, second = scratch
        rho, eps = group["rho"], group["eps"]
        if group["weight_decay"] != 0:
            xp.multiply(param, group["weight_decay"], out=first)
            xp.add(grad, first, out=first)
            grad = first
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg *= rho
        xp.multiply(grad, grad, out=second)
        second *= 1 - rho
        square_avg += second
        xp.add(square_avg, eps, out=second)
        xp.sqrt(second, out=second)              # std
        xp.divide(grad, second, out=second)      # g / std (grad may live in `first`, read it now)
        xp.add(acc_delta, eps, out=first)
        xp.sqrt(first, out=first)
        first *= second                          # delta
        acc_delta *= rho
        xp.multiply(first, first, out=second)
        second *= 1 - rho
        acc_delta += second
        first *= -group["lr"]
        param += first
