"""Adagrad: per-weight learning rates that shrink with the sum of squared gradients."""
from ..core.backend import get_array_module
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """PyTorch's Adagrad, step for step (t counts this parameter's steps)::

        g = grad + weight_decay * p
        lr_t = lr / (1 + (t - 1) * lr_decay)
        sum = sum + g * g                 (sum starts at initial_accumulator_value)
        p = p - lr_t * g / (sqrt(sum) + eps)

    Suited to sparse features: rarely seen weights keep a large step.
    """
    _elementwise = True
    _state_names = ("step", "sum")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _validate(self, hyper):
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            self._check_range(hyper, name, 0.0)

    def _init_state(self, group, param):
        xp = get_array_module(param)
        return {"step": 0, "sum": xp.full_like(param, group["initial_accumulator_value"])}

    def _update(self, group, param, grad, state, scratch):
        xp = get_array_module(param)
        first, second = scratch
        if group["weight_decay"] != 0:
            xp.multiply(param, group["weight_decay"], out=first)
            xp.add(grad, first, out=first)
            grad = first
        step_lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        total = state["sum"]
        xp.multiply(grad, grad, out=second)
        total += second
        xp.sqrt(total, out=second)
        second += group["eps"]
        xp.divide(grad, second, out=second)
        second *= -step_lr
        param += second
