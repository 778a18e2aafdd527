"""Creating tensors, dtypes, copies, devices and the seeded generator."""
import numpy as np
import pytest

import easyfit as ef
from easyfit.core import backend


def test_tensor_default_dtypes():
    assert ef.tensor([1.0, 2.0]).dtype == np.float32
    assert ef.tensor(3.5).dtype == np.float32
    assert ef.tensor([1, 2]).dtype == np.int64
    assert ef.tensor([True, False]).dtype == np.bool_
    assert ef.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64
    assert ef.tensor([1, 2], dtype=ef.float32).dtype == np.float32
    assert ef.tensor([1.0], dtype="float64").dtype == np.float64


def test_tensor_copies_from_numpy_shares():
    a = np.zeros(3, dtype=np.float32)
    copied = ef.tensor(a)
    shared = ef.from_numpy(a)
    a[0] = 7
    assert copied.numpy()[0] == 0
    assert shared.numpy()[0] == 7
    assert shared.numpy() is a
    with pytest.raises(TypeError, match="numpy.ndarray"):
        ef.from_numpy([1, 2])


def test_filled_and_ranges():
    assert ef.zeros(2, 3).shape == (2, 3) and ef.zeros((2, 3)).numpy().sum() == 0
    assert ef.ones(4).numpy().sum() == 4
    np.testing.assert_array_equal(ef.full((2,), 1.5).numpy(), [1.5, 1.5])
    assert ef.empty(2, 2).shape == (2, 2)
    np.testing.assert_array_equal(ef.arange(4).numpy(), [0, 1, 2, 3])
    assert ef.arange(0, 1, 0.25).dtype == np.float32
    np.testing.assert_array_equal(ef.eye(2).numpy(), np.eye(2))
    x = ef.ones(2, 3, dtype=np.float64)
    assert ef.zeros_like(x).dtype == np.float64 and ef.ones_like(x).shape == (2, 3)
    assert ef.zeros(2, requires_grad=True).requires_grad


def test_manual_seed_makes_random_reproducible():
    ef.manual_seed(123)
    a, b = ef.rand(3, 4), ef.randn(5)
    ef.manual_seed(123)
    c, d = ef.rand(3, 4), ef.randn(5)
    np.testing.assert_array_equal(a.numpy(), c.numpy())
    np.testing.assert_array_equal(b.numpy(), d.numpy())
    assert a.dtype == np.float32 and 0 <= a.numpy().min() and a.numpy().max() < 1
    with pytest.raises(ValueError, match="non-negative integer"):
        ef.manual_seed(-1)


def test_rng_state_round_trip():
    state = ef.core.get_rng_state()
    a = ef.randn(4)
    ef.core.set_rng_state(state)
    np.testing.assert_array_equal(a.numpy(), ef.randn(4).numpy())


def test_conversions():
    x = ef.tensor([[1.0, 2.0]])
    assert ef.tensor([2.5]).item() == 2.5
    assert x.tolist() == [[1.0, 2.0]]
    assert float(ef.tensor(1.5)) == 1.5 and int(ef.tensor(3)) == 3
    assert x.ndim == 2 and x.numel() == 2 and len(x) == 1 and x.device == "cpu"
    with pytest.raises(ValueError, match="one element"):
        x.item()
    np.testing.assert_array_equal(np.asarray(x), [[1.0, 2.0]])
    assert x.to("cpu") is x
    assert x.double().dtype == np.float64 and x.long().dtype == np.int64


def test_repr():
    assert repr(ef.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(ef.tensor([1.0], requires_grad=True))
    assert "grad_fn=Mul" in repr(ef.tensor([1.0], requires_grad=True) * 2)
    assert "dtype=int64" in repr(ef.tensor([1]))


def test_cuda_unavailable_is_false_not_an_error():
    assert isinstance(ef.cuda.is_available(), bool)
    if not ef.cuda.is_available():
        assert ef.cuda.device_count() == 0


@pytest.mark.skipif(ef.cuda.is_available(), reason="a GPU is present")
def test_cuda_tensor_without_gpu_names_the_extra_or_fails_clearly():
    with pytest.raises(Exception) as info:
        ef.zeros(2, device="cuda")
    if backend._import_cupy() is None:
        assert "pip install 'easyfit[cuda]'" in str(info.value)


def test_bad_device_names():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        ef.zeros(2, device="gpu")


def test_scatter_add_accumulates_repeated_rows():
    target = np.zeros((4, 2))
    values = np.arange(10.0).reshape(5, 2)
    backend.scatter_add(target, np.array([0, 3, 0, -1, 1]), values)
    expected = np.zeros((4, 2))
    np.add.at(expected, np.array([0, 3, 0, -1, 1]), values)
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("index", [
    (np.array([[0, 3], [0, -1], [1, 1]]),),                       # one 2-D array: rows of axis 0
    (np.array([[0], [2], [2]]), np.array([[1, -1, 1, 0]])),        # two arrays broadcast together
    (np.array([1, 1, 0]), np.array([2, 2, 2]), np.array([0, 0, -1])),  # every axis indexed
    (np.array([], dtype=np.int64),),
])
def test_scatter_add_by_integer_arrays_matches_add_at(index):
    rng = np.random.default_rng(0)
    target = rng.standard_normal((4, 3, 2))
    expected = target.copy()
    values = rng.standard_normal(expected[index].shape)
    np.add.at(expected, index, values)
    backend.scatter_add(target, index if len(index) > 1 else index[0], values)
    np.testing.assert_allclose(target, expected, rtol=1e-12)


def test_scatter_add_into_a_strided_target_stays_in_place():
    base = np.zeros((4, 6))
    target = base[:, ::2]     # not contiguous: a flattening reshape would copy
    backend.scatter_add(target, (np.array([0, 0, 3]), np.array([1, 1, 2])), np.ones(3))
    assert base[0, 2] == 2 and base[3, 4] == 1 and base.sum() == 3


def test_gather_backward_accumulates_repeats():
    x = ef.Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    rows, cols = np.array([[0], [2]]), np.array([[1, 1, 3]])
    (x[rows, cols] * ef.Tensor(np.arange(6.0).reshape(2, 3))).sum().backward()
    expected = np.zeros((3, 4))
    np.add.at(expected, (rows, cols), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_scatter_add_rows_mixes_rare_and_frequent_repeats():
    # row 5 repeats 40 times (summed by reduceat), others 1-4 times (added round by round)
    rng = np.random.default_rng(1)
    rows = rng.permutation(np.concatenate([np.full(40, 5), np.repeat(np.arange(10), rng.integers(1, 5, 10))]))
    values = rng.standard_normal((rows.size, 3))
    target = rng.standard_normal((12, 3))
    expected = target.copy()
    np.add.at(expected, rows, values)
    backend.scatter_add(target, rows, values)
    np.testing.assert_allclose(target, expected, rtol=1e-12, atol=1e-12)


# ----- PyTorch's creation functions (issue 16) -------------------------------------------

def test_like_and_new_functions_keep_dtype_and_device():
    x = ef.zeros(2, 3, dtype=ef.double)
    for t in (ef.ones_like(x), ef.full_like(x, 2.5), ef.empty_like(x), ef.rand_like(x), ef.randn_like(x),
              x.new_zeros(2, 3), x.new_ones((2, 3)), x.new_full((2, 3), 1.5), x.new_empty(2, 3)):
        assert t.shape == (2, 3) and t.dtype == np.float64 and t.device == "cpu"
    assert ef.full_like(x, 2.5).numpy().tolist() == [[2.5] * 3] * 2
    assert x.new_tensor([1, 2]).dtype == np.float64 and x.new_zeros(4, dtype=ef.long).dtype == np.int64
    r = ef.randint_like(ef.zeros(100, dtype=ef.long), 3, 6)
    assert r.dtype == np.int64 and set(r.tolist()) == {3, 4, 5}
    assert 0.0 <= float(ef.rand_like(x).min()) and float(ef.rand_like(x).max()) < 1.0


def test_ranges_and_random_integers():
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(ef.linspace(0, 1, 5).numpy(), torch.linspace(0, 1, 5).numpy())
    assert ef.linspace(0, 1, 5).dtype == np.float32 and ef.arange(1, 7, 2).tolist() == [1, 3, 5]
    assert ef.arange(1.0, 2.0, 0.5).dtype == np.float32
    ef.manual_seed(0)
    r = ef.randint(0, 4, (1000,))
    assert r.dtype == np.int64 and r.shape == (1000,) and set(r.tolist()) == {0, 1, 2, 3}
    assert ef.randint(5, (2, 3)).shape == (2, 3) and int(ef.randint(5, size=(9,)).max()) < 5
    p = ef.randperm(10)
    assert sorted(p.tolist()) == list(range(10)) and p.dtype == np.int64
    ef.manual_seed(1)
    a = ef.randperm(10)
    ef.manual_seed(1)
    assert ef.randperm(10).tolist() == a.tolist()


def test_multinomial_draws_from_each_row():
    ef.manual_seed(0)
    weights = ef.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    draws = ef.multinomial(weights, 2000, replacement=True)
    assert draws.shape == (2, 2000) and draws.dtype == np.int64
    counts = np.bincount(draws.numpy()[0], minlength=3)
    assert counts[0] == 0 and 0.70 < counts[2] / 2000 < 0.80 and set(draws.numpy()[1]) == {0}
    picked = ef.multinomial(ef.tensor([1.0, 1.0, 1.0, 0.0]), 3)
    assert sorted(picked.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="without replacement"):
        ef.multinomial(ef.tensor([1.0, 0.0]), 2)


def test_dtype_names_as_in_pytorch():
    pairs = {"float": np.float32, "double": np.float64, "half": np.float16, "long": np.int64, "int": np.int32,
             "short": np.int16, "uint8": np.uint8, "int8": np.int8, "bool": np.bool_, "float32": np.float32,
             "float64": np.float64, "float16": np.float16, "int64": np.int64, "int32": np.int32, "int16": np.int16}
    for name, dtype in pairs.items():
        assert np.dtype(getattr(ef, name)) == dtype, name
        assert ef.zeros(2, dtype=getattr(ef, name)).dtype == dtype
    x = ef.ones(2)
    assert x.dtype == ef.float and x.double().dtype == ef.double and x.long().dtype == ef.long
    assert x.int().dtype == ef.int and x.half().dtype == ef.half and x.bool().dtype == ef.bool
    assert x.short().dtype == ef.short and x.byte().dtype == ef.uint8 and x.type(ef.double).dtype == ef.double
    assert x.type() == "easyfit.FloatTensor" and x.long().type() == "easyfit.LongTensor"
    with pytest.raises(AttributeError, match="NumPy, which holds easyfit's arrays, has no bfloat16"):
        ef.bfloat16


def test_as_tensor_shares_memory_when_it_can_and_to_takes_a_dtype_first():
    a = np.arange(3.0)
    t = ef.as_tensor(a)
    assert t.array is a and ef.as_tensor(t) is t and ef.is_tensor(t) and not ef.is_tensor(a)
    assert ef.as_tensor(a, dtype=ef.float).dtype == np.float32 and ef.as_tensor([1, 2]).dtype == np.int64
    x = ef.ones(2)
    assert x.to(ef.double).dtype == np.float64 and x.to("cpu", ef.half).dtype == np.float16
    assert x.to(ef.zeros(1, dtype=ef.long)).dtype == np.int64 and x.to("cpu") is x
