"""Loaders over unlabelled items for batch inference: `dls.test_dl(items)` (fastai's name).

The items are prepared exactly as the validation data is: image files decoded to the
data's colour mode, texts tokenized and encoded with its vocabulary, then the
validation loader's item and batch transforms. The loader yields input-only batches in
the order of the items, for `learn.get_preds(dl=...)`.
"""
import os
from pathlib import Path

import numpy as np

from ..core.tensor import Tensor
from .loader import DataLoader, Dataset


class InferenceItems(Dataset):
    """Unlabelled items: image file paths, texts (with a tokenizer and vocab), arrays or Tensors.

    Item i is a one-field tuple `(input,)`, so batches carry no target.
    """

    def __init__(self, items, mode=None, tokenizer=None, vocab=None):
        self.items = list(items)
        self.mode, self.tokenizer, self.vocab = mode, tokenizer, vocab
        self.is_text = tokenizer is not None and hasattr(vocab, "encode")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        if self.is_text and isinstance(item, str):
            return (np.asarray(self.vocab.encode(self.tokenizer(item)), dtype=np.int64),)
        if isinstance(item, (str, os.PathLike)):
            from .vision import decode_image
            return (decode_image(item, self.mode),)
        x = item.numpy_cpu() if isinstance(item, Tensor) else np.asarray(item)
        if self.mode is not None:
            from .vision import convert_image_mode
            x = convert_image_mode(x, self.mode)
        return (x,)

    @property
    def files(self):
        """The items as paths where they are files (for labelling results), else None."""
        if self.items and all(isinstance(item, (str, os.PathLike)) for item in self.items) and not self.is_text:
            return [Path(item) for item in self.items]
        return None

    def __repr__(self):
        return f"InferenceItems({len(self)} items)"


class PadInputs:
    """Collate one-field `(ids,)` samples into a padded (N, longest) int64 batch."""

    def __init__(self, pad_idx):
        self.pad_idx = int(pad_idx)

    def __call__(self, samples):
        longest = max(1, max(len(ids) for (ids,) in samples))
        batch = np.full((len(samples), longest), self.pad_idx, dtype=np.int64)
        for row, (ids,) in enumerate(samples):
            batch[row, :len(ids)] = ids
        return (batch,)


def test_dataloader(dls, items, bs=None, device=None, num_workers=0):
    """A loader over `items` prepared as `dls`'s validation data; see `DataLoaders.test_dl`."""
    if isinstance(items, (str, os.PathLike)):
        folder = Path(items)
        if not folder.is_dir():
            raise TypeError(f"test_dl takes a list of items (file paths, texts or arrays) or a folder of images; "
                            f"got the single item {items!r}: wrap it in a list")
        from .vision import image_files
        items = image_files(folder)
        if not items:
            raise FileNotFoundError(f"test_dl: the folder {folder} holds no image files")
    items = list(items)
    if not items:
        raise ValueError("test_dl: no items given")
    loader = getattr(dls, "valid", None)
    loader = loader if loader is not None else getattr(dls, "train", None)
    dataset = getattr(loader, "dataset", None)
    mode = getattr(dls, "mode", None) or getattr(dataset, "mode", None)
    tokenizer, vocab = getattr(dls, "tokenizer", None), getattr(dls, "vocab", None)
    inference = InferenceItems(items, mode=mode, tokenizer=tokenizer, vocab=vocab)
    collate = PadInputs(vocab.pad_idx) if inference.is_text and getattr(vocab, "pad_idx", None) is not None else None
    if bs is None:
        bs = getattr(loader, "batch_size", None) or 64
    if device is None:
        device = getattr(loader, "device", None)
    return DataLoader(inference, batch_size=bs, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      device=device, item_tfms=list(getattr(loader, "item_tfms", ()) or ()),
                      batch_tfms=list(getattr(loader, "batch_tfms", ()) or ()))
