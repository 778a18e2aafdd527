"""The optional numba path (`easyfit.core.compiled`): switching it off, lazy import, errors."""
import subprocess
import sys

import numpy as np
import pytest

from easyfit.core import compiled


@compiled.kernel
def _row_sums(x, out):
    for i in range(x.shape[0]):
        total = 0.0
        for j in range(x.shape[1]):
            total += x[i, j]
        out[i] = total


def test_numba_disabled_turns_the_compiled_path_off_and_back_on():
    pytest.importorskip("numba")
    assert compiled.numba_enabled()
    with compiled.numba_disabled():
        assert not compiled.numba_enabled()
        with compiled.numba_disabled():
            assert not compiled.numba_enabled()
        assert not compiled.numba_enabled()
    assert compiled.numba_enabled()


def test_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv("EASYFIT_NUMBA", "0")
    assert not compiled.numba_enabled()


def test_kernel_compiles_on_first_call_and_matches_python():
    pytest.importorskip("numba")
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    out, expected = np.empty(3), np.empty(3)
    _row_sums(x, out)
    _row_sums.py_func(x, expected)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, x.sum(axis=1))


def test_import_easyfit_does_not_import_numba():
    code = "import sys, easyfit; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_load_in_background_imports_numba_and_sets_up_its_target_once():
    pytest.importorskip("numba")
    code = ("import sys, easyfit\n"
            "from easyfit.core import compiled\n"
            "thread = compiled.load_in_background()\n"
            "assert compiled.load_in_background() is thread\n"
            "thread.join()\n"
            "print(thread.daemon, 'numba' in sys.modules, compiled._smallest_kernel._compiled is not None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "True"]


def test_load_in_background_does_nothing_when_compiled_kernels_are_off(monkeypatch):
    monkeypatch.setenv("EASYFIT_NUMBA", "0")
    assert compiled.load_in_background() is None
    monkeypatch.delenv("EASYFIT_NUMBA")
    with compiled.numba_disabled():
        assert compiled.load_in_background() is None
