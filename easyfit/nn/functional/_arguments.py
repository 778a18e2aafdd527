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


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated `size_average`/`reduce` pair, when given, decides the reduction as there."""
    if size_average is None and reduce is None:
        _check_reduction_name(reduction)
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def _check_reduction_name(reduction, allowed=("mean", "sum", "none")):
    if reduction not in allowed:
        names = ", ".join(repr(name) for name in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"reduction must be {names}, got {reduction!r}")
