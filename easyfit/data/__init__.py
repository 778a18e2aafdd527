"""easyfit.data: datasets, loaders that prepare batches in the background, and the
vision and text pipelines that build them from files.

    from easyfit.data import ImageDataLoaders, RandomCrop, RandomHorizontalFlip, Normalize
    dls = ImageDataLoaders.from_folder("pets/", valid_pct=0.2, seed=42, size=64, bs=32,
                                       item_tfms=[RandomHorizontalFlip()])
    xb, yb = dls.one_batch()          # float32 (32, 3, 64, 64), int64 (32,)

Real datasets are in `easyfit.data.datasets`. This package imports only `easyfit.core`.
"""
from .loader import (Dataset, ArrayDataset, TensorDataset, Subset, random_split, DataLoader, DataLoaders, default_collate, apply_transforms,
                     DataLoaderError, CollateError, SkipSample)
from .transforms import (Transform, Compose, Resize, CenterCrop, RandomCrop, RandomHorizontalFlip,
                         RandomVerticalFlip, ImageToFloat, Normalize, imagenet_stats)
from .vision import ImageDataLoaders, ImageFolderDataset, ImageReadError, decode_image, image_files
from .text import (WordTokenizer, CharTokenizer, Vocab, TextDataset, TextDataLoaders, LMDataLoader, TokenStream,
                   PadCollate, SortedBatchSampler, UNK, PAD, BOS, EOS, SPECIAL_TOKENS)
from . import datasets

__all__ = ["Dataset", "ArrayDataset", "TensorDataset", "Subset", "random_split", "DataLoader", "DataLoaders", "default_collate",
           "apply_transforms", "DataLoaderError", "CollateError", "SkipSample", "Transform", "Compose", "Resize",
           "CenterCrop", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "ImageToFloat", "Normalize",
           "imagenet_stats", "ImageDataLoaders", "ImageFolderDataset", "ImageReadError", "decode_image",
           "image_files", "WordTokenizer", "CharTokenizer", "Vocab", "TextDataset", "TextDataLoaders",
           "LMDataLoader", "TokenStream", "PadCollate", "SortedBatchSampler", "UNK", "PAD", "BOS", "EOS",
           "SPECIAL_TOKENS", "datasets"]
