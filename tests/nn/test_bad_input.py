"""Layers given the wrong shapes raise errors that name the layer and both shapes."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn


def test_linear_wrong_features_names_layer_and_shapes():
    with pytest.raises(ValueError) as info:
        nn.Linear(784, 10)(ef.randn(8, 100))
    text = str(info.value)
    assert "Linear(in_features=784, out_features=10" in text and "784" in text and "(8, 100)" in text


def test_conv2d_wrong_channels_names_layer_and_shapes():
    with pytest.raises(ValueError) as info:
        nn.Conv2d(3, 16, 3)(ef.randn(2, 1, 28, 28))
    text = str(info.value)
    assert "Conv2d(3, 16" in text and "(N, 3, H, W)" in text and "(2, 1, 28, 28)" in text
    with pytest.raises(ValueError, match=r"\(2, 3, 28\)"):
        nn.Conv2d(3, 16, 3)(ef.randn(2, 3, 28))


def test_conv2d_input_smaller_than_kernel():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nn.Conv2d(1, 1, 5)(ef.randn(1, 1, 3, 3))


def test_batch_norm_wrong_channels():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4.*\(N, 4, H, W\).*\(2, 3, 5, 5\)"):
        nn.BatchNorm2d(4)(ef.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(ef.randn(1, 3))


def test_layer_norm_wrong_shape():
    with pytest.raises(ValueError, match=r"LayerNorm\(\(8,\).*\(2, 7\)"):
        nn.LayerNorm(8)(ef.randn(2, 7))


def test_embedding_out_of_range_and_float_indices():
    emb = nn.Embedding(10, 3)
    with pytest.raises(IndexError, match=r"\[0, 10\).*12"):
        emb(ef.tensor([1, 12]))
    with pytest.raises(TypeError, match="integers"):
        emb(ef.tensor([1.0, 2.0]))


def test_pool_padding_too_large():
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2d(2, padding=2)(ef.randn(1, 1, 4, 4))


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=7)
