"""Adam and AdamW (decoupled weight decay), with optional AMSGrad."""
import math

from ..core import blas
from ..core.backend import get_array_module
from .optimizer import Optimizer


class Adam(Optimizer):
    """PyTorch's Adam, step for step (t counts this parameter's steps)::

        g = grad + weight_decay * p            (Adam; AdamW decays p itself instead)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    Schedules change `lr` and `betas[0]` (the momentum of one-cycle) in each group.
    """
    _elementwise = True
    _decoupled_weight_decay = False
    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _validate(self, hyper):
        self._check_range(hyper, "lr", 0.0)
        self._check_range(hyper, "eps", 0.0)
        self._check_range(hyper, "weight_decay", 0.0)
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{self._name}: betas must be a pair (beta1, beta2), got {betas!r}")
        hyper["betas"] = tuple(betas)
        for index, beta in enumerate(betas):
            self._check_range({f"betas[{index}]": beta}, f"betas[{index}]", 0.0, 1.0)
        if not isinstance(hyper["amsgrad"], bool):
            raise TypeError(f"{self._name}: amsgrad must be True or False, got {hyper['amsgrad']!r}")

    def _init_state(self, group, param):
        xp = get_array_module(param)
        state = {"step": 0, "exp_avg": xp.zeros_like(param), "exp_avg_sq": xp.zeros_like(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.zeros_like(param)
        return state

    def _update(self, group, param, grad, state, scratch):
        xp = get_array_module(param)
        first, second = scratch
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if weight_decay != 0:
            if self._decoupled_weight_decay:
                param *= 1 - lr * weight_decay
            else:
                xp.multiply(param, weight_decay, out=first)
                xp.add(grad, first, out=first)
                grad = first
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        # Where OpenBLAS applies (large float NumPy arrays), m = beta1 m + (1 - beta1) g and
        # v = beta2 v + (1 - beta2) g^2 are one pass each (axpby); else NumPy's ufuncs do
        # PyTorch's lerp_ (its two formulas for the two halves of the weight) and addcmul_.
        weight = 1 - beta1
        if not blas.axpby(weight, grad, beta1, exp_avg):
            xp.subtract(grad, exp_avg, out=second)
            if abs(weight) < 0.5:
                second *= weight
                exp_avg += second
            else:
                second *= beta1  # 1 - weight
                xp.subtract(grad, second, out=exp_avg)
        xp.multiply(grad, grad, out=second)
        if not blas.axpby(1 - beta2, second, beta2, exp_avg_sq):
            exp_avg_sq *= beta2
            second *= 1 - beta2
            exp_avg_sq += second

        step = state["step"]
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        if group["amsgrad"]:
            maximum = state.get("max_exp_avg_sq")
            if maximum is None:  # amsgrad switched on after the first step
                maximum = state["max_exp_avg_sq"] = xp.zeros_like(param)
            xp.maximum(maximum, exp_avg_sq, out=maximum)
            xp.sqrt(maximum, out=second)
        else:
            xp.sqrt(exp_avg_sq, out=second)
        # m / (sqrt(v) / c2 + eps) is c2 * m / (sqrt(v) + eps * c2): one pass fewer, and with
        # axpy the update p -= step_size * c2 * (m / denominator) is one more.
        second += group["eps"] * bias_correction2_sqrt
        xp.divide(exp_avg, second, out=first)
        scale = -step_size * bias_correction2_sqrt
        if not blas.axpy(scale, first, param):
            first *= scale
            param += first


class AdamW(Adam):
    """Adam with decoupled weight decay: `p = p * (1 - lr * weight_decay)` before the Adam step."""
    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
