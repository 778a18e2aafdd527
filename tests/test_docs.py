"""Every ```python block in docs/*.md runs: the guide's examples stay true.

Blocks of one page run in order in one namespace, in a temporary working folder. A block
fenced as ```python-skip (or any other language tag) is shown but not run.
"""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _pages():
    return sorted(DOCS.glob("*.md")) if DOCS.exists() else []


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_examples_in_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
        code = compile(match.group(1), f"{page.name} (python block {number})", "exec")
        exec(code, namespace)
