"""`Compose`, `ToTensor`, `Normalize` with torchvision's meaning, for one framework's tensors."""
import numpy as np

from ._framework import framework


class Compose:
    """Apply `transforms` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, value):
        for transform in self.transforms:
            value = transform(value)
        return value


class ToTensor:
    """A PIL image or HxW(xC) uint8 array -> a float32 CxHxW tensor in [0, 1]."""

    def __call__(self, picture):
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        return framework().from_numpy(array.astype(np.float32, copy=False))


class Normalize:
    """`(x - mean[c]) / std[c]` for each channel c of a CxHxW tensor."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)

    def __call__(self, tensor):
        array = (tensor.numpy() - self.mean) / self.std
        return framework().from_numpy(np.ascontiguousarray(array, dtype=np.float32))
