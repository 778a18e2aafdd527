"""One harness for every op: forward against NumPy, backward and double backward against
finite differences in float64, and values and gradients against PyTorch when installed."""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pytest

import easyfit as ef
from easyfit.core import gradgradcheck

try:
    import torch
except ImportError:  # the PyTorch comparison is skipped without it
    torch = None


@dataclass
class OpCase:
    name: str
    fn: Callable                    # easyfit: Tensors -> Tensor (or list of Tensors)
    ref: Callable                   # NumPy: arrays -> array (or list)
    shapes: list                    # input shapes
    torch_fn: Optional[Callable] = None
    domain: str = "any"             # 'any', 'positive', or 'away' (|x| >= 0.2: no kinks)
    double: bool = True             # run the double-backward check
    eps: float = 1e-6               # finite-difference step
    atol: float = 1e-6
    kwargs: dict = field(default_factory=dict)

    def __str__(self):
        return f"{self.name}{self.shapes}"


def _inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in case.shapes:
        a = rng.standard_normal(shape)
        if case.domain == "positive":
            a = np.abs(a) + 0.5
        elif case.domain == "away":
            a = np.sign(a) * (np.abs(a) + 0.2)
            a = a + rng.permutation(a.size).reshape(shape) * 1e-2  # no ties
        arrays.append(a)
    return arrays


def _t(f):
    """A torch function, or None when torch is absent."""
    return f if torch is not None else None


def _s(*xs):  # shape helper for readability
    return list(xs)


CASES = [
    OpCase("add", lambda a, b: a + b, np.add, _s((3, 4), (3, 4)), _t(lambda a, b: a + b)),
    OpCase("add_broadcast", lambda a, b: a + b, np.add, _s((2, 3, 4), (3, 1)), _t(lambda a, b: a + b)),
    OpCase("add_scalar_shape", lambda a, b: a + b, np.add, _s((), (2, 3)), _t(lambda a, b: a + b)),
    OpCase("sub", lambda a, b: a - b, np.subtract, _s((4, 1), (1, 5)), _t(lambda a, b: a - b)),
    OpCase("rsub_scalar", lambda a: 2.0 - a, lambda a: 2.0 - a, _s((3,)), _t(lambda a: 2.0 - a)),
    OpCase("add_scalar", lambda a: (a + 0.5) + (2 + a), lambda a: (a + 0.5) + (2 + a), _s((3, 2)),
           _t(lambda a: (a + 0.5) + (2 + a))),
    OpCase("sub_scalar", lambda a: a - 0.3, lambda a: a - 0.3, _s((4,)), _t(lambda a: a - 0.3)),
    OpCase("mul_scalar", lambda a: (a * 1.7) * (3 * a), lambda a: (a * 1.7) * (3 * a), _s((2, 3)),
           _t(lambda a: (a * 1.7) * (3 * a))),
    OpCase("div_scalar", lambda a: a / 0.7, lambda a: a / 0.7, _s((3, 3)), _t(lambda a: a / 0.7)),
    OpCase("pow_scalar_square", lambda a: a ** 2, lambda a: a ** 2, _s((5,)), _t(lambda a: a ** 2)),
    OpCase("pow_scalar_root", lambda a: a ** 0.5, lambda a: a ** 0.5, _s((5,)), _t(lambda a: a ** 0.5),
           domain="positive"),
    OpCase("pow_scalar_negative", lambda a: a ** -2.5, lambda a: a ** -2.5, _s((2, 2)), _t(lambda a: a ** -2.5),
           domain="positive"),
    OpCase("pow_scalar_zero", lambda a: a ** 0, lambda a: a ** 0, _s((3,)), _t(lambda a: a ** 0)),
    OpCase("mul", lambda a, b: a * b, np.multiply, _s((2, 3), (2, 1)), _t(lambda a, b: a * b)),
    OpCase("div", lambda a, b: a / b, np.divide, _s((3, 4), (4,)), _t(lambda a, b: a / b), domain="positive"),
    OpCase("rdiv_scalar", lambda a: 1.5 / a, lambda a: 1.5 / a, _s((3,)), _t(lambda a: 1.5 / a), domain="positive"),
    OpCase("pow_tensor", lambda a, b: a ** b, np.power, _s((3, 2), (3, 2)), _t(lambda a, b: a ** b), domain="positive"),
    OpCase("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, _s((2, 3)), _t(lambda a: a ** 3)),
    OpCase("rpow_scalar", lambda a: 2.0 ** a, lambda a: 2.0 ** a, _s((4,)), _t(lambda a: 2.0 ** a)),
    OpCase("neg", lambda a: -a, np.negative, _s((2, 2)), _t(lambda a: -a)),
    OpCase("abs", ef.abs, np.abs, _s((3, 3)), _t(torch.abs if torch else None), domain="away"),
    OpCase("matmul_2d", ef.matmul, np.matmul, _s((3, 4), (4, 2)), _t(torch.matmul if torch else None)),
    OpCase("matmul_batched", ef.matmul, np.matmul, _s((2, 3, 4), (4, 5)), _t(torch.matmul if torch else None)),
    OpCase("matmul_batch_both", ef.matmul, np.matmul, _s((2, 1, 3, 4), (3, 4, 2)), _t(torch.matmul if torch else None)),
    OpCase("matmul_vec_mat", ef.matmul, np.matmul, _s((4,), (2, 4, 3)), _t(torch.matmul if torch else None)),
    OpCase("matmul_mat_vec", ef.matmul, np.matmul, _s((3, 4), (4,)), _t(torch.matmul if torch else None)),
    OpCase("matmul_vec_vec", ef.matmul, np.matmul, _s((4,), (4,)), _t(torch.matmul if torch else None)),
    OpCase("matmul_operator", lambda a, b: a @ b, np.matmul, _s((2, 3), (3, 2)), _t(lambda a, b: a @ b)),
    OpCase("sum_all", lambda a: a.sum(), np.sum, _s((3, 4)), _t(torch.sum if torch else None)),
    OpCase("sum_axis0", lambda a: ef.sum(a, axis=0), lambda a: a.sum(axis=0), _s((3, 4)), _t(lambda a: a.sum(dim=0))),
    OpCase("sum_neg_axis_keepdims", lambda a: a.sum(axis=-1, keepdims=True),
           lambda a: a.sum(axis=-1, keepdims=True), _s((2, 3, 4)), _t(lambda a: a.sum(dim=-1, keepdim=True))),
    OpCase("sum_tuple_axis", lambda a: a.sum(axis=(0, 2)), lambda a: a.sum(axis=(0, 2)), _s((2, 3, 4)),
           _t(lambda a: a.sum(dim=(0, 2)))),
    OpCase("sum_size0", lambda a: a.sum(axis=0), lambda a: a.sum(axis=0), _s((0, 3)), _t(lambda a: a.sum(dim=0))),
    OpCase("sum_size1", lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), _s((3, 1)), _t(lambda a: a.sum(dim=1))),
    OpCase("mean_all", lambda a: a.mean(), np.mean, _s((3, 4)), _t(torch.mean if torch else None)),
    OpCase("mean_axis_keepdims", lambda a: a.mean(axis=1, keepdims=True), lambda a: a.mean(axis=1, keepdims=True),
           _s((3, 4, 2)), _t(lambda a: a.mean(dim=1, keepdim=True))),
    OpCase("var", lambda a: a.var(axis=0), lambda a: a.var(axis=0), _s((5, 3)),
           _t(lambda a: a.var(dim=0, unbiased=False))),
    OpCase("var_ddof1_all", lambda a: ef.var(a, ddof=1), lambda a: a.var(ddof=1), _s((4, 3)), _t(lambda a: a.var())),
    OpCase("max_all", lambda a: a.max(), np.max, _s((3, 4)), _t(torch.amax if torch else None), domain="away"),
    OpCase("max_axis", lambda a: a.max(axis=1), lambda a: a.max(axis=1), _s((3, 4)),
           _t(lambda a: a.amax(dim=1)), domain="away"),
    OpCase("min_axis_keepdims", lambda a: a.min(axis=0, keepdims=True), lambda a: a.min(axis=0, keepdims=True),
           _s((3, 4)), _t(lambda a: a.amin(dim=0, keepdim=True)), domain="away"),
    OpCase("exp", ef.exp, np.exp, _s((3, 4)), _t(torch.exp if torch else None)),
    OpCase("log", ef.log, np.log, _s((3, 4)), _t(torch.log if torch else None), domain="positive"),
    OpCase("sqrt", ef.sqrt, np.sqrt, _s((3, 4)), _t(torch.sqrt if torch else None), domain="positive"),
    OpCase("tanh", ef.tanh, np.tanh, _s((3, 4)), _t(torch.tanh if torch else None)),
    OpCase("sigmoid", ef.sigmoid, lambda a: 1 / (1 + np.exp(-a)), _s((3, 4)), _t(torch.sigmoid if torch else None)),
    OpCase("relu", ef.relu, lambda a: np.maximum(a, 0), _s((3, 4)), _t(torch.relu if torch else None), domain="away"),
    OpCase("maximum", ef.maximum, np.maximum, _s((3, 4), (4,)), _t(torch.maximum if torch else None), domain="away"),
    OpCase("minimum", ef.minimum, np.minimum, _s((3, 4), (3, 4)), _t(torch.minimum if torch else None), domain="away"),
    OpCase("maximum_scalar", lambda a: ef.maximum(a, 0.1), lambda a: np.maximum(a, 0.1), _s((5,)),
           _t(lambda a: torch.clamp(a, min=0.1)), domain="away"),
    OpCase("clip", lambda a: ef.clip(a, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), _s((4, 4)),
           _t(lambda a: torch.clamp(a, -0.5, 0.5)), domain="away"),
    OpCase("clip_min_only", lambda a: a.clip(min=0.0), lambda a: np.clip(a, 0.0, None), _s((6,)),
           _t(lambda a: torch.clamp(a, min=0.0)), domain="away"),
    OpCase("where", lambda a, b: ef.where(a.array > 0, a, b), lambda a, b: np.where(a > 0, a, b), _s((3, 4), (3, 4)),
           _t(lambda a, b: torch.where(a > 0, a, b)), domain="away"),
    OpCase("where_broadcast", lambda a, b: ef.where(np.array([True, False, True, False]), a, b),
           lambda a, b: np.where(np.array([True, False, True, False]), a, b), _s((3, 4), (3, 1)),
           _t(lambda a, b: torch.where(torch.tensor([True, False, True, False]), a, b))),
    OpCase("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), _s((2, 3, 4)),
           _t(lambda a: a.reshape(4, -1))),
    OpCase("reshape_fn", lambda a: ef.reshape(a, (6,)), lambda a: a.reshape(6), _s((2, 3)), _t(lambda a: a.reshape(6))),
    OpCase("transpose", lambda a: a.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1), _s((2, 3, 4)),
           _t(lambda a: a.permute(2, 0, 1))),
    OpCase("transpose_default", lambda a: ef.transpose(a), lambda a: a.transpose(), _s((2, 3, 4)),
           _t(lambda a: a.permute(2, 1, 0))),
    OpCase("T", lambda a: a.T, lambda a: a.T, _s((2, 3)), _t(lambda a: a.T)),
    OpCase("swapaxes", lambda a: ef.swapaxes(a, 0, -1), lambda a: np.swapaxes(a, 0, -1), _s((2, 3, 4)),
           _t(lambda a: a.transpose(0, -1))),
    OpCase("expand_dims", lambda a: ef.expand_dims(a, 1), lambda a: np.expand_dims(a, 1), _s((2, 3)),
           _t(lambda a: a.unsqueeze(1))),
    OpCase("expand_dims_neg", lambda a: ef.expand_dims(a, -1), lambda a: np.expand_dims(a, -1), _s((2, 3)),
           _t(lambda a: a.unsqueeze(-1))),
    OpCase("squeeze", lambda a: a.squeeze(), lambda a: a.squeeze(), _s((1, 3, 1)), _t(lambda a: a.squeeze())),
    OpCase("squeeze_axis", lambda a: ef.squeeze(a, 0), lambda a: a.squeeze(0), _s((1, 3, 1)),
           _t(lambda a: a.squeeze(0))),
    OpCase("broadcast_to", lambda a: ef.broadcast_to(a, (2, 3, 4)), lambda a: np.broadcast_to(a, (2, 3, 4)),
           _s((3, 1)), _t(lambda a: a.expand(2, 3, 4))),
    OpCase("concatenate", lambda a, b: ef.concatenate([a, b], axis=1), lambda a, b: np.concatenate([a, b], axis=1),
           _s((2, 3), (2, 2)), _t(lambda a, b: torch.cat([a, b], dim=1))),
    OpCase("concatenate_neg_axis", lambda a, b, c: ef.concatenate([a, b, c], axis=-1),
           lambda a, b, c: np.concatenate([a, b, c], axis=-1), _s((2, 1), (2, 0), (2, 3)),
           _t(lambda a, b, c: torch.cat([a, b, c], dim=-1))),
    OpCase("stack", lambda a, b: ef.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
           _s((2, 3), (2, 3)), _t(lambda a, b: torch.stack([a, b], dim=1))),
    OpCase("split_sections", lambda a: ef.split(a, 2, axis=1), lambda a: np.split(a, 2, axis=1), _s((3, 4)),
           _t(lambda a: list(torch.split(a, 2, dim=1)))),
    OpCase("split_indices_numpy", lambda a: ef.split(a, [1, 3], axis=0), lambda a: np.split(a, [1, 3]), _s((5, 2)),
           _t(lambda a: list(torch.split(a, [1, 2, 2])))),
    OpCase("split_one_used", lambda a: ef.split(a, 2)[1], lambda a: np.split(a, 3)[1], _s((6, 2)),
           _t(lambda a: torch.split(a, 2)[1])),
    OpCase("split_size_dim", lambda a: a.split(2, dim=1), lambda a: np.split(a, [2, 4], axis=1), _s((3, 5)),
           _t(lambda a: list(a.split(2, dim=1)))),
    OpCase("split_sizes_list", lambda a: ef.split(a, [1, 3], 1), lambda a: np.split(a, [1], axis=1), _s((2, 4)),
           _t(lambda a: list(torch.split(a, [1, 3], 1)))),
    OpCase("einsum_matmul", lambda a, b: ef.einsum("ij,jk->ik", a, b), lambda a, b: np.einsum("ij,jk->ik", a, b),
           _s((2, 3), (3, 4)), _t(lambda a, b: torch.einsum("ij,jk->ik", a, b))),
    OpCase("einsum_implicit", lambda a, b: ef.einsum("ij,kj", a, b), lambda a, b: np.einsum("ij,kj", a, b),
           _s((2, 3), (4, 3)), _t(lambda a, b: torch.einsum("ij,kj", a, b))),
    OpCase("einsum_batch_ellipsis", lambda a, b: ef.einsum("...ij,...jk->...ik", a, b),
           lambda a, b: np.einsum("...ij,...jk->...ik", a, b), _s((2, 2, 3), (2, 3, 2)),
           _t(lambda a, b: torch.einsum("...ij,...jk->...ik", a, b))),
    OpCase("einsum_reduce_own_axis", lambda a, b: ef.einsum("ij,k->ik", a, b),
           lambda a, b: np.einsum("ij,k->ik", a, b), _s((2, 3), (4,)), _t(lambda a, b: torch.einsum("ij,k->ik", a, b))),
    OpCase("einsum_transposed_out", lambda a: ef.einsum("ijk->kij", a), lambda a: np.einsum("ijk->kij", a),
           _s((2, 3, 4)), _t(lambda a: torch.einsum("ijk->kij", a))),
    OpCase("einsum_sum_middle", lambda a: ef.einsum("ijk->ik", a), lambda a: np.einsum("ijk->ik", a),
           _s((2, 3, 4)), _t(lambda a: torch.einsum("ijk->ik", a))),
    OpCase("pad", lambda a: ef.pad(a, ((1, 0), (2, 1))), lambda a: np.pad(a, ((1, 0), (2, 1))), _s((2, 3)),
           _t(lambda a: torch.nn.functional.pad(a, (2, 1, 1, 0)))),
    OpCase("pad_value", lambda a: ef.pad(a, 1, constant_values=3.0), lambda a: np.pad(a, 1, constant_values=3.0),
           _s((2, 2)), _t(lambda a: torch.nn.functional.pad(a, (1, 1, 1, 1), value=3.0))),
    OpCase("getitem_basic", lambda a: a[1:, ::2, None, ...], lambda a: a[1:, ::2, None, ...], _s((3, 4, 2)),
           _t(lambda a: a[1:, ::2, None, ...])),
    OpCase("getitem_int", lambda a: a[-1], lambda a: a[-1], _s((3, 4)), _t(lambda a: a[-1])),
    OpCase("getitem_int_array_repeats", lambda a: a[np.array([0, 2, 0, 0])], lambda a: a[np.array([0, 2, 0, 0])],
           _s((3, 4)), _t(lambda a: a[torch.tensor([0, 2, 0, 0])])),
    OpCase("getitem_tensor_index", lambda a: a[ef.tensor([1, 1, 0])], lambda a: a[np.array([1, 1, 0])],
           _s((3, 2)), _t(lambda a: a[torch.tensor([1, 1, 0])])),
    OpCase("getitem_two_arrays", lambda a: a[np.array([0, 1, 1]), np.array([2, 0, 2])],
           lambda a: a[np.array([0, 1, 1]), np.array([2, 0, 2])], _s((2, 3)),
           _t(lambda a: a[torch.tensor([0, 1, 1]), torch.tensor([2, 0, 2])])),
    OpCase("getitem_mixed", lambda a: a[:, np.array([3, 0, 3])], lambda a: a[:, np.array([3, 0, 3])],
           _s((2, 4)), _t(lambda a: a[:, torch.tensor([3, 0, 3])])),
    OpCase("getitem_bool_mask", lambda a: a[a.array > 0], lambda a: a[a > 0], _s((3, 4)),
           _t(lambda a: a[a > 0]), domain="away"),
    OpCase("getitem_list", lambda a: a[[2, 0]], lambda a: a[[2, 0]], _s((3, 2)), _t(lambda a: a[[2, 0]])),
    OpCase("astype_roundtrip", lambda a: a.astype(np.float32).astype(np.float64),
           lambda a: a.astype(np.float32).astype(np.float64),
           _s((3,)), _t(lambda a: a.float().double()), eps=1e-2, atol=1e-4),
    # ----- PyTorch's names (issue 16): each also against torch -----
    OpCase("sum_dim_keepdim", lambda a: a.sum(dim=1, keepdim=True), lambda a: a.sum(axis=1, keepdims=True),
           _s((3, 4)), _t(lambda a: a.sum(dim=1, keepdim=True))),
    OpCase("mean_dim_tuple", lambda a: ef.mean(a, (0, 2)), lambda a: a.mean(axis=(0, 2)), _s((2, 3, 4)),
           _t(lambda a: torch.mean(a, (0, 2)))),
    OpCase("var_dim_unbiased", lambda a: a.var(1), lambda a: a.var(axis=1, ddof=1), _s((3, 4)),
           _t(lambda a: a.var(1))),
    OpCase("var_correction0", lambda a: a.var(dim=0, correction=0, keepdim=True),
           lambda a: a.var(axis=0, keepdims=True), _s((3, 4)), _t(lambda a: a.var(dim=0, correction=0, keepdim=True))),
    OpCase("std_dim", lambda a: a.std(0), lambda a: a.std(axis=0, ddof=1), _s((4, 3)), _t(lambda a: a.std(0))),
    OpCase("std_numpy_axis", lambda a: a.std(axis=0), lambda a: a.std(axis=0), _s((4, 3)),
           _t(lambda a: a.std(0, unbiased=False))),
    OpCase("max_dim_values_indices", lambda a: list(a.max(1)), lambda a: [a.max(axis=1), a.argmax(axis=1)],
           _s((3, 4)), _t(lambda a: list(a.max(1))), domain="away"),
    OpCase("min_dim_keepdim_values", lambda a: ef.min(a, dim=0, keepdim=True).values,
           lambda a: a.min(axis=0, keepdims=True), _s((3, 4)), _t(lambda a: torch.min(a, dim=0, keepdim=True).values),
           domain="away"),
    OpCase("max_of_two_tensors", lambda a, b: ef.max(a, b), np.maximum, _s((3, 4), (3, 4)),
           _t(torch.max if torch else None),
           domain="away"),
    OpCase("amax", lambda a: ef.amax(a, (0, 1)), lambda a: a.max(axis=(0, 1)), _s((2, 3, 2)),
           _t(lambda a: torch.amax(a, (0, 1))), domain="away"),
    OpCase("sort_dim_descending", lambda a: list(a.sort(dim=0, descending=True)),
           lambda a: [-np.sort(-a, axis=0), np.argsort(-a, axis=0)], _s((4, 3)),
           _t(lambda a: list(a.sort(dim=0, descending=True))), domain="away"),
    OpCase("sort_numpy_axis", lambda a: a.sort(axis=1), lambda a: np.sort(a, axis=1), _s((3, 4)),
           _t(lambda a: a.sort(dim=1).values), domain="away"),
    OpCase("argsort", lambda a: [ef.argsort(a, 1), a.gather(1, a.argsort(dim=1, descending=True))],
           lambda a: [np.argsort(a, axis=1), -np.sort(-a, axis=1)], _s((3, 4)),
           _t(lambda a: [torch.argsort(a, 1), a.gather(1, a.argsort(dim=1, descending=True))]), domain="away"),
    OpCase("topk", lambda a: list(a.topk(2)), lambda a: [-np.sort(-a, axis=1)[:, :2], np.argsort(-a, axis=1)[:, :2]],
           _s((3, 5)), _t(lambda a: list(a.topk(2))), domain="away"),
    OpCase("topk_smallest_dim0", lambda a: ef.topk(a, 2, dim=0, largest=False).values,
           lambda a: np.sort(a, axis=0)[:2], _s((4, 3)), _t(lambda a: torch.topk(a, 2, dim=0, largest=False).values),
           domain="away"),
    OpCase("cumsum", lambda a: a.cumsum(1), lambda a: np.cumsum(a, axis=1), _s((3, 4)), _t(lambda a: a.cumsum(1))),
    OpCase("cumsum_dim0", lambda a: ef.cumsum(a, dim=0), lambda a: np.cumsum(a, axis=0), _s((3, 2)),
           _t(lambda a: torch.cumsum(a, dim=0))),
    OpCase("prod_all", lambda a: a.prod(), np.prod, _s((2, 3)), _t(lambda a: a.prod())),
    OpCase("prod_dim_odd", lambda a: ef.prod(a, 1), lambda a: a.prod(axis=1), _s((2, 5)),
           _t(lambda a: torch.prod(a, 1))),
    OpCase("prod_with_zero_keepdim", lambda a: (a * ef.tensor([1.0, 0.0, 1.0])).prod(dim=1, keepdim=True),
           lambda a: (a * np.array([1.0, 0.0, 1.0])).prod(axis=1, keepdims=True), _s((2, 3)),
           _t(lambda a: (a * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)).prod(dim=1, keepdim=True))),
    OpCase("norm_2", lambda a: a.norm(), lambda a: np.linalg.norm(a), _s((3, 4)), _t(lambda a: a.norm())),
    OpCase("norm_1_dim", lambda a: ef.norm(a, 1, dim=1), lambda a: np.abs(a).sum(axis=1), _s((3, 4)),
           _t(lambda a: torch.norm(a, 1, dim=1)), domain="away"),
    OpCase("norm_2_dim_keepdim", lambda a: a.norm(p=2, dim=0, keepdim=True),
           lambda a: np.sqrt((a * a).sum(axis=0, keepdims=True)), _s((3, 4)),
           _t(lambda a: a.norm(p=2, dim=0, keepdim=True))),
    OpCase("sin", lambda a: a.sin(), np.sin, _s((3, 4)), _t(torch.sin if torch else None)),
    OpCase("cos", ef.cos, np.cos, _s((3, 4)), _t(torch.cos if torch else None)),
    OpCase("pow_method", lambda a: a.pow(3), lambda a: a ** 3, _s((3,)), _t(lambda a: a.pow(3))),
    OpCase("pow_fn_tensor", lambda a, b: ef.pow(a, b), np.power, _s((3,), (3,)), _t(torch.pow if torch else None),
           domain="positive"),
    OpCase("clamp", lambda a: a.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), _s((4, 4)),
           _t(lambda a: a.clamp(-0.5, 0.5)), domain="away"),
    OpCase("clamp_min_tensor", lambda a, b: ef.clamp(a, min=b), np.maximum, _s((3, 4), (4,)),
           _t(lambda a, b: torch.clamp(a, min=b)), domain="away"),
    OpCase("methods_exp_log_sqrt", lambda a: a.exp().log().sqrt().tanh().sigmoid().abs(),
           lambda a: np.abs(1 / (1 + np.exp(-np.tanh(np.sqrt(a))))), _s((3,)),
           _t(lambda a: a.exp().log().sqrt().tanh().sigmoid().abs()), domain="positive"),
    OpCase("relu_method", lambda a: a.relu(), lambda a: np.maximum(a, 0), _s((5,)), _t(lambda a: a.relu()),
           domain="away"),
    OpCase("mm", lambda a, b: a.mm(b), np.matmul, _s((3, 4), (4, 2)), _t(lambda a, b: a.mm(b))),
    OpCase("bmm", ef.bmm, np.matmul, _s((2, 3, 4), (2, 4, 2)), _t(torch.bmm if torch else None)),
    OpCase("softmax_method", lambda a: a.softmax(dim=1),
           lambda a: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True), _s((3, 4)), _t(lambda a: a.softmax(dim=1))),
    OpCase("log_softmax_fn", lambda a: ef.log_softmax(a, 0),
           lambda a: a - np.log(np.exp(a).sum(axis=0, keepdims=True)), _s((3, 4)),
           _t(lambda a: torch.log_softmax(a, 0))),
    OpCase("view", lambda a: a.view(4, -1), lambda a: a.reshape(4, -1), _s((2, 3, 4)), _t(lambda a: a.view(4, -1))),
    OpCase("view_as", lambda a, b: a.view_as(b), lambda a, b: a.reshape(b.shape), _s((2, 3), (3, 2)),
           _t(lambda a, b: a.view_as(b))),
    OpCase("permute", lambda a: a.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), _s((2, 3, 4)),
           _t(lambda a: a.permute(2, 0, 1))),
    OpCase("transpose_two_dims_swap", lambda a: a.transpose(0, 1), lambda a: a.T, _s((3, 3)),
           _t(lambda a: a.transpose(0, 1))),
    OpCase("transpose_fn_two_dims", lambda a: ef.transpose(a, 1, 2), lambda a: np.swapaxes(a, 1, 2), _s((2, 3, 4)),
           _t(lambda a: torch.transpose(a, 1, 2))),
    OpCase("t", lambda a: a.t(), lambda a: a.T, _s((2, 3)), _t(lambda a: a.t())),
    OpCase("mT", lambda a: a.mT, lambda a: np.swapaxes(a, -1, -2), _s((2, 3, 4)), _t(lambda a: a.mT)),
    OpCase("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a[..., None], _s((2, 3)), _t(lambda a: a.unsqueeze(-1))),
    OpCase("squeeze_dim_not_one_is_kept", lambda a: a.squeeze(1), lambda a: a, _s((2, 3)), _t(lambda a: a.squeeze(1))),
    OpCase("expand", lambda a: a.expand(2, -1, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), _s((3, 1)),
           _t(lambda a: a.expand(2, -1, 4))),
    OpCase("expand_as", lambda a, b: a.expand_as(b) * b, lambda a, b: a * b, _s((1, 3), (2, 3)),
           _t(lambda a, b: a.expand_as(b) * b)),
    OpCase("repeat_tiles", lambda a: a.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3)), _s((2, 3)),
           _t(lambda a: a.repeat(2, 1, 3))),
    OpCase("repeat_numpy_axis", lambda a: a.repeat(2, axis=1), lambda a: a.repeat(2, axis=1), _s((2, 3)),
           _t(lambda a: a.repeat_interleave(2, dim=1))),
    OpCase("repeat_interleave_counts", lambda a: ef.repeat_interleave(a, ef.tensor([1, 0, 3]), dim=0),
           lambda a: np.repeat(a, [1, 0, 3], axis=0), _s((3, 2)),
           _t(lambda a: torch.repeat_interleave(a, torch.tensor([1, 0, 3]), dim=0))),
    OpCase("flip", lambda a: a.flip(0, 2), lambda a: np.flip(a, (0, 2)), _s((2, 3, 2)), _t(lambda a: a.flip(0, 2))),
    OpCase("roll", lambda a: a.roll(1, 1), lambda a: np.roll(a, 1, axis=1), _s((2, 4)), _t(lambda a: a.roll(1, 1))),
    OpCase("roll_flat", lambda a: ef.roll(a, -2), lambda a: np.roll(a, -2), _s((2, 3)),
           _t(lambda a: torch.roll(a, -2))),
    OpCase("chunk", lambda a: a.chunk(3, dim=1), lambda a: np.split(a, [2, 4], axis=1), _s((2, 5)),
           _t(lambda a: list(a.chunk(3, dim=1)))),
    OpCase("narrow", lambda a: a.narrow(1, 1, 2), lambda a: a[:, 1:3], _s((2, 4)), _t(lambda a: a.narrow(1, 1, 2))),
    OpCase("flatten_start_dim", lambda a: a.flatten(1), lambda a: a.reshape(2, -1), _s((2, 3, 4)),
           _t(lambda a: a.flatten(1))),
    OpCase("flatten_all", lambda a: ef.flatten(a), lambda a: a.reshape(-1), _s((2, 3)), _t(lambda a: torch.flatten(a))),
    OpCase("contiguous_of_transposed", lambda a: a.t().contiguous(), lambda a: a.T, _s((2, 3)),
           _t(lambda a: a.t().contiguous())),
    OpCase("clone", lambda a: a.clone() * 2, lambda a: a * 2, _s((3,)), _t(lambda a: a.clone() * 2)),
    OpCase("tril", lambda a: a.tril(), np.tril, _s((3, 4)), _t(lambda a: a.tril())),
    OpCase("triu_diagonal", lambda a: ef.triu(a, 1), lambda a: np.triu(a, 1), _s((2, 3, 3)),
           _t(lambda a: torch.triu(a, 1))),
    OpCase("gather", lambda a: a.gather(1, ef.tensor([[0, 0, 2], [1, 0, 1]])),
           lambda a: np.take_along_axis(a, np.array([[0, 0, 2], [1, 0, 1]]), 1), _s((2, 3)),
           _t(lambda a: a.gather(1, torch.tensor([[0, 0, 2], [1, 0, 1]])))),
    OpCase("gather_smaller_index", lambda a: ef.gather(a, 0, ef.tensor([[2, 0]])),
           lambda a: np.take_along_axis(a[:, :2], np.array([[2, 0]]), 0), _s((3, 3)),
           _t(lambda a: torch.gather(a, 0, torch.tensor([[2, 0]])))),
    OpCase("scatter", lambda a, b: a.scatter(0, ef.tensor([[1, 0, 2]]), b),
           lambda a, b: _np_scatter(a, np.array([[1, 0, 2]]), b), _s((3, 3), (1, 3)),
           _t(lambda a, b: a.scatter(0, torch.tensor([[1, 0, 2]]), b))),
    OpCase("scatter_add_repeats", lambda a, b: a.scatter_add(1, ef.tensor([[0, 0], [2, 0]]), b),
           lambda a, b: a + np.array([[b[0, 0] + b[0, 1], 0, 0], [b[1, 1], 0, b[1, 0]]]), _s((2, 3), (2, 2)),
           _t(lambda a, b: a.scatter_add(1, torch.tensor([[0, 0], [2, 0]]), b))),
    OpCase("index_select", lambda a: a.index_select(1, ef.tensor([2, 0, 2])), lambda a: a[:, [2, 0, 2]], _s((2, 3)),
           _t(lambda a: a.index_select(1, torch.tensor([2, 0, 2])))),
    OpCase("masked_fill", lambda a: a.masked_fill(ef.tensor([True, False, True]), -1.0),
           lambda a: np.where([True, False, True], -1.0, a), _s((2, 3)),
           _t(lambda a: a.masked_fill(torch.tensor([True, False, True]), -1.0))),
    OpCase("cat", lambda a, b: ef.cat([a, b], dim=0), lambda a, b: np.concatenate([a, b]), _s((1, 3), (2, 3)),
           _t(lambda a, b: torch.cat([a, b], dim=0))),
    OpCase("stack_dim", lambda a, b: ef.stack((a, b), dim=-1), lambda a, b: np.stack([a, b], -1), _s((2,), (2,)),
           _t(lambda a, b: torch.stack((a, b), dim=-1))),
    OpCase("composite", lambda a, b: ef.tanh(a @ b).sum(axis=1) * ef.exp(-a.mean()),
           lambda a, b: np.tanh(a @ b).sum(axis=1) * np.exp(-a.mean()), _s((3, 4), (4, 2)),
           _t(lambda a, b: torch.tanh(a @ b).sum(dim=1) * torch.exp(-a.mean()))),
]


def _np_scatter(a, index, src):
    out = a.copy()
    np.put_along_axis(out, index, src[:index.shape[0], :index.shape[1]], 0)
    return out


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_numpy(case):
    arrays = _inputs(case)
    out = _as_list(case.fn(*[ef.tensor(a) for a in arrays]))
    ref = _as_list(case.ref(*arrays))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == np.shape(r)
        np.testing.assert_allclose(o.numpy(), r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_matches_finite_differences(case):
    tensors = [ef.tensor(a, requires_grad=True) for a in _inputs(case)]
    assert ef.gradcheck(case.fn, tensors, eps=case.eps, atol=case.atol, rtol=1e-4)


@pytest.mark.parametrize("case", [c for c in CASES if c.double], ids=str)
def test_double_backward_matches_finite_differences(case):
    tensors = [ef.tensor(a, requires_grad=True) for a in _inputs(case)]
    assert gradgradcheck(case.fn, tensors, eps=case.eps, atol=max(case.atol, 1e-5), rtol=1e-3)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("case", [c for c in CASES if c.torch_fn is not None], ids=str)
def test_values_and_gradients_match_pytorch(case):
    arrays = _inputs(case)
    ours = [ef.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = _as_list(case.fn(*ours))
    ref = _as_list(case.torch_fn(*theirs))
    rng = np.random.default_rng(1)
    seeds = [rng.standard_normal(o.shape) for o in out]
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=1e-10, atol=1e-12)
    total = ef.sum(ef.stack([(o * ef.tensor(s)).sum() for o, s in zip(out, seeds)]))
    total.backward()
    torch.stack([(r * torch.tensor(s)).sum() for r, s in zip(ref, seeds)]).sum().backward()
    for x, tx in zip(ours, theirs):
        if tx.grad is None:
            assert x.grad is None or not np.any(x.grad.numpy())
        else:
            np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_every_public_function_is_covered():
    """A new public op must get a case in the table above."""
    names = {"exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "maximum", "minimum", "where", "reshape",
             "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack", "split",
             "matmul", "einsum", "pad", "sum", "mean", "var", "std", "max", "min", "amax", "clip", "clamp", "sin",
             "cos", "pow", "norm", "mm", "bmm", "softmax", "log_softmax", "cumsum", "prod", "sort", "argsort", "topk",
             "view", "permute", "unsqueeze", "expand", "repeat", "flip", "roll", "chunk", "narrow", "flatten", "contiguous",
             "clone", "tril", "triu", "gather", "scatter", "scatter_add", "index_select", "masked_fill", "cat"}
    covered = " ".join(c.name for c in CASES)
    missing = [n for n in names if n not in covered]
    assert not missing, f"ops without a harness case: {missing}"


@pytest.mark.skipif(not ef.cuda.is_available(), reason="no CUDA device (CuPy and a GPU are needed)")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_cpu(case):
    """The same op on 'cuda' gives the CPU's values and gradients."""
    arrays = _inputs(case)
    results = {}
    for device in ("cpu", "cuda"):
        xs = [ef.tensor(a, device=device, requires_grad=True) for a in arrays]
        out = _as_list(case.fn(*xs))
        ef.sum(ef.stack([o.sum() for o in out])).backward()
        results[device] = ([o.cpu().numpy() for o in out],
                           [None if x.grad is None else x.grad.cpu().numpy() for x in xs])
    for a, b in zip(results["cpu"][0] + results["cpu"][1], results["cuda"][0] + results["cuda"][1]):
        if a is None or b is None:
            assert a is None and b is None or not np.any(a if a is not None else b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
