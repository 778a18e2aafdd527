"""Image classification data: decoding with Pillow, folder datasets, `ImageDataLoaders`.

Images are decoded to (H, W, C) uint8 arrays (C = 1 for grey, 3 for colour) and go
through item transforms in the loader's workers, then are collated and turned into
float32 (N, C, H, W) batches in [0, 1] by the `ImageToFloat` batch transform.
"""
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .loader import ArrayDataset, DataLoader, DataLoaders, Dataset, SkipSample, resolve_seed, split_indices
from .transforms import CenterCrop, ImageToFloat, RandomCrop, RandomHorizontalFlip, RandomVerticalFlip, Resize

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_FORMAT_BY_EXTENSION = {".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".bmp": ("BMP",),
                        ".gif": ("GIF",), ".tif": ("TIFF",), ".tiff": ("TIFF",), ".webp": ("WEBP",),
                        ".ppm": ("PPM",), ".pgm": ("PPM",)}
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}  # 8-bit colour types and Pillow's mode for each


def _decode_plain_png(data):
    """A decoded Pillow image of an 8-bit, non-interlaced, non-palette PNG, else None.

    For a small image, Pillow's PNG reader spends most of its time in Python (probing,
    parsing every chunk, `ImageFile.load`). Only IHDR and IDAT matter for such a file's
    pixels, so they are read here and the compressed rows go to Pillow's own PNG
    decoder in one call. Any other PNG returns None and takes the usual `Image.open`.
    """
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[8:16] != b"\x00\x00\x00\rIHDR":
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    mode = _PNG_MODES.get(colour)
    too_large = Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS
    if mode is None or depth != 8 or compression or filtering or interlace or too_large:
        return None  # Image.open handles these (and warns or refuses for too large)
    compressed, position = [], 33
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            compressed.append(data[position + 8:position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    # A truncated file leaves too few bytes: the decoder raises ValueError, as Image.open's load does.
    return Image.frombytes(mode, (width, height), b"".join(compressed), "zip", mode)


class NoImagesError(FileNotFoundError, ValueError):
    """A folder holds no images where some are expected (no class folders, an empty class folder).

    A FileNotFoundError, so the command line exits with "data not found" (3), and a
    ValueError, as these errors were before.
    """


class ImageReadError(OSError):
    """An image file could not be decoded (missing, not an image, or truncated); names the file."""


def image_mode(path):
    """'L' for a grey image file, 'RGB' for anything else (reads only the header)."""
    try:
        with Image.open(path) as image:
            return "L" if image.mode in _GREY_MODES else "RGB"
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error


def decode_image(path, mode=None):
    """Decode an image file into an (H, W, C) uint8 array.

    `mode` "L" gives grey (C = 1), "RGB" colour (C = 3); None keeps grey images grey
    and turns every other mode into RGB. A missing, non-image or truncated file
    raises `ImageReadError` naming the file.
    """
    try:
        # Naming the format from the extension skips probing every plugin (a third of the
        # time for small images); a file whose content disagrees is retried with probing.
        hint = _FORMAT_BY_EXTENSION.get(os.path.splitext(path)[1].lower())
        # One read of the whole file instead of Pillow's chunk-by-chunk reads: fewer system
        # calls, and fewer points where a loader thread drops and waits for the GIL.
        with open(path, "rb") as file:
            raw = file.read()
        image = _decode_plain_png(raw)
        if image is None:
            data = io.BytesIO(raw)
            try:
                image = Image.open(data, formats=hint)
            except Image.UnidentifiedImageError:
                if hint is None:
                    raise
                image = Image.open(data)
        with image:
            image.load()  # decodes everything now: a truncated file fails here, not later
            target = mode or ("L" if image.mode in _GREY_MODES else "RGB")
            if image.mode != target:
                if target == "L" and image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    image = Image.fromarray(_to_uint8(np.asarray(image)))
                else:
                    image = image.convert(target)
            width, height = image.size
            # tobytes + frombuffer is faster than np.asarray(image) (the array interface)
            array = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 1 if target == "L" else 3)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}") from error
    return array


def convert_image_mode(image, mode):
    """An (H, W, C) uint8 image with C = 1 or 3 converted to `mode` ('L': 1 channel, 'RGB': 3).

    Anything else (float arrays, batches, other layouts) is returned unchanged: only a
    decoded-looking image is converted, the way `decode_image` would have decoded it.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        return image
    channels = image.shape[2]
    if mode == "RGB" and channels == 1:
        return np.repeat(image, 3, axis=2)
    if mode == "L" and channels == 3:
        grey = Image.fromarray(np.ascontiguousarray(image), "RGB").convert("L")
        return np.asarray(grey)[:, :, None]
    return image


def _to_uint8(array):
    array = array.astype(np.float64)
    top = array.max() if array.size else 0
    scale = 255.0 / 65535.0 if top > 255 else 1.0
    return np.clip(array * scale, 0, 255).astype(np.uint8)


def image_files(folder):
    """Image files under `folder` (recursively), sorted, by extension (case-insensitive)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files)
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


class ImageFolderDataset(Dataset):
    """Labelled image files: item i is `(image (H, W, C) uint8, label int64)`.

    `on_error="raise"` makes an unreadable image an `ImageReadError` naming the file;
    "skip" leaves it out of its batch with a warning (the loader counts them in
    `DataLoader.skipped`).

    `cache=True` keeps each decoded image in memory (H*W*C bytes) after its first use, so
    later epochs skip decoding, the largest cost of loading small images. Cached arrays
    are read-only: a transform that changes its input in place fails loudly instead of
    corrupting the cache. The cache lives in this process: it fills with thread workers
    (the default) or num_workers=0, not with worker processes.
    """

    def __init__(self, files, labels, classes, mode=None, on_error="raise", cache=False):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be True or False, got {cache!r}")
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = [Path(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.mode = mode
        self.on_error = on_error
        self.cache = {} if cache else None   # index -> decoded image

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        image = self.cache.get(index) if self.cache is not None else None
        if image is None:
            path = self.files[index]
            try:
                image = decode_image(path, self.mode)
            except ImageReadError as error:
                if self.on_error == "skip":
                    raise SkipSample(str(error)) from error
                raise
            if self.cache is not None:
                image.flags.writeable = False
                self.cache[index] = image  # a plain dict store: safe across loader threads
        return image, self.labels[index]

    def __repr__(self):
        return f"ImageFolderDataset({len(self)} images, {len(self.classes)} classes)"


def validation_transforms(transforms):
    """The deterministic counterpart of item transforms for validation: flips and other training-only
    augmentations (`train_only = True`) dropped, random crops centred."""
    out = []
    for transform in transforms:
        if isinstance(transform, (RandomHorizontalFlip, RandomVerticalFlip)) or getattr(transform, "train_only", False):
            continue
        if isinstance(transform, RandomCrop):
            out.append(CenterCrop(transform.size))
        else:
            out.append(transform)
    return out


def _first_mode(files, on_error):
    """The mode ('L' or 'RGB') of the first readable image (the first file, unless bad ones are skipped)."""
    for path in files:
        try:
            return image_mode(path)
        except ImageReadError:
            if on_error != "skip":
                raise
    raise ValueError(f"none of the {len(files)} training images can be read")


def _batch_transforms(batch_tfms):
    batch_tfms = list(batch_tfms or [])
    if not any(isinstance(t, ImageToFloat) for t in batch_tfms):
        batch_tfms.insert(0, ImageToFloat())
    return batch_tfms


def _class_folders(folder):
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _labelled_files(folder, classes, where):
    files, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        found = image_files(class_dir)
        if not found:
            raise NoImagesError(f"class folder {class_dir} holds no image files (looked for "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))}); remove it or add images")
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise NoImagesError(f"no image files in {where}")
    return files, labels


def _no_classes_error(folder):
    loose = image_files(folder)
    hint = (f"; it holds {len(loose)} image files directly - put each class's images in their own "
            f"subfolder" if loose else "")
    return NoImagesError(f"no class folders in {folder}: expected {folder}/<class_name>/<image files> "
                      f"(or train/ and valid/ folders of classes){hint}")


class ImageDataLoaders:
    """Builders of `DataLoaders` for image classification."""

    @staticmethod
    def from_folder(path, valid_pct=0.2, seed=None, size=None, bs=64, item_tfms=None, batch_tfms=None,
                    train="train", valid="valid", mode="RGB", on_error="raise", num_workers=None,
                    worker_type="thread", device=None, drop_last=False, resize_method="squish", cache=False):
        """Loaders over `path/<class_name>/<image>` files.

        When `path/train` and `path/valid` both exist they are the split (classes from
        `path/train`); otherwise `valid_pct` of the images, chosen with `seed`, are the
        validation set. `size` adds `Resize(size)` as the first item transform. Every image
        is decoded to `mode`: "RGB" (the default, as fastai: a folder of mixed grey,
        colour and RGBA files gives 3-channel batches) or "L" (grey, 1 channel); None
        takes the mode of the first image and says which it chose (a warning). Validation loads use
        the deterministic counterpart of the item transforms (no flips, centred crops).
        `cache=True` keeps decoded images in memory after the first epoch (see
        `ImageFolderDataset`). The result has `.classes` and `.mode`.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
        seed = resolve_seed(seed)
        train_dir, valid_dir = folder / train, folder / valid
        if train_dir.is_dir() and valid_dir.is_dir():
            classes = _class_folders(train_dir)
            if not classes:
                raise _no_classes_error(train_dir)
            unknown = sorted(set(_class_folders(valid_dir)) - set(classes))
            if unknown:
                raise ValueError(f"{valid_dir} has classes not in {train_dir}: {unknown}")
            train_files, train_labels = _labelled_files(train_dir, classes, train_dir)
            valid_files, valid_labels = _labelled_files(valid_dir, classes, valid_dir)
        else:
            classes = _class_folders(folder)
            if not classes:
                raise _no_classes_error(folder)
            files, labels = _labelled_files(folder, classes, folder)
            train_idx, valid_idx = split_indices(len(files), valid_pct, seed)
            train_files, train_labels = [files[i] for i in train_idx], [labels[i] for i in train_idx]
            valid_files, valid_labels = [files[i] for i in valid_idx], [labels[i] for i in valid_idx]
        if mode is None:
            mode = _first_mode(train_files, on_error)
            warnings.warn(f"ImageDataLoaders.from_folder: mode=None, so the first image decides: every image is "
                          f"decoded as {mode!r} ({'1 channel' if mode == 'L' else '3 channels'}); pass mode='RGB' "
                          f"or mode='L' to choose", UserWarning, stacklevel=2)
        elif mode not in ("RGB", "L"):
            raise ValueError(f"ImageDataLoaders.from_folder: mode must be 'RGB' (colour), 'L' (grey) or None (the "
                             f"first image decides), got {mode!r}")
        item_tfms = list(item_tfms or [])
        if size is not None:
            item_tfms.insert(0, Resize(size, method=resize_method))
        batch_tfms = _batch_transforms(batch_tfms)
        common = dict(batch_size=bs, num_workers=num_workers, device=device, batch_tfms=batch_tfms,
                      worker_type=worker_type)
        train_dl = DataLoader(ImageFolderDataset(train_files, train_labels, classes, mode, on_error, cache),
                              shuffle=True, drop_last=drop_last, seed=seed, item_tfms=item_tfms, **common)
        valid_dl = DataLoader(ImageFolderDataset(valid_files, valid_labels, classes, mode, on_error, cache),
                              shuffle=False, seed=seed + 1, item_tfms=validation_transforms(item_tfms), **common)
        dls = DataLoaders(train_dl, valid_dl, classes=classes)
        dls.mode = mode
        return dls

    @staticmethod
    def from_arrays(train_x, train_y, valid_x=None, valid_y=None, valid_pct=0.2, seed=None, bs=64,
                    item_tfms=None, batch_tfms=None, classes=None, num_workers=None, worker_type="thread",
                    device=None, drop_last=False):
        """Loaders over in-memory images: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1/3.

        Images go through the same item/batch transforms as decoded files (uint8 is
        scaled to [0, 1]). Without `valid_x`, `valid_pct` of the training images,
        chosen with `seed`, are held out. `classes` defaults to the sorted labels.
        """
        seed = resolve_seed(seed)
        train_x, train_y = _images_hwc(train_x, "train_x"), np.asarray(train_y)
        if valid_x is None:
            train_idx, valid_idx = split_indices(len(train_x), valid_pct, seed)
            valid_x, valid_y = train_x[valid_idx], train_y[valid_idx]
            train_x, train_y = train_x[train_idx], train_y[train_idx]
        else:
            if valid_y is None:
                raise ValueError("from_arrays: valid_x was given without valid_y")
            valid_x, valid_y = _images_hwc(valid_x, "valid_x"), np.asarray(valid_y)
        if classes is None:
            classes = sorted(set(np.unique(train_y).tolist()) | set(np.unique(valid_y).tolist()))
        item_tfms = list(item_tfms or [])
        batch_tfms = _batch_transforms(batch_tfms)
        common = dict(batch_size=bs, num_workers=num_workers, device=device, batch_tfms=batch_tfms,
                      worker_type=worker_type)
        train_dl = DataLoader(ArrayDataset(train_x, train_y), shuffle=True, drop_last=drop_last, seed=seed,
                              item_tfms=item_tfms, **common)
        valid_dl = DataLoader(ArrayDataset(valid_x, valid_y), shuffle=False, seed=seed + 1,
                              item_tfms=validation_transforms(item_tfms), **common)
        dls = DataLoaders(train_dl, valid_dl, classes=classes)
        dls.mode = {1: "L", 3: "RGB"}.get(train_x.shape[-1])  # what an image file is decoded to for predict
        return dls


def _images_hwc(x, name):
    x = x.numpy_cpu() if hasattr(x, "numpy_cpu") else np.asarray(x)
    if x.ndim == 3:
        return x[:, :, :, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4):
            return x
        if x.shape[1] in (1, 3):
            return np.moveaxis(x, 1, -1)
    raise ValueError(f"{name} must be images of shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
                     f"(1, 3), got shape {x.shape}")
