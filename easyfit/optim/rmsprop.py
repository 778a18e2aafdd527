"""RMSprop, optionally centered and with momentum."""
from ..core.backend import get_array_module
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """PyTorch's RMSprop, step for step::

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        avg = sqrt(v - mean_g**2) if centered (mean_g = lerp(mean_g, g, 1 - alpha)) else sqrt(v)
        buf = momentum * buf + g / (avg + eps);  p = p - lr * buf     (momentum > 0)
        p = p - lr * g / (avg + eps)                                 (otherwise)
    """
    _elementwise = True
    _state_names = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _validate(self, hyper):
        self._check_range(hyper, "lr", 0.0)
        self._check_range(hyper, "alpha", 0.0)
        self._check_range(hyper, "eps", 0.0)
        self._check_range(hyper, "weight_decay", 0.0)
        self._check_range(hyper, "momentum", 0.0)
        if not isinstance(hyper["centered"], bool):
            raise TypeError(f"RMSprop: centered must be True or False, got {hyper['centered']!r}")

    def _init_state(self, group, param):
        xp = get_array_module(param)
        state = {"step": 0, "square_avg": xp.zeros_like(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = xp.zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = xp.zeros_like(param)
        return state

    def _buffer(self, state, name, param):
        """A state buffer, made (zeroed) when a schedule switches its feature on mid-training."""
        buffer = state.get(name)
        if buffer is None:
            buffer = state[name] = get_array_module(param).zeros_like(param)
        return buffer

    def _update(self, group, param, grad, state, scratch):
        xp = get_array_module(param)
        first, second = scratch
        alpha, weight_decay, momentum = group["alpha"], group["weight_decay"], group["momentum"]
        if weight_decay != 0:
            xp.multiply(param, weight_decay, out=first)
            xp.add(grad, first, out=first)
            grad = first
        square_avg = state["square_avg"]
        square_avg *= alpha
        xp.multiply(grad, 1 - alpha, out=second)
        second *= grad
        square_avg += second
        if group["centered"]:
            grad_avg = self._buffer(state, "grad_avg", param)
            weight = 1 - alpha  # grad_avg.lerp_(grad, 1 - alpha)
            xp.subtract(grad, grad_avg, out=second)
            if abs(weight) < 0.5:
                second *= weight
                grad_avg += second
            else:
                second *= alpha
                xp.subtract(grad, second, out=grad_avg)
            xp.multiply(grad_avg, -1.0, out=second)  # square_avg.addcmul(grad_avg, grad_avg, value=-1)
            second *= grad_avg
            second += square_avg
            xp.sqrt(second, out=second)
        else:
            xp.sqrt(square_avg, out=second)
        second += group["eps"]
        if momentum > 0:
            buffer = self._buffer(state, "momentum_buffer", param)
            buffer *= momentum
            xp.divide(grad, second, out=second)
            buffer += second
            xp.multiply(buffer, -group["lr"], out=second)
            param += second
        else:
            xp.multiply(grad, -group["lr"], out=first)
            first /= second
            param += first
