"""Vision recipe: an image classifier (a small CNN or a small ResNet) on real images.

Data: the UCI handwritten digits (scikit-learn, no download; the default),
Fashion-MNIST / MNIST (IDX files; Debian's `dataset-fashion-mnist`), CIFAR-10 (binary
batches), or any folder of `class_name/image.png` files.

    easyfit train vision                                  # digits, small CNN
    easyfit train vision --data fashion-mnist --epochs 3  # 92%+ test accuracy
    easyfit train vision --data path/to/images --arch resnet --set size=64
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from easyfit import nn
from easyfit.data import ImageDataLoaders, Normalize, RandomCrop, RandomHorizontalFlip, aug_transforms, datasets
from easyfit.learner import Learner, accuracy, register_module
from easyfit.optim import AdamW

from .config import ConfigError

NAME = "vision"
DESCRIPTION = "image classifier: small CNN or ResNet (BatchNorm) on digits, Fashion-MNIST, MNIST, CIFAR-10 or a folder"
DEFAULT_DATA = "digits (UCI handwritten digits from scikit-learn, 1,797 8x8 images, no download)"
NAMED_DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")


@dataclass
class Config:
    data: str = "digits"             # a named dataset (digits, fashion-mnist, mnist, cifar10) or an image folder
    data_path: Optional[str] = None  # where a named dataset's files are (default: the usual search)
    arch: str = "cnn"                # cnn | resnet
    epochs: int = 5
    lr: float = 1e-2                 # one-cycle maximum: with BatchNorm the CNN trains fast at 1e-2
    bs: int = 64
    seed: int = 42
    wd: float = 0.01                 # decoupled weight decay (AdamW), as fastai does
    valid_pct: float = 0.2           # held-out share when the data has no test split
    size: int = 32                   # image side for folders (named datasets keep their size)
    mode: str = "RGB"                # folders: decode every image as RGB (3 channels) or L (grey, 1 channel)
    on_error: str = "raise"          # folders: an unreadable image stops training (raise) or is left out (skip)
    flip: bool = False               # random horizontal flips (off for digits and characters)
    crop_padding: int = 0            # random crops with this much padding (0: off)
    augment: bool = False            # fastai-style augmentation: small rotations and zooms, lighting (aug_transforms)
    dropout: float = 0.1             # before the last layer (cnn)
    width: int = 32                  # channels of the first stage
    label_smoothing: float = 0.1     # cross-entropy against (1 - e) one-hot + e uniform targets (0: off)


# ----- models -------------------------------------------------------------------------

def small_cnn(in_channels, n_classes, size, width=32, dropout=0.1):
    """Two conv-BN-pool-ReLU stages and a two-layer head (a LeNet-like CNN with BatchNorm).

    ReLU follows the max-pool: the two orders compute the same values and gradients (max
    and ReLU commute), and this one applies ReLU to a quarter of the activations.
    """
    spatial = size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * spatial * spatial, 128), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(128, n_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv) shortcut: ResNet's basic block."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


register_module(BasicBlock)


def small_resnet(in_channels, n_classes, width=32):
    """A stem and three stages of basic blocks (width, 2x, 4x channels), global pooling, linear."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        BasicBlock(width, width), BasicBlock(width, 2 * width, stride=2), BasicBlock(2 * width, 4 * width, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_classes),
    )


ARCHS = ("cnn", "resnet")


def build_model(config, in_channels, n_classes, size):
    if config.arch == "cnn":
        return small_cnn(in_channels, n_classes, size, config.width, config.dropout)
    if config.arch == "resnet":
        return small_resnet(in_channels, n_classes, config.width)
    raise ConfigError(f"unknown arch {config.arch!r} for the vision recipe; choose one of: {', '.join(ARCHS)}")


# ----- data ---------------------------------------------------------------------------

def _channel_stats(images):
    """Per-channel mean and std of uint8 images (N, H, W[, C]) on the [0, 1] scale."""
    x = images.reshape(len(images), images.shape[1], images.shape[2], -1).astype(np.float32) / 255.0
    return x.mean(axis=(0, 1, 2)).tolist(), (x.std(axis=(0, 1, 2)) + 1e-6).tolist()


def _augmentations(config, size):
    tfms = []
    if config.crop_padding:
        tfms.append(RandomCrop(size, padding=config.crop_padding))
    if config.flip:
        tfms.append(RandomHorizontalFlip())
    if config.augment:
        tfms.extend(aug_transforms(do_flip=False))   # flips follow `flip`: wrong for digits and characters
    return tfms


def _named_arrays(config):
    """(train_x, train_y, valid_x, valid_y, classes) as uint8 images for a named dataset."""
    if config.data == "digits":
        x, y = datasets.digits()
        x = np.round(x * (255.0 / 16.0)).astype(np.uint8)   # 0..16 grey levels as ordinary uint8 pixels
        return x, y, None, None, [str(i) for i in range(10)]
    if config.data in ("fashion-mnist", "mnist"):
        loader = datasets.fashion_mnist if config.data == "fashion-mnist" else datasets.mnist
        (train_x, train_y), (test_x, test_y) = loader(config.data_path, download=False)
        classes = list(datasets.FASHION_MNIST_CLASSES) if config.data == "fashion-mnist" else \
            [str(i) for i in range(10)]
        return train_x, train_y, test_x, test_y, classes
    if config.data == "cifar10":
        (train_x, train_y), (test_x, test_y) = datasets.cifar10(config.data_path, download=False)
        return train_x, train_y, test_x, test_y, list(datasets.CIFAR10_CLASSES)
    raise ValueError(f"unknown dataset {config.data!r}")


def build_dataloaders(config):
    if config.data in NAMED_DATASETS:
        train_x, train_y, valid_x, valid_y, classes = _named_arrays(config)
        mean, std = _channel_stats(train_x)
        dls = ImageDataLoaders.from_arrays(train_x, train_y, valid_x, valid_y, valid_pct=config.valid_pct,
                                           seed=config.seed, bs=config.bs,
                                           item_tfms=_augmentations(config, train_x.shape[1]),
                                           batch_tfms=[Normalize(mean, std)], classes=list(range(len(classes))))
        dls.classes = classes
        return dls
    if config.mode not in ("RGB", "L"):
        raise ConfigError(f"config key 'mode' must be 'RGB' (colour) or 'L' (grey), got {config.mode!r}")
    if config.on_error not in ("raise", "skip"):
        raise ConfigError(f"config key 'on_error' must be 'raise' (stop at an unreadable image) or 'skip' "
                          f"(leave it out and count it), got {config.on_error!r}")
    folder = Path(config.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {config.data!r} is neither a known dataset "
                                f"({', '.join(NAMED_DATASETS)}) nor an image folder")
    # Fixed statistics (one value for every channel): computing them would decode the folder twice.
    return ImageDataLoaders.from_folder(folder, valid_pct=config.valid_pct, seed=config.seed, size=config.size,
                                        bs=config.bs, item_tfms=_augmentations(config, config.size),
                                        batch_tfms=[Normalize([0.5], [0.25])], mode=config.mode,
                                        on_error=config.on_error)


# ----- the recipe ---------------------------------------------------------------------

def build_learner(config, out_dir):
    if config.arch not in ARCHS:   # before loading any data: a typo is bad usage (exit 2)
        raise ConfigError(f"unknown arch {config.arch!r} for the vision recipe; choose one of: {', '.join(ARCHS)}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config key 'label_smoothing' must be in [0, 1), got {config.label_smoothing}")
    dls = build_dataloaders(config)
    xb, _ = dls.train.one_batch()
    _, channels, height, _ = xb.shape
    model = build_model(config, channels, len(dls.classes), height)
    return Learner(dls, model, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), opt_func=AdamW, lr=config.lr, wd=config.wd,
                   metrics=accuracy, path=out_dir)


def image_inputs(inputs):
    """The image files named by `inputs`: files as given, folders expanded to their images (sorted)."""
    from easyfit.data import image_files
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise FileNotFoundError(f"the folder {path} holds no image files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such image file: {path} does not exist")
    return files


def predict(learner, config, inputs):
    """One line per image (files, or folders of images): the file, the predicted class and its probability.

    The images go through the model in batches (`dls.test_dl` + `get_preds`).
    """
    files = image_inputs(inputs)
    preds, _, decoded = learner.get_preds(dl=learner.dls.test_dl(files, bs=config.bs), with_decoded=True)
    classes = learner.dls.classes
    return [f"{path}\t{classes[int(index)] if classes else int(index)}\t{float(np.max(probs)):.4f}"
            for path, index, probs in zip(files, decoded, preds)]
