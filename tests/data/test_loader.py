"""DataLoader: determinism across workers, resumable position, errors that name the sample."""
import ast
import os
import pathlib
import threading
import time
import warnings

import numpy as np
import pytest

import easyfit as ef
from easyfit.data import (ArrayDataset, CollateError, DataLoader, DataLoaderError, DataLoaders, Dataset,
                          RandomCrop, RandomHorizontalFlip, SkipSample, Subset, default_collate)


def images_dataset(n=37):
    x = np.arange(n * 6 * 6 * 1, dtype=np.uint8).reshape(n, 6, 6, 1)
    return ArrayDataset(x, np.arange(n))


def collect(loader):
    return [tuple(t.numpy().copy() for t in batch) for batch in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


AUGMENT = [RandomCrop(4, padding=1), RandomHorizontalFlip()]


@pytest.mark.parametrize("workers", [1, 3])
def test_same_seed_same_batches_with_any_number_of_threads(workers):
    reference = collect(DataLoader(images_dataset(), batch_size=5, shuffle=True, seed=3, num_workers=0,
                                   item_tfms=AUGMENT))
    threaded = collect(DataLoader(images_dataset(), batch_size=5, shuffle=True, seed=3, num_workers=workers,
                                  item_tfms=AUGMENT))
    assert_same_batches(reference, threaded)


def test_same_batches_with_worker_processes():
    reference = collect(DataLoader(images_dataset(), batch_size=5, shuffle=True, seed=3, num_workers=0,
                                   item_tfms=AUGMENT))
    processes = collect(DataLoader(images_dataset(), batch_size=5, shuffle=True, seed=3, num_workers=2,
                                   worker_type="process", item_tfms=AUGMENT))
    assert_same_batches(reference, processes)


def test_augmentations_actually_vary_and_seed_matters():
    a = collect(DataLoader(images_dataset(), batch_size=37, seed=3, num_workers=0, item_tfms=AUGMENT))
    b = collect(DataLoader(images_dataset(), batch_size=37, seed=4, num_workers=0, item_tfms=AUGMENT))
    assert a[0][0].shape == (37, 4, 4, 1)
    assert not np.array_equal(a[0][0], b[0][0])


def test_shuffle_covers_everything_and_changes_per_epoch():
    loader = DataLoader(images_dataset(), batch_size=8, shuffle=True, seed=0, num_workers=2)
    first = np.concatenate([y for _, y in collect(loader)])
    second = np.concatenate([y for _, y in collect(loader)])
    assert sorted(first) == list(range(37)) and sorted(second) == list(range(37))
    assert not np.array_equal(first, second)
    assert loader.state_dict()["epoch"] == 1


def test_manual_seed_makes_unseeded_loaders_reproducible():
    ef.manual_seed(11)
    a = collect(DataLoader(images_dataset(), batch_size=8, shuffle=True))
    ef.manual_seed(11)
    b = collect(DataLoader(images_dataset(), batch_size=8, shuffle=True))
    assert_same_batches(a, b)


def test_len_and_drop_last():
    assert len(DataLoader(images_dataset(37), batch_size=8)) == 5
    loader = DataLoader(images_dataset(37), batch_size=8, drop_last=True, shuffle=True, seed=1)
    batches = collect(loader)
    assert len(loader) == len(batches) == 4 and all(len(y) == 8 for _, y in batches)
    assert [len(y) for _, y in collect(DataLoader(images_dataset(37), batch_size=8))] == [8, 8, 8, 8, 5]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_is_exact(workers):
    def make():
        return DataLoader(images_dataset(), batch_size=4, shuffle=True, seed=5, num_workers=workers,
                          item_tfms=AUGMENT)
    uninterrupted = make()
    collect(uninterrupted)                     # epoch 0
    expected = collect(uninterrupted)          # epoch 1
    interrupted = make()
    collect(interrupted)
    iterator = iter(interrupted)
    head = [tuple(t.numpy().copy() for t in next(iterator)) for _ in range(3)]
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 3
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    tail = collect(resumed)
    assert_same_batches(head + tail, expected)
    # after the resumed epoch ends the loader goes on exactly like the uninterrupted one
    assert_same_batches(collect(resumed), collect(uninterrupted))


def test_state_of_a_finished_epoch_resumes_at_the_next_one():
    loader = DataLoader(images_dataset(), batch_size=10, shuffle=True, seed=2)
    collect(loader)
    state = loader.state_dict()
    expected = collect(loader)
    other = DataLoader(images_dataset(), batch_size=10, shuffle=True, seed=99)
    other.load_state_dict(state)  # the seed travels with the state
    assert_same_batches(collect(other), expected)


def test_state_dict_is_plain_ints_and_checks_the_dataset():
    loader = DataLoader(images_dataset(37), batch_size=10)
    state = loader.state_dict()
    assert all(type(v) is int for v in state.values())
    with pytest.raises(ValueError, match="37 samples.*has 30"):
        DataLoader(images_dataset(30), batch_size=10).load_state_dict(state)
    with pytest.raises(KeyError, match="missing"):
        loader.load_state_dict({"epoch": 0})


def test_abandoned_iteration_starts_a_new_epoch():
    loader = DataLoader(images_dataset(), batch_size=4, shuffle=True, seed=1)
    next(iter(loader))
    assert loader.state_dict()["batch_index"] == 1
    collect(loader)
    assert loader.state_dict() == {"seed": 1, "epoch": 1, "batch_index": 10, "dataset_length": 37}


def test_one_batch_leaves_the_position_alone():
    loader = DataLoader(images_dataset(), batch_size=4, shuffle=True, seed=1)
    before = loader.state_dict()
    xb, yb = loader.one_batch()
    assert loader.state_dict() == before
    first = next(iter(loader))
    np.testing.assert_array_equal(yb.numpy(), first[1].numpy())
    assert xb.shape == (4, 6, 6, 1)


def test_batches_are_tensors_with_python_scalars_typed_like_easyfit():
    class Pairs(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return [float(i), float(i) * 2], i, True

    xb, yb, flag = next(iter(DataLoader(Pairs(), batch_size=6, num_workers=0)))
    assert isinstance(xb, ef.Tensor) and xb.dtype == np.float32 and xb.shape == (6, 2)
    assert yb.dtype == np.int64 and flag.dtype == np.bool_
    assert xb.device == "cpu"


def test_get_batch_fast_path_equals_item_path():
    x = np.random.default_rng(0).normal(size=(23, 3)).astype(np.float32)
    fast = collect(DataLoader(ArrayDataset(x, np.arange(23)), batch_size=5, shuffle=True, seed=4))
    slow = collect(DataLoader(Subset(ArrayDataset(list(x), list(range(23))), range(23)), batch_size=5,
                              shuffle=True, seed=4))
    assert_same_batches(fast, slow)


class Failing(Dataset):
    def __init__(self, bad):
        self.bad = bad

    def __len__(self):
        return 20

    def __getitem__(self, i):
        if i == self.bad:
            raise ValueError(f"corrupt record {i}")
        return np.zeros(2, np.float32), i


@pytest.mark.parametrize("workers,kind", [(0, "thread"), (2, "thread"), (2, "process")])
def test_errors_in_workers_reach_the_user_with_the_index(workers, kind):
    loader = DataLoader(Failing(13), batch_size=4, num_workers=workers, worker_type=kind)
    with pytest.raises(DataLoaderError, match=r"sample 13 .*ValueError: corrupt record 13") as info:
        collect(loader)
    assert info.value.index == 13


class Dying(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        if i == 9:
            os._exit(3)
        return np.zeros(2), i


def test_a_dying_worker_process_raises_instead_of_hanging():
    loader = DataLoader(Dying(), batch_size=4, num_workers=2, worker_type="process", timeout=60)
    start = time.monotonic()
    with pytest.raises(DataLoaderError, match="worker process died"):
        collect(loader)
    assert time.monotonic() - start < 30


class Slow(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(2.5 if i == 2 else 0)
        return np.zeros(1), i


def test_timeout_names_the_batch():
    loader = DataLoader(Slow(), batch_size=1, num_workers=1, timeout=1.0)
    with pytest.raises(DataLoaderError, match="batch 2 of epoch 0 took longer than timeout"):
        collect(loader)


def test_breaking_out_early_stops_the_worker_threads():
    before = {t.ident for t in threading.enumerate()}
    loader = DataLoader(images_dataset(), batch_size=2, num_workers=3)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("easyfit-loader")]
        if not left:
            break
        time.sleep(0.05)
    assert not left


def test_collate_error_names_indices_field_and_shapes():
    samples = [(np.zeros((3, 4)), 0), (np.zeros((3, 4)), 1), (np.zeros((2, 4)), 2)]
    with pytest.raises(CollateError) as info:
        default_collate(samples, [10, 11, 12])
    message = str(info.value)
    assert "field 0 (of 2)" in message and "(3, 4) at sample indices [10, 11]" in message
    assert "(2, 4) at sample indices [12]" in message


def test_collate_error_for_types_and_field_counts():
    with pytest.raises(CollateError, match=r"field 1 .*str at sample indices \[5\]"):
        default_collate([(np.zeros(2), 1), (np.zeros(2), "cat")], [4, 5])
    with pytest.raises(CollateError, match="sample 0 has 2 fields but sample 1 has 3 fields"):
        default_collate([(1, 2), (1, 2, 3)])


def test_collate_error_through_the_loader_uses_dataset_indices():
    x = [np.zeros((2, 2)) for _ in range(5)] + [np.zeros((3, 2))]
    loader = DataLoader(ArrayDataset(x, np.arange(6)), batch_size=6, num_workers=1)
    with pytest.raises(CollateError, match=r"shape \(3, 2\) at sample indices \[5\]"):
        collect(loader)


def test_dict_samples_collate_to_dicts():
    batch = default_collate([{"a": np.ones(2), "b": 1}, {"a": np.zeros(2), "b": 2}])
    assert batch["a"].shape == (2, 2) and batch["b"].tolist() == [1, 2]


class SometimesBad(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i in (3, 7):
            raise SkipSample(f"file {i}.png is unreadable")
        return np.full(2, i, np.float32), i


def test_skipped_samples_are_left_out_with_a_warning_and_a_count():
    loader = DataLoader(SometimesBad(), batch_size=4, num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = collect(loader)
    messages = [str(w.message) for w in caught]
    assert messages == ["DataLoader skipped sample 3: file 3.png is unreadable (1 skipped so far)",
                        "DataLoader skipped sample 7: file 7.png is unreadable (2 skipped so far)"]
    labels = np.concatenate([y for _, y in batches]).tolist()
    assert labels == [0, 1, 2, 4, 5, 6, 8, 9]
    assert sorted(loader.skipped) == [3, 7]


def test_argument_errors_name_the_value():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(images_dataset(), batch_size=0)
    with pytest.raises(ValueError, match="worker_type must be 'thread' or 'process', got 'gpu'"):
        DataLoader(images_dataset(), worker_type="gpu")
    with pytest.raises(TypeError, match="dataset with __len__"):
        DataLoader(5)
    with pytest.raises(ValueError, match="same length, got lengths \\[3, 2\\]"):
        ArrayDataset(np.zeros(3), np.zeros(2))


def test_dataloaders_hold_train_valid_and_device():
    train = DataLoader(images_dataset(), batch_size=4)
    valid = DataLoader(images_dataset(10), batch_size=4)
    dls = DataLoaders(train, valid, classes=["a", "b"])
    assert dls.train is train and dls.valid is valid and dls[1] is valid
    assert dls.device == "cpu" and dls.c == 2
    dls.to("cpu")
    assert dls.one_batch()[0].shape == (4, 6, 6, 1)
    with pytest.raises(ValueError, match="unknown device"):
        dls.to("tpu")


@pytest.mark.skipif(not ef.cuda.is_available(), reason="needs a CUDA device and CuPy")
def test_batches_move_to_the_loader_device():
    loader = DataLoader(images_dataset(), batch_size=4, device="cuda")
    xb, yb = next(iter(loader))
    assert xb.device == "cuda:0" and yb.device == "cuda:0"


def test_data_imports_only_core():
    root = pathlib.Path(ef.__file__).parent / "data"
    for file in root.glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module.split(".")[0] == "core", f"{file.name} imports ..{node.module}"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    assert not name.startswith("easyfit") or name.startswith("easyfit.core"), name
                    assert name.split(".")[0] != "torch", f"{file.name} imports torch"


SCRIPT = """
import numpy as np, sys
from easyfit.data import ArrayDataset, DataLoader
loader = DataLoader(ArrayDataset(np.zeros((400, 3)), np.arange(400)), batch_size=2,
                    num_workers=2, worker_type=sys.argv[1])
iterator = iter(loader)
next(iterator)
print("left with batches in flight")
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_program_exits_with_an_unfinished_iteration(kind, tmp_path):
    import subprocess
    import sys
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), kind], capture_output=True, text=True, timeout=60,
                          cwd=pathlib.Path(ef.__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert "left with batches in flight" in done.stdout


def test_collate_fn_and_batch_transform_errors_name_the_samples():
    def broken_collate(samples):
        raise RuntimeError("cannot pad")

    loader = DataLoader(images_dataset(), batch_size=4, collate_fn=broken_collate, num_workers=1)
    with pytest.raises(DataLoaderError, match=r"collate_fn .*broken_collate failed on samples \[0, 1, 2, 3\] "
                                              r"\(batch 0, epoch 0\): RuntimeError: cannot pad"):
        collect(loader)

    def broken_transform(batch):
        raise ValueError("bad batch")

    loader = DataLoader(images_dataset(), batch_size=4, batch_tfms=[broken_transform], num_workers=0)
    with pytest.raises(DataLoaderError, match=r"batch transform failed on samples \[0, 1, 2, 3\].*bad batch"):
        collect(loader)


class SlowToLoad(Dataset):
    """Each sample takes 50 ms to 'read' (sleeping releases the GIL, like file I/O and decoding)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        time.sleep(0.05)
        return np.zeros(1), i


def test_background_prefetch_overlaps_loading_with_the_step():
    def epoch(workers):
        start = time.perf_counter()
        for _ in DataLoader(SlowToLoad(), batch_size=1, num_workers=workers):
            time.sleep(0.05)  # the training step
        return time.perf_counter() - start

    in_line, prefetched = epoch(0), epoch(1)
    assert in_line > 0.75  # 8 x (50 ms loading + 50 ms step)
    assert prefetched < 0.65  # loading hidden behind the steps: about 8 x 50 ms + the first batch
