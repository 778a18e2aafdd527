"""`easyfit.serialization`: PyTorch's torch.serialization names for saving and loading.

`save`/`load` are `easyfit.save`/`easyfit.load` (safetensors, never pickle). Loading a
whole object (a model saved with `easyfit.save(model, f)`) rebuilds only classes that
are easyfit's own or allowed here, as PyTorch's `weights_only` loading does:

    with easyfit.serialization.safe_globals([MyModel]):
        model = easyfit.load("model.pt")
"""
from .core.serialization import (save, load, safe_globals, add_safe_globals, get_safe_globals,
                                 clear_safe_globals, UntrustedGlobalError)

__all__ = ["save", "load", "safe_globals", "add_safe_globals", "get_safe_globals", "clear_safe_globals",
           "UntrustedGlobalError"]
