"""The embedding gradient's row sums (`_sum_rows`): the same bits as the generic scatter-add."""
import numpy as np
import pytest

import easyfit as ef
from easyfit.core.backend import scatter_add
from easyfit.nn import functional as F
from easyfit.nn.functional.embedding import _MANY_USES, _sum_rows


def _reference(num_rows, rows, values, skip):
    out = np.zeros((num_rows,) + values.shape[1:], values.dtype)
    scatter_add(out, rows, values)
    if skip is not None:
        out[skip] = 0
    return out


@pytest.mark.parametrize("num_rows, count, dim, skip", [
    (20_000, 12_800, 64, 0),        # the text benchmark: many padding uses, skipped
    (20_000, 12_800, 64, None),     # the same padding row summed (pairwise, many uses)
    (128, 2048, 16, None),          # a small vocabulary: every row used more than _MANY_USES times
    (5, 1000, 3, 2),
    (70_000, 3000, 4, 7),           # more rows than 16-bit keys hold
    (10, 1, 2, None),
    (10, 0, 2, None),
])
def test_sum_rows_matches_scatter_add_bit_for_bit(num_rows, count, dim, skip):
    rng = np.random.default_rng(count)
    rows = rng.integers(0, num_rows, count)
    if num_rows == 20_000:
        rows[rng.random(count) < 0.45] = 0
    values = rng.standard_normal((count, dim)).astype(np.float32)
    got = _sum_rows(num_rows, rows, values, skip)
    assert got.shape == (num_rows, dim) and got.dtype == np.float32
    np.testing.assert_array_equal(got, _reference(num_rows, rows, values, skip))


def test_rows_used_a_few_times_are_summed_in_index_order():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 400, 1000)
    assert np.bincount(rows).max() <= _MANY_USES
    values = (rng.standard_normal((1000, 5)) * 10.0 ** rng.integers(-6, 6, (1000, 1))).astype(np.float32)
    loop = np.zeros((400, 5), np.float32)
    for i, row in enumerate(rows):
        loop[row] += values[i]
    np.testing.assert_array_equal(_sum_rows(400, rows, values), loop)


def test_embedding_gradient_with_padding_and_trailing_shape():
    rng = np.random.default_rng(2)
    weight = ef.tensor(rng.standard_normal((30, 3)), requires_grad=True)
    indices = rng.integers(0, 30, (4, 7, 5))
    indices[:, -2:] = 4
    out = F.embedding(ef.tensor(indices), weight, padding_idx=4)
    upstream = rng.standard_normal(out.shape)
    (out * ef.tensor(upstream)).sum().backward()
    expected = np.zeros((30, 3))
    np.add.at(expected, indices.reshape(-1), upstream.reshape(-1, 3))
    expected[4] = 0
    np.testing.assert_allclose(weight.grad.numpy(), expected, rtol=1e-12, atol=1e-12)
