"""`easyfit.cuda`: whether CUDA tensors can be used here."""
from .backend import cuda_is_available, cuda_device_count


def is_available():
    """True when CuPy imports and a GPU is visible; False (never an error) otherwise."""
    return cuda_is_available()


def device_count():
    return cuda_device_count()
