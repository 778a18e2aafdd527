"""Loader benchmark: decoding + augmenting a folder of PNGs, and overlap with a training step.

Run it under the shared lock (benchmarks must not overlap):

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/loader.py

It writes a folder of CIFAR-sized PNGs to a temporary directory and reports

1. images/s for decode + augment (RandomCrop with padding, flip) + collate + ImageToFloat,
   loading in the calling thread, in 1 and 2 background threads and in 2 processes;
2. the time of one training epoch (a small easyfit.nn CNN, forward + backward + SGD
   update, or with --step numpy a fixed NumPy workload) fed from in-memory arrays and
   from the image folder, with background prefetch and without (and with the decoded-image
   cache, once filled), and the time the step spent waiting for data. Target: folder /
   in-memory <= 1.1 with prefetch.

Background loading is hidden only by a CPU the step leaves free. On a 2-CPU machine the
step's matmuls take both (OpenBLAS starts one thread per CPU); to see the same loader with
a spare CPU, give the step one BLAS thread:

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python bench/loader.py
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import easyfit as ef
from easyfit.data import (ArrayDataset, DataLoader, ImageDataLoaders, RandomCrop, RandomHorizontalFlip,
                          decode_image)


def write_folder(root, n_images, size, n_classes=10, seed=0):
    """PNG files of smooth random colour fields plus noise (they compress like photos, not like noise)."""
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR)).astype(np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        folder = root / f"class{i % n_classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:06d}.png")


def augment():
    return [RandomCrop(32, padding=4), RandomHorizontalFlip()]


def images_per_second(root, bs, workers, worker_type, repeats):
    dls = ImageDataLoaders.from_folder(root, valid_pct=0, seed=0, bs=bs, item_tfms=augment(),
                                       num_workers=workers, worker_type=worker_type)
    n = len(dls.train.dataset)
    for _ in dls.train:  # warm the page cache and the pools
        pass
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in dls.train:
            pass
        best = min(best, time.perf_counter() - start)
    return n / best


class NumpyStep:
    """A fixed NumPy workload per batch (two matmuls of a fixed size, repeated)."""

    def __init__(self, repeats):
        rng = np.random.default_rng(0)
        self.w1 = rng.standard_normal((3072, 512)).astype(np.float32)
        self.w2 = rng.standard_normal((512, 3072)).astype(np.float32)
        self.repeats = repeats

    def __call__(self, xb, yb):
        x = xb.numpy().reshape(len(xb), -1)
        for _ in range(self.repeats):
            x = np.tanh((x @ self.w1) @ self.w2 * 1e-3)
        return float(x[0, 0])


class CNNStep:
    """Forward + backward + SGD update of a small CNN from easyfit.nn."""

    def __init__(self, lr=0.01):
        from easyfit import nn
        ef.manual_seed(0)
        self.model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Flatten(), nn.Linear(32 * 8 * 8, 10))
        self.loss = nn.CrossEntropyLoss()
        self.lr = lr

    def __call__(self, xb, yb):
        loss = self.loss(self.model(xb), yb)
        for p in self.model.parameters():
            p.grad = None
        loss.backward()
        for p in self.model.parameters():
            p.array -= self.lr * p.grad.array
        return loss.item()


def timed_epoch(loader, step):
    """(epoch seconds, seconds the step waited for the next batch, CPU seconds of this thread)."""
    waited = 0.0
    cpu = time.thread_time()
    start = time.perf_counter()
    iterator = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            xb, yb = next(iterator)
        except StopIteration:
            break
        waited += time.perf_counter() - t
        step(xb, yb)
    return time.perf_counter() - start, waited, time.thread_time() - cpu


def loader_seconds(loader):
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def step_seconds(loader, step):
    """The steps alone, on batches loaded beforehand: the epoch's lower bound."""
    batches = list(loader)
    start = time.perf_counter()
    for xb, yb in batches:
        step(xb, yb)
    return time.perf_counter() - start


def epoch_comparison(root, bs, step, workers, repeats):
    """Median seconds of: steps alone, loading alone and full epochs, for each configuration.

    Runs are interleaved so that load from other processes on the machine hits each alike.
    """
    files = sorted(root.rglob("*.png"))
    images = np.stack([decode_image(f) for f in files])
    labels = np.array([int(f.parent.name[5:]) for f in files])

    def memory(n_workers):
        return ImageDataLoaders.from_arrays(images, labels, valid_x=images[:bs], valid_y=labels[:bs], bs=bs,
                                            seed=0, item_tfms=augment(), num_workers=n_workers).train

    def folder(n_workers, cache=False):
        return ImageDataLoaders.from_folder(root, valid_pct=0, seed=0, bs=bs, item_tfms=augment(),
                                            num_workers=n_workers, cache=cache).train

    runs = {"memory, prefetch": memory(workers), "folder, prefetch": folder(workers),
            "memory, no prefetch": memory(0), "folder, no prefetch": folder(0),
            "folder cached, prefetch": folder(workers, cache=True)}
    timed_epoch(runs["memory, prefetch"], step)  # warm-up: page cache, BLAS, allocator
    loader_seconds(runs["folder cached, prefetch"])  # its first epoch decodes and fills the cache
    epochs = {name: [] for name in runs}
    loads = {name: [] for name in runs}
    steps = []
    for _ in range(repeats):
        steps.append(step_seconds(runs["memory, no prefetch"], step))
        for name, loader in runs.items():
            loads[name].append(loader_seconds(loader))
            epochs[name].append(timed_epoch(loader, step))
    median = lambda values: float(np.median(values))
    ratios = {"prefetch": median([f[0] / m[0] for f, m in zip(epochs["folder, prefetch"], epochs["memory, prefetch"])]),
              "no prefetch": median([f[0] / m[0] for f, m in zip(epochs["folder, no prefetch"],
                                                                   epochs["memory, no prefetch"])]),
              "cached": median([f[0] / m[0] for f, m in zip(epochs["folder cached, prefetch"],
                                                              epochs["memory, prefetch"])])}
    return (median(steps), {name: median(v) for name, v in loads.items()},
            {name: tuple(median(column) for column in zip(*v)) for name, v in epochs.items()}, ratios)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="background threads for the prefetch runs (default: the DataLoader's default)")
    parser.add_argument("--step", choices=["cnn", "numpy"], default="cnn")
    parser.add_argument("--numpy-repeats", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="easyfit-bench-") as tmp:
        root = Path(tmp) / "images"
        start = time.perf_counter()
        write_folder(root, args.images, 32)
        print(f"wrote {args.images} PNGs of 32x32x3 in {time.perf_counter() - start:.1f}s "
              f"({sum(f.stat().st_size for f in root.rglob('*.png')) / args.images / 1024:.1f} KiB each)")

        print("\n1. decode + augment (RandomCrop(32, padding=4), flip) + collate + ImageToFloat, batch "
              f"{args.bs}")
        for label, workers, kind in [("calling thread", 0, "thread"), ("1 thread", 1, "thread"),
                                     ("2 threads", 2, "thread"), ("2 processes", 2, "process")]:
            rate = images_per_second(root, args.bs, workers, kind, args.repeats)
            print(f"   {label:<16} {rate:9.0f} images/s")

        step = CNNStep() if args.step == "cnn" else NumpyStep(args.numpy_repeats)
        workers = args.workers if args.workers is not None else DataLoader(ArrayDataset(np.zeros(1))).num_workers
        print(f"\n2. one epoch of {args.images // args.bs} training steps ({args.step} step), "
              f"prefetch with {workers} threads; medians of {args.repeats}; {os.cpu_count()} CPUs, "
              f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset (one per CPU)')}")
        step_time, loads, epochs, ratios = epoch_comparison(root, args.bs, step, workers, args.repeats)
        print(f"   steps alone (batches loaded beforehand): {step_time:6.2f}s")
        for name, (seconds, waited, cpu) in epochs.items():
            print(f"   {name:<23} epoch {seconds:6.2f}s   loading alone {loads[name]:5.2f}s   "
                  f"step waited for data {waited:5.2f}s   training-thread CPU {cpu:6.2f}s")
        print(f"\n   epoch on the image folder / epoch on in-memory arrays (median of paired runs): "
              f"with prefetch {ratios['prefetch']:.3f} (target <= 1.1), without {ratios['no prefetch']:.3f}; "
              f"with prefetch and cache=True, after the first epoch: {ratios['cached']:.3f}")
        print(f"   machine load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
