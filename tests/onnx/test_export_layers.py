"""Every layer of easyfit.nn exported, checked, and run in onnxruntime at several batch sizes."""
import numpy as np
import pytest

from harness import Lambda, check_export, randn

import easyfit as ef
from easyfit import nn
import easyfit.nn.functional as F


def images(channels=3, size=8):
    return lambda n: (randn(n, channels, size, size, seed=n),)


def vectors(features):
    return lambda n: (randn(n, features, seed=n),)


def test_linear_and_activations(tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8),
                          nn.SiLU(), nn.Linear(8, 5), nn.Softmax(dim=-1))
    check_export(model, vectors(6), tmp_path)


def test_log_softmax_and_functional_activations(tmp_path):
    model = Lambda(lambda m, x: (F.log_softmax(m.fc(x), axis=-1), F.softplus(x), F.gelu(x, approximate="tanh"),
                                 F.erf(x), F.logsumexp(x, axis=1), F.leaky_relu(x), F.silu(x)),
                   fc=nn.Linear(6, 4))
    check_export(model, vectors(6), tmp_path)


def test_linear_on_3d_input_without_bias(tmp_path):
    model = nn.Sequential(nn.Linear(5, 7, bias=False), nn.LogSoftmax(dim=-1))
    check_export(model, lambda n: (randn(n, 4, 5, seed=n),), tmp_path)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding=2, dilation=2),
                                    dict(groups=2, padding=1, bias=False), dict(groups=4, stride=(2, 1))])
def test_conv2d(tmp_path, kwargs):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, **kwargs), nn.ReLU())
    check_export(model, images(4, 9), tmp_path)


def test_batchnorm_pooling_dropout_flatten(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Dropout(0.3), nn.Conv2d(6, 6, 3, padding=1), nn.AvgPool2d(2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    for module in model.modules():   # non-trivial running statistics
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.array[...] = np.linspace(-1, 1, module.num_features)
            module.running_var.array[...] = np.linspace(0.5, 2, module.num_features)
            module.weight.array[...] = np.linspace(0.5, 1.5, module.num_features)
    proto = check_export(model, images(3, 8), tmp_path)
    names = {i.name for i in proto.graph.initializer}
    assert {"1.running_mean", "1.running_var", "1.weight", "1.bias", "10.running_var"} <= names
    assert "0/Conv" in [n.name for n in proto.graph.node]


def test_pooling_variants(tmp_path):
    model = Lambda(lambda m, x: (F.max_pool2d(x, 3, stride=2, padding=1), F.max_pool2d(x, 2, dilation=2),
                                 F.avg_pool2d(x, 3, stride=1, padding=1),
                                 F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
                                 F.adaptive_avg_pool2d(x, (3, 2)), F.adaptive_avg_pool2d(x, 4)))
    check_export(model, images(2, 8), tmp_path)


def test_batchnorm1d_on_sequences_and_layernorm(tmp_path):
    model = nn.Sequential(nn.BatchNorm1d(4), Lambda(lambda m, x: ef.transpose(x, (0, 2, 1))), nn.LayerNorm(4),
                          nn.LayerNorm(4, elementwise_affine=False), nn.Identity())
    model[0].running_var.array[...] = 2.0
    check_export(model, lambda n: (randn(n, 4, 5, seed=n),), tmp_path)
    model = nn.Sequential(nn.LayerNorm((3, 5)))
    model[0].weight.array[...] = randn(3, 5)
    check_export(model, lambda n: (randn(n, 3, 5, seed=n),), tmp_path)


def test_batchnorm_kept_in_training_mode_uses_batch_statistics(tmp_path):
    model = Lambda(lambda m, x: F.batch_norm(x, None, None, m.bn.weight, m.bn.bias, training=True),
                   bn=nn.BatchNorm2d(3))
    check_export(model, images(3, 4), tmp_path, sizes=(2, 3, 5))


def test_embedding(tmp_path):
    model = nn.Sequential(nn.Embedding(20, 6, padding_idx=0), nn.Linear(6, 3))

    def tokens(n):
        return (np.random.default_rng(n).integers(0, 20, size=(n, 7)),)
    check_export(model, tokens, tmp_path)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("layers,bidirectional,batch_first", [(1, False, False), (2, True, True), (2, False, True)])
def test_recurrent_layers(tmp_path, cls, layers, bidirectional, batch_first):
    rnn = cls(5, 6, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    model = Lambda(lambda m, x: m.rnn(x), rnn=rnn)

    def sequences(n, length=4):
        shape = (n, length, 5) if batch_first else (length, n, 5)
        return (randn(*shape, seed=n),)
    proto = check_export(model, sequences, tmp_path,
                         dynamic_axes={"input": {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}})
    # two sequence lengths at several batch sizes
    runner = __import__("harness").session(tmp_path / "model.onnx")
    for n, length in ((3, 2), (2, 9)):
        (x,) = sequences(n, length)
        with ef.no_grad():
            expected = [t.numpy() for t in __import__("harness").flat(model(ef.tensor(x)))]
        for g, e in zip(runner.run(None, {"input": x}), expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    assert {n.op_type for n in proto.graph.node} & {"RNN", "LSTM", "GRU"}


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_with_initial_state(tmp_path, cls):
    rnn = cls(3, 4, num_layers=2, bidirectional=True)
    if cls is nn.LSTM:
        model = Lambda(lambda m, x, h, c: m.rnn(x, (h, c)), rnn=rnn)
        make = lambda n: (randn(5, n, 3, seed=n), randn(4, n, 4, seed=n + 1), randn(4, n, 4, seed=n + 2))
        axes = {"input_0": {1: "batch"}, "input_1": {1: "batch"}, "input_2": {1: "batch"}}
    else:
        model = Lambda(lambda m, x, h: m.rnn(x, h), rnn=rnn)
        make = lambda n: (randn(5, n, 3, seed=n), randn(4, n, 4, seed=n + 1))
        axes = {"input_0": {1: "batch"}, "input_1": {1: "batch"}}
    check_export(model, make, tmp_path, dynamic_axes=axes)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention(tmp_path, batch_first):
    attention = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    model = Lambda(lambda m, x: m.attention(x, x, x), attention=attention)

    def sequences(n, length=5):
        return (randn(n, length, 8, seed=n) if batch_first else randn(length, n, 8, seed=n),)
    axes = {"input": {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"},
            "output_0": {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"},
            "output_1": {0: "batch", 1: "time", 2: "source"}}
    check_export(model, sequences, tmp_path, dynamic_axes=axes)
    runner = __import__("harness").session(tmp_path / "model.onnx")
    for n, length in ((3, 2), (2, 7)):
        (x,) = sequences(n, length)
        with ef.no_grad():
            expected = [t.numpy() for t in model(ef.tensor(x))]
        for g, e in zip(runner.run(None, {"input": x}), expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_cross_attention_with_two_named_inputs(tmp_path):
    attention = nn.MultiheadAttention(8, 4, batch_first=True)
    model = Lambda(lambda m, q, kv: m.attention(q, kv, kv, need_weights=False)[0], attention=attention)
    make = lambda n: (randn(n, 3, 8, seed=n), randn(n, 6, 8, seed=n + 1))
    check_export(model, make, tmp_path, input_names=["query", "memory"], output_names=["context"])


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(stride=2, padding=1, output_padding=1),
                                    dict(groups=2, dilation=2, bias=False)])
def test_conv_transpose2d(tmp_path, kwargs):
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, **kwargs), nn.ReLU())
    proto = check_export(model, images(4, 5), tmp_path)
    assert "ConvTranspose" in {n.op_type for n in proto.graph.node}


def test_conv1d_groupnorm_upsample_and_cosine_similarity(tmp_path):
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1, stride=2), nn.GroupNorm(2, 4))
    check_export(model, lambda n: (randn(n, 3, 9, seed=n),), tmp_path)
    for mode in ("nearest", "bilinear"):
        check_export(nn.Sequential(nn.Upsample(scale_factor=2, mode=mode)), images(2, 3), tmp_path)
    model = Lambda(lambda m, a, b: m.similarity(a, b), similarity=nn.CosineSimilarity())
    check_export(model, lambda n: (randn(n, 5, seed=n), randn(n, 5, seed=n + 1)), tmp_path)


def test_transformer_encoder_and_decoder(tmp_path):
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1)
    model = Lambda(lambda m, source, target: m.decoder(target, m.encoder(source)), encoder=encoder, decoder=decoder)

    def make(n, length=5):
        return randn(n, length, 8, seed=n), randn(n, 3, 8, seed=n + 1)
    check_export(model, make, tmp_path, dynamic_axes={"input_0": {0: "batch", 1: "source"},
                                                      "input_1": {0: "batch", 1: "target"}})
    runner = __import__("harness").session(tmp_path / "model.onnx")
    source, target = randn(2, 9, 8), randn(2, 4, 8, seed=3)
    with ef.no_grad():
        expected = model(ef.tensor(source), ef.tensor(target)).numpy()
    np.testing.assert_allclose(runner.run(None, {"input_0": source, "input_1": target})[0], expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(), dict(padding=2, dilation=2), dict(groups=3, padding=1, bias=False),
                                    dict(stride=3)])
def test_conv1d_variants(tmp_path, kwargs):
    model = nn.Sequential(nn.Conv1d(3, 6, 3, **kwargs), nn.Softplus())
    proto = check_export(model, lambda n: (randn(n, 3, 11, seed=n),), tmp_path)
    assert "Conv" in {n.op_type for n in proto.graph.node}


def test_functional_conv_transpose_group_norm_interpolate(tmp_path):
    weight, bias = ef.tensor(randn(4, 3, 3, 3, seed=9)), ef.tensor(randn(3, seed=8))
    gamma, beta = ef.tensor(randn(4, seed=7)), ef.tensor(randn(4, seed=6))
    model = Lambda(lambda m, x: (F.conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1),
                                 F.group_norm(x, 2, gamma, beta), F.group_norm(x, 4),
                                 F.interpolate(x, size=(7, 5), mode="nearest"),
                                 F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
                                 F.interpolate(x, size=(3, 9), mode="bilinear")))
    check_export(model, images(4, 6), tmp_path)
    for layer in (nn.UpsamplingNearest2d(scale_factor=3), nn.UpsamplingBilinear2d(size=(4, 10)),
                  nn.Upsample(size=5, mode="nearest")):
        check_export(nn.Sequential(layer), images(2, 3), tmp_path)


def test_one_hot_of_computed_indices(tmp_path):
    model = Lambda(lambda m, x: (F.one_hot(x.argmax(dim=1), 5), F.one_hot(x.argmin(dim=1), 7).astype(np.float32) * 2.0))
    check_export(model, vectors(5), tmp_path)


def test_losses_and_distances_of_the_new_contract(tmp_path):
    model = Lambda(lambda m, a, b: (F.smooth_l1_loss(a, b), F.huber_loss(a, b, reduction="none", delta=0.5),
                                    F.mse_loss(a, b), F.l1_loss(a, b, reduction="sum"),
                                    F.kl_div(F.log_softmax(a, dim=1), F.softmax(b, dim=1), reduction="batchmean"),
                                    F.cosine_similarity(a, b, dim=1), F.cosine_similarity(a[:, None], b[None], dim=-1)))
    check_export(model, lambda n: (randn(n, 5, seed=n), randn(n, 5, seed=n + 1)), tmp_path)


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_with_causal_and_padding_masks(tmp_path, norm_first, activation):
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16,
                           dropout=0.0, batch_first=True, norm_first=norm_first, activation=activation)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    wrapper = Lambda(lambda m, source, target, padding: m.transformer(source, target, tgt_mask=causal,
                                                                       src_key_padding_mask=padding),
                     transformer=model)

    def make(n):
        padding = np.zeros((n, 6), dtype=bool)
        padding[:, -1] = True
        return randn(n, 6, 8, seed=n), randn(n, 4, 8, seed=n + 1), padding
    proto = check_export(wrapper, make, tmp_path)
    assert "Softmax" in {n.op_type for n in proto.graph.node}


def test_transformer_encoder_sequence_first(tmp_path):
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 4, 16, dropout=0.0), 2)
    model = Lambda(lambda m, x: m.encoder(x, is_causal=False), encoder=encoder)
    check_export(model, lambda n: (randn(5, n, 8, seed=n),), tmp_path,
                 dynamic_axes={"input": {1: "batch"}, "output": {1: "batch"}})


@pytest.mark.parametrize("layer", [nn.Upsample(scale_factor=2), nn.Upsample(scale_factor=(3, 1)),
                                   nn.UpsamplingNearest2d(scale_factor=2), nn.Upsample(scale_factor=2, mode="bilinear"),
                                   nn.Upsample(scale_factor=1.5, mode="bilinear"),
                                   nn.UpsamplingBilinear2d(scale_factor=2)])
def test_upsample_by_a_scale_factor_is_one_resize_with_dynamic_spatial_axes(tmp_path, layer):
    def make(n):
        return (randn(2, 3, n + 2, n + 3, seed=n),)
    proto = check_export(nn.Sequential(layer), make, tmp_path, sizes=(2, 1, 4),
                         dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                       "output": {0: "batch", 2: "height", 3: "width"}})
    assert [n.op_type for n in proto.graph.node if n.op_type not in ("Constant", "Identity")] == ["Resize"]


def test_linear_upsample_of_sequences_is_a_resize(tmp_path):
    proto = check_export(nn.Sequential(nn.Upsample(scale_factor=2, mode="linear", align_corners=False)),
                         lambda n: (randn(n, 3, 7, seed=n),), tmp_path)
    assert "Resize" in {n.op_type for n in proto.graph.node}


@pytest.mark.parametrize("how", ["is_causal", "generated_mask"])
def test_causal_self_attention_keeps_the_sequence_length_dynamic(tmp_path, how):
    """The causal masks (MultiheadAttention's is_causal, Transformer.generate_square_subsequent_mask
    of x.shape[1]) are built by tensor ops, so they follow the length (ONNX Trilu) rather than
    freezing it."""
    if how == "is_causal":
        model = Lambda(lambda m, x: m.attention(x, x, x, is_causal=True, need_weights=False)[0],
                       attention=nn.MultiheadAttention(8, 2, batch_first=True))
    else:
        encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2)
        model = Lambda(lambda m, x: m.encoder(x, mask=nn.Transformer.generate_square_subsequent_mask(x.shape[1]),
                                              is_causal=True), encoder=encoder)
    proto = check_export(model, lambda n: (randn(2, n + 2, 8, seed=n),), tmp_path, sizes=(2, 1, 4),
                         dynamic_axes={"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"}})
    assert "Trilu" in {n.op_type for n in proto.graph.node}
