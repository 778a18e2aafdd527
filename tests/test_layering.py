"""The direction of imports in DESIGN.md holds by itself: a layer never imports a higher one,
and easyfit never imports PyTorch."""
import ast
import pathlib

import pytest

ORDER = ["core", "nn", "optim", "data", "utils", "learner", "onnx", "distributed"]
ALLOWED = {  # layer -> the easyfit layers it may import
    "core": {"core"},
    "nn": {"core", "nn"},
    "optim": {"core", "nn", "optim"},
    "data": {"core", "data"},
    "utils": {"core", "data", "utils"},  # PyTorch's torch.utils paths, re-exporting easyfit.data
    "learner": {"core", "nn", "optim", "data", "learner"},
    "onnx": {"core", "nn", "onnx"},
    "distributed": {"core", "nn", "optim", "data", "learner", "distributed"},
}
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "easyfit"


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative_base = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(relative_base[: len(relative_base) - node.level + 1])
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.lineno, node.module


def _files():
    return sorted(p for p in PACKAGE.rglob("*.py") if len(p.relative_to(PACKAGE).parts) > 1)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_imports_only_lower_layers(path):
    layer = path.relative_to(PACKAGE).parts[0]
    if layer not in ALLOWED:
        return
    for line, module in _imports(path):
        parts = module.split(".")
        assert parts[0] != "torch", f"{path}:{line} imports PyTorch, which is a test/benchmark oracle only"
        if parts[0] == "easyfit" and len(parts) > 1 and parts[1] in ALLOWED:
            assert parts[1] in ALLOWED[layer], f"{path}:{line} ({layer}) imports easyfit.{parts[1]}"


def test_importing_easyfit_does_not_import_optional_libraries():
    import subprocess
    import sys
    code = ("import sys, easyfit; bad = [m for m in ('torch', 'cupy', 'onnx', 'mpi4py', 'matplotlib') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_easyfit_leaves_the_network_stack_for_downloads():
    # urllib.request brings http.client, email and ssl: ~2.5 MB of every process's memory
    import subprocess
    import sys
    code = ("import sys, easyfit, easyfit.data.datasets; bad = [m for m in ('urllib.request', 'http.client', 'ssl') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
