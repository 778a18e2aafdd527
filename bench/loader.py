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

`--framework torch` runs the same two measurements with PyTorch's own DataLoader (worker
processes) over the same folder: a `torch.utils.data.Dataset` that decodes each file with
Pillow (`Image.open(path).convert("RGB")`, as a PyTorch user writes it without
torchvision), applies the same random crop with padding and flip in NumPy and returns a
CHW float tensor (torchvision's ToTensor), and the same CNN written in torch.nn.
`--framework both` (the default) runs easyfit, then PyTorch, each in its own process,
and prints the two goals of issue #17 side by side: easyfit's images/s at least
PyTorch's with the same number of workers, and easyfit's folder / in-memory epoch ratio
at most PyTorch's.
"""
import argparse
import json
import os
import subprocess
import sys
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


# ----- the PyTorch twin ----------------------------------------------------------------------

def torch_pieces():
    """The PyTorch twin's dataset classes and CNN step (imported only when --framework torch runs)."""
    import torch
    from torch.utils.data import Dataset as TorchDataset

    def crop_flip_to_tensor(image, rng, size=32, padding=4):
        """RandomCrop(size, padding) + RandomHorizontalFlip + ToTensor, as NumPy on an HWC uint8 image."""
        padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
        top = rng.integers(0, padded.shape[0] - size + 1)
        left = rng.integers(0, padded.shape[1] - size + 1)
        crop = padded[top:top + size, left:left + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div_(255)

    class FolderDataset(TorchDataset):
        """class_name/image.png files decoded by Pillow in __getitem__ (the worker processes)."""

        def __init__(self, files, labels):
            self.files, self.labels = files, labels
            self.rng = np.random.default_rng(0)

        def __len__(self):
            return len(self.files)

        def __getitem__(self, index):
            with Image.open(self.files[index]) as image:
                array = np.asarray(image.convert("RGB"))
            return crop_flip_to_tensor(array, self.rng), int(self.labels[index])

    class MemoryDataset(TorchDataset):
        """The same images decoded beforehand (an (N, H, W, 3) uint8 array)."""

        def __init__(self, images, labels):
            self.images, self.labels = images, labels
            self.rng = np.random.default_rng(0)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return crop_flip_to_tensor(self.images[index], self.rng), int(self.labels[index])

    def seed_worker(worker_id):   # a different augmentation stream per worker process
        dataset = torch.utils.data.get_worker_info().dataset
        dataset.rng = np.random.default_rng([worker_id, torch.initial_seed() % 2**32])

    class TorchCNNStep:
        """CNNStep's model, loss and SGD update in torch.nn."""

        def __init__(self, lr=0.01):
            from torch import nn
            torch.manual_seed(0)
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
            with torch.no_grad():
                for p in self.model.parameters():
                    p -= self.lr * p.grad
            return loss.item()

    def loader(dataset, bs, workers):
        return torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers,
                                           worker_init_fn=seed_worker if workers else None,
                                           generator=torch.Generator().manual_seed(0))

    return FolderDataset, MemoryDataset, TorchCNNStep, loader


def folder_files(root):
    files = sorted(root.rglob("*.png"))
    return files, np.array([int(f.parent.name[5:]) for f in files])


def torch_images_per_second(root, bs, workers, repeats):
    FolderDataset, _, _, loader = torch_pieces()
    files, labels = folder_files(root)
    dl = loader(FolderDataset(files, labels), bs, workers)
    for _ in dl:   # warm the page cache
        pass
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in dl:
            pass
        best = min(best, time.perf_counter() - start)
    return len(files) / best


def torch_epoch_comparison(root, bs, workers, repeats):
    """epoch_comparison's measurements with PyTorch's DataLoader, dataset classes and CNN."""
    FolderDataset, MemoryDataset, TorchCNNStep, loader = torch_pieces()
    files, labels = folder_files(root)
    images = np.stack([decode_image(f) for f in files])
    step = TorchCNNStep()
    runs = {"memory, prefetch": loader(MemoryDataset(images, labels), bs, workers),
            "folder, prefetch": loader(FolderDataset(files, labels), bs, workers),
            "memory, no prefetch": loader(MemoryDataset(images, labels), bs, 0),
            "folder, no prefetch": loader(FolderDataset(files, labels), bs, 0)}
    timed_epoch(runs["memory, prefetch"], step)   # warm-up
    epochs = {name: [] for name in runs}
    loads = {name: [] for name in runs}
    steps = []
    for _ in range(repeats):
        steps.append(step_seconds(runs["memory, no prefetch"], step))
        for name, dl in runs.items():
            loads[name].append(loader_seconds(dl))
            epochs[name].append(timed_epoch(dl, step))
    median = lambda values: float(np.median(values))
    ratios = {"prefetch": median([f[0] / m[0] for f, m in zip(epochs["folder, prefetch"], epochs["memory, prefetch"])]),
              "no prefetch": median([f[0] / m[0] for f, m in zip(epochs["folder, no prefetch"],
                                                                   epochs["memory, no prefetch"])])}
    return (median(steps), {name: median(v) for name, v in loads.items()},
            {name: tuple(median(column) for column in zip(*v)) for name, v in epochs.items()}, ratios)


def print_epochs(step_time, loads, epochs):
    print(f"   steps alone (batches loaded beforehand): {step_time:6.2f}s")
    for name, (seconds, waited, cpu) in epochs.items():
        print(f"   {name:<23} epoch {seconds:6.2f}s   loading alone {loads[name]:5.2f}s   "
              f"step waited for data {waited:5.2f}s   training-thread CPU {cpu:6.2f}s")


def run_easyfit(root, args, workers):
    print("\n1. easyfit: decode + augment (RandomCrop(32, padding=4), flip) + collate + ImageToFloat, batch "
          f"{args.bs}")
    rates = {}
    for label, n_workers, kind in [("calling thread", 0, "thread"), ("1 thread", 1, "thread"),
                                   ("2 threads", 2, "thread"), ("2 processes", 2, "process")]:
        rates[label] = images_per_second(root, args.bs, n_workers, kind, args.repeats)
        print(f"   {label:<16} {rates[label]:9.0f} images/s")
    step = CNNStep() if args.step == "cnn" else NumpyStep(args.numpy_repeats)
    print(f"\n2. easyfit: one epoch of {args.images // args.bs} training steps ({args.step} step), "
          f"prefetch with {workers} threads; medians of {args.repeats}; {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset (one per CPU)')}")
    step_time, loads, epochs, ratios = epoch_comparison(root, args.bs, step, workers, args.repeats)
    print_epochs(step_time, loads, epochs)
    print(f"\n   epoch on the image folder / epoch on in-memory arrays (median of paired runs): "
          f"with prefetch {ratios['prefetch']:.3f} (target <= 1.1), without {ratios['no prefetch']:.3f}; "
          f"with prefetch and cache=True, after the first epoch: {ratios['cached']:.3f}")
    return {"images_per_second": rates, "workers": workers, "ratios": ratios,
            "epoch_seconds": {name: value[0] for name, value in epochs.items()}}


def run_torch(root, args, workers):
    import torch
    print(f"\n1. PyTorch {torch.__version__} DataLoader (worker processes): Pillow decode + the same crop, flip and "
          f"ToTensor in the Dataset, default collate, batch {args.bs}")
    rates = {}
    for label, n_workers in [("calling thread", 0), ("1 process", 1), ("2 processes", 2)]:
        rates[label] = torch_images_per_second(root, args.bs, n_workers, args.repeats)
        print(f"   {label:<16} {rates[label]:9.0f} images/s")
    print(f"\n2. PyTorch: one epoch of {args.images // args.bs} training steps (the same CNN in torch.nn, "
          f"{torch.get_num_threads()} intra-op threads), num_workers={workers}; medians of {args.repeats}")
    step_time, loads, epochs, ratios = torch_epoch_comparison(root, args.bs, workers, args.repeats)
    print_epochs(step_time, loads, epochs)
    print(f"\n   epoch on the image folder / epoch on in-memory arrays (median of paired runs): "
          f"with prefetch {ratios['prefetch']:.3f}, without {ratios['no prefetch']:.3f}")
    return {"images_per_second": rates, "workers": workers, "ratios": ratios,
            "epoch_seconds": {name: value[0] for name, value in epochs.items()}}


def compare(ours, theirs):
    """The issue #17 goals, easyfit's figure against PyTorch's (each from its own process)."""
    workers = ours["workers"]
    print("\n== easyfit against PyTorch, the same folder and number of workers ==")
    pairs = [("no workers", "calling thread", "calling thread"),
             ("1 worker", "1 thread", "1 process"),
             ("2 workers", "2 threads", "2 processes"),
             ("2 worker processes", "2 processes", "2 processes")]
    for label, mine, its in pairs:
        a, b = ours["images_per_second"][mine], theirs["images_per_second"][its]
        print(f"   images/s, {label:<20} easyfit {a:7.0f} ({mine})   PyTorch {b:7.0f} ({its})   "
              f"easyfit/PyTorch {a / b:5.2f}  (goal >= 1)")
    a, b = ours["ratios"]["prefetch"], theirs["ratios"]["prefetch"]
    print(f"   folder / in-memory epoch, {workers} worker(s): easyfit {a:.3f}   PyTorch {b:.3f}   "
          f"(goal: easyfit <= PyTorch)")
    a, b = ours["epoch_seconds"]["folder, prefetch"], theirs["epoch_seconds"]["folder, prefetch"]
    print(f"   epoch on the folder with prefetch: easyfit {a:.2f}s   PyTorch {b:.2f}s   easyfit/PyTorch {a / b:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="workers for the prefetch runs (default: easyfit's DataLoader default)")
    parser.add_argument("--step", choices=["cnn", "numpy"], default="cnn")
    parser.add_argument("--numpy-repeats", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--framework", choices=["both", "easyfit", "torch"], default="both",
                        help="both: easyfit, then PyTorch, each in its own process, and the comparison")
    parser.add_argument("--folder", help="use this folder of PNGs (as written by a previous run) instead of a new one")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()
    workers = args.workers if args.workers is not None else DataLoader(ArrayDataset(np.zeros(1))).num_workers

    with tempfile.TemporaryDirectory(prefix="easyfit-bench-") as tmp:
        if args.folder:
            root = Path(args.folder)
        else:
            root = Path(tmp) / "images"
            start = time.perf_counter()
            write_folder(root, args.images, 32)
            print(f"wrote {args.images} PNGs of 32x32x3 in {time.perf_counter() - start:.1f}s "
                  f"({sum(f.stat().st_size for f in root.rglob('*.png')) / args.images / 1024:.1f} KiB each)")
        if args.framework == "both":
            results = {}
            for framework in ("easyfit", "torch"):   # each in a fresh process
                out = Path(tmp) / f"{framework}.json"
                command = [sys.executable, __file__, "--framework", framework, "--folder", str(root),
                           "--json", str(out), "--images", str(args.images), "--bs", str(args.bs),
                           "--workers", str(workers), "--step", args.step, "--repeats", str(args.repeats),
                           "--numpy-repeats", str(args.numpy_repeats)]
                subprocess.run(command, check=True)
                results[framework] = json.loads(out.read_text())
            if args.step == "cnn":
                compare(results["easyfit"], results["torch"])
            else:
                print("(--step numpy: the PyTorch epochs used the torch CNN; no comparison of epoch ratios)")
            result = results
        elif args.framework == "easyfit":
            result = run_easyfit(root, args, workers)
        else:
            result = run_torch(root, args, workers)
        print(f"   machine load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
