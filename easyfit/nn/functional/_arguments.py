"""Argument checks shared by the functional families (pairs, reductions, dim/axis)."""
def _pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _axis(axis, dim, default, function):
    """`axis`, or PyTorch's name for it, `dim`: torch.nn.functional code runs unchanged."""
    if dim is None:
        return axis
    if axis != default:
        raise TypeError(f"{function}() got both axis={axis!r} and dim={dim!r}; give one")
    return dim
