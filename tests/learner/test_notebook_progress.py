"""Progress in a Jupyter notebook (issue 14, item 7): an HTML epoch table, clean text without
ipywidgets (no carriage returns, escape codes or TqdmWarning), and IPython never imported by
a plain program. The kernel is simulated: a fake IPython module whose get_ipython() returns a
ZMQInteractiveShell, with a display() that records what it is given."""
import io
import sys
import types
import warnings

import pytest

from easyfit import nn
from easyfit.learner import Learner, accuracy
from conftest import make_dls, make_model


class ZMQInteractiveShell:
    pass


@pytest.fixture
def kernel(monkeypatch):
    shown = []

    class HTML:
        def __init__(self, data):
            self.data = data

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    def display(obj, display_id=None):
        shown.append(("display", obj.data))
        return Handle()

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: ZMQInteractiveShell()
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.HTML, ipython_display.display = HTML, display
    ipython.display = ipython_display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)      # not installed in this kernel
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    return shown, stdout


def test_in_a_notebook_without_ipywidgets_the_output_is_clean_and_the_table_html(kernel):
    shown, stdout = kernel
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), metrics=accuracy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a TqdmWarning would fail the test
        learn.fit(3)
    text = stdout.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    final = shown[-1][1]
    assert final.startswith("<table") and final.count("<tr>") == 3 and "<th>accuracy</th>" in final
    assert "<td>2</td>" in final                  # the third epoch's row
    assert "train_loss" not in text               # no text table next to the HTML one


def test_lr_find_in_a_notebook_shows_no_table(kernel):
    shown, stdout = kernel
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    learn.lr_find(num_it=10)
    assert shown == [] and "\r" not in stdout.getvalue()


def test_a_plain_program_never_imports_ipython(tmp_path):
    import subprocess
    import os
    code = ("import sys; sys.path.insert(0, 'tests/learner'); from conftest import make_dls, make_model; "
            "from easyfit import nn; from easyfit.learner import Learner; "
            "Learner(make_dls(), make_model(), nn.CrossEntropyLoss()).fit(1); "
            "print('IPython' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
