"""`easyfit.device`: PyTorch's torch.device, for code that builds one and passes it to `.to()`.

easyfit names devices with strings ('cpu', 'cuda', 'cuda:N'). A `device` is such a string
(a `str` subclass), so it goes wherever easyfit takes a device, compares equal to its
string, and also has torch.device's `type` and `index`:

>>> import easyfit as ef
>>> d = ef.device("cpu")
>>> d.type, d.index, d == "cpu"
('cpu', None, True)
>>> ef.zeros(2).to(d).device
'cpu'
"""

_TYPES = ("cpu", "cuda")


class device(str):
    """A device name: `device('cpu')`, `device('cuda')`, `device('cuda:1')`, `device('cuda', 1)`, `device(1)`.

    An integer alone means that CUDA device, as in PyTorch. The value is checked here, so a
    typo fails where the device is made, not where it is first used.
    """

    def __new__(cls, type, index=None):
        if isinstance(type, device) and index is None:
            return type
        if isinstance(type, int) and not isinstance(type, bool) and index is None:
            type, index = "cuda", type
        if not isinstance(type, str):
            raise TypeError(f"device() takes a device name such as 'cpu' or 'cuda:0' (or an int), got "
                            f"{type!r} of type {type.__class__.__name__}")
        kind, colon, number = type.partition(":")
        if kind not in _TYPES:
            raise ValueError(f"unknown device type {kind!r} in {type!r}: expected 'cpu', 'cuda' or 'cuda:N'")
        if colon:
            if index is not None:
                raise ValueError(f"device({type!r}, {index!r}): the index is given twice")
            if not number.isdigit():
                raise ValueError(f"device {type!r}: the index after ':' must be a non-negative integer")
            index = int(number)
        if index is not None:
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ValueError(f"device index must be a non-negative integer, got {index!r}")
            if kind == "cpu" and index != 0:
                raise ValueError(f"device('cpu', {index}): the CPU has only index 0")
        text = kind if index is None or kind == "cpu" else f"{kind}:{index}"
        made = super().__new__(cls, text)
        made._type, made._index = kind, index if kind == "cuda" else None
        return made

    @property
    def type(self):
        """'cpu' or 'cuda'."""
        return self._type

    @property
    def index(self):
        """The CUDA device number, or None ('cpu', and 'cuda' meaning the current device)."""
        return self._index

    def __repr__(self):
        if self._index is None:
            return f"device(type={self._type!r})"
        return f"device(type={self._type!r}, index={self._index})"

    def __reduce__(self):
        return (device, (self._type, self._index))
