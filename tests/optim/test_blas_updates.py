"""Updates of large parameters through OpenBLAS's one-pass axpy/axpby (easyfit.core.blas)
give torch.optim's numbers, and the kernels give NumPy's."""
import numpy as np
import pytest

import easyfit as ef
from easyfit.core import blas
from easyfit.optim import SGD, Adam, AdamW

needs_openblas = pytest.mark.skipif(not blas.functions(), reason="NumPy's BLAS is not the scipy-openblas build")
SHAPES = [(64, 100), (5000,), (7,)]     # two above blas.SMALLEST, one below (the NumPy path)


@needs_openblas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_and_axpby_give_numpys_results(dtype):
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal(6000).astype(dtype) for _ in range(2))
    expected = y + dtype(0.3) * x
    assert blas.axpy(0.3, x, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    expected = dtype(0.9) * y + dtype(0.1) * x
    assert blas.axpby(0.1, x, 0.9, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_the_kernels_refuse_what_they_cannot_do():
    big = np.ones(8192, np.float32)
    assert not blas.axpy(1.0, np.ones(10, np.float32), np.ones(10, np.float32))     # small
    assert not blas.axpy(1.0, big[::2], big[1::2].copy())                          # strided
    assert not blas.axpy(1.0, big.astype(np.float64), big)                          # mixed dtypes
    assert not blas.axpby(1.0, np.ones(8192, np.int64), 1.0, np.ones(8192, np.int64))
    frozen = big.copy()
    frozen.flags.writeable = False
    assert not blas.axpy(1.0, big, frozen)
    assert (big == 1).all() and (frozen == 1).all()


CASES = [
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (SGD, dict(lr=0.05)),
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, betas=(0.3, 0.8), weight_decay=0.01)),
    (AdamW, dict(lr=0.01, weight_decay=0.1)),
]


@needs_openblas
@pytest.mark.parametrize("cls, kwargs", CASES, ids=[f"{c.__name__}-{k}" for c, k in CASES])
def test_large_parameters_match_torch_through_the_blas_kernels(monkeypatch, cls, kwargs):
    torch = pytest.importorskip("torch")
    calls = []
    for name in ("axpy", "axpby"):
        kernel = getattr(blas, name)
        monkeypatch.setattr(blas, name, lambda *args, kernel=kernel: calls.append(1) or kernel(*args))
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    ours = [ef.tensor(a.copy(), requires_grad=True) for a in start]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    opt, topt = cls(ours, **kwargs), getattr(torch.optim, cls.__name__)(theirs, **kwargs)
    for step in range(6):
        for p, tp in zip(ours, theirs):
            g = (0.5 * p.array + rng.standard_normal(p.shape)).astype(np.float32)
            p.grad, tp.grad = ef.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.array, tp.detach().numpy(), rtol=2e-5, atol=2e-6, err_msg=f"step {step}")
    assert calls, "the one-pass BLAS kernels were not used"
