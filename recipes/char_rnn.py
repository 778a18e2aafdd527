"""Char-RNN recipe: a character-level LSTM/GRU language model that writes text.

Data: the Debian `fortunes` corpus (the default; `apt-get install fortunes`) or any
plain UTF-8 text file (`--data path/to/file.txt`). The text is tokenized into
characters (every fortune starts with the `xxbos` token, which separates them), cut
into contiguous chunks, and a seeded share of the chunks is held out for validation.
Training streams the chunks in BPTT windows (`LMDataLoader`: row r of batch k+1
continues row r of batch k) and carries the recurrent state from one window to the
next (detached between batches; reset at the start of every epoch and of validation).

    easyfit train char-rnn                                     # fortunes, 2-layer LSTM
    easyfit train char-rnn --data shakespeare.txt --arch gru --set hidden_size=512
    easyfit generate easyfit-runs/char-rnn --prompt "The " --temperature 0.7 --top-k 10
    easyfit predict easyfit-runs/char-rnn "Some text to score"   # loss and perplexity per text
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from easyfit import distributed, nn, no_grad
from easyfit.core.tensor import Tensor
from easyfit.data import BOS, EOS, PAD, UNK, CharTokenizer, DataLoaders, LMDataLoader, Vocab, datasets
from easyfit.learner import Callback, GradientClip, Learner, Perplexity, accuracy, register_module
from easyfit.optim import Adam

from recipes.config import ConfigError

NAME = "char-rnn"
DESCRIPTION = "character-level LSTM/GRU language model on a text file or the fortunes corpus; samples text"
DEFAULT_DATA = ("fortunes (Debian's `fortunes` package: 15,000+ fortunes, 2.5M characters; a seeded "
                "600,000-character subset by default (max_chars), about 35-60 s per epoch on 2 quiet cores)")
# `easyfit train char-rnn --nprocs N` trains data-parallel: the LMDataLoader deals out the rows
# of the stream (rank r of N takes rows r, r+N, ... of one process's N x bs rows), each process
# carries its rows' recurrent state, and ResetHiddenState gathers every process's state into
# rank 0's checkpoints (and hands each process its rows back on resume, in any number of them).
DATA_PARALLEL = True
ARCHS = ("lstm", "gru")
# How a sampled document boundary (xxbos) is shown in generated text: a fortune file's separator line.
DOCUMENT_BREAK = "\n%\n"


@dataclass
class Config:
    data: str = "fortunes"             # 'fortunes' or a path to a plain text file
    data_path: Optional[str] = None    # folder of the fortune files (default: the usual search)
    arch: str = "lstm"                 # lstm | gru
    epochs: int = 4
    lr: float = 3e-3
    bs: int = 32
    seed: int = 42
    bptt: int = 100                    # characters per training window
    emb_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1               # between stacked layers and before the output layer
    clip: float = 1.0                  # global gradient-norm clipping (0: off)
    wd: float = 0.0                    # Adam weight decay (L2)
    max_chars: Optional[int] = 600_000  # use at most this many characters of the corpus (none: all of it)
    chunk_chars: int = 5_000           # length of the contiguous chunks split into train and valid
    valid_pct: float = 0.1             # share of the chunks held out for validation


# ----- model ----------------------------------------------------------------------------

class CharRNN(nn.Module):
    """Embedding -> LSTM/GRU (batch first) -> dropout -> linear scores over the vocabulary.

    The model carries its recurrent state between calls (`hidden_state`, detached, so
    gradients stop at the window's start): consecutive BPTT windows of a stream continue
    each other. The state is not a parameter or buffer, so it never enters the state dict
    or an export; `reset_state()` forgets it, and a batch of another size starts afresh.
    """

    def __init__(self, vocab_size, arch="lstm", emb_size=64, hidden_size=256, num_layers=2, dropout=0.1):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"CharRNN: unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
        self.vocab_size, self.arch, self.emb_size = vocab_size, arch, emb_size
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        self.encoder = nn.Embedding(vocab_size, emb_size)
        rnn_class = nn.LSTM if arch == "lstm" else nn.GRU
        self.rnn = rnn_class(emb_size, hidden_size, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.hidden_state = None

    def reset_state(self):
        self.hidden_state = None

    def _state_for(self, x):
        state = self.hidden_state
        if state is None:
            return None
        first = state[0] if isinstance(state, tuple) else state
        return state if first.shape[1] == x.shape[0] else None

    def forward(self, x):
        """Token ids (batch, time) -> scores (batch, time, vocab_size)."""
        out, state = self.rnn(self.encoder(x), self._state_for(x))
        self.hidden_state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return self.decoder(self.output_dropout(out))


register_module(CharRNN)


class SequenceCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy over every position of (batch, time, classes) scores and (batch, time) targets.

    The class axis is last (as `accuracy` expects); `activation` and `decodes` make
    `learn.predict` / `get_preds` give per-position probabilities and characters.
    """

    def forward(self, input, target):
        classes = input.shape[-1]
        return super().forward(input.reshape(-1, classes), target.reshape(-1))

    def activation(self, scores):
        return nn.functional.softmax(scores if isinstance(scores, Tensor) else Tensor(scores), axis=-1)

    def decodes(self, probs):
        return np.asarray(probs.numpy_cpu() if isinstance(probs, Tensor) else probs).argmax(axis=-1)


register_module(SequenceCrossEntropyLoss)


class ResetHiddenState(Callback):
    """Forgets the model's carried state at the start of every epoch and of validation.

    Its checkpoint state is the carried state itself, so a run resumed mid-epoch
    continues with the state it had, exactly as if it had not been interrupted.

    Data-parallel (`distrib_ctx`), each process carries the state of its own rows of the
    stream (rows r, r+N, ... of the N x bs rows, the LMDataLoader's rule): the saved
    state is every process's, gathered and put back in row order, so it is the state one
    process at batch N x bs would have; on resume each process takes its rows of it.
    A checkpoint of N processes thus resumes in one process and the other way round.
    """
    order = -10

    def _reset(self):
        self.learner.model.reset_state()

    before_train = before_validate = after_fit = _reset

    def _shards(self):
        """(this process's rank, number of processes) sharing the training rows."""
        learn = self.learner
        train = getattr(learn.dls, "train", None)
        if learn.parallel is None or getattr(train, "num_shards", 1) == 1:
            return 0, 1
        return train.shard_rank, train.num_shards

    def state_dict(self):
        state = getattr(self.learner.model, "hidden_state", None) if self.learner is not None else None
        parts = None
        if state is not None:
            parts = [part.numpy_cpu() for part in (state if isinstance(state, tuple) else (state,))]
        rank, n_shards = self._shards()
        if n_shards > 1:  # every process is in this call (Learner.save asks all of them)
            gathered = distributed.all_gather(parts)
            if any(shard is None for shard in gathered):
                return {}
            parts = [_interleave_rows([shard[i] for shard in gathered]) for i in range(len(gathered[0]))]
        if parts is None:
            return {}
        return {f"state_{i}": part for i, part in enumerate(parts)}

    def load_state_dict(self, state):
        if not state:
            return
        model = self.learner.model
        device = next(iter(model.parameters())).device
        rank, n_shards = self._shards()
        parts = tuple(Tensor(np.ascontiguousarray(np.asarray(state[f"state_{i}"])[:, rank::n_shards])).to(device)
                      for i in range(len(state)))
        model.hidden_state = parts if len(parts) > 1 else parts[0]


def _interleave_rows(shards):
    """One (layers, N x b, hidden) state from N processes' (layers, b, hidden): process r's row i is row r + i*N."""
    first = shards[0]
    whole = np.empty((first.shape[0], sum(s.shape[1] for s in shards)) + first.shape[2:], dtype=first.dtype)
    for rank, shard in enumerate(shards):
        whole[:, rank::len(shards)] = shard
    return whole


# ----- data -----------------------------------------------------------------------------

def read_corpus(config):
    """The corpus as a list of documents (fortunes shuffled with the seed; a text file is one document)."""
    if config.data == "fortunes":
        documents = datasets.fortune_corpus(config.data_path)
        order = np.random.default_rng(config.seed).permutation(len(documents))
        return [documents[i] for i in order]
    path = Path(config.data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {config.data!r} is neither 'fortunes' nor a text file")
    try:
        return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as error:
        raise ValueError(f"--data {path}: not UTF-8 text ({error})") from None


def split_chunks(n_tokens, chunk_chars, valid_pct, seed):
    """(train, valid) lists of (start, stop) token ranges: contiguous chunks, a seeded share held out."""
    if chunk_chars < 2:
        raise ConfigError(f"chunk_chars must be at least 2, got {chunk_chars}")
    if not 0 < valid_pct < 1:
        raise ConfigError(f"valid_pct must be between 0 and 1 (exclusive), got {valid_pct}")
    bounds = [(start, min(start + chunk_chars, n_tokens)) for start in range(0, n_tokens, chunk_chars)]
    n_valid = int(round(len(bounds) * valid_pct))
    if n_valid < 1 or n_valid >= len(bounds):
        raise ConfigError(f"a corpus of {n_tokens} characters in chunks of {chunk_chars} gives {len(bounds)} "
                         f"chunk(s), too few to hold out valid_pct={valid_pct}; lower chunk_chars")
    held_out = set(np.random.default_rng([seed, 1]).choice(len(bounds), n_valid, replace=False).tolist())
    train = [b for i, b in enumerate(bounds) if i not in held_out]
    valid = [b for i, b in enumerate(bounds) if i in held_out]
    return train, valid


def build_dataloaders(config):
    """Character-level LM loaders: `.train` / `.valid` LMDataLoaders, `.vocab`, `.tokenizer`.

    Each document becomes `xxbos` + its characters; the documents' tokens form one
    stream, truncated to `max_chars`, cut into `chunk_chars` chunks, of which a seeded
    `valid_pct` share is held out. The vocabulary is built from the training chunks
    (characters seen only in validation become xxunk). Pure NumPy, so the PyTorch
    twin in bench/ trains on exactly these batches.
    """
    if config.bptt < 1 or config.bs < 1:
        raise ConfigError(f"bs and bptt must be positive, got bs={config.bs}, bptt={config.bptt}")
    if config.max_chars is not None and config.max_chars < 1:
        raise ConfigError(f"max_chars must be positive (or none for all), got {config.max_chars}")
    tokenizer = CharTokenizer(add_bos=True)
    tokens = []
    for document in read_corpus(config):
        tokens.extend(tokenizer(document))
        if config.max_chars is not None and len(tokens) >= config.max_chars:
            del tokens[config.max_chars:]
            break
    train_bounds, valid_bounds = split_chunks(len(tokens), config.chunk_chars, config.valid_pct, config.seed)
    vocab = Vocab.build(tokens[a:b] for a, b in train_bounds)
    ids = vocab.encode(tokens)
    train_chunks = [ids[a:b] for a, b in train_bounds]
    valid_chunks = [ids[a:b] for a, b in valid_bounds]
    processes = distributed.world_size()  # data-parallel: the stream is cut into processes x bs rows
    for name, chunks in (("training", train_chunks), ("validation", valid_chunks)):
        if sum(len(c) for c in chunks) <= config.bs * processes:
            rows = f"bs={config.bs} rows" + (f" in each of {processes} processes" if processes > 1 else "")
            raise ConfigError(f"the {name} text has {sum(len(c) for c in chunks)} characters, too few for "
                             f"{rows}; use more data or a smaller bs")
    train = LMDataLoader(train_chunks, batch_size=config.bs, bptt=config.bptt, shuffle=True, seed=config.seed)
    valid = LMDataLoader(valid_chunks, batch_size=config.bs, bptt=config.bptt, shuffle=False, seed=config.seed + 1)
    dls = DataLoaders(train, valid, vocab=vocab)
    dls.tokenizer = tokenizer
    return dls


# ----- the recipe -----------------------------------------------------------------------

def _check_arch(config):
    if config.arch not in ARCHS:
        raise ConfigError(f"unknown arch {config.arch!r} for the char-rnn recipe; choose one of: {', '.join(ARCHS)}")


def build_model(config, vocab_size):
    _check_arch(config)
    return CharRNN(vocab_size, config.arch, config.emb_size, config.hidden_size, config.num_layers, config.dropout)


def build_learner(config, out_dir):
    _check_arch(config)   # before the (slower) data
    dls = build_dataloaders(config)
    model = build_model(config, len(dls.vocab))
    cbs = [ResetHiddenState()] + ([GradientClip(config.clip)] if config.clip > 0 else [])
    return Learner(dls, model, SequenceCrossEntropyLoss(), opt_func=Adam, lr=config.lr, wd=config.wd,
                   metrics=[accuracy, Perplexity()], cbs=cbs, path=out_dir)


def _model_input(model, ids):
    x = Tensor(np.asarray(ids, dtype=np.int64)[None])
    device = next(iter(model.parameters())).device
    return x.to(device) if device != "cpu" else x


def _log_softmax(scores):
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def predict(learner, config, inputs):
    """One line per text: its mean loss per character (nats) and perplexity under the model."""
    model, vocab, tokenizer = learner.model, learner.dls.vocab, learner.dls.tokenizer
    lines = []
    for text in inputs:
        ids = vocab.encode(tokenizer(text))
        if len(ids) < 2:
            raise ValueError("predict: an empty text has no characters to score")
        model.eval()
        model.reset_state()
        with no_grad():
            scores = model(_model_input(model, ids[:-1])).numpy_cpu()[0].astype(np.float64)
        model.reset_state()
        loss = float(-_log_softmax(scores)[np.arange(len(ids) - 1), ids[1:]].mean())
        shown = text if text.isprintable() else repr(text)
        lines.append(f"{shown}\tloss {loss:.4f}\tperplexity {np.exp(loss):.3f}")
    return lines


def sample_next(scores, temperature, top_k, rng, banned=()):
    """One token id drawn from softmax(scores / temperature), among the top_k scores if given."""
    scores = np.asarray(scores, dtype=np.float64) / temperature
    scores[list(banned)] = -np.inf
    if top_k is not None and top_k < len(scores):
        cutoff = np.partition(scores, -top_k)[-top_k]
        scores[scores < cutoff] = -np.inf
    probs = np.exp(scores - scores.max())
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def generate(learner, config, prompt, length=300, temperature=0.8, top_k=None, seed=None):
    """The prompt followed by `length` sampled characters.

    The prompt (after an implicit `xxbos`, the start of a document) primes the hidden
    state; each next character is drawn from the softmax of the scores divided by
    `temperature` (lower: safer, higher: more varied), among the `top_k` most likely
    when given. With the fortunes corpus a sampled `xxbos` (a new fortune) is shown as
    a `%` line (and counts as one of the `length` characters); a text file's model
    never samples it. Prompt characters the vocabulary lacks are read as xxunk.
    """
    if temperature <= 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be at least 1, got {top_k}")
    if length < 0:
        raise ValueError(f"generate: length must be >= 0, got {length}")
    model, vocab, tokenizer = learner.model, learner.dls.vocab, learner.dls.tokenizer
    never_sampled = (UNK, PAD, EOS) if config.data == "fortunes" else (UNK, PAD, EOS, BOS)  # a file has one xxbos
    banned = [vocab.stoi[t] for t in never_sampled if t in vocab]
    rng = np.random.default_rng(seed)
    model.eval()
    model.reset_state()
    pieces = []
    with no_grad():
        scores = model(_model_input(model, vocab.encode(tokenizer(prompt)))).numpy_cpu()[0, -1]
        for _ in range(length):
            token = sample_next(scores, temperature, top_k, rng, banned)
            pieces.append(DOCUMENT_BREAK if vocab.itos[token] == BOS else vocab.itos[token])
            scores = model(_model_input(model, [token])).numpy_cpu()[0, -1]
    model.reset_state()
    return prompt + "".join(pieces)
