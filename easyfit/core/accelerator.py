"""`easyfit.accelerator`: PyTorch 2's torch.accelerator, for code that asks which device to use.

easyfit's one accelerator is CUDA (through CuPy); `current_accelerator()` is
`easyfit.device('cuda')` (the string 'cuda:0' with `.type == 'cuda'`) or None.
"""
from .backend import cuda_is_available, cuda_device_count
from .devices import Device


def is_available():
    """True when an accelerator (a CUDA GPU with CuPy) can be used."""
    return cuda_is_available()


def current_accelerator():
    """device('cuda') when a GPU is usable, else None: `ef.accelerator.current_accelerator() or 'cpu'`."""
    return Device("cuda") if cuda_is_available() else None


def device_count():
    """The number of usable accelerator devices (0 without one)."""
    return cuda_device_count() if cuda_is_available() else 0
