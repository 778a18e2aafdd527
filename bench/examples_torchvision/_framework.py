"""Which tensor library the adapter hands out (see the package docstring)."""
import importlib
import os

FRAMEWORK_VARIABLE = "EXAMPLES_TORCHVISION_FRAMEWORK"


def framework():
    """The module `easyfit` (default) or `torch`, as EXAMPLES_TORCHVISION_FRAMEWORK says."""
    name = os.environ.get(FRAMEWORK_VARIABLE, "easyfit")
    if name not in ("easyfit", "torch"):
        raise ValueError(f"{FRAMEWORK_VARIABLE} must be 'easyfit' or 'torch', got {name!r}")
    return importlib.import_module(name)
