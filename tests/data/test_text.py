"""Tokenizers, Vocab, classification loaders and the BPTT language-model stream."""
import json

import numpy as np
import pytest

from easyfit.data import (BOS, PAD, UNK, CharTokenizer, LMDataLoader, TextDataLoaders, Vocab, WordTokenizer)
from easyfit.data.text import SortedBatchSampler


def test_word_tokenizer_and_round_trip():
    tok = WordTokenizer()
    tokens = tok("Hello, World! It's 42.")
    assert tokens == [BOS, "hello", ",", "world", "!", "it's", "42", "."]
    vocab = Vocab.build([tokens])
    assert tok.detokenize(vocab.decode(vocab.encode(tokens))) == "hello , world ! it's 42 ."
    assert WordTokenizer(lower=False, add_bos=False)("A b") == ["A", "b"]
    with pytest.raises(TypeError, match="expects a str, got int"):
        tok(3)


def test_char_tokenizer_round_trip_is_exact():
    text = "naïve café\n\ttabs & ünïcödé"
    tok = CharTokenizer()
    vocab = Vocab.build([tok(text)])
    assert tok.detokenize(vocab.decode(vocab.encode(tok(text)))) == text


def test_vocab_order_min_freq_max_size_and_unknowns():
    lists = [["b", "a", "a", "c", "c", "c", "d"]]
    vocab = Vocab.build(lists)
    assert vocab.itos == [UNK, PAD, BOS, "xxeos", "c", "a", "b", "d"]  # frequency, then alphabetical
    assert vocab.unk_idx == 0 and vocab.pad_idx == 1
    small = Vocab.build(lists, min_freq=2)
    assert small.itos[4:] == ["c", "a"]
    assert small.encode(["a", "zebra", "b"]).tolist() == [5, 0, 0]
    capped = Vocab.build(lists, max_size=5)
    assert len(capped) == 5 and capped.itos[-1] == "c"
    with pytest.raises(IndexError, match=r"ids \[99\] are outside the vocab of 8"):
        vocab.decode([1, 99])
    no_unk = Vocab(["x", "y"])
    with pytest.raises(KeyError, match="'z' is not in the vocab"):
        no_unk.encode(["z"])


def test_vocab_saves_as_json_and_loads_equal(tmp_path):
    vocab = Vocab.build([WordTokenizer()("the cat sat on the mat")])
    vocab.save(tmp_path / "vocab.json")
    state = json.loads((tmp_path / "vocab.json").read_text())
    assert state["format"] == "easyfit.Vocab" and state["itos"] == vocab.itos
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.stoi == vocab.stoi
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    with pytest.raises(ValueError, match="not a saved easyfit Vocab"):
        Vocab.from_dict({"tokens": []})


def corpus(n=60, seed=0):
    rng = np.random.default_rng(seed)
    words = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "actor"]
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        body = rng.choice(words[:3] if label == "pos" else words[3:6], size=rng.integers(2, 30))
        texts.append(" ".join(list(body) + ["movie"]))
        labels.append(label)
    return texts, labels


def test_classification_batches_are_padded_and_length_sorted():
    texts, labels = corpus(200)
    dls = TextDataLoaders.from_texts(texts, labels, valid_pct=0.2, seed=0, bs=16, min_freq=1)
    assert dls.classes == ["neg", "pos"] and dls.vocab.pad_idx == 1
    pad = dls.vocab.pad_idx
    total_padding, total = 0, 0
    for xb, yb in dls.train:
        x = xb.numpy()
        assert x.dtype == np.int64 and yb.shape == (x.shape[0],)
        assert (x[:, 0] == dls.vocab.stoi[BOS]).all()
        lengths = (x != pad).sum(1)
        assert lengths.max() == x.shape[1]  # padded to the longest in the batch, no more
        total_padding += (x == pad).sum()
        total += x.size
    assert total_padding / total < 0.15  # similar lengths together
    xv, _ = next(iter(dls.valid))
    lengths = (xv.numpy() != pad).sum(1)
    assert (np.diff(lengths) <= 0).all()  # validation: decreasing length


def test_text_loader_deterministic_and_resumable():
    texts, labels = corpus(100)
    dls_a = TextDataLoaders.from_texts(texts, labels, seed=5, bs=8)
    dls_b = TextDataLoaders.from_texts(texts, labels, seed=5, bs=8)
    a = [(x.numpy(), y.numpy()) for x, y in dls_a.train]
    it = iter(dls_b.train)
    head = [tuple(t.numpy() for t in next(it)) for _ in range(4)]
    state = dls_b.train.state_dict()
    fresh = TextDataLoaders.from_texts(texts, labels, seed=5, bs=8)
    fresh.train.load_state_dict(state)
    tail = [(x.numpy(), y.numpy()) for x, y in fresh.train]
    for (xa, ya), (xb, yb) in zip(a, head + tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_sorted_batch_sampler_covers_every_index():
    lengths = np.random.default_rng(1).integers(1, 100, 203)
    sampler = SortedBatchSampler(lengths, 10, shuffle=True)
    batches = sampler.batches(203, np.random.default_rng(0))
    assert len(batches) == sampler.num_batches(203) == 21
    assert sorted(np.concatenate(batches).tolist()) == list(range(203))
    dropped = SortedBatchSampler(lengths, 10, shuffle=True, drop_last=True).batches(203, np.random.default_rng(0))
    assert len(dropped) == 20 and all(len(b) == 10 for b in dropped)


def test_from_csv_with_and_without_valid_column(tmp_path):
    texts, labels = corpus(40)
    path = tmp_path / "reviews.csv"
    lines = ["text,label,is_valid"] + [f'"{t}",{l},{int(i % 4 == 0)}' for i, (t, l) in enumerate(zip(texts, labels))]
    path.write_text("\n".join(lines) + "\n")
    dls = TextDataLoaders.from_csv(path, valid_col="is_valid", bs=8, seed=0)
    assert len(dls.valid.dataset) == 10 and len(dls.train.dataset) == 30
    dls = TextDataLoaders.from_csv(path, valid_pct=0.25, bs=8, seed=0, tokenizer="char")
    assert len(dls.valid.dataset) == 10 and isinstance(dls.tokenizer, CharTokenizer)
    with pytest.raises(KeyError, match=r"no column 'review'; its columns are \['text', 'label', 'is_valid'\]"):
        TextDataLoaders.from_csv(path, text_col="review")


def test_from_folder(tmp_path):
    texts, labels = corpus(20)
    for i, (t, l) in enumerate(zip(texts, labels)):
        split = "valid" if i < 4 else "train"
        (tmp_path / split / l).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / l / f"{i}.txt").write_text(t)
    dls = TextDataLoaders.from_folder(tmp_path, bs=4, seed=0)
    assert len(dls.train.dataset) == 16 and len(dls.valid.dataset) == 4 and dls.classes == ["neg", "pos"]
    flat = tmp_path / "flat"
    for i, (t, l) in enumerate(zip(texts, labels)):
        (flat / l).mkdir(parents=True, exist_ok=True)
        (flat / l / f"{i}.txt").write_text(t)
    dls = TextDataLoaders.from_folder(flat, valid_pct=0.25, bs=4, seed=0)
    assert len(dls.valid.dataset) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        TextDataLoaders.from_folder(tmp_path / "empty")


def test_lm_stream_windows_targets_and_row_continuity():
    tokens = np.arange(1000)
    loader = LMDataLoader(tokens, batch_size=4, bptt=30)
    row = (1000 - 1) // 4
    batches = [(x.numpy(), y.numpy()) for x, y in loader]
    assert len(batches) == len(loader) == -(-row // 30)
    assert batches[0][0].shape == (4, 30) and batches[-1][0].shape[1] == row - 30 * (len(batches) - 1)
    inputs = np.concatenate([x for x, _ in batches], axis=1)
    targets = np.concatenate([y for _, y in batches], axis=1)
    for r in range(4):  # each row is one continuous piece of the stream, across batches
        np.testing.assert_array_equal(inputs[r], tokens[r * row:(r + 1) * row])
    np.testing.assert_array_equal(targets, inputs + 1)  # targets shifted by one
    assert len(LMDataLoader(tokens, batch_size=4, bptt=30, drop_last=True)) == row // 30


def test_lm_shuffles_documents_per_epoch_deterministically_and_resumes():
    docs = [np.full(n, i) for i, n in enumerate([50, 70, 30, 90, 60])]
    loader = LMDataLoader(docs, batch_size=3, bptt=10, shuffle=True, seed=2)
    epoch0 = [x.numpy() for x, _ in loader]
    epoch1 = [x.numpy() for x, _ in loader]
    assert not all(np.array_equal(a, b) for a, b in zip(epoch0, epoch1))
    again = LMDataLoader(docs, batch_size=3, bptt=10, shuffle=True, seed=2)
    for a, b in zip(epoch0, [x.numpy() for x, _ in again]):
        np.testing.assert_array_equal(a, b)
    it = iter(again)
    next(it), next(it)
    state = again.state_dict()
    resumed = LMDataLoader(docs, batch_size=3, bptt=10, shuffle=True, seed=2)
    resumed.load_state_dict(state)
    rest = [x.numpy() for x, _ in resumed]
    for a, b in zip(epoch1[2:], rest):
        np.testing.assert_array_equal(a, b)
    assert len(rest) == len(epoch1) - 2


@pytest.mark.parametrize("n_shards", [2, 3])
def test_lm_shards_take_rows_by_the_distributed_sampler_rule(n_shards):
    docs = [np.arange(n) + 1000 * i for i, n in enumerate([50, 70, 30, 90, 61])]
    one = LMDataLoader(docs, batch_size=2 * n_shards, bptt=7, shuffle=True, seed=2)
    shards = [LMDataLoader(docs, batch_size=2, bptt=7, shuffle=True, seed=2).shard(r, n_shards)
              for r in range(n_shards)]
    for _ in range(2):  # two epochs: the documents are reshuffled alike in every shard
        whole = [x.numpy() for x, _ in one]
        parts = [[x.numpy() for x, _ in dl] for dl in shards]
        assert all(len(p) == len(whole) == len(one) for p in parts)
        for k, batch in enumerate(whole):
            for rank in range(n_shards):  # rank r streams rows r, r+N, ... of one process's batch
                np.testing.assert_array_equal(parts[rank][k], batch[rank::n_shards])
    undone = shards[1].shard(0, 1)
    assert undone.row_length == (len(undone.dataset) - 1) // 2
    with pytest.raises(ValueError, match="too short for 3 processes x batch_size=4"):
        LMDataLoader(np.arange(12), batch_size=4).shard(0, 3)
    refused = LMDataLoader(np.arange(12), batch_size=4)
    with pytest.raises(ValueError):
        refused.shard(1, 3)
    assert (refused.shard_rank, refused.num_shards) == (0, 1)  # unchanged by the refusal


def test_lm_errors():
    with pytest.raises(ValueError, match="too short for batch_size=8"):
        LMDataLoader(np.arange(5), batch_size=8)
    with pytest.raises(ValueError, match="bptt must be a positive integer, got 0"):
        LMDataLoader(np.arange(50), bptt=0)


def test_for_language_model_from_a_string_and_documents():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    dls = TextDataLoaders.for_language_model(text, tokenizer="char", bs=4, bptt=16, seed=0)
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 16)
    decoded = dls.tokenizer.detokenize(dls.vocab.decode(xb.numpy()[1]))
    assert decoded in text and dls.c == len(dls.vocab)
    np.testing.assert_array_equal(xb.numpy()[:, 1:], yb.numpy()[:, :-1])
    docs = text.split(". ")
    dls = TextDataLoaders.for_language_model(docs, tokenizer="word", bs=2, bptt=5, seed=0, valid_pct=0.2)
    assert dls.valid is not None and isinstance(dls.tokenizer, WordTokenizer)
