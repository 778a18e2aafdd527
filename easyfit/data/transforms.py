"""Composable image transforms on NumPy arrays, at item or batch level.

Item transforms see one image as an (H, W, C) array - uint8 straight from the decoder
(grey images have C = 1) - and run in the loader's workers; batch transforms see the
collated input batch. The usual pipeline is

    item_tfms  = [Resize(64), RandomCrop(56, padding=4), RandomHorizontalFlip()]
    batch_tfms = [ImageToFloat(), Normalize(*imagenet_stats)]

`ImageToFloat` turns uint8 (N,)H,W,C into float32 (N,)C,H,W in [0, 1], the layout conv
layers take. Random transforms draw from the `rng` the loader passes (a function of
seed, epoch and batch number), so augmentations are reproducible with any number of
workers. Any plain callable `f(x)` may be used as a transform too.
"""
import numpy as np
from PIL import Image

imagenet_stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _size_pair(size, name):
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and s > 0 for s in size)):
        return int(size[0]), int(size[1])
    raise ValueError(f"{name}: size must be a positive int or a (height, width) pair, got {size!r}")


def _check_image(x, name):
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{name} expects one image as an (H, W, C) array, got "
                         f"{type(x).__name__}{'' if shape is None else ' of shape ' + str(shape)}")


class Transform:
    """Base class: `__call__(x, rng)` returns the transformed array. `rng` is a np.random.Generator."""
    takes_rng = True

    def __call__(self, x, rng=None):
        raise NotImplementedError(f"{type(self).__name__} must define __call__(x, rng)")

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose(Transform):
    """Several transforms applied in order, usable as one."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for transform in self.transforms:
            x = transform(x, rng) if getattr(transform, "takes_rng", False) else transform(x)
        return x


def resize_image(x, height, width):
    """Bilinear resize of an (H, W, C) array with Pillow (uint8 directly, other dtypes per channel as float32)."""
    if x.shape[0] == height and x.shape[1] == width:
        return x
    if x.dtype == np.uint8 and x.shape[2] in (1, 3, 4):
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[x.shape[2]]
        image = Image.fromarray(x[:, :, 0] if x.shape[2] == 1 else x, mode)
        out = np.asarray(image.resize((width, height), Image.BILINEAR))
        return out[:, :, None] if out.ndim == 2 else out
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c], dtype=np.float32), "F")
                           .resize((width, height), Image.BILINEAR)) for c in range(x.shape[2])]
    return np.stack(channels, axis=2).astype(x.dtype, copy=False)


class Resize(Transform):
    """Resize to `size` (int or (height, width)).

    method="squish" stretches the whole image to the size; "crop" scales the shorter
    side to fit and cuts the centre, keeping the aspect ratio.
    """

    def __init__(self, size, method="squish"):
        self.size = _size_pair(size, "Resize")
        if method not in ("squish", "crop"):
            raise ValueError(f"Resize: method must be 'squish' or 'crop', got {method!r}")
        self.method = method

    def __call__(self, x, rng=None):
        _check_image(x, "Resize")
        height, width = self.size
        if self.method == "squish":
            return resize_image(x, height, width)
        scale = max(height / x.shape[0], width / x.shape[1])
        scaled_h, scaled_w = max(height, round(x.shape[0] * scale)), max(width, round(x.shape[1] * scale))
        x = resize_image(x, scaled_h, scaled_w)
        top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
        return x[top:top + height, left:left + width]


class CenterCrop(Transform):
    """Cut the centre `size` region (the image must be at least that large)."""

    def __init__(self, size):
        self.size = _size_pair(size, "CenterCrop")

    def __call__(self, x, rng=None):
        _check_image(x, "CenterCrop")
        height, width = self.size
        if x.shape[0] < height or x.shape[1] < width:
            raise ValueError(f"CenterCrop({height}, {width}) of an image of shape {x.shape}: the image is smaller")
        top, left = (x.shape[0] - height) // 2, (x.shape[1] - width) // 2
        return x[top:top + height, left:left + width]


class RandomCrop(Transform):
    """Cut a random `size` region, after padding each side by `padding` pixels (CIFAR-style).

    `pad_mode` is NumPy's pad mode ("constant" pads with zeros, "reflect", "edge").
    """

    def __init__(self, size, padding=0, pad_mode="constant"):
        self.size = _size_pair(size, "RandomCrop")
        if not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, got {padding!r}")
        self.padding = int(padding)
        self.pad_mode = pad_mode

    def __call__(self, x, rng):
        _check_image(x, "RandomCrop")
        p, (height, width) = self.padding, self.size
        padded_h, padded_w = x.shape[0] + 2 * p, x.shape[1] + 2 * p
        if padded_h < height or padded_w < width:
            raise ValueError(f"RandomCrop({height}, {width}) of an image of shape {x.shape} "
                             f"(after padding {self.padding}): the image is smaller")
        top = int(rng.integers(0, padded_h - height + 1))
        left = int(rng.integers(0, padded_w - width + 1))
        if p and self.pad_mode == "constant":
            # copy the part of the window inside the image into zeros: no padded copy of it all
            out = np.zeros((height, width, x.shape[2]), x.dtype)
            rows = slice(max(top - p, 0), min(top - p + height, x.shape[0]))
            cols = slice(max(left - p, 0), min(left - p + width, x.shape[1]))
            if rows.stop > rows.start and cols.stop > cols.start:
                out[rows.start - (top - p):rows.stop - (top - p),
                    cols.start - (left - p):cols.stop - (left - p)] = x[rows, cols]
            return out
        if p:
            x = np.pad(x, ((p, p), (p, p), (0, 0)), mode=self.pad_mode)
        return x[top:top + height, left:left + width]


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability p."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, x, rng):
        _check_image(x, "RandomHorizontalFlip")
        return x[:, ::-1] if rng.random() < self.p else x


class RandomVerticalFlip(Transform):
    """Mirror top-bottom with probability p."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomVerticalFlip: p must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, x, rng):
        _check_image(x, "RandomVerticalFlip")
        return x[::-1] if rng.random() < self.p else x


class RandomRotateZoom(Transform):
    """With probability p, rotate by up to `max_rotate` degrees and zoom in by up to `max_zoom`
    (1.0: none) around the centre, keeping the size; corners are filled by reflecting
    the image's edge pixels (bilinear, Pillow). A training-only augmentation."""
    train_only = True

    def __init__(self, max_rotate=10.0, max_zoom=1.1, p=0.75):
        if max_rotate < 0 or max_zoom < 1 or not 0 <= p <= 1:
            raise ValueError(f"RandomRotateZoom: need max_rotate >= 0, max_zoom >= 1 and p in [0, 1], got "
                             f"max_rotate={max_rotate!r}, max_zoom={max_zoom!r}, p={p!r}")
        self.max_rotate, self.max_zoom, self.p = float(max_rotate), float(max_zoom), float(p)

    def __call__(self, x, rng):
        _check_image(x, "RandomRotateZoom")
        if rng.random() >= self.p:
            return x
        angle = np.deg2rad(rng.uniform(-self.max_rotate, self.max_rotate))
        zoom = rng.uniform(1.0, self.max_zoom)
        height, width = x.shape[:2]
        # output pixel (u, v) samples input (a*u + b*v + c, d*u + e*v + f): rotation and zoom about the centre
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        affine = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
        pad = max(height, width) // 2
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
        shifted = (affine[0], affine[1], affine[2] + pad, affine[3], affine[4], affine[5] + pad)
        channels = [np.asarray(Image.fromarray(np.ascontiguousarray(padded[:, :, c]))
                               .transform((width, height), Image.AFFINE, shifted, resample=Image.BILINEAR))
                    for c in range(x.shape[2])] if x.dtype == np.uint8 else None
        if channels is None:
            channels = [np.asarray(Image.fromarray(np.ascontiguousarray(padded[:, :, c], dtype=np.float32), "F")
                                   .transform((width, height), Image.AFFINE, shifted, resample=Image.BILINEAR))
                        .astype(x.dtype) for c in range(x.shape[2])]
        return np.stack(channels, axis=2)


class RandomLighting(Transform):
    """With probability p, change brightness and contrast by up to `max_lighting` (0.2: +-20%).
    Works on uint8 (clipped to 0..255) or float images in [0, 1]. A training-only augmentation."""
    train_only = True

    def __init__(self, max_lighting=0.2, p=0.75):
        if not 0 <= max_lighting < 1 or not 0 <= p <= 1:
            raise ValueError(f"RandomLighting: need 0 <= max_lighting < 1 and p in [0, 1], got "
                             f"max_lighting={max_lighting!r}, p={p!r}")
        self.max_lighting, self.p = float(max_lighting), float(p)

    def __call__(self, x, rng):
        _check_image(x, "RandomLighting")
        if rng.random() >= self.p:
            return x
        brightness = rng.uniform(-self.max_lighting, self.max_lighting)
        contrast = rng.uniform(1 - self.max_lighting, 1 / (1 - self.max_lighting))
        top = 255.0 if x.dtype == np.uint8 else 1.0
        out = (x.astype(np.float32) / top - 0.5) * contrast + 0.5 + brightness
        out = np.clip(out, 0.0, 1.0) * top
        return (np.round(out).astype(np.uint8) if x.dtype == np.uint8 else out.astype(x.dtype))


def aug_transforms(do_flip=True, flip_vert=False, max_rotate=10.0, max_zoom=1.1, max_lighting=0.2,
                   p_affine=0.75, p_lighting=0.75):
    """fastai's default image augmentations, as item transforms (training only; validation drops them):
    random flips, a small rotation and zoom, brightness and contrast. fastai's perspective
    warp is not included. Put them after any `Resize`:

        dls = ImageDataLoaders.from_folder(path, size=64, item_tfms=aug_transforms())
    """
    tfms = []
    if do_flip:
        tfms.append(RandomHorizontalFlip())
        if flip_vert:
            tfms.append(RandomVerticalFlip())
    if max_rotate or max_zoom > 1:
        tfms.append(RandomRotateZoom(max_rotate, max_zoom, p=p_affine))
    if max_lighting:
        tfms.append(RandomLighting(max_lighting, p=p_lighting))
    return tfms


class ImageToFloat(Transform):
    """(N,)H,W,C images -> float32 (N,)C,H,W; uint8 is divided by `div` (255) into [0, 1]."""

    def __init__(self, div=255.0):
        self.div = div

    def __call__(self, x, rng=None):
        if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
            raise ValueError(f"ImageToFloat expects an (H, W, C) image or (N, H, W, C) batch, got "
                             f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
        out = np.moveaxis(x, -1, -3).astype(np.float32)
        if x.dtype == np.uint8:
            out *= np.float32(1.0 / self.div)
        return np.ascontiguousarray(out)


class Normalize(Transform):
    """(x - mean) / std per channel, on a float (C, H, W) image or (N, C, H, W) batch."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean has {self.mean.size} channels but std has {self.std.size}")
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {self.std.ravel().tolist()}")

    def __call__(self, x, rng=None):
        if not isinstance(x, np.ndarray) or x.ndim not in (3, 4) or x.dtype.kind != "f":
            raise ValueError(f"Normalize expects a float (C, H, W) image or (N, C, H, W) batch (apply "
                             f"ImageToFloat first), got {getattr(x, 'dtype', type(x).__name__)} "
                             f"of shape {getattr(x, 'shape', None)}")
        channels = x.shape[-3]
        if self.mean.shape[0] not in (1, channels):
            raise ValueError(f"Normalize has {self.mean.shape[0]} channel statistics but the input has "
                             f"{channels} channels (shape {x.shape})")
        return ((x - self.mean) / self.std).astype(x.dtype, copy=False)

    def decode(self, x):
        """Undo the normalisation (for showing images)."""
        return x * self.std + self.mean

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"
