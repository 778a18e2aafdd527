"""Generate docs/api.md, the API reference, from the code's own names, signatures and docstrings.

    python docs/make_api.py          # rewrite docs/api.md
    python docs/make_api.py --check  # exit 1 if docs/api.md is out of date (the tests do this)
"""
import importlib
import inspect
import pathlib
import sys

# Document the checkout this script lives in, whatever else is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

MODULES = [
    ("easyfit", "Tensors, autograd and checkpoints (re-exported from `easyfit.core`)"),
    ("easyfit.nn", "Layers, containers and losses"),
    ("easyfit.nn.functional", "Functional forms of the layers and losses"),
    ("easyfit.nn.init", "Initialisation"),
    ("easyfit.nn.utils", "Gradient clipping"),
    ("easyfit.optim", "Optimizers and schedules"),
    ("easyfit.optim.lr_scheduler", "PyTorch's learning-rate scheduler classes"),
    ("easyfit.data", "Datasets, loaders, transforms, vision and text"),
    ("easyfit.data.datasets", "Real datasets"),
    ("easyfit.learner", "The Learner, callbacks and metrics"),
    ("easyfit.distributed", "Data-parallel training on MPI"),
    ("easyfit.onnx", "ONNX export and import"),
]
OUTPUT = pathlib.Path(__file__).with_name("api.md")


def _own_doc(obj):
    """The object's own docstring: a class without one would otherwise show its base class's."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _summary(obj):
    doc = _own_doc(obj) if inspect.isclass(obj) else inspect.getdoc(obj) or ""
    paragraph = doc.split("\n\n")[0].replace("\n", " ").strip()
    return f": {paragraph}" if paragraph else ""


def _signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:  # what the module defines, not what it imports (e.g. pathlib.Path)
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and getattr(obj, "__module__", module.__name__).startswith("easyfit")]
    return [n for n in names if not inspect.ismodule(getattr(module, n, None))]


def _shared_function(cls, name, method):
    """The easyfit function a Tensor method hands its arguments to (`def sum(self, *args, **kwargs)`)."""
    import easyfit
    parameters = list(inspect.signature(method).parameters.values())
    passes_all = [p.kind for p in parameters[1:]] == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]
    function = getattr(easyfit, name, None)
    return function if cls is easyfit.Tensor and passes_all and inspect.isfunction(function) else None


def _signature_after_first(function):
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return str(inspect.Signature(parameters))


def _members(cls):
    """The class's own members and those of its method-family mixins (direct bases named
    `*Methods`, such as Tensor's ArithmeticMethods): a family is a room of the class, not a class
    of its own. A subclass (nn.Parameter) lists only what it adds, as before."""
    families = [base for base in cls.__bases__
                if base.__name__.endswith("Methods") and base.__module__.startswith("easyfit")]
    members = {}
    for klass in [*reversed(families), cls]:
        members.update(vars(klass))
    return members


def _methods(cls):
    lines = []
    for name, member in sorted(_members(cls).items()):
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            shared = _shared_function(cls, name, member)
            if shared is not None:  # x.sum(...) is easyfit.sum(x, ...): show that signature
                lines.append(f"  - `{name}{_signature_after_first(shared)}`: as `easyfit.{name}`, on this tensor")
            else:
                lines.append(f"  - `{name}{_signature(member)}`{_summary(member)}")
        elif isinstance(member, property):
            lines.append(f"  - `{name}` (property){_summary(member)}")
    return lines


def render():
    out = ["# API reference", "",
           "Generated from the code by `python docs/make_api.py`; a test fails when this page is out of date.",
           ""]
    for module_name, title in MODULES:
        module = importlib.import_module(module_name)
        out += [f"## `{module_name}` — {title}", ""]
        for name in _public_names(module):
            obj = getattr(module, name)
            if inspect.isclass(obj):
                if obj.__module__ == "numpy":
                    out.append(f"- `{name}`: the NumPy dtype `numpy.{obj.__name__}`")
                    continue
                out.append(f"- class `{name}{_signature(obj)}`{_summary(obj)}")
                out += _methods(obj)
            elif callable(obj):
                out.append(f"- `{name}{_signature(obj)}`{_summary(obj)}")
            elif isinstance(obj, (str, int, float, bool, tuple, list, frozenset, type(None))):
                out.append(f"- `{name}` = `{obj!r}`")
            else:
                out.append(f"- `{name}`: a `{type(obj).__name__}` instance{_summary(type(obj))}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv):
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
