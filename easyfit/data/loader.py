"""Datasets, collation and the DataLoader.

A `DataLoader` turns a dataset into batches of easyfit Tensors. Its design goals:

* Loading overlaps compute: batches are prepared ahead of the training step by a pool
  of background threads (NumPy and Pillow release the GIL), or worker processes on
  request (`worker_type="process"`).
* Reproducible: the order of an epoch is a pure function of `(seed, epoch)` and the
  random state of a batch's augmentations a pure function of `(seed, epoch, batch
  number)`, so the same seed gives the same batches with any number of workers.
* Resumable: `state_dict()` reports the position (seed, epoch, batch index) and
  `load_state_dict()` restores it, so the next iteration continues mid-epoch exactly
  where the saved one stopped.
* Failures are loud and never hang: an exception while loading a sample reaches the
  caller as a `DataLoaderError` naming the sample index; a dying worker process or a
  batch slower than `timeout` raise too.
"""
import collections
import concurrent.futures
import multiprocessing
import os
import queue
import sys
import threading
import warnings
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from ..core.backend import parse_device, to_device, is_array
from ..core.random import default_generator
from ..core.tensor import Tensor


class DataLoaderError(RuntimeError):
    """Loading a sample or batch failed; the message names the sample index."""

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index

    def __reduce__(self):  # keep `index` when the error crosses a process boundary
        return (type(self), (self.args[0], self.index))


class CollateError(ValueError):
    """Samples could not be stacked into a batch; the message names indices, field and shapes."""


class SkipSample(Exception):
    """Raised by a dataset's `__getitem__` to leave a sample out of its batch (with a warning).

    The loader counts skipped samples in `DataLoader.skipped` ({index: reason}).
    """


# ----------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------
class Dataset:
    """Base class of map-style datasets: a subclass defines `__len__` and `__getitem__`.

    `__getitem__(i)` returns one sample, usually a tuple `(x, y)` of arrays or numbers.
    A subclass may also define `get_batch(indices)` returning the collated batch
    directly (a fast path the loader uses when there are no item transforms).
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class ArrayDataset(Dataset):
    """Samples from arrays of equal length: item i is `(x[i], y[i])` (one field per array).

    >>> ds = ArrayDataset(np.zeros((10, 3)), np.arange(10))
    >>> len(ds), ds[2][1]
    (10, 2)
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"ArrayDataset arrays must have the same length, got lengths {lengths}")
        self.arrays = tuple(a.numpy_cpu() if isinstance(a, Tensor) else a for a in arrays)

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        if not all(isinstance(a, np.ndarray) for a in self.arrays):
            return None  # lists etc.: let the loader collate item by item
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        shapes = ", ".join(str(getattr(a, "shape", len(a))) for a in self.arrays)
        return f"ArrayDataset({shapes})"


class TensorDataset(Dataset):
    """PyTorch's TensorDataset: item i is `tuple(t[i] for t in tensors)`, a tuple of Tensors.

    The tensors must have the same first dimension; batches are cut from them directly.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        sizes = [t.shape[0] if t.ndim else None for t in tensors]
        if None in sizes or len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: the tensors must have the same first dimension, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tuple(tensors)

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def get_batch(self, indices):
        return tuple(t.numpy_cpu()[indices] for t in self.tensors)

    def __repr__(self):
        return f"TensorDataset({', '.join(str(tuple(t.shape)) for t in self.tensors)})"


class Subset(Dataset):
    """The samples of `dataset` at `indices` (in that order)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        get_batch = getattr(self.dataset, "get_batch", None)
        return None if get_batch is None else get_batch(self.indices[indices])

    def __repr__(self):
        return f"Subset({self.dataset!r}, {len(self)} samples)"


# ----------------------------------------------------------------------------------
# collation
# ----------------------------------------------------------------------------------
def _as_array(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Tensor):
        return value.numpy_cpu()
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float32)
    if isinstance(value, np.generic):
        return np.asarray(value)
    if is_array(value):  # a CuPy array in a dataset: bring it to the host for stacking
        return value.get()
    if isinstance(value, list):  # a list of Python numbers: floats become float32, like easyfit.tensor
        try:
            array = np.asarray(value)
        except ValueError:  # ragged
            return None
        if array.dtype.kind not in "biuf":
            return None
        return array.astype(np.float32) if array.dtype == np.float64 else array
    return None


def _describe_groups(groups):
    parts = []
    for key, idx in groups.items():
        shown = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
        parts.append(f"{key} at sample indices [{shown}]")
    return "; ".join(parts)


def _stack_field(values, indices, field, n_fields):
    where = "the samples" if field is None else f"field {field!r} (of {n_fields})"
    arrays = []
    by_type = collections.defaultdict(list)
    for value, index in zip(values, indices):
        array = _as_array(value)
        if array is None or array.dtype.kind not in "biufc":
            by_type[type(value).__name__ if array is None else f"array of dtype {array.dtype}"].append(index)
        arrays.append(array)
    if by_type:
        raise CollateError(f"cannot stack {where} into a batch: it holds non-numeric values "
                           f"({_describe_groups(by_type)}); convert them to arrays in the dataset "
                           f"or pass a collate_fn")
    shapes = collections.defaultdict(list)
    for array, index in zip(arrays, indices):
        shapes[array.shape].append(index)
    if len(shapes) > 1:
        described = _describe_groups({f"shape {shape}": idx for shape, idx in shapes.items()})
        raise CollateError(f"cannot stack {where} into a batch: samples have different shapes: "
                           f"{described}; make them one size (e.g. a Resize item transform) "
                           f"or pass a collate_fn that pads")
    return np.stack(arrays)


def default_collate(samples, indices=None):
    """Stack a list of samples into a batch of arrays, field by field.

    A sample that is a tuple/list gives a tuple of arrays (one per field), a dict a
    dict, an array or number one array. Python floats become float32, ints int64.
    When samples cannot be stacked the `CollateError` names the sample `indices`
    (positions in the dataset), the field, and the shapes or types found.
    """
    if indices is None:
        indices = list(range(len(samples)))
    indices = [int(i) for i in indices]
    first = samples[0]
    if isinstance(first, (tuple, list)):
        n_fields = len(first)
        for sample, index in zip(samples, indices):
            if not isinstance(sample, (tuple, list)) or len(sample) != n_fields:
                got = f"{len(sample)} fields" if isinstance(sample, (tuple, list)) else type(sample).__name__
                raise CollateError(f"cannot collate: sample {indices[0]} has {n_fields} fields but "
                                   f"sample {index} has {got}")
        return tuple(_stack_field([s[j] for s in samples], indices, j, n_fields) for j in range(n_fields))
    if isinstance(first, dict):
        keys = list(first)
        for sample, index in zip(samples, indices):
            if not isinstance(sample, dict) or list(sample) != keys:
                raise CollateError(f"cannot collate: sample {indices[0]} has keys {keys} but sample {index} "
                                   f"has {list(sample) if isinstance(sample, dict) else type(sample).__name__}")
        return {k: _stack_field([s[k] for s in samples], indices, k, len(keys)) for k in keys}
    return _stack_field(samples, indices, None, None)


# ----------------------------------------------------------------------------------
# applying transforms
# ----------------------------------------------------------------------------------
def apply_transforms(transforms, value, rng):
    """Apply transforms in order: a `Transform` is called as `t(value, rng)`, any other callable as `t(value)`."""
    for transform in transforms:
        if getattr(transform, "takes_rng", False):
            value = transform(value, rng)
        else:
            value = transform(value)
    return value


def _transform_input(sample, transforms, rng):
    """Transforms act on the input: field 0 of a tuple sample, or the whole sample otherwise."""
    if not transforms:
        return sample
    if isinstance(sample, tuple):
        return (apply_transforms(transforms, sample[0], rng),) + sample[1:]
    if isinstance(sample, list):
        return [apply_transforms(transforms, sample[0], rng)] + sample[1:]
    return apply_transforms(transforms, sample, rng)



def random_split(dataset, lengths, seed=None):
    """Disjoint random Subsets of the given lengths (or fractions adding up to 1), as PyTorch's.

    The order is drawn from easyfit's seeded generator (or from `seed` when given).
    """
    n = len(dataset)
    lengths = list(lengths)
    if all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1) < 1e-6:
        counts = [int(np.floor(n * x)) for x in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} add up to {sum(lengths)}, not the dataset's {n} samples")
    generator = default_generator() if seed is None else np.random.default_rng(seed)
    order = generator.permutation(n)
    cuts = np.cumsum(lengths)[:-1]
    return [Subset(dataset, part) for part in np.split(order, cuts)]


class BatchFetcher:
    """Builds one batch as NumPy arrays: fetch samples, item transforms, collate, batch transforms.

    It is a pure function of (seed, epoch, batch number, indices), so any worker - thread
    or process - computes the same batch. Returns `(batch, skipped)` where `skipped`
    lists `(index, reason)` of samples the dataset asked to skip (`SkipSample`).
    """

    def __init__(self, dataset, collate_fn, item_tfms, batch_tfms):
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.item_tfms = list(item_tfms)
        self.batch_tfms = list(batch_tfms)

    def __call__(self, seed, epoch, batch_number, indices):
        rng = np.random.default_rng([seed, 1, epoch, batch_number])
        skipped = []
        batch = None
        get_batch = getattr(self.dataset, "get_batch", None)
        if get_batch is not None and not self.item_tfms and self.collate_fn is None:
            try:
                batch = get_batch(indices)
            except Exception as error:
                first = int(indices[0]) if len(indices) else None
                raise DataLoaderError(f"DataLoader could not load the batch of samples "
                                      f"{_short_list(indices)} (batch {batch_number}, epoch {epoch}) from "
                                      f"{_name(self.dataset)}: {type(error).__name__}: {error}", first) from error
        if batch is None:
            samples, kept = [], []
            for index in indices:
                index = int(index)
                try:
                    sample = _transform_input(self.dataset[index], self.item_tfms, rng)
                except SkipSample as reason:
                    skipped.append((index, str(reason)))
                    continue
                except Exception as error:
                    raise DataLoaderError(f"DataLoader could not load sample {index} (batch {batch_number}, "
                                          f"epoch {epoch}) from {_name(self.dataset)}: "
                                          f"{type(error).__name__}: {error}", index) from error
                samples.append(sample)
                kept.append(index)
            if not samples:
                return None, skipped
            try:
                batch = default_collate(samples, kept) if self.collate_fn is None else self.collate_fn(samples)
            except CollateError:
                raise
            except Exception as error:
                raise DataLoaderError(f"DataLoader: collate_fn {getattr(self.collate_fn, '__qualname__', _name(self.collate_fn))} failed on samples "
                                      f"{_short_list(kept)} (batch {batch_number}, epoch {epoch}): "
                                      f"{type(error).__name__}: {error}", kept[0]) from error
        if self.batch_tfms:
            try:
                batch = _transform_input(batch, self.batch_tfms, rng)
            except Exception as error:
                raise DataLoaderError(f"DataLoader: a batch transform failed on samples {_short_list(indices)} "
                                      f"(batch {batch_number}, epoch {epoch}): {type(error).__name__}: {error}",
                                      int(indices[0])) from error
        return batch, skipped


def _short_list(indices):
    indices = [int(i) for i in indices]
    return "[" + ", ".join(map(str, indices[:8])) + (", ...]" if len(indices) > 8 else "]")


def _name(dataset):
    return type(dataset).__name__


# The fetcher of a worker process (set by the pool initializer; inherited on fork).
_worker_fetcher = None


def _init_worker(fetcher):
    global _worker_fetcher
    _worker_fetcher = fetcher


def _fetch_in_worker(seed, epoch, batch_number, indices):
    return _worker_fetcher(seed, epoch, batch_number, indices)


# ----------------------------------------------------------------------------------
# seeds and splits shared by the vision and text builders
# ----------------------------------------------------------------------------------
def resolve_seed(seed):
    """`seed` as an int; None draws one from easyfit's global generator (so manual_seed governs it)."""
    if seed is None:
        return int(default_generator().integers(2**62))
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def split_indices(n, valid_pct, seed):
    """(train indices, valid indices), sorted: `round(n * valid_pct)` chosen at random with `seed`."""
    if not 0 <= valid_pct < 1:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct!r}")
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_valid = int(round(n * valid_pct))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


# ----------------------------------------------------------------------------------
# the loader
# ----------------------------------------------------------------------------------
def _default_workers():
    """Background threads when the caller does not say: up to 4, leaving one CPU to the training step."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


class DataLoader:
    """Batches of a dataset as easyfit Tensors, prepared in the background.

    Arguments:
        dataset: anything with `__len__` and `__getitem__` (see `Dataset`).
        batch_size: samples per batch.
        shuffle: a new order every epoch, a pure function of (seed, epoch).
        drop_last: leave out the last, smaller batch.
        num_workers: background workers; None picks min(4, CPUs - 1) threads (at least
            one), 0 loads in the calling thread.
        collate_fn: `samples -> batch` (default: `default_collate`, which stacks fields).
        seed: seeds the order and the augmentations; None draws one from easyfit's
            global generator (so `easyfit.manual_seed` makes loaders reproducible).
        device: where batches go ('cpu', 'cuda', 'cuda:N').
        item_tfms / batch_tfms: transforms of a sample's input (field 0) and of a
            batch's input, run in the workers on NumPy arrays.
        batch_sampler: an object with `batches(n, rng) -> list of index arrays` and
            `num_batches(n)`, replacing the plain shuffled order (e.g. length-sorted
            batches for text).
        worker_type: "thread" (default) or "process" (for Python-heavy datasets that
            hold the GIL; the dataset and transforms must be picklable where processes
            are spawned rather than forked).
        prefetch: batches kept in flight per worker.
        timeout: seconds to wait for one batch before raising (None waits for ever).
        pin_memory: PyTorch's flag for page-locked host batches; accepted so PyTorch code
            runs, with no effect: easyfit copies each batch to `device` in the workers.
        persistent_workers: keep the workers between passes over the data instead of
            starting them for each pass (needs num_workers > 0, as in PyTorch); call
            `close()` to stop them early.

    Iterating yields what the collate function builds with arrays turned into
    Tensors on `device`: `(xb, yb)` for `(x, y)` samples.
    """

    def __init__(self, dataset, batch_size=64, shuffle=False, drop_last=False, num_workers=None,
                 collate_fn=None, seed=None, device=None, item_tfms=None, batch_tfms=None,
                 batch_sampler=None, worker_type="thread", prefetch=2, timeout=None, pin_memory=False,
                 persistent_workers=False):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset).__name__}")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_workers is None:
            num_workers = _default_workers()
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer or None, got {num_workers!r}")
        if worker_type not in ("thread", "process"):
            raise ValueError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
        if not isinstance(prefetch, (int, np.integer)) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive integer, got {prefetch!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers=True needs num_workers > 0 (there are no workers to keep)")
        seed = resolve_seed(seed)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.num_workers = int(num_workers)
        self.collate_fn = collate_fn
        self.seed = int(seed)
        self.device = parse_device(device)
        self.item_tfms = list(item_tfms or [])
        self.batch_tfms = list(batch_tfms or [])
        self.batch_sampler = batch_sampler
        self.worker_type = worker_type
        self.prefetch = int(prefetch)
        self.timeout = timeout
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self._kept_executor = None  # the workers kept between passes (persistent_workers)
        self.skipped = {}           # index -> reason, for samples left out (SkipSample)
        self._epoch = 0             # epoch of the current (or last) iteration
        self._batch_index = 0       # batches of that epoch already handed out
        self._pending_start = (0, 0)  # where the next iteration starts (fresh or restored)

    # ----- size and order -----------------------------------------------------------
    def __len__(self):
        if self.num_shards > 1:
            return len(self.batches_for_epoch(self.epoch))
        n = len(self.dataset)
        if self.batch_sampler is not None:
            return self.batch_sampler.num_batches(n)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches_for_epoch(self, epoch):
        """The list of index arrays, one per batch, that epoch `epoch` uses (this shard's, when sharded)."""
        if self.num_shards > 1:
            return self._shard_batches(epoch)
        return self._global_batches(epoch, self.batch_size)

    def _global_batches(self, epoch, batch_size):
        n = len(self.dataset)
        if self.batch_sampler is not None:
            return self.batch_sampler.batches(n, np.random.default_rng([self.seed, 0, epoch]))
        if self.shuffle:
            order = np.random.default_rng([self.seed, 0, epoch]).permutation(n)
        else:
            order = np.arange(n)
        stop = (n // batch_size) * batch_size if self.drop_last else n
        return [order[i:i + batch_size] for i in range(0, stop, batch_size)]

    # ----- sharding for data-parallel training ---------------------------------------
    # Set by `shard`; class-level defaults mean "the whole dataset".
    shard_rank, num_shards, shard_equal_counts = 0, 1, True

    def shard(self, rank, num_shards, equal_counts=True):
        """Yield only process `rank`'s share of every batch of `num_shards` processes.

        PyTorch's DistributedSampler rule: the epoch's order is the same seeded order
        in every process, cut into global batches of `num_shards * batch_size`, and
        rank r takes positions r, r+N, r+2N, ... of each; so the union of the ranks'
        k-th batches is exactly the k-th batch of one process with batch size
        N * batch_size. `batch_size` stays the per-process size. With a `batch_sampler`
        (e.g. length-sorted text batches) rank r takes the sampler's batches r, r+N,
        r+2N, ... whole, so each process's batches keep the sampler's size and shape;
        with `equal_counts` the last incomplete group of fewer than N batches is dropped.

        A last global batch of m < N * batch_size samples is split the same way (shares
        differ by at most one sample). With `equal_counts` (training: every process must
        take the same number of steps) a last batch of fewer than N samples, which would
        leave some rank nothing, is dropped in every process; without it (validation)
        a rank whose share is empty just has one batch fewer. `shard(0, 1)` undoes it.
        """
        for name, value in (("rank", rank), ("num_shards", num_shards)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"DataLoader.shard: {name} must be an integer, got {value!r}")
        if not 0 <= rank < num_shards:
            raise ValueError(f"DataLoader.shard: rank must be in [0, num_shards={num_shards}), got {rank}")
        self.shard_rank, self.num_shards, self.shard_equal_counts = int(rank), int(num_shards), bool(equal_counts)
        return self

    def _shard_batches(self, epoch):
        rank, n_shards = self.shard_rank, self.num_shards
        if self.batch_sampler is not None:
            batches = self._global_batches(epoch, self.batch_size)
            if self.shard_equal_counts:
                batches = batches[:len(batches) - len(batches) % n_shards]
            return batches[rank::n_shards]
        global_size = self.batch_size * n_shards
        batches = self._global_batches(epoch, global_size)
        if self.shard_equal_counts and batches and len(batches[-1]) < n_shards:
            batches = batches[:-1]
        shares = [np.asarray(batch)[rank::n_shards] for batch in batches]
        return [share for share in shares if len(share)]

    # ----- position -----------------------------------------------------------------
    @property
    def epoch(self):
        """The epoch the loader is in (the next iteration's, before it starts)."""
        return self._pending_start[0] if self._pending_start is not None else self._epoch

    def state_dict(self):
        """The loader's position: {'seed', 'epoch', 'batch_index', 'dataset_length'} (ints).

        `batch_index` counts the batches of `epoch` already handed out; loading this
        state makes the next iteration continue with batch `batch_index` of `epoch`
        (or start epoch + 1 when that epoch was complete).
        """
        epoch, index = self._pending_start if self._pending_start is not None else (self._epoch, self._batch_index)
        return {"seed": self.seed, "epoch": int(epoch), "batch_index": int(index),
                "dataset_length": len(self.dataset)}

    def load_state_dict(self, state):
        missing = {"seed", "epoch", "batch_index"} - set(state)
        if missing:
            raise KeyError(f"DataLoader state is missing {sorted(missing)}; got keys {sorted(state)}")
        length = state.get("dataset_length")
        if length is not None and int(length) != len(self.dataset):
            raise ValueError(f"DataLoader state was saved for a dataset of {int(length)} samples, "
                             f"this loader's dataset has {len(self.dataset)}")
        self.seed = int(state["seed"])
        self._pending_start = (int(state["epoch"]), int(state["batch_index"]))

    # ----- iteration ----------------------------------------------------------------
    def _fetcher(self):
        return BatchFetcher(self.dataset, self.collate_fn, self.item_tfms, self.batch_tfms)

    def __iter__(self):
        if self._pending_start is not None:
            epoch, start = self._pending_start
            self._pending_start = None
        else:
            epoch, start = self._epoch + 1, 0
        plan = self.batches_for_epoch(epoch)
        if start >= len(plan) and start > 0:  # the saved epoch was complete: go on with the next
            epoch, start = epoch + 1, 0
            plan = self.batches_for_epoch(epoch)
        self._epoch, self._batch_index = epoch, start
        return self._iterate(epoch, plan, start)

    def _iterate(self, epoch, plan, start):
        fetcher = self._fetcher()
        if self.num_workers == 0:
            for number in range(start, len(plan)):
                result = fetcher(self.seed, epoch, number, plan[number])
                self._batch_index = number + 1
                batch = self._finish(result)
                if batch is not None:
                    yield batch
            return
        executor = self._kept_executor or self._make_executor(fetcher)
        if self.persistent_workers:
            self._kept_executor = executor
        call = fetcher if self.worker_type == "thread" else _fetch_in_worker
        pending = collections.deque()
        next_number = start
        depth = self.num_workers * self.prefetch
        try:
            while next_number < len(plan) and len(pending) < depth:
                pending.append((next_number, self._submit(executor, call, epoch, next_number, plan[next_number])))
                next_number += 1
            while pending:
                number, future = pending.popleft()
                result = self._wait(future, number, epoch)
                if next_number < len(plan):
                    pending.append((next_number, self._submit(executor, call, epoch, next_number,
                                                              plan[next_number])))
                    next_number += 1
                self._batch_index = number + 1
                batch = self._finish(result)
                if batch is not None:
                    yield batch
        finally:
            for _, future in pending:
                future.cancel()
            if executor is not self._kept_executor:  # persistent workers outlive a pass
                _abandon(executor, stop_workers=bool(pending))

    def _submit(self, executor, call, epoch, number, indices):
        try:
            return executor.submit(call, self.seed, epoch, number, indices)
        except BrokenProcessPool as error:
            raise DataLoaderError(f"DataLoader: a worker process died unexpectedly before batch {number} of epoch "
                                  f"{epoch} (killed, out of memory, or os._exit in the dataset)") from error

    def close(self):
        """Stop the workers kept by persistent_workers=True (they also stop with the program)."""
        executor, self._kept_executor = self._kept_executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _make_executor(self, fetcher):
        if self.worker_type == "thread":
            return _DaemonThreadPool(self.num_workers)
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        return concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=multiprocessing.get_context(method),
                                                      initializer=_init_worker, initargs=(fetcher,))

    def _wait(self, future, number, epoch):
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise DataLoaderError(f"DataLoader: batch {number} of epoch {epoch} took longer than timeout="
                                  f"{self.timeout}s; a worker may be stuck on a slow or blocking sample") from None
        except BrokenProcessPool as error:
            raise DataLoaderError(f"DataLoader: a worker process died unexpectedly while loading batch {number} "
                                  f"of epoch {epoch} (killed, out of memory, or os._exit in the dataset)") from error

    def _finish(self, result):
        batch, skipped = result
        for index, reason in skipped:
            if index not in self.skipped:
                self.skipped[index] = reason
                warnings.warn(f"DataLoader skipped sample {index}: {reason} "
                              f"({len(self.skipped)} skipped so far)", stacklevel=3)
        if batch is None:
            return None
        return _to_tensors(batch, self.device)

    def one_batch(self):
        """The first batch of the current epoch, loaded in this thread; the position is unchanged."""
        plan = self.batches_for_epoch(self.epoch)
        if not plan:
            raise ValueError(f"one_batch: the loader has no batches (dataset of {len(self.dataset)} samples, "
                             f"batch_size={self.batch_size}, drop_last={self.drop_last})")
        return self._finish(self._fetcher()(self.seed, self.epoch, 0, plan[0]))

    def to(self, device):
        """Send later batches to `device`; returns the loader."""
        self.device = parse_device(device)
        return self

    def __repr__(self):
        return (f"DataLoader({_name(self.dataset)} of {len(self.dataset)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, num_workers={self.num_workers}, device='{self.device}')")


class _DaemonThreadPool:
    """The part of ThreadPoolExecutor the loader uses, on daemon threads.

    ThreadPoolExecutor's threads are joined when the interpreter exits, so one worker stuck
    in a sample (the case `timeout=` reports) would keep the program alive for ever;
    daemon threads are abandoned at exit instead.
    """

    def __init__(self, n_threads):
        self._tasks = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"easyfit-loader-{i}", daemon=True)
                         for i in range(n_threads)]
        for thread in self._threads:
            thread.start()

    def _work(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
            del task, future, fn, args

    def submit(self, fn, *args):
        future = concurrent.futures.Future()
        self._tasks.put((future, fn, args))
        return future

    def shutdown(self, wait=False, cancel_futures=True):
        """Ask every thread to stop once its current task is done (queued tasks are cancelled by the caller)."""
        for _ in self._threads:
            self._tasks.put(None)


def _abandon(executor, stop_workers):
    """Shut the loader's workers down without waiting for them; with `stop_workers` (work was still
    in flight: a timeout, an error, or a consumer that stopped early) worker processes are
    terminated, since a stuck one would otherwise keep the program from exiting."""
    if not (stop_workers and isinstance(executor, concurrent.futures.ProcessPoolExecutor)):
        executor.shutdown(wait=False, cancel_futures=True)
        return
    # ProcessPoolExecutor has no public way to stop its workers before Python 3.14 (terminate_workers);
    # its process table is read before shutdown, which clears it
    terminate = getattr(executor, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def _to_tensors(batch, device):
    if isinstance(batch, np.ndarray) or is_array(batch):
        return Tensor(to_device(batch, device))
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, tuple):
        return tuple(_to_tensors(b, device) for b in batch)
    if isinstance(batch, list):
        return [_to_tensors(b, device) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_tensors(v, device) for k, v in batch.items()}
    return batch


class DataLoaders:
    """A training and a validation loader that travel together (and their device).

    `DataLoaders(train, valid, device=None)`; `.train`, `.valid`, `dls[0]`, `dls[1]`.
    Setting `device` (or `.to(device)`) moves both loaders' batches. Vision and text
    builders also set `classes` (label names), `vocab` (a text `Vocab`) and `tokenizer`.
    """

    def __init__(self, train, valid=None, device=None, classes=None, vocab=None, tokenizer=None):
        self.train = train
        self.valid = valid
        self.classes = list(classes) if classes is not None else None
        self.vocab = vocab
        self.tokenizer = tokenizer
        if device is not None:
            self.to(device)

    @property
    def loaders(self):
        return [dl for dl in (self.train, self.valid) if dl is not None]

    def __getitem__(self, i):
        return (self.train, self.valid)[i]

    def __len__(self):
        return 2

    @property
    def device(self):
        return self.train.device

    @device.setter
    def device(self, device):
        self.to(device)

    def to(self, device):
        for dl in self.loaders:
            dl.to(device)
        return self

    @property
    def c(self):
        """Number of classes (or vocabulary size for language models), when known."""
        if self.classes is not None:
            return len(self.classes)
        if self.vocab is not None:
            return len(self.vocab)
        return None

    def one_batch(self):
        """One training batch (see `DataLoader.one_batch`)."""
        return self.train.one_batch()

    def show_batch(self, max_n=9, dl=None, path=None, ncols=None, file=None):
        """Draw a training batch's images with their labels (or print its texts); see
        `easyfit.data.show.show_batch`. Needs matplotlib for images (the `plot` extra)."""
        from .show import show_batch
        return show_batch(self, dl=dl, max_n=max_n, path=path, ncols=ncols, file=file)

    def test_dl(self, items, bs=None, device=None, num_workers=0):
        """A loader over unlabelled `items` prepared as the validation data is, in their order.

        Items are image file paths (or a folder of images), texts, or arrays; batches hold
        inputs only: `preds, _ = learn.get_preds(dl=dls.test_dl(items))` (fastai's way).
        """
        from .inference import test_dataloader
        return test_dataloader(self, items, bs=bs, device=device, num_workers=num_workers)

    def __repr__(self):
        return f"DataLoaders(train={self.train!r}, valid={self.valid!r})"
