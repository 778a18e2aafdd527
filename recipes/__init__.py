"""Ready-made recipes: a model, its data and a Learner, built from a config you can read.

Each recipe module defines `NAME`, `DESCRIPTION`, `DEFAULT_DATA`, a `Config` dataclass,
`build_learner(config, out_dir)` and `predict(learner, config, inputs)` (the char-RNN
recipe also `generate`). Copy one as the start of your own project; the `easyfit`
command line (`recipes.cli`) runs them.
"""
import importlib

RECIPE_MODULES = {
    "vision": "recipes.vision",
    "text": "recipes.text",
    "char-rnn": "recipes.char_rnn",
}


def available():
    """Names of the recipes whose modules import (a recipe not written yet is not listed)."""
    names = []
    for name, module in RECIPE_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def get_recipe(name):
    """The recipe module for `name`; a clear error listing the known ones otherwise."""
    if name not in RECIPE_MODULES or name not in available():
        from .config import ConfigError
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(available())}")
    return importlib.import_module(RECIPE_MODULES[name])
