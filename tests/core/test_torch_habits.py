"""Tensor speaks PyTorch (issue 16): NumPy's keyword names are aliases where they mean the same,
and each name whose meanings differ follows the rule in docs/from-pytorch.md, tested here once.
torch.nn.functional's `dim=`, `pad`, `one_hot` and `relu(inplace=)` work in easyfit.nn.functional."""
import pathlib

import numpy as np
import pytest

import easyfit as ef
import easyfit.nn.functional as F


# ----- two spellings, one table: NumPy's keyword names mean the same ------------------

@pytest.mark.parametrize("name", ["sum", "mean", "argmax", "argmin", "all", "any", "cumsum", "softmax", "log_softmax",
                                  "norm", "argsort"])
def test_numpy_keyword_names_are_aliases(name):
    x = ef.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)))
    if name in ("all", "any"):
        x = x > 0
    method = getattr(x, name)
    keep = {} if name in ("cumsum", "softmax", "log_softmax", "argsort") else {"keepdim": True}
    numpy_keep = {"keepdims": True} if keep else {}
    torch_style = method(dim=1, **keep).numpy()
    if name != "norm":  # norm's first argument is p
        np.testing.assert_array_equal(method(1, **keep).numpy(), torch_style)
    np.testing.assert_array_equal(method(axis=1, **numpy_keep).numpy(), torch_style)
    with pytest.raises(TypeError, match=r"got both axis= and dim="):
        method(axis=1, dim=1)


def test_numpy_names_of_functions_are_aliases():
    x = ef.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(ef.concatenate([x, x], axis=1).numpy(), ef.cat([x, x], dim=1).numpy())
    np.testing.assert_array_equal(ef.stack([x, x], axis=2).numpy(), ef.stack([x, x], dim=2).numpy())
    np.testing.assert_array_equal(ef.expand_dims(x, 0).numpy(), x.unsqueeze(0).numpy())
    np.testing.assert_array_equal(ef.swapaxes(x, 0, 1).numpy(), x.transpose(0, 1).numpy())
    np.testing.assert_array_equal(x.astype(np.int64).numpy(), x.long().numpy())
    np.testing.assert_array_equal(ef.flip(x, axis=1).numpy(), x.flip(1).numpy())
    np.testing.assert_array_equal(ef.roll(x, shift=1, axis=1).numpy(), x.roll(1, 1).numpy())
    np.testing.assert_array_equal(ef.arange(0, stop=4).numpy(), ef.arange(0, end=4).numpy())
    np.testing.assert_array_equal(x.clip(1, 4).numpy(), x.clamp(1, 4).numpy())
    assert ef.concatenate is ef.cat and ef.clip is ef.clamp


# ----- where NumPy and PyTorch give one name two meanings (docs/from-pytorch.md) ----------
# Positional calls and dim= follow PyTorch; an explicit axis= asks for NumPy's meaning.

def test_size_is_the_method():
    x = ef.zeros(2, 3)
    assert x.size() == (2, 3) and x.size(1) == 3 and x.size(-2) == 2
    assert x.numel() == 6 and x.dim() == 2


def test_transpose_with_two_dims_swaps_them():
    x = ef.tensor([[1, 2], [3, 4]])
    np.testing.assert_array_equal(x.transpose(0, 1).numpy(), [[1, 3], [2, 4]])  # NumPy: unchanged
    np.testing.assert_array_equal(ef.transpose(x, 0, 1).numpy(), [[1, 3], [2, 4]])
    y = ef.zeros(2, 3, 4)
    assert y.transpose(0, 2).shape == (4, 3, 2)               # two dims: a swap
    assert y.transpose((1, 2, 0)).shape == (3, 4, 2)          # a full permutation: NumPy's
    assert y.transpose(1, 2, 0).shape == (3, 4, 2)
    assert ef.transpose(y).shape == (4, 3, 2)                 # none: reversed


def test_view_shares_memory_and_refuses_a_copy():
    x = ef.zeros(2, 3)
    v = x.view(3, 2)
    v.data[0, 0] = 5.0
    assert x.numpy()[0, 0] == 5.0
    with pytest.raises(RuntimeError, match=r"use \.reshape"):
        x.t().view(6)
    assert x.view(np.int32).dtype == np.int32 and x.t().reshape(6).shape == (6,)


def test_repeat_tiles_and_axis_repeats_elements():
    x = ef.tensor([1, 2])
    np.testing.assert_array_equal(x.repeat(2).numpy(), [1, 2, 1, 2])           # PyTorch: tile
    np.testing.assert_array_equal(x.repeat(2, axis=0).numpy(), [1, 1, 2, 2])   # NumPy: each element
    np.testing.assert_array_equal(x.repeat_interleave(2).numpy(), [1, 1, 2, 2])


def test_split_takes_chunk_sizes_and_axis_takes_sections():
    x = ef.arange(6)
    assert [t.tolist() for t in ef.split(x, 2)] == [[0, 1], [2, 3], [4, 5]]          # chunks of 2
    assert [t.tolist() for t in ef.split(x, 2, dim=0)] == [[0, 1], [2, 3], [4, 5]]
    assert [t.tolist() for t in ef.split(x, 2, axis=0)] == [[0, 1, 2], [3, 4, 5]]    # 2 sections
    assert [t.tolist() for t in x.split([1, 5])] == [[0], [1, 2, 3, 4, 5]]           # sizes
    assert [t.tolist() for t in ef.split(x, [1, 5], axis=0)] == [[0], [1, 2, 3, 4], [5]]  # cut indices
    with pytest.raises(ValueError, match="add up to 3, not the length 6"):
        x.split([1, 2])


def test_max_min_sort_with_a_dim_return_values_and_indices():
    x = ef.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    values, indices = x.max(1)
    assert values.tolist() == [5.0, 6.0] and indices.tolist() == [1, 2]
    assert x.max(dim=1).indices.tolist() == [1, 2] and ef.min(x, 0).values.tolist() == [1.0, 2.0, 3.0]
    assert x.max(axis=1).tolist() == [5.0, 6.0]                       # NumPy: the values
    assert x.max().item() == 6.0 and x.min().item() == 1.0
    assert x.sort(1).indices.tolist() == [[0, 2, 1], [1, 0, 2]]
    assert x.sort(axis=1).tolist() == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]


def test_var_and_std_are_unbiased_unless_axis_is_named():
    x = ef.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    a = x.numpy()
    np.testing.assert_allclose(x.var().item(), a.var(ddof=1), rtol=1e-6)
    np.testing.assert_allclose(x.var(1).numpy(), a.var(axis=1, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(x.var(axis=1).numpy(), a.var(axis=1), rtol=1e-6)
    np.testing.assert_allclose(x.std(dim=1, unbiased=False).numpy(), a.std(axis=1), rtol=1e-6)
    np.testing.assert_allclose(x.std(axis=1, ddof=1).numpy(), a.std(axis=1, ddof=1), rtol=1e-6)


def test_flatten_and_squeeze_follow_pytorch():
    x = ef.zeros(2, 1, 3, 4)
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12) and x.flatten(1, 2).shape == (2, 3, 4)
    assert x.squeeze(0).shape == (2, 1, 3, 4)                     # PyTorch: a size other than 1 is left
    assert x.squeeze(1).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="axis 0 has size 2"):
        x.squeeze(axis=0)                                         # NumPy: an error


def test_conflicting_names_are_listed_in_the_docs():
    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "from-pytorch.md").read_text(encoding="utf-8")
    table = "\n".join(line.split("|")[1] for line in page.splitlines() if line.startswith("| `"))
    for name in ["size", "transpose", "view", "repeat", "split", "max", "sort", "flatten", "var", "squeeze"]:
        assert f".{name}" in table, name


def test_no_torch_name_is_a_pointer_any_more():
    for name in ["view", "permute", "unsqueeze", "dim", "zero_", "add_", "clamp", "grad_fn", "numel", "clone"]:
        assert callable(getattr(ef.ones(2), name)) or name == "grad_fn"
    for name in ["cat", "clamp", "unsqueeze", "permute", "softmax", "flatten", "sin", "cos", "tril", "float",
                 "double", "long"]:
        assert hasattr(ef, name), name
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'no_such_thing'$"):
        ef.ones(2).no_such_thing


def test_functional_accepts_torch_dim_names():
    x = ef.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    np.testing.assert_array_equal(F.softmax(x, dim=1).numpy(), F.softmax(x, axis=1).numpy())
    np.testing.assert_array_equal(F.log_softmax(x, dim=0).numpy(), F.log_softmax(x, 0).numpy())
    np.testing.assert_array_equal(F.logsumexp(x, dim=2, keepdim=True).numpy(),
                                  F.logsumexp(x, axis=2, keepdims=True).numpy())
    assert F.flatten(x, start_dim=0, end_dim=1).shape == (6, 4)
    with pytest.raises(TypeError, match="both axis=1 and dim=2"):
        F.softmax(x, axis=1, dim=2)


@pytest.mark.parametrize("widths", [(1, 2), (1, 2, 0, 3), (0, 0, 2, 1, 1, 1)])
def test_functional_pad_takes_pytorch_order_and_is_differentiable(widths):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4)).astype(np.float64)
    out = F.pad(ef.tensor(x), widths, value=0.5).numpy()
    expected = np.pad(x, [(0, 0)] * (3 - len(widths) // 2) + [tuple(widths[i:i + 2]) for i in
                                                                range(len(widths) - 2, -1, -2)],
                      constant_values=0.5)
    np.testing.assert_array_equal(out, expected)
    assert ef.gradcheck(lambda t: F.pad(t, widths), [ef.tensor(x, requires_grad=True)])
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(out, torch.nn.functional.pad(torch.tensor(x), widths, value=0.5).numpy())


def test_functional_pad_refuses_odd_or_too_many_widths():
    with pytest.raises(ValueError, match="even number of widths"):
        F.pad(ef.ones(2, 2), (1, 2, 3))
    with pytest.raises(ValueError, match="at most two per axis of the 1-d input"):
        F.pad(ef.ones(2), (1, 1, 1, 1))


def test_one_hot_as_pytorch():
    labels = np.array([[0, 3], [2, 1]])
    out = F.one_hot(ef.tensor(labels))
    assert out.shape == (2, 2, 4) and out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy().argmax(-1), labels)
    assert F.one_hot(ef.tensor(labels), 6).shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\)"):
        F.one_hot(ef.tensor(labels), 3)
    with pytest.raises(TypeError, match="integer class indices"):
        F.one_hot(ef.tensor([0.0, 1.0]))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(out.numpy(), torch.nn.functional.one_hot(torch.tensor(labels)).numpy())


def test_relu_accepts_inplace_and_returns_a_new_tensor():
    x = ef.tensor([-1.0, 2.0])
    y = F.relu(x, inplace=True)
    np.testing.assert_array_equal(y.numpy(), [0.0, 2.0])
    np.testing.assert_array_equal(x.numpy(), [-1.0, 2.0])


# ----- small habits: formatting, NumPy operands, module paths ------------------------------

def test_format_a_one_element_tensor():
    loss = ef.tensor(0.123456)
    assert "{:.2f}".format(loss) == "0.12" and f"{ef.tensor([2.5]):.1f}" == "2.5" and f"{ef.tensor(3)}" == "3"
    assert f"{ef.ones(2)}" == str(ef.ones(2))
    with pytest.raises(TypeError, match="one-element tensor"):
        f"{ef.ones(2):.2f}"


def test_ndarray_meets_tensor_as_in_pytorch():
    a = np.zeros(3, dtype=np.float32)
    before = a
    a += ef.ones(3)
    assert a is before and isinstance(a, np.ndarray) and a.tolist() == [1.0, 1.0, 1.0]
    total = np.zeros(3) + ef.tensor([1.0, 2.0, 3.0])
    assert isinstance(total, ef.Tensor) and total.tolist() == [1.0, 2.0, 3.0]
    assert (np.float64(2.0) * ef.ones(2)).dtype == np.float32   # a NumPy scalar never promotes
    assert (np.array([1.0, 5.0]) < ef.tensor([2.0, 2.0])).tolist() == [True, False]


def test_comparison_methods_and_reductions_to_bool():
    torch = pytest.importorskip("torch")
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [5.0, 4.0]])
    x, y, tx, ty = ef.tensor(a), ef.tensor(b), torch.tensor(a), torch.tensor(b)
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        np.testing.assert_array_equal(getattr(x, name)(y).numpy(), getattr(tx, name)(ty).numpy())
    assert x.eq(y).all(dim=1).tolist() == tx.eq(ty).all(dim=1).tolist() and bool(x.ge(0).all())
    assert x.eq(y).any(1, keepdim=True).tolist() == tx.eq(ty).any(1, keepdim=True).tolist()
    assert x.equal(ef.tensor(a)) and not x.equal(y) and x.allclose(x + 1e-9) and not x.allclose(y)
    assert x.sum().item() == 10.0 and x.tolist() == a.tolist() and x.numel() == 4 and x.dim() == 2
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        np.testing.assert_array_equal(getattr(ef, name)(x, 2.0).numpy(), getattr(torch, name)(tx, 2.0).numpy())
        np.testing.assert_array_equal(getattr(ef, name)(x, y).numpy(), getattr(torch, name)(tx, ty).numpy())
    z, tz = ef.tensor([1.0, np.nan, -np.inf]), torch.tensor([1.0, np.nan, -np.inf])
    for name in ("isnan", "isinf", "isfinite"):
        np.testing.assert_array_equal(getattr(ef, name)(z).numpy(), getattr(torch, name)(tz).numpy())
        np.testing.assert_array_equal(getattr(z, name)().numpy(), getattr(tz, name)().numpy())
    assert ef.equal(x, ef.tensor(a)) and ef.allclose(x, x) and ef.numel(x) == 4


def test_import_easyfit_reaches_the_packages_and_pytorch_paths():
    import subprocess
    import sys
    code = ("import easyfit\n"
            "ds = easyfit.utils.data.TensorDataset(easyfit.zeros(5, 2), easyfit.arange(5))\n"
            "assert easyfit.utils.data.DataLoader is easyfit.data.DataLoader and len(ds) == 5\n"
            "assert easyfit.nn.Linear and easyfit.optim.SGD and easyfit.data.Dataset\n"
            "assert easyfit.accelerator.is_available() == easyfit.cuda.is_available()\n"
            "assert easyfit.accelerator.device_count() == easyfit.cuda.device_count()\n"
            "assert easyfit.accelerator.current_accelerator() in (None, 'cuda:0')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tensor_dataset_and_random_split_as_in_pytorch():
    from easyfit.utils.data import DataLoader, TensorDataset, random_split
    x, y = ef.arange(20.0).reshape(10, 2), ef.arange(10)
    ds = TensorDataset(x, y)
    item = ds[3]
    assert isinstance(item[0], ef.Tensor) and item[0].tolist() == [6.0, 7.0] and item[1].item() == 3
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)] and batches[0][1].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="same first dimension"):
        TensorDataset(x, ef.arange(9))
    train, valid = random_split(ds, [7, 3])
    assert len(train) == 7 and len(valid) == 3
    assert sorted(list(train.indices) + list(valid.indices)) == list(range(10))
    assert [len(s) for s in random_split(ds, [0.5, 0.5])] == [5, 5]
    with pytest.raises(ValueError, match="add up to 9"):
        random_split(ds, [4, 5])


def test_device_objects_are_device_strings():
    d = ef.device("cpu")
    assert d == "cpu" and d.type == "cpu" and d.index is None and repr(d) == "device(type='cpu')"
    cuda = ef.device("cuda", 1)
    assert cuda == "cuda:1" and cuda.type == "cuda" and cuda.index == 1
    assert ef.device("cuda") == "cuda:0"
    x = ef.ones(2).to(d)
    assert x.device == "cpu" and x.device.type == "cpu" and ef.zeros(2, device=d).device == "cpu"
    assert ef.nn.Linear(2, 2).to(d).weight.device == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        ef.device("tpu")


def test_view_after_a_conv_flattens_as_in_pytorch():
    """The most common PyTorch CNN idiom: conv/pool outputs are channels-last arrays here, which
    NumPy cannot view as (N, -1); view copies then instead of refusing (a user trial found it)."""
    from easyfit import nn
    conv = nn.Conv2d(1, 4, 3)
    x = ef.randn(2, 1, 8, 8, requires_grad=True)
    y = nn.functional.max_pool2d(conv(x), 2)
    assert not y.is_contiguous()
    flat = y.view(y.size(0), -1)
    assert flat.shape == (2, 4 * 3 * 3)
    np.testing.assert_array_equal(flat.numpy(), y.numpy().reshape(2, -1))
    flat.sum().backward()
    assert x.grad.shape == x.shape
    plain = ef.arange(6.0)
    shared = plain.view(2, 3)
    shared.data[0, 0] = 10.0       # a viewable tensor still shares memory
    assert plain[0].item() == 10.0
    assert plain.is_contiguous() and plain.view(3, 2).is_contiguous()
