"""The global random generator behind rand, randn, initialisation and dropout.

`manual_seed(n)` makes everything that draws from it reproducible. Numbers are drawn on
the CPU with NumPy's PCG64 and moved to the device, so a seed gives the same values on
every backend.
"""
import numpy as np

_generator = [np.random.default_rng(0)]


def manual_seed(seed):
    """Seed easyfit's global generator (and NumPy's legacy global one, for user code)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed expects a non-negative integer, got {seed!r}")
    _generator[0] = np.random.default_rng(int(seed))
    np.random.seed(int(seed) % 2**32)


def default_generator():
    """The np.random.Generator that easyfit draws from."""
    return _generator[0]


def get_rng_state():
    """The generator's state as a JSON-serialisable dict (for checkpoints)."""
    return _generator[0].bit_generator.state


def set_rng_state(state):
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    _generator[0] = generator
