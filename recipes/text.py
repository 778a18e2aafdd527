"""Text recipe: a text classifier (bidirectional LSTM/GRU with pooling, or a small transformer).

Data: six categories of Debian's `fortunes` (the default; `apt-get install fortunes`),
a CSV file with a text column and a label column, or a folder of `class_name/*.txt`
files (with `train/` and `valid/` subfolders when the split is given).

    easyfit train text                                        # fortunes, BiLSTM
    easyfit train text --arch transformer --set layers=2
    easyfit train text --data reviews.csv --set text_col=review --set label_col=stars
    easyfit predict easyfit-runs/text "The kernel panicked again." "I love you."
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from easyfit import arange, concatenate, max as reduce_max, maximum, nn, sum as reduce_sum, where
from easyfit.core.backend import get_array_module
from easyfit.data import TextDataLoaders, datasets
from easyfit.learner import GradientClip, Learner, accuracy, register_module
from easyfit.optim import Adam

from .config import ConfigError

NAME = "text"
DESCRIPTION = "text classifier: bidirectional LSTM/GRU with mean+max pooling, or a small transformer encoder"
# Six of the larger fortune files with a recognisable subject (the catch-all ones such as
# `people`, `cookie` and `miscellaneous` are left out: their texts could belong anywhere).
FORTUNE_CATEGORIES = ("computers", "definitions", "politics", "science", "songs-poems", "zippy")
DEFAULT_DATA = ("fortunes: 4,850 quotes of 6 categories (" + ", ".join(FORTUNE_CATEGORIES) +
                "), 20% held out with the seed; Debian's `fortunes` package")
ARCHS = ("lstm", "gru", "transformer")


@dataclass
class Config:
    data: str = "fortunes"           # "fortunes", a CSV file, or a folder of class_name/*.txt
    data_path: Optional[str] = None  # the fortune files' folder (default: the usual search)
    categories: str = ",".join(FORTUNE_CATEGORIES)  # fortune categories (file names), comma-separated
    text_col: str = "text"           # CSV: the column holding the text
    label_col: str = "label"         # CSV: the column holding the label
    valid_col: Optional[str] = None  # CSV: a column marking validation rows (else valid_pct is held out)
    arch: str = "lstm"               # lstm | gru | transformer
    epochs: int = 4
    lr: float = 2e-2                 # the one-cycle schedule's maximum learning rate
    bs: int = 64
    seed: int = 42
    wd: float = 0.0                  # Adam's (L2) weight decay
    valid_pct: float = 0.2           # held-out share when the data has no split of its own
    max_len: int = 96                # tokens kept per text (longer texts are cut)
    min_freq: int = 2                # rarer words become xxunk
    max_vocab: int = 30000
    emb_dim: int = 64
    hidden: int = 64                 # RNN hidden size per direction / transformer width
    layers: int = 1                  # RNN or transformer layers
    heads: int = 4                   # transformer attention heads
    ff_dim: int = 256                # transformer feed-forward width
    dropout: float = 0.3
    clip: float = 1.0                # gradient-norm clipping (0: off)


# ----- helpers on padded batches -------------------------------------------------------------

# These helpers use tensor ops only (no .array): ONNX export traces them, so an exported
# model handles any batch of texts, padded anywhere, like the model itself.

def _real_tokens(tokens, pad_idx):
    """(real (B, T) bool tensor: True on non-padding tokens, lengths (B,) int64) of a padded token batch."""
    real = tokens != pad_idx
    return real, reduce_sum(real.astype(np.int64), axis=1)


def _reverse_within_lengths(x, lengths):
    """x (B, T, ...) with each row's first `lengths[b]` steps reversed and its padding left in place.

    Running a forward RNN over this and reversing its output the same way gives the
    backward direction of a bidirectional RNN that never sees the padding (what
    PyTorch's packed sequences give), so a text gets the same output alone or padded.
    """
    steps = arange(x.shape[1], device=x.device)[None, :]
    lengths = lengths[:, None]
    index = where(steps < lengths, lengths - 1 - steps, steps)
    rows = arange(x.shape[0], device=x.device)[:, None]
    return x[rows, index]


def _masked_mean(states, real, lengths):
    """Mean of states (B, T, D) over each row's real positions: (B, D)."""
    weights = real[:, :, None].astype(states.dtype)
    counts = maximum(lengths, 1).astype(states.dtype)[:, None]
    return reduce_sum(states * weights, axis=1) / counts


def _masked_max(states, real):
    """Max of states (B, T, D) over each row's real positions: (B, D)."""
    return reduce_max(where(real[:, :, None], states, -1e9), axis=1)


# ----- models ---------------------------------------------------------------------------------

class RNNClassifier(nn.Module):
    """Embedding, a bidirectional LSTM/GRU (batch_first), masked mean+max pooling, dropout, linear.

    The two directions are separate one-way RNNs so that the backward one reads each
    text from its own last token, not from the batch's padding.
    """

    def __init__(self, vocab_size, n_classes, cell="lstm", emb_dim=128, hidden=128, layers=1, dropout=0.3,
                 pad_idx=1):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"RNNClassifier: cell must be 'lstm' or 'gru', got {cell!r}")
        self.vocab_size, self.n_classes, self.cell = vocab_size, n_classes, cell
        self.emb_dim, self.hidden, self.layers = emb_dim, hidden, layers
        self.dropout, self.pad_idx = dropout, pad_idx
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        sizes = [emb_dim] + [2 * hidden] * (layers - 1)
        self.forward_rnns = nn.ModuleList([rnn(size, hidden, batch_first=True) for size in sizes])
        self.backward_rnns = nn.ModuleList([rnn(size, hidden, batch_first=True) for size in sizes])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, n_classes)

    def encode(self, tokens):
        """(states (B, T, 2 * hidden): both directions at every position, real (B, T), lengths (B,))."""
        real, lengths = _real_tokens(tokens, self.pad_idx)
        x = self.drop(self.embedding(tokens))
        for layer, (forward_rnn, backward_rnn) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
            if layer:
                x = self.drop(x)
            ahead, _ = forward_rnn(x)
            back, _ = backward_rnn(_reverse_within_lengths(x, lengths))
            x = concatenate([ahead, _reverse_within_lengths(back, lengths)], axis=2)
        return x, real, lengths

    def forward(self, tokens):
        states, real, lengths = self.encode(tokens)
        pooled = concatenate([_masked_mean(states, real, lengths), _masked_max(states, real)], axis=1)
        return self.head(self.drop(pooled))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer: x + attention(LN(x)), then x + feed-forward(LN(x))."""

    def __init__(self, dim, heads, ff_dim, dropout=0.1):
        super().__init__()
        self.dim, self.heads, self.ff_dim, self.dropout = dim, heads, ff_dim, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout),
                                          nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, padding):
        normed = self.norm1(x)
        attended, _ = self.attention(normed, normed, normed, key_padding_mask=padding, need_weights=False)
        x = x + self.drop(attended)
        return x + self.drop(self.feed_forward(self.norm2(x)))


class TransformerClassifier(nn.Module):
    """Token + learned position embeddings, `layers` transformer blocks, LayerNorm, masked mean pooling, linear.

    Texts longer than `max_len` tokens are cut (the position table has `max_len` rows).
    """

    def __init__(self, vocab_size, n_classes, dim=128, heads=4, ff_dim=256, layers=2, max_len=128, dropout=0.1,
                 pad_idx=1):
        super().__init__()
        self.vocab_size, self.n_classes, self.dim, self.heads = vocab_size, n_classes, dim, heads
        self.ff_dim, self.layers, self.max_len, self.dropout, self.pad_idx = ff_dim, layers, max_len, dropout, pad_idx
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_idx)
        self.positions = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, ff_dim, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, tokens):
        if tokens.shape[1] > self.max_len:
            tokens = tokens[:, :self.max_len]
        xp = get_array_module(tokens.array)
        real, lengths = _real_tokens(tokens, self.pad_idx)
        x = self.drop(self.embedding(tokens) + self.positions(xp.arange(tokens.shape[1])[None, :]))
        padding = tokens == self.pad_idx   # True where a key is padding
        for block in self.blocks:
            x = block(x, padding)
        return self.head(self.drop(_masked_mean(self.norm(x), real, lengths)))


for _cls in (RNNClassifier, TransformerBlock, TransformerClassifier):
    register_module(_cls)


def build_model(config, vocab_size, n_classes, pad_idx):
    if config.arch in ("lstm", "gru"):
        return RNNClassifier(vocab_size, n_classes, cell=config.arch, emb_dim=config.emb_dim, hidden=config.hidden,
                             layers=config.layers, dropout=config.dropout, pad_idx=pad_idx)
    if config.arch == "transformer":
        return TransformerClassifier(vocab_size, n_classes, dim=config.hidden, heads=config.heads,
                                     ff_dim=config.ff_dim, layers=config.layers, max_len=config.max_len,
                                     dropout=config.dropout, pad_idx=pad_idx)
    raise ConfigError(f"unknown arch {config.arch!r} for the text recipe; choose one of: {', '.join(ARCHS)}")


# ----- data -----------------------------------------------------------------------------------

def fortune_categories(config):
    """The config's fortune categories as a list of names."""
    names = [name.strip() for name in config.categories.split(",") if name.strip()]
    if not names:
        raise ConfigError("config key 'categories' names no fortune category")
    return names


def build_dataloaders(config):
    options = dict(tokenizer="word", min_freq=config.min_freq, max_size=config.max_vocab, max_len=config.max_len,
                   bs=config.bs, seed=config.seed)
    if config.data == "fortunes":
        texts, labels, names = datasets.fortunes(config.data_path, categories=fortune_categories(config))
        return TextDataLoaders.from_texts(texts, [names[i] for i in labels], valid_pct=config.valid_pct, **options)
    path = Path(config.data)
    if path.is_dir():
        return TextDataLoaders.from_folder(path, valid_pct=config.valid_pct, **options)
    if path.is_file():
        try:
            return TextDataLoaders.from_csv(path, text_col=config.text_col, label_col=config.label_col,
                                            valid_col=config.valid_col, valid_pct=config.valid_pct, **options)
        except KeyError as error:   # a column the config names is not in the file
            raise ConfigError(f"{error.args[0]} (name the columns with --set text_col=... --set label_col=...)") \
                from None
    raise FileNotFoundError(f"--data {config.data!r} is neither 'fortunes' nor a CSV file nor a folder of "
                            f"class_name/*.txt files")


# ----- the recipe -----------------------------------------------------------------------------

def build_learner(config, out_dir):
    if config.arch not in ARCHS:
        raise ConfigError(f"unknown arch {config.arch!r} for the text recipe; choose one of: {', '.join(ARCHS)}")
    dls = build_dataloaders(config)
    model = build_model(config, len(dls.vocab), len(dls.classes), dls.vocab.pad_idx)
    callbacks = [GradientClip(config.clip)] if config.clip > 0 else []
    return Learner(dls, model, nn.CrossEntropyLoss(), opt_func=Adam, lr=config.lr, wd=config.wd or None,
                   metrics=accuracy, cbs=callbacks, path=out_dir)


def _snippet(text, width=60):
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def text_inputs(config, inputs):
    """The texts named by `inputs`: a path to a .csv file stands for the texts in its `text_col`
    column (one per row); anything else is a text to classify as it is."""
    import csv
    texts = []
    for item in inputs:
        if str(item).lower().endswith(".csv"):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"{path} looks like a CSV file but does not exist (a text to classify "
                                        f"must not end in .csv)")
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if config.text_col not in (reader.fieldnames or []):
                    raise ConfigError(f"{path} has no column {config.text_col!r} (its columns are "
                                      f"{reader.fieldnames}); name it with --set text_col=...")
                texts.extend(row[config.text_col] or "" for row in reader)
        else:
            texts.append(str(item))
    return texts


def predict(learner, config, inputs):
    """One line per text: the text (shortened), the predicted class and its probability.

    An input that names a .csv file classifies every row's `text_col` (the config's) instead.
    """
    texts = text_inputs(config, inputs)
    preds, _, decoded = learner.get_preds(dl=learner.dls.test_dl(texts, bs=config.bs), with_decoded=True)
    classes = learner.dls.classes
    return [f"{_snippet(text)}\t{classes[int(index)]}\t{float(np.max(probs)):.4f}"
            for text, index, probs in zip(texts, decoded, preds)]
