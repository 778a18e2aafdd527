"""The course notebooks in docs/notebooks run from top to bottom.

Code cells run in order in one namespace, in a temporary working folder, as a Jupyter
kernel would run them (the notebooks use no IPython magics, so no kernel is needed here).
A notebook names the data it needs in its metadata (`"easyfit": {"needs": [...]}`) and is
skipped when that is missing on this machine; CI installs it. Notebooks are stored without
outputs, so what a reader sees after running one is always what the code does now.
"""
import importlib.util
import json
import pathlib

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def _missing(need):
    """Why `need` is not available here, or None when it is."""
    if need == "scikit-learn":
        return None if importlib.util.find_spec("sklearn") else "scikit-learn is not installed"
    if need == "matplotlib":
        return None if importlib.util.find_spec("matplotlib") else "matplotlib is not installed (the plot extra)"
    if need == "fortunes":
        from easyfit.data import datasets
        try:
            datasets.fortunes()
        except datasets.DatasetNotFoundError as error:
            return f"Debian's fortunes are not installed (apt-get install fortunes): {error}"
        return None
    raise ValueError(f"unknown notebook requirement {need!r}")


def _notebooks():
    return sorted(NOTEBOOKS.glob("*.ipynb")) if NOTEBOOKS.exists() else []


def test_there_are_course_notebooks():
    assert len(_notebooks()) >= 3


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_stored_clean(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    stale = [i for i, cell in enumerate(notebook["cells"]) if cell.get("outputs") or cell.get("execution_count")]
    assert not stale, f"{path.name}: cells {stale} carry stored outputs; clear them before committing"
    assert notebook["cells"][0]["cell_type"] == "markdown" and "".join(notebook["cells"][0]["source"]).startswith("# ")


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for need in notebook["metadata"].get("easyfit", {}).get("needs", []):
        reason = _missing(need)
        if reason:
            pytest.skip(reason)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        assert not any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()), \
            f"{path.name} cell {number}: IPython magics and shell lines do not run outside Jupyter"
        exec(compile(source, f"{path.name} (cell {number})", "exec"), namespace)
    # a notebook writes its files into its own named folder, not all over the working directory
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.iterdir())
    assert written in ([], ["easyfit-notebooks"]), f"{path.name} wrote {written} into the working directory"
    inside = [p.name for p in (tmp_path / "easyfit-notebooks").iterdir()] if written else []
    assert inside in ([], [path.stem]), f"{path.name} wrote into easyfit-notebooks/{inside}"
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        pass
    else:
        plt.close("all")
