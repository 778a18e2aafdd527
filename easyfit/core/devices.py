"""`easyfit.device`: PyTorch's torch.device, as the device string easyfit uses everywhere.

A device is a string ('cpu', 'cuda:0'); `easyfit.device('cuda', 1)` and `x.device` are
such strings that also carry PyTorch's `.type` and `.index`, so `torch.device(...)` code
and `x.device.type == 'cuda'` run unchanged, and comparing with a plain string works.
"""
from .backend import parse_device


class Device(str):
    """A canonical device string ('cpu' or 'cuda:N') with `.type` and `.index`."""

    def __new__(cls, type, index=None):
        return super().__new__(cls, parse_device(type if index is None else f"{type}:{index}"))

    @property
    def type(self):
        return self.partition(":")[0]

    @property
    def index(self):
        return int(self.partition(":")[2]) if ":" in self else None

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"


device = Device

_known = {}


def as_device(name):
    """The Device for a canonical device string (cached: Tensor.device is asked often)."""
    found = _known.get(name)
    if found is None:
        found = _known[name] = Device(name)
    return found
