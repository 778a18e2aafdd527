"""Two spellings, one table: the NumPy keyword names that mean what PyTorch's mean.

Tensor methods and `easyfit.*` functions take PyTorch's arguments (`dim`, `keepdim`,
`correction`, ...). `numpy_spellings` lets each of them also take NumPy's name for the
same argument, renamed by the table below before the call. Where one name has two
meanings (docs/from-pytorch.md lists the cases), the function passes `numpy=` the NumPy
version, and an explicit `axis=` calls that one instead: `x.max(axis=1)` is NumPy's
values, `x.max(dim=1)` and `x.max(1)` PyTorch's (values, indices).
"""
import functools
import inspect

# NumPy's keyword -> PyTorch's (the first of these that the function takes).
NUMPY_TO_TORCH = {
    "axis": ("dim", "dims"),
    "keepdims": ("keepdim",),
    "ddof": ("correction",),
    "a_min": ("min",),
    "a_max": ("max",),
    "shift": ("shifts",),
    "stop": ("end",),
}


def numpy_spellings(function=None, *, numpy=None):
    """Decorate a PyTorch-style function so that NumPy's keyword names work too.

    With `numpy=`, a call that names `axis=` goes to that NumPy-meaning function with its
    arguments unchanged (the one place the two meanings are told apart).
    """
    if function is None:
        return functools.partial(numpy_spellings, numpy=numpy)
    parameters = inspect.signature(function).parameters
    renames = {}
    for numpy_name, torch_names in NUMPY_TO_TORCH.items():
        torch_name = next((name for name in torch_names if name in parameters), None)
        if torch_name is not None and numpy_name not in parameters:
            renames[numpy_name] = torch_name

    @functools.wraps(function)
    def call(*args, **kwargs):
        if kwargs:
            if numpy is not None and "axis" in kwargs:
                return numpy(*args, **kwargs)
            for numpy_name in renames.keys() & kwargs.keys():
                torch_name = renames[numpy_name]
                if torch_name in kwargs:
                    raise TypeError(f"{function.__qualname__}() got both {numpy_name}= and {torch_name}= "
                                    f"(NumPy's and PyTorch's name for one argument); give one")
                kwargs[torch_name] = kwargs.pop(numpy_name)
        return function(*args, **kwargs)
    call.numpy_meaning = numpy
    return call
