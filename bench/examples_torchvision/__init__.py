"""The part of torchvision that PyTorch's MNIST and VAE examples use, for bench/pytorch_examples.py.

This package is part of the examples harness, not of easyfit: easyfit has no torchvision.
When bench/pytorch_examples.py rewrites an example's imports for easyfit,
`from torchvision import datasets, transforms` becomes
`from examples_torchvision import datasets, transforms` (and `torchvision.utils` becomes
`examples_torchvision.utils`). It offers exactly what those programs call:

- `datasets.MNIST(root, train=True, download=False, transform=None)` reading the raw
  IDX files under `root/MNIST/raw/` (the runner puts Fashion-MNIST there under MNIST's
  names) through `easyfit.data.datasets.mnist`; it never downloads.
- `transforms.Compose`, `transforms.ToTensor`, `transforms.Normalize`.
- `utils.save_image(tensor, fp, nrow=8, padding=2)` (a grid, written with Pillow).

Tensors are easyfit's. The environment variable EXAMPLES_TORCHVISION_FRAMEWORK=torch makes
them PyTorch's instead: the runner uses that for the PyTorch run of an example only when
the installed torchvision cannot be imported (PyPI's torchvision wheel is built for CUDA
PyTorch and fails to import beside a CPU-only build), and says so in its output.
"""
from . import datasets, transforms, utils

__all__ = ["datasets", "transforms", "utils"]
