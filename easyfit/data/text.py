"""Text data: tokenizers, `Vocab`, classification loaders and a language-model stream.

    tok = WordTokenizer()                      # "Hello, world" -> ['xxbos', 'hello', ',', 'world']
    vocab = Vocab.build([tok(t) for t in texts], min_freq=2, max_size=30000)
    ids = vocab.encode(tok(text))              # np.int64 array; unknown words -> xxunk
    dls = TextDataLoaders.from_csv("reviews.csv", text_col="text", label_col="label")
    lm = TextDataLoaders.for_language_model(corpus, tokenizer="char", bs=64, bptt=128)
"""
import collections
import csv
import json
import os
import re
import threading
from pathlib import Path

import numpy as np

from .loader import DataLoader, DataLoaders, Dataset, resolve_seed, split_indices

UNK, PAD, BOS, EOS = "xxunk", "xxpad", "xxbos", "xxeos"
SPECIAL_TOKENS = (UNK, PAD, BOS, EOS)


class WordTokenizer:
    """Words and punctuation marks as tokens; `lower` folds case; `add_bos` starts each text with xxbos."""
    kind = "word"
    _pattern = re.compile(r"xx[a-z]+|\w+(?:'\w+)?|[^\w\s]")

    def __init__(self, lower=True, add_bos=True, add_eos=False):
        self.lower, self.add_bos, self.add_eos = lower, add_bos, add_eos

    def __call__(self, text):
        if not isinstance(text, str):
            raise TypeError(f"WordTokenizer expects a str, got {type(text).__name__}")
        tokens = self._pattern.findall(text.lower() if self.lower else text)
        return ([BOS] if self.add_bos else []) + tokens + ([EOS] if self.add_eos else [])

    def detokenize(self, tokens):
        """Tokens back to text (words joined by spaces, special tokens dropped)."""
        return " ".join(t for t in tokens if t not in (BOS, EOS, PAD))

    def __repr__(self):
        return f"WordTokenizer(lower={self.lower}, add_bos={self.add_bos}, add_eos={self.add_eos})"


class CharTokenizer:
    """Every character is a token (char-level models); `add_bos` starts each text with xxbos."""
    kind = "char"

    def __init__(self, add_bos=True, add_eos=False):
        self.add_bos, self.add_eos = add_bos, add_eos

    def __call__(self, text):
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer expects a str, got {type(text).__name__}")
        return ([BOS] if self.add_bos else []) + list(text) + ([EOS] if self.add_eos else [])

    def detokenize(self, tokens):
        return "".join(t for t in tokens if t not in (BOS, EOS, PAD))

    def __repr__(self):
        return f"CharTokenizer(add_bos={self.add_bos}, add_eos={self.add_eos})"


def get_tokenizer(tokenizer):
    """'word', 'char' or a tokenizer object (any callable text -> list of str)."""
    if tokenizer == "word":
        return WordTokenizer()
    if tokenizer == "char":
        return CharTokenizer()
    if callable(tokenizer):
        return tokenizer
    raise ValueError(f"tokenizer must be 'word', 'char' or a callable, got {tokenizer!r}")


class Vocab:
    """Token <-> id mapping: `itos` (list) and `stoi` (dict). Saved with a model as JSON.

    Special tokens come first (xxunk = 0, xxpad = 1, xxbos = 2, xxeos = 3 by default),
    then tokens by decreasing frequency (ties alphabetical, so a corpus always gives
    the same vocab).
    """

    def __init__(self, itos):
        itos = list(itos)
        if len(set(itos)) != len(itos):
            dupes = sorted(t for t, c in collections.Counter(itos).items() if c > 1)[:5]
            raise ValueError(f"Vocab tokens must be unique; repeated: {dupes}")
        self.itos = itos
        self.stoi = {token: i for i, token in enumerate(itos)}
        self.unk_idx = self.stoi.get(UNK)
        self.pad_idx = self.stoi.get(PAD)

    @classmethod
    def build(cls, token_lists, min_freq=1, max_size=None, specials=SPECIAL_TOKENS):
        """A vocab of the tokens in `token_lists` (lists of tokens, or a Counter).

        Tokens seen fewer than `min_freq` times are left out (they encode as xxunk);
        `max_size` caps the total size, special tokens included.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq!r}")
        if max_size is not None and max_size < len(specials):
            raise ValueError(f"max_size={max_size} cannot hold the {len(specials)} special tokens {list(specials)}")
        if isinstance(token_lists, collections.Counter):
            counts = token_lists
        else:
            counts = collections.Counter()
            for tokens in token_lists:
                counts.update(tokens)
        special_set = set(specials)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in special_set),
                        key=lambda t: (-counts[t], t))
        itos = list(specials) + ranked
        if max_size is not None:
            itos = itos[:max_size]
        return cls(itos)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, tokens):
        """Tokens -> np.int64 ids; unknown tokens become xxunk (an error if the vocab has none)."""
        if self.unk_idx is None:
            try:
                return np.fromiter((self.stoi[t] for t in tokens), dtype=np.int64)
            except KeyError as error:
                raise KeyError(f"token {error.args[0]!r} is not in the vocab, which has no {UNK} token") from None
        get, unk = self.stoi.get, self.unk_idx
        return np.fromiter((get(t, unk) for t in tokens), dtype=np.int64)

    def decode(self, ids):
        """Ids (list, array or Tensor) -> list of tokens."""
        ids = np.asarray(ids).ravel()
        bad = ids[(ids < 0) | (ids >= len(self.itos))]
        if bad.size:
            raise IndexError(f"ids {bad[:5].tolist()} are outside the vocab of {len(self.itos)} tokens")
        return [self.itos[i] for i in ids.tolist()]

    def to_dict(self):
        """A JSON-able form: {'format': 'easyfit.Vocab', 'version': 1, 'itos': [...]}."""
        return {"format": "easyfit.Vocab", "version": 1, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, state):
        if state.get("format") != "easyfit.Vocab" or "itos" not in state:
            raise ValueError(f"not a saved easyfit Vocab: keys {sorted(state)}")
        return cls(state["itos"])

    def save(self, path):
        """Write the vocab as JSON (atomically)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self):
        head = ", ".join(repr(t) for t in self.itos[:8])
        return f"Vocab({len(self)} tokens: {head}{', ...' if len(self) > 8 else ''})"


# ----------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------
class TextDataset(Dataset):
    """Encoded texts with labels: item i is `(ids (L,) int64, label int64)`."""

    def __init__(self, ids, labels):
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} texts but {len(labels)} labels")
        self.ids = list(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return self.ids[index], self.labels[index]

    def __repr__(self):
        return f"TextDataset({len(self)} texts)"


class PadCollate:
    """Collate `(ids, label)` samples, padding ids to the longest with `pad_idx` (at the end, or the start)."""

    def __init__(self, pad_idx, pad_first=False):
        self.pad_idx, self.pad_first = int(pad_idx), bool(pad_first)

    def __call__(self, samples):
        longest = max(len(ids) for ids, _ in samples)
        xb = np.full((len(samples), longest), self.pad_idx, dtype=np.int64)
        for row, (ids, _) in enumerate(samples):
            if len(ids):
                if self.pad_first:
                    xb[row, longest - len(ids):] = ids
                else:
                    xb[row, :len(ids)] = ids
        yb = np.array([label for _, label in samples], dtype=np.int64)
        return xb, yb


class SortedBatchSampler:
    """Batches of similar lengths, so little padding is needed.

    With `shuffle`, samples are shuffled, cut into chunks of 50 batches, each chunk
    sorted by length and cut into batches, and the batches shuffled - random yet
    length-homogeneous. Without it, batches follow decreasing length.
    """

    def __init__(self, lengths, batch_size, shuffle=True, drop_last=False, chunk_batches=50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.chunk = int(chunk_batches) * self.batch_size

    def num_batches(self, n):
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, n, rng):
        if n != len(self.lengths):
            raise ValueError(f"SortedBatchSampler has {len(self.lengths)} lengths but the dataset has {n} samples")
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
        else:
            order = rng.permutation(n)
            pieces = [order[i:i + self.chunk] for i in range(0, n, self.chunk)]
            order = np.concatenate([p[np.argsort(-self.lengths[p], kind="stable")] for p in pieces]) if n else order
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle and batches:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


def _encode_all(texts, tokenizer, vocab):
    return [vocab.encode(tokenizer(t)) for t in texts]


def _label_indices(labels, classes):
    lookup = {c: i for i, c in enumerate(classes)}
    try:
        return np.array([lookup[label] for label in labels], dtype=np.int64)
    except KeyError as error:
        raise ValueError(f"label {error.args[0]!r} is not one of the classes {classes}") from None


def _truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "valid", "y", "t")


class TextDataLoaders:
    """Builders of `DataLoaders` for text classification and language modelling."""

    @staticmethod
    def from_lists(train_texts, train_labels, valid_texts, valid_labels, tokenizer="word", vocab=None,
                   min_freq=2, max_size=60000, max_len=None, bs=64, seed=None, num_workers=0, device=None,
                   pad_first=False):
        """Classification loaders from texts and labels already split.

        The vocab is built from the training texts (unless given); texts longer than
        `max_len` tokens are cut. Batches hold texts of similar lengths, padded with
        xxpad. The result has `.vocab`, `.classes` and `.tokenizer`.
        """
        seed = resolve_seed(seed)
        tokenizer = get_tokenizer(tokenizer)
        if not len(train_texts):
            raise ValueError("no training texts")
        classes = sorted(set(train_labels) | set(valid_labels), key=lambda c: (str(type(c)), c))
        train_tokens = [tokenizer(t) for t in train_texts]
        if vocab is None:
            vocab = Vocab.build(train_tokens, min_freq=min_freq, max_size=max_size)
        if vocab.pad_idx is None:
            raise ValueError(f"the vocab needs a {PAD} token to pad batches")
        cut = (lambda ids: ids[:max_len]) if max_len else (lambda ids: ids)
        train_ids = [cut(vocab.encode(t)) for t in train_tokens]
        valid_ids = [cut(ids) for ids in _encode_all(valid_texts, tokenizer, vocab)]
        train_ds = TextDataset(train_ids, _label_indices(train_labels, classes))
        valid_ds = TextDataset(valid_ids, _label_indices(valid_labels, classes))
        collate = PadCollate(vocab.pad_idx, pad_first)
        train_dl = DataLoader(train_ds, batch_size=bs, collate_fn=collate, seed=seed, num_workers=num_workers,
                              device=device, batch_sampler=SortedBatchSampler(train_ds.lengths, bs, shuffle=True))
        valid_dl = DataLoader(valid_ds, batch_size=bs, collate_fn=collate, seed=seed + 1,
                              num_workers=num_workers, device=device,
                              batch_sampler=SortedBatchSampler(valid_ds.lengths, bs, shuffle=False))
        return DataLoaders(train_dl, valid_dl, classes=classes, vocab=vocab, tokenizer=tokenizer)

    @staticmethod
    def from_texts(texts, labels, valid_pct=0.2, seed=None, **kwargs):
        """Classification loaders, holding out `valid_pct` of the texts (chosen with `seed`)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        seed = resolve_seed(seed)
        train_idx, valid_idx = split_indices(len(texts), valid_pct, seed)
        return TextDataLoaders.from_lists([texts[i] for i in train_idx], [labels[i] for i in train_idx],
                                          [texts[i] for i in valid_idx], [labels[i] for i in valid_idx],
                                          seed=seed, **kwargs)

    @staticmethod
    def from_csv(path, text_col="text", label_col="label", valid_col=None, valid_pct=0.2, seed=None,
                 delimiter=",", encoding="utf-8", **kwargs):
        """Classification loaders from a CSV file with a header row.

        `valid_col` names a column whose true values (1/true/yes/valid) mark validation
        rows; without it `valid_pct` of the rows are held out.
        """
        path = Path(path)
        with open(path, newline="", encoding=encoding) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = reader.fieldnames or []
            for name in (text_col, label_col) + ((valid_col,) if valid_col else ()):
                if name not in columns:
                    raise KeyError(f"{path} has no column {name!r}; its columns are {columns}")
            rows = list(reader)
        if not rows:
            raise ValueError(f"{path} has a header but no rows")
        texts = [row[text_col] or "" for row in rows]
        labels = [row[label_col] for row in rows]
        if valid_col is None:
            return TextDataLoaders.from_texts(texts, labels, valid_pct=valid_pct, seed=seed, **kwargs)
        is_valid = [_truthy(row[valid_col]) for row in rows]
        return TextDataLoaders.from_lists([t for t, v in zip(texts, is_valid) if not v],
                                          [l for l, v in zip(labels, is_valid) if not v],
                                          [t for t, v in zip(texts, is_valid) if v],
                                          [l for l, v in zip(labels, is_valid) if v], seed=seed, **kwargs)

    @staticmethod
    def from_folder(path, train="train", valid="valid", valid_pct=0.2, seed=None, extensions=(".txt",),
                    encoding="utf-8", **kwargs):
        """Classification loaders over `path/<class_name>/<file>.txt` (one text per file).

        `path/train` + `path/valid` folders of classes are the split when both exist.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"text folder {folder} does not exist or is not a folder")

        def read(root):
            classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            if not classes:
                raise ValueError(f"no class folders in {root}: expected {root}/<class_name>/<file>.txt")
            texts, labels = [], []
            for name in classes:
                for file in sorted((root / name).rglob("*")):
                    if file.is_file() and file.suffix.lower() in extensions:
                        texts.append(file.read_text(encoding=encoding, errors="replace"))
                        labels.append(name)
            if not texts:
                raise ValueError(f"no {'/'.join(extensions)} files under the class folders of {root}")
            return texts, labels

        if (folder / train).is_dir() and (folder / valid).is_dir():
            train_texts, train_labels = read(folder / train)
            valid_texts, valid_labels = read(folder / valid)
            return TextDataLoaders.from_lists(train_texts, train_labels, valid_texts, valid_labels, seed=seed,
                                              **kwargs)
        texts, labels = read(folder)
        return TextDataLoaders.from_texts(texts, labels, valid_pct=valid_pct, seed=seed, **kwargs)

    @staticmethod
    def for_language_model(corpus, tokenizer="char", vocab=None, valid_pct=0.1, seed=None, bs=64, bptt=70,
                           min_freq=1, max_size=None, device=None):
        """Language-model loaders over a corpus: one string, or a list of documents.

        Documents are split into train/valid with `valid_pct` (a single string is cut:
        its last `valid_pct` goes to validation), each tokenized (starting with xxbos)
        and streamed by `LMDataLoader` in `bptt`-long windows; training documents are
        shuffled every epoch. The result has `.vocab` and `.tokenizer`.
        """
        seed = resolve_seed(seed)
        tokenizer = get_tokenizer(tokenizer)
        if isinstance(corpus, str):
            cut = int(len(corpus) * (1 - valid_pct))
            train_docs, valid_docs = [corpus[:cut]], [corpus[cut:]] if valid_pct else []
        else:
            corpus = list(corpus)
            train_idx, valid_idx = split_indices(len(corpus), valid_pct, seed)
            train_docs, valid_docs = [corpus[i] for i in train_idx], [corpus[i] for i in valid_idx]
        train_tokens = [tokenizer(d) for d in train_docs]
        if vocab is None:
            vocab = Vocab.build(train_tokens, min_freq=min_freq, max_size=max_size)
        train_ids = [vocab.encode(t) for t in train_tokens]
        train_dl = LMDataLoader(train_ids, batch_size=bs, bptt=bptt, shuffle=len(train_ids) > 1, seed=seed,
                                device=device)
        valid_dl = None
        if valid_docs:
            valid_dl = LMDataLoader(_encode_all(valid_docs, tokenizer, vocab), batch_size=bs, bptt=bptt,
                                    shuffle=False, seed=seed + 1, device=device)
        return DataLoaders(train_dl, valid_dl, vocab=vocab, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------
# language modelling
# ----------------------------------------------------------------------------------
class TokenStream(Dataset):
    """Documents of token ids read as one stream; item i is the i-th token in document order."""

    def __init__(self, documents):
        if isinstance(documents, np.ndarray) and documents.ndim == 1:
            documents = [documents]
        self.documents = [np.asarray(d, dtype=np.int64).ravel() for d in documents]
        self.offsets = np.cumsum([0] + [len(d) for d in self.documents])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"token {index} is outside the stream of {len(self)} tokens")
        index %= len(self)
        doc = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.documents[doc][index - self.offsets[doc]]

    def concatenated(self, order=None):
        docs = self.documents if order is None else [self.documents[i] for i in order]
        return np.concatenate(docs) if docs else np.zeros(0, np.int64)


class _LMFetcher:
    """Slices the epoch's (batch_size, row_length) input/target matrices; caches one epoch."""

    def __init__(self, loader):
        self.loader = loader
        self.lock = threading.Lock()
        self.cached = None  # (epoch, inputs, targets)

    def matrices(self, epoch):
        with self.lock:
            if self.cached is None or self.cached[0] != epoch:
                self.cached = (epoch,) + self.loader.stream_matrices(epoch)
            return self.cached[1], self.cached[2]

    def __call__(self, seed, epoch, batch_number, window):
        inputs, targets = self.matrices(epoch)
        start, stop = window
        return (np.ascontiguousarray(inputs[:, start:stop]), np.ascontiguousarray(targets[:, start:stop])), []


class LMDataLoader(DataLoader):
    """Streams token ids for language modelling in BPTT windows.

    The token stream (documents concatenated; their order shuffled per epoch when
    `shuffle`) is cut into `batch_size` rows of equal length; batch k holds columns
    [k*bptt, (k+1)*bptt) of every row as inputs, and the same window shifted by one
    token as targets. Row r of batch k+1 continues row r of batch k, so a recurrent
    model can carry its hidden state across batches. Yields `(xb, yb)`, both
    (batch_size, bptt) int64 (the last window may be shorter unless `drop_last`).

    Data-parallel (`shard(rank, N)`): the stream is cut into N x batch_size rows, as
    one process at batch size N x batch_size cuts it, and rank r takes rows r, r+N,
    r+2N, ... (the DistributedSampler rule on rows): the union of the ranks' k-th
    batches is one process's k-th batch, and each rank streams its own rows through
    every window, so it carries its own recurrent state. Every rank has the same
    number of windows, so no batch is ever uneven between ranks.
    """

    def __init__(self, source, batch_size=64, bptt=70, shuffle=False, seed=None, device=None, drop_last=False):
        stream = source if isinstance(source, TokenStream) else TokenStream(source)
        if not isinstance(bptt, (int, np.integer)) or bptt < 1:
            raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
        super().__init__(stream, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=0,
                         seed=seed, device=device)
        self.bptt = int(bptt)
        if self.row_length < 1:
            raise ValueError(f"a corpus of {len(stream)} tokens is too short for batch_size={self.batch_size} "
                             f"(it needs at least batch_size + 1 tokens)")

    @property
    def row_length(self):
        """Tokens per row: the stream cut into num_shards x batch_size rows (all processes' rows)."""
        return (len(self.dataset) - 1) // (self.batch_size * self.num_shards)

    def shard(self, rank, num_shards, equal_counts=True):
        """Stream only rows rank, rank+N, ... of the N x batch_size rows of one process at N x batch_size.

        Every process gets the same windows, so `equal_counts` changes nothing here.
        `shard(0, 1)` undoes it.
        """
        previous = (self.shard_rank, self.num_shards, self.shard_equal_counts)
        super().shard(rank, num_shards, equal_counts)
        if self.row_length < 1:
            self.shard_rank, self.num_shards, self.shard_equal_counts = previous
            raise ValueError(f"LMDataLoader.shard: a corpus of {len(self.dataset)} tokens is too short for "
                             f"{num_shards} processes x batch_size={self.batch_size} rows (it needs at least "
                             f"{num_shards * self.batch_size + 1} tokens)")
        return self

    def __len__(self):
        full, rest = divmod(self.row_length, self.bptt)
        return full + (1 if rest and not self.drop_last else 0)

    def batches_for_epoch(self, epoch):
        return [(start, min(start + self.bptt, self.row_length)) for start in range(0, len(self) * self.bptt,
                                                                                      self.bptt)]

    def stream_matrices(self, epoch):
        """The epoch's (inputs, targets) matrices of shape (batch_size, row_length) (this shard's rows)."""
        stream = self.dataset
        order = None
        if self.shuffle and len(stream.documents) > 1:
            order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(stream.documents))
        tokens = stream.concatenated(order)
        rows = self.batch_size * self.num_shards
        used = rows * self.row_length
        inputs, targets = tokens[:used].reshape(rows, -1), tokens[1:used + 1].reshape(rows, -1)
        if self.num_shards > 1:
            inputs, targets = inputs[self.shard_rank::self.num_shards], targets[self.shard_rank::self.num_shards]
        return inputs, targets

    def _fetcher(self):
        return _LMFetcher(self)

    def __repr__(self):
        return (f"LMDataLoader({len(self.dataset)} tokens, batch_size={self.batch_size}, bptt={self.bptt}, "
                f"{len(self)} batches, device='{self.device}')")
