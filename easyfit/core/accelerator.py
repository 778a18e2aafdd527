"""`easyfit.accelerator`: PyTorch 2's torch.accelerator, for code that asks which device to use.

easyfit's one accelerator is CUDA (through CuPy); devices are strings, so
`current_accelerator()` is 'cuda' or None.
"""
from .backend import cuda_is_available, cuda_device_count


def is_available():
    """True when an accelerator (a CUDA GPU with CuPy) can be used."""
    return cuda_is_available()


def current_accelerator():
    """'cuda' when a GPU is usable, else None: `ef.accelerator.current_accelerator() or 'cpu'`."""
    return "cuda" if cuda_is_available() else None


def device_count():
    """The number of usable accelerator devices (0 without one)."""
    return cuda_device_count() if cuda_is_available() else 0
