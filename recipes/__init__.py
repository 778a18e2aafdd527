"""Ready-made recipes: a model, its data and a Learner, built from a config you can read.

Each recipe module defines `NAME`, `DESCRIPTION`, `DEFAULT_DATA`, a `Config` dataclass,
`build_learner(config, out_dir)` and `predict(learner, config, inputs)` (the char-RNN
recipe also `generate`). A recipe that cannot train data-parallel sets `DATA_PARALLEL = False`,
and `easyfit train RECIPE --nprocs N` refuses it before starting any process. Copy one as
the start of your own project; the `easyfit` command line (`recipes.cli`) runs them.
"""
import importlib

RECIPE_MODULES = {
    "vision": "recipes.vision",
    "text": "recipes.text",
    "char-rnn": "recipes.char_rnn",
}


def available():
    """The recipes' names, in the order `easyfit recipes` lists them."""
    return list(RECIPE_MODULES)


def get_recipe(name):
    """The recipe module for `name`; a clear error listing the known ones otherwise."""
    if name not in RECIPE_MODULES:
        from .config import ConfigError
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(available())}")
    return importlib.import_module(RECIPE_MODULES[name])
