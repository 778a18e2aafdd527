"""ImageDataLoaders: folders of real PNG/JPEG files, splits, decoding, bad images and folders."""
import warnings

import numpy as np
import pytest
from PIL import Image

from easyfit.data import (DataLoaderError, ImageDataLoaders, ImageReadError, Normalize, RandomCrop,
                          RandomHorizontalFlip, decode_image)


def write_image(path, value, size=(12, 10), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(value)
    if mode == "L":
        array = rng.integers(0, 256, (h, w), dtype=np.uint8)
    else:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(array, mode).save(path, format=fmt)
    return array


def make_folder(root, classes=("cat", "dog"), per_class=5, mode="RGB", size=(12, 10)):
    arrays = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            path = root / name / f"{i}.png"
            arrays[path] = write_image(path, 100 * c + i, size, mode)
    return arrays


def collect(loader):
    return [tuple(t.numpy().copy() for t in batch) for batch in loader]


def test_decode_grey_and_colour(tmp_path):
    grey = write_image(tmp_path / "g.png", 1, mode="L")
    colour = write_image(tmp_path / "c.png", 2)
    assert decode_image(tmp_path / "g.png").shape == (10, 12, 1)
    np.testing.assert_array_equal(decode_image(tmp_path / "g.png")[:, :, 0], grey)
    np.testing.assert_array_equal(decode_image(tmp_path / "c.png"), colour)
    assert decode_image(tmp_path / "g.png", mode="RGB").shape == (10, 12, 3)
    assert decode_image(tmp_path / "c.png", mode="L").shape == (10, 12, 1)
    rgba = np.zeros((4, 4, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png").shape == (4, 4, 3)
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(tmp_path / "j.jpg", quality=95)
    assert abs(int(decode_image(tmp_path / "j.jpg").mean()) - 200) <= 2


def _adam7_png(rgb):
    """An interlaced (Adam7) 8-bit RGB PNG of `rgb` (H, W, 3), every row unfiltered."""
    import struct
    import zlib
    height, width, _ = rgb.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = b"".join(b"\x00" + row.tobytes() for x0, y0, dx, dy in passes
                    for row in rgb[y0::dy, x0::dx] if rgb[y0::dy, x0::dx].size)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _pillow_decode(path, mode=None):
    """What decode_image must give, straight from Image.open."""
    with Image.open(path) as image:
        target = mode or ("L" if image.mode in ("L", "LA", "1", "I", "I;16", "F") else "RGB")
        if image.mode in ("I", "I;16"):
            return None
        array = np.asarray(image.convert(target))
    return array.reshape(array.shape[0], array.shape[1], -1)


@pytest.mark.parametrize("kind", ["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "interlaced", "many IDAT",
                                  "RGB with tRNS", "optimized"])
def test_png_of_every_kind_decodes_as_pillow_reads_it(tmp_path, kind):
    """8-bit non-interlaced PNGs take easyfit's short path to Pillow's decoder; the rest take Image.open."""
    rng = np.random.default_rng(5)
    smooth = np.linspace(0, 255, 37 * 23 * 4).reshape(23, 37, 4) + rng.integers(-20, 20, (23, 37, 4))
    pixels = np.clip(smooth, 0, 255).astype(np.uint8)
    path = tmp_path / f"{kind}.png"
    options = {}
    if kind in ("L", "RGB", "RGBA"):
        image = Image.fromarray(pixels[:, :, :len(kind)].squeeze(), kind)
    elif kind == "LA":
        image = Image.fromarray(pixels[:, :, :2], "LA")
    elif kind in ("P", "1"):
        image = Image.fromarray(pixels[:, :, :3], "RGB").convert(kind)
    elif kind == "I;16":
        image = Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257)
    elif kind == "interlaced":
        path.write_bytes(_adam7_png(pixels[:, :, :3]))  # Pillow cannot write interlaced PNGs
        image = None
    else:
        image = Image.fromarray(pixels[:, :, :3], "RGB")
        if kind == "RGB with tRNS":
            options["transparency"] = (1, 2, 3)
        if kind == "optimized":
            options["optimize"] = True
    if kind == "many IDAT":
        import PIL.ImageFile
        old = PIL.ImageFile.MAXBLOCK
        PIL.ImageFile.MAXBLOCK = 64  # splits the compressed rows over many IDAT chunks
        try:
            image.save(path, **options)
        finally:
            PIL.ImageFile.MAXBLOCK = old
    elif image is not None:
        image.save(path, **options)
    from easyfit.data.vision import _decode_plain_png
    short_path = kind in ("L", "RGB", "RGBA", "LA", "many IDAT", "RGB with tRNS", "optimized")
    assert (_decode_plain_png(path.read_bytes()) is not None) == short_path
    if kind == "interlaced":
        np.testing.assert_array_equal(_pillow_decode(path), pixels[:, :, :3])
    for mode in (None, "L", "RGB"):
        expected = _pillow_decode(path, mode)
        if expected is not None:
            np.testing.assert_array_equal(decode_image(path, mode), expected)


def test_unreadable_and_truncated_images_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.png"):
        decode_image(tmp_path / "junk.png")
    write_image(tmp_path / "full.png", 3, size=(64, 64))
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        decode_image(tmp_path / "cut.png")
    header_only = raw[:raw.index(b"IDAT") - 4]  # signature and IHDR, no pixel data at all
    (tmp_path / "header.png").write_bytes(header_only)
    with pytest.raises(ImageReadError, match="header.png"):
        decode_image(tmp_path / "header.png")
    corrupt = bytearray(raw)
    start = raw.index(b"IDAT") + 4
    corrupt[start:start + 40] = bytes(40)  # the zlib stream's header and first blocks zeroed
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    with pytest.raises(ImageReadError, match="corrupt.png"):
        decode_image(tmp_path / "corrupt.png")


def test_from_folder_splits_decodes_and_batches(tmp_path):
    arrays = make_folder(tmp_path)
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.2, seed=1, bs=4, num_workers=2)
    assert dls.classes == ["cat", "dog"] and dls.c == 2
    assert len(dls.train.dataset) == 8 and len(dls.valid.dataset) == 2
    assert not set(dls.train.dataset.files) & set(dls.valid.dataset.files)
    xb, yb = next(iter(dls.valid))
    assert xb.shape == (2, 3, 10, 12) and xb.dtype == np.float32 and yb.dtype == np.int64
    expected = np.stack([np.moveaxis(arrays[f], -1, 0) / 255.0 for f in dls.valid.dataset.files])
    np.testing.assert_allclose(xb.numpy(), expected, rtol=1e-6)
    train = collect(dls.train)
    assert sorted(np.concatenate([y for _, y in train]).tolist()) == sorted(dls.train.dataset.labels.tolist())


def test_split_is_reproducible_and_seed_dependent(tmp_path):
    make_folder(tmp_path, per_class=10)
    a = ImageDataLoaders.from_folder(tmp_path, seed=3, bs=4)
    b = ImageDataLoaders.from_folder(tmp_path, seed=3, bs=4)
    c = ImageDataLoaders.from_folder(tmp_path, seed=4, bs=4)
    assert a.valid.dataset.files == b.valid.dataset.files != c.valid.dataset.files
    for (xa, ya), (xb, yb) in zip(collect(a.train), collect(b.train)):
        np.testing.assert_array_equal(xa, xb)


def test_grey_folder_with_size_augmentation_and_normalisation(tmp_path):
    make_folder(tmp_path, mode="L", size=(20, 16))
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.2, seed=0, size=12, bs=3, mode="L",
                                       item_tfms=[RandomCrop(10, padding=1), RandomHorizontalFlip()],
                                       batch_tfms=[Normalize([0.5], [0.25])])
    xb, _ = dls.one_batch()
    assert xb.shape == (3, 1, 10, 10)
    assert xb.numpy().min() < 0  # normalised
    xv, _ = next(iter(dls.valid))
    assert xv.shape == (2, 1, 10, 10)  # validation crops centred, never flipped
    again, _ = next(iter(dls.valid))
    np.testing.assert_array_equal(xv.numpy(), again.numpy())


def test_explicit_train_valid_folders(tmp_path):
    make_folder(tmp_path / "train", per_class=3)
    make_folder(tmp_path / "valid", per_class=2)
    dls = ImageDataLoaders.from_folder(tmp_path, bs=4)
    assert len(dls.train.dataset) == 6 and len(dls.valid.dataset) == 4
    assert all("valid" in str(f) for f in dls.valid.dataset.files)
    make_folder(tmp_path / "valid", classes=("bird",), per_class=1)
    with pytest.raises(ValueError, match=r"classes not in .*train: \['bird'\]"):
        ImageDataLoaders.from_folder(tmp_path, bs=4)


def test_mixed_sizes_without_resize_explain_themselves(tmp_path):
    write_image(tmp_path / "a" / "0.png", 0, size=(8, 8))
    write_image(tmp_path / "a" / "1.png", 1, size=(9, 8))
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0, bs=2, num_workers=0)
    with pytest.raises(ValueError, match="different shapes") as info:
        list(dls.train)
    message = str(info.value)
    assert "shape (8, 8, 3) at sample indices [0]" in message and "shape (8, 9, 3) at sample indices [1]" in message
    assert "Resize" in message


def test_bad_image_raises_naming_the_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG garbage")
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0, bs=4, num_workers=2)
    with pytest.raises(DataLoaderError, match=r"sample \d+ .*ImageReadError: cannot read image .*broken.png"):
        collect(dls.train)


def test_bad_images_skipped_with_warning_and_count_when_asked(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "cat" / "!empty.png").write_bytes(b"")  # sorts first: the mode comes from the next file
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0, bs=4, on_error="skip", num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = collect(dls.train)
    assert sum(len(y) for _, y in batches) == 10
    assert len(dls.train.skipped) == 2
    messages = sorted(str(w.message) for w in caught)
    assert any("broken.png" in m for m in messages) and any("empty.png" in m for m in messages)
    assert any("(2 skipped so far)" in m for m in messages)


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageDataLoaders.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class folders in"):
        ImageDataLoaders.from_folder(tmp_path)
    write_image(tmp_path / "loose.png", 0)
    with pytest.raises(ValueError, match="holds 1 image files directly"):
        ImageDataLoaders.from_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match="class folder .*cat holds no image files"):
        ImageDataLoaders.from_folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="cat holds no image files"):
        ImageDataLoaders.from_folder(tmp_path)


def test_from_arrays_layouts_and_split():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = np.arange(30) % 3
    dls = ImageDataLoaders.from_arrays(x, y, valid_pct=0.2, seed=0, bs=8)
    xb, yb = dls.one_batch()
    assert xb.shape == (8, 1, 8, 8) and dls.classes == [0, 1, 2]
    assert len(dls.valid.dataset) == 6
    chw = rng.random((10, 3, 5, 5)).astype(np.float32)
    dls = ImageDataLoaders.from_arrays(chw, np.zeros(10), valid_x=chw[:2], valid_y=np.zeros(2), bs=10)
    xb, _ = dls.one_batch()
    np.testing.assert_array_equal(np.sort(xb.numpy(), axis=None), np.sort(chw, axis=None))
    with pytest.raises(ValueError, match=r"shape \(10, 7, 5, 5\)"):
        ImageDataLoaders.from_arrays(np.zeros((10, 7, 5, 5)), np.zeros(10))


def test_from_arrays_and_from_folder_give_the_same_pixels(tmp_path):
    arrays = make_folder(tmp_path, classes=("only",), per_class=4)
    files = sorted(arrays)
    stacked = np.stack([arrays[f] for f in files])
    folder = ImageDataLoaders.from_folder(tmp_path, valid_pct=0, bs=4, seed=0)
    memory = ImageDataLoaders.from_arrays(stacked, np.zeros(4, np.int64), valid_x=stacked[:1],
                                          valid_y=np.zeros(1), bs=4, seed=0)
    np.testing.assert_array_equal(folder.train.one_batch()[0].numpy(), memory.train.one_batch()[0].numpy())


def test_cached_folder_decodes_each_image_once_and_gives_the_same_batches(tmp_path, monkeypatch):
    make_folder(tmp_path, per_class=6)
    from easyfit.data import vision
    decoded = []
    real_decode = vision.decode_image
    monkeypatch.setattr(vision, "decode_image", lambda path, mode=None: decoded.append(path) or real_decode(path, mode))
    augment = [RandomCrop(8, padding=2), RandomHorizontalFlip()]
    plain = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=5, bs=4, item_tfms=augment)
    cached = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=5, bs=4, item_tfms=augment, cache=True)
    expected = [collect(plain.train), collect(plain.train)]
    decoded.clear()
    got = [collect(cached.train), collect(cached.train)]
    assert len(decoded) == len(cached.train.dataset) == 9  # the second epoch decoded nothing
    for epoch_expected, epoch_got in zip(expected, got):
        for (xe, ye), (xg, yg) in zip(epoch_expected, epoch_got):
            np.testing.assert_array_equal(xg, xe)
            np.testing.assert_array_equal(yg, ye)
    image, _ = cached.train.dataset[0]
    assert not image.flags.writeable  # an in-place transform fails instead of corrupting the cache
    with pytest.raises(ValueError):
        image[0, 0, 0] = 1


def test_cache_must_be_a_bool(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(TypeError, match="cache must be True or False"):
        ImageDataLoaders.from_folder(tmp_path, cache="yes")


def test_mixed_grey_colour_and_rgba_folder_decodes_to_rgb_by_default(tmp_path):
    """Issue 14 item 1: the first file no longer decides the colour mode silently."""
    for index, (mode, name) in enumerate([("L", "a.png"), ("RGB", "b.jpg"), ("RGBA", "c.png"), ("L", "d.jpg")]):
        for label in ("cat", "dog"):
            (tmp_path / label).mkdir(exist_ok=True)
            Image.new(mode, (10, 12), color=(40 * index) if mode == "L" else (40 * index,) * len(mode)) \
                .save(tmp_path / label / name)
    dls = ImageDataLoaders.from_folder(tmp_path, valid_pct=0.25, seed=0, bs=8)
    assert dls.mode == "RGB"
    xb, _ = dls.one_batch()
    assert xb.shape[1] == 3
    grey_only = tmp_path / "grey"
    make_folder(grey_only, mode="L")
    assert ImageDataLoaders.from_folder(grey_only, bs=4).one_batch()[0].shape[1] == 3  # still RGB
    assert ImageDataLoaders.from_folder(grey_only, bs=4, mode="L").one_batch()[0].shape[1] == 1
    with pytest.warns(UserWarning, match=r"first image decides: every image is decoded as 'L'"):
        dls = ImageDataLoaders.from_folder(grey_only, bs=4, mode=None)
    assert dls.mode == "L"
    with pytest.raises(ValueError, match="mode must be 'RGB'"):
        ImageDataLoaders.from_folder(grey_only, bs=4, mode="RGBA")
