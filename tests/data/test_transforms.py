"""Image transforms: shapes, values, reproducible randomness, composition."""
import numpy as np
import pytest
from PIL import Image

from easyfit.data import (CenterCrop, Compose, ImageToFloat, Normalize, RandomCrop, RandomHorizontalFlip,
                          RandomVerticalFlip, Resize, apply_transforms)
from easyfit.data.vision import validation_transforms


def image(h=8, w=10, c=3):
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def test_resize_squish_matches_pillow():
    x = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = Resize((10, 12))(x)
    expected = np.asarray(Image.fromarray(x).resize((12, 10), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)


def test_resize_grey_and_float_keep_channels():
    assert Resize(5)(image(c=1)).shape == (5, 5, 1)
    out = Resize(4)(np.ones((8, 8, 2), np.float32))
    assert out.shape == (4, 4, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)


def test_resize_crop_keeps_aspect_ratio():
    x = np.zeros((10, 20, 1), np.uint8)
    x[:, 5:15] = 255  # the centre half
    out = Resize(10, method="crop")(x)
    assert out.shape == (10, 10, 1)
    assert out.min() == 255  # only the centre survives
    with pytest.raises(ValueError, match="method must be 'squish' or 'crop', got 'pad'"):
        Resize(10, method="pad")


def test_center_and_random_crop():
    x = image()
    np.testing.assert_array_equal(CenterCrop((4, 6))(x), x[2:6, 2:8])
    crops = {RandomCrop(4)(x, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert len(crops) > 5
    padded = RandomCrop(8, padding=2)(image(8, 8), np.random.default_rng(1))
    assert padded.shape == (8, 8, 3)
    with pytest.raises(ValueError, match=r"image of shape \(8, 10, 3\).*smaller"):
        CenterCrop(12)(x)


def test_flips_follow_the_rng():
    x = image()
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1)(x, np.random.default_rng(0)), x[:, ::-1])
    np.testing.assert_array_equal(RandomVerticalFlip(p=1)(x, np.random.default_rng(0)), x[::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0)(x, np.random.default_rng(0)), x)
    a = [RandomHorizontalFlip()(x, np.random.default_rng(7)).tobytes() for _ in range(3)]
    assert len(set(a)) == 1


def test_image_to_float_and_normalize_on_items_and_batches():
    x = image(4, 5, 3)
    item = ImageToFloat()(x)
    assert item.shape == (3, 4, 5) and item.dtype == np.float32
    np.testing.assert_allclose(item, np.moveaxis(x, -1, 0) / 255.0, rtol=1e-6)
    batch = ImageToFloat()(np.stack([x, x]))
    assert batch.shape == (2, 3, 4, 5)
    norm = Normalize([0.5, 0.4, 0.3], [0.2, 0.1, 0.25])
    out = norm(batch)
    expected = (batch - np.array([0.5, 0.4, 0.3]).reshape(3, 1, 1)) / np.array([0.2, 0.1, 0.25]).reshape(3, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(norm.decode(out), batch, atol=1e-6)
    with pytest.raises(ValueError, match="apply ImageToFloat first"):
        norm(x)
    with pytest.raises(ValueError, match="3 channel statistics but the input has 1"):
        norm(np.zeros((2, 1, 4, 4), np.float32))


def test_compose_and_plain_callables():
    pipeline = Compose([CenterCrop(4), lambda a: a * 0 + 1, ImageToFloat(div=1.0)])
    out = pipeline(image(), np.random.default_rng(0))
    assert out.shape == (3, 4, 4) and np.all(out == 1)
    assert apply_transforms([CenterCrop(2)], image(), None).shape == (2, 2, 3)


def test_validation_counterparts_are_deterministic():
    tfms = [Resize(12), RandomCrop(8, padding=2), RandomHorizontalFlip(), RandomVerticalFlip()]
    valid = validation_transforms(tfms)
    assert [type(t).__name__ for t in valid] == ["Resize", "CenterCrop"]
    assert valid[1].size == (8, 8)


def test_transform_errors_name_what_they_got():
    with pytest.raises(ValueError, match=r"expects one image as an \(H, W, C\) array, got ndarray of shape \(4, 4\)"):
        Resize(2)(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="size must be a positive int"):
        RandomCrop(-1)


def test_random_crop_with_zero_padding_equals_numpy_pad_then_slice():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        h, w = rng.integers(1, 12, 2)
        p = int(rng.integers(0, 6))
        size = (int(rng.integers(1, h + 2 * p + 1)), int(rng.integers(1, w + 2 * p + 1)))
        x = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
        out = RandomCrop(size, padding=p)(x, np.random.default_rng(seed))
        draw = np.random.default_rng(seed)
        top, left = draw.integers(0, h + 2 * p - size[0] + 1), draw.integers(0, w + 2 * p - size[1] + 1)
        expected = np.pad(x, ((p, p), (p, p), (0, 0)))[top:top + size[0], left:left + size[1]]
        np.testing.assert_array_equal(out, expected)
    reflect = RandomCrop(4, padding=2, pad_mode="reflect")(image(4, 4), np.random.default_rng(0))
    assert reflect.shape == (4, 4, 3)
