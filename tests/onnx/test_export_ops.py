"""Every tensor op a forward pass can use, exported and compared with onnxruntime."""
import numpy as np
import pytest

from harness import Lambda, check_export, randn

import easyfit as ef

X = lambda n: (randn(n, 4, 5, seed=n),)
XY = lambda n: (randn(n, 4, 5, seed=n), randn(n, 4, 5, seed=n + 7))

CASES = {
    "arithmetic": (lambda m, x, y: (x + y, x - 2.0, 3 * x, x / (y * y + 1.0), 1.0 / (abs(x) + 1.0), -x,
                                    abs(x) ** 1.5, 2.0 ** x, x ** 2), XY),
    "broadcasting": (lambda m, x: (x + x[:, :1, :], x * x.mean(axis=0), x - ef.tensor(np.arange(5.0, dtype=np.float32)),
                                   x[:, :, :1] / (x[:1] * x[:1] + 1.0)), X),
    "matmul": (lambda m, x, y: (x @ ef.swapaxes(y, 1, 2), ef.matmul(x, ef.tensor(randn(5, 3))), x[:, 0] @ ef.tensor(randn(5)),
                                ef.tensor(randn(4)) @ x), XY),
    "einsum": (lambda m, x, y: (ef.einsum("bij,bkj->bik", x, y), ef.einsum("...j,jk->...k", x, ef.tensor(randn(5, 2))),
                                ef.einsum("bij->bj", x)), XY),
    "reshape": (lambda m, x: (x.reshape(x.shape[0], -1), x.reshape(-1, 5), x.reshape(x.shape[0], 2, 2, 5),
                              x.reshape(x.shape[0] * 4, 5), ef.reshape(x, (x.shape[0], 20)).reshape(x.shape),
                              x.flatten()), X),
    "transpose": (lambda m, x: (x.T, ef.transpose(x, (1, 0, 2)), ef.swapaxes(x, 0, 2), ef.transpose(x, (0, 2, 1))), X),
    "squeeze_expand": (lambda m, x: (ef.expand_dims(x, 1), ef.expand_dims(x, (0, -1)), ef.squeeze(x[:, :1], 1),
                                     ef.squeeze(ef.expand_dims(x, 3), axis=3), ef.broadcast_to(x[:, :1], (x.shape[0], 4, 5)),
                                     ef.broadcast_to(x[:, :, :1], x.shape)), X),
    "concatenate_stack_split": (lambda m, x, y: (ef.concatenate([x, y], axis=1), ef.concatenate([x, y], axis=0),
                                                 ef.stack([x, y], axis=1), ef.stack([x, y]), *ef.split(x, 2, axis=1),
                                                 *ef.split(x, [1, 3], axis=2)), XY),
    "indexing_basic": (lambda m, x: (x[0], x[:, 1], x[:, -1], x[..., 2], x[:, 1:3], x[:, ::2], x[:, ::-1], x[None],
                                     x[:, None, 2:, None], x[..., None], x[:, -2:, 1:-1], x[:, 3:0:-2], x[-1:]), X),
    "indexing_arrays": (lambda m, x: (x[:, np.array([0, 2, 2, -1])], x[:, :, [4, 0]], x[np.array([0, 0])],
                                      x[:, np.array([[1, 2], [3, 0]])], x[:, ef.argmax(x[0, :, 0], axis=0)]), X),
    "reductions": (lambda m, x: (x.sum(), x.sum(axis=1), x.sum(axis=(1, 2), keepdims=True), x.mean(axis=-1),
                                 x.mean(axis=(0, 2)), x.max(axis=1), x.min(axis=2, keepdims=True), x.max(),
                                 x.var(axis=2), x.std(axis=1, keepdims=True)), X),
    "argmax": (lambda m, x: (ef.argmax(x, axis=1), ef.argmin(x, axis=-1, keepdims=True), x.argmax(axis=2)), X),
    "elementwise": (lambda m, x: (ef.exp(x), ef.log(abs(x) + 0.5), ef.sqrt(abs(x)), ef.tanh(x), ef.sigmoid(x),
                                  ef.relu(x), ef.maximum(x, 0.2), ef.minimum(x, x * 0.5), ef.clip(x, -0.5, 0.7),
                                  x.clip(min=0.1), ef.clip(x, max=0.0)), X),
    "where_and_comparisons": (lambda m, x, y: (ef.where(x > y, x, y), ef.where(x <= 0.0, 0.0, x), x == y, x != y,
                                               x < 0.5, x >= y, (x > 0).astype(np.float32) * y), XY),
    "pad": (lambda m, x: (ef.pad(x, ((0, 0), (1, 2), (0, 1))), ef.pad(x, 1, constant_values=-1.0)), X),
    "casts": (lambda m, x: (x.astype(np.float64) * 2.0, (x * 10).astype(np.int64), x.astype(np.int32) + 1,
                            ef.arange(5) * (x > 0).astype(np.int64)), X),
    # PyTorch's names (issue 16): layout, indexing, sorting, running sums, roots
    "pytorch_layout": (lambda m, x: (x.view(x.shape[0], -1), x.view(-1, 5), ef.permute(x, (2, 0, 1)), x.permute(0, 2, 1),
                                     x.transpose(1, 2), x[:, :1].expand(x.shape[0], 4, 5), x[:, :1].expand(-1, 3, -1),
                                     x.repeat(1, 2, 1), ef.tile(x, (1, 1, 2)), x.unsqueeze(1), x.flatten(1),
                                     ef.unflatten(x, 2, (5, 1)), ef.narrow(x, 2, 1, 3), *ef.chunk(x, 2, dim=1),
                                     *ef.split(x, 2, dim=2), *x.split([1, 3], dim=1), ef.clone(x) * 2.0,
                                     x[:, 0].t(), ef.repeat_interleave(x, 2, dim=1)), X),
    "flip_roll": (lambda m, x: (ef.flip(x, 1), x.flip((1, 2)), ef.roll(x, 2, 2), ef.roll(x, (1, -1), (1, 2)), ef.roll(x, 1, (1, 2)),
                                ef.roll(x, (1, 2), 2),
                                ef.roll(x[0], 3)), X),
    "cumsum_tril_triu": (lambda m, x: (ef.cumsum(x, 1), x.cumsum(dim=-1), ef.cumsum(x, axis=None), ef.tril(x),
                                       ef.triu(x, 1), ef.tril(x, -1), x.triu(diagonal=2)), X),
    "roots_products_trig": (lambda m, x: (x.std(1), x.std(dim=(1, 2), keepdim=True), ef.norm(x, dim=2),
                                          ef.norm(x, p=3, dim=1), x.norm(), ef.prod(x, 1), x.prod(dim=2, keepdim=True),
                                          ef.sin(x), ef.cos(x), ef.amax(x, dim=(1, 2)), ef.amin(x, 1)), X),
    "max_min_along_a_dim": (lambda m, x: (*x.max(1), *x.min(dim=2, keepdim=True), x.max(dim=-1).values,
                                          ef.argmax(x, 1), x.argmin(dim=2, keepdim=True)), X),
    "sort_topk": (lambda m, x: (*ef.sort(x, 1), *x.sort(dim=2, descending=True), ef.argsort(x, -1),
                                *ef.topk(x, 2, 1), *x.topk(3, dim=2, largest=False)), X),
    "gather_index_select_scatter": (lambda m, x: (ef.gather(x, 1, x.argmax(dim=1, keepdim=True)),
                                                  ef.gather(x, 2, ef.argsort(x, 2)[:, :, :2]),
                                                  ef.index_select(x, 1, ef.tensor(np.array([3, 0, 0]))),
                                                  ef.index_select(x, 2, ef.tensor(np.array([4, 1]))),
                                                  ef.scatter(x, 1, x.argmin(dim=1, keepdim=True), value=0.0),
                                                  ef.scatter(x, 2, ef.argsort(x, 2)[:, :, :1], x[:, :, :1] * 10.0),
                                                  ef.scatter_add(x, 1, x.argmax(dim=1, keepdim=True), x[:, :1] + 5.0)),
                                    X),
    "masked_fill_where": (lambda m, x, y: (ef.masked_fill(x, x > y, 0.0), x.masked_fill(y < 0, -1.0),
                                           ef.where(x > 0, x, y), ef.masked_fill(x, ef.tensor(np.tri(4, 5) > 0), 9.0)),
                          XY),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op(tmp_path, name):
    function, make = CASES[name]
    check_export(Lambda(function), make, tmp_path)


def test_boolean_mask_indexing(tmp_path):
    model = Lambda(lambda m, x: x[x > 0.3] * 2.0)
    check_export(model, lambda n: (randn(n, 6, seed=n),), tmp_path, dynamic_axes={"input": {0: "batch"},
                                                                                   "output": {0: "selected"}})
    rows = Lambda(lambda m, x: x[:, x[0] > 0])   # a 1-D mask over one axis
    check_export(rows, lambda n: (randn(n, 6, seed=n),), tmp_path, sizes=(2, 3),
                 dynamic_axes={"input": {0: "batch"}, "output": {0: "batch", 1: "selected"}})


def test_multiple_named_inputs_and_outputs(tmp_path):
    model = Lambda(lambda m, image, meta: (m.fc(image.reshape(image.shape[0], -1)) + meta, image.mean(axis=(1, 2, 3))),
                   fc=ef.nn.Linear(12, 3))
    proto = check_export(model, lambda n: (randn(n, 3, 2, 2, seed=n), randn(n, 3, seed=n + 1)), tmp_path,
                         input_names=["image", "meta"], output_names=["scores", "brightness"])
    assert [i.name for i in proto.graph.input] == ["image", "meta"]
    assert [o.name for o in proto.graph.output] == ["scores", "brightness"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 2, 2]


def test_dynamic_axes_like_pytorch(tmp_path):
    model = Lambda(lambda m, x: x.sum(axis=2))
    proto = check_export(model, lambda n: (randn(2, 3, n, seed=n),), tmp_path, sizes=(4, 2, 7),
                         dynamic_axes={"input": {2: "length"}, "output": []})
    assert [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, "length"]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [2, 3]
    proto = check_export(model, lambda n: (randn(n, 3, n + 1, seed=n),), tmp_path, sizes=(3, 1, 4),
                         dynamic_axes={"input": [0, 2], "output": [0]})
    assert proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "input_dynamic_axes_2"


def test_static_axes_keep_the_example_size(tmp_path):
    model = Lambda(lambda m, x: x.reshape(x.shape[0], -1))
    path = tmp_path / "static.onnx"
    import easyfit.onnx as eo
    import onnx
    eo.export(model, ef.tensor(randn(2, 3)), path, dynamic_axes={})
    assert [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim] == [2, 3]


def test_tril_triu_are_trilu_and_a_causal_mask_follows_a_dynamic_length(tmp_path):
    def forward(m, x):
        length = x.shape[1]
        mask = ef.triu(ef.full((length, length), float("-inf")), 1)
        scores = x @ x.transpose(1, 2) + mask
        return ef.softmax(scores, dim=-1), ef.tril(x, -1), ef.triu(x, 2)
    proto = check_export(Lambda(forward), lambda n: (randn(2, n + 2, n + 2, seed=n),), tmp_path, sizes=(2, 1, 4),
                         dynamic_axes={"input": {1: "length", 2: "width"}})
    assert "Trilu" in {n.op_type for n in proto.graph.node}
