"""Layer kernels, forward + backward, easyfit against PyTorch CPU (float32, 2 threads).

Each case builds one layer, runs forward, backward with a fixed output gradient, and
reports the median milliseconds over many repetitions. Each framework runs in its own
fresh process; processes alternate; the table gives the median of their medians.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/nn_kernels.py

On a CPU busy with other work, two BLAS/OpenMP threads per framework wait for each other
far longer than they compute (each framework's time grows 10-100x, unevenly), so the
ratios then say how each copes with a crowded CPU, not how fast its kernels are:
`--threads 1` compares the kernels themselves there.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

THREADS = 2
# name -> (layer, constructor arguments, input shape[, "channels_last"]); the layer is built
# with the same arguments in both frameworks. "channels_last" stores the input (N, H, W, C)
# in memory, as a conv's output is in both frameworks (torch.channels_last); its output
# gradient is stored the same way.
CASES = {
    "conv 32->64 3x3 p1, 64x32x28x28": ("Conv2d", (32, 64, 3), {"padding": 1}, (64, 32, 28, 28)),
    "conv 1->32 3x3 p1, 64x1x28x28": ("Conv2d", (1, 32, 3), {"padding": 1}, (64, 1, 28, 28)),
    "conv 64->128 3x3 s2 p1, 32x64x16x16": ("Conv2d", (64, 128, 3), {"stride": 2, "padding": 1, "bias": False},
                                            (32, 64, 16, 16)),
    "conv 32->32 3x3 p1 groups 4, 32x32x32x32": ("Conv2d", (32, 32, 3), {"padding": 1, "groups": 4},
                                                 (32, 32, 32, 32)),
    "depthwise conv 64 3x3 p1, 32x64x32x32": ("Conv2d", (64, 64, 3), {"padding": 1, "groups": 64},
                                              (32, 64, 32, 32)),
    "maxpool 2, 64x64x28x28": ("MaxPool2d", (2,), {}, (64, 64, 28, 28)),
    "maxpool 2, 64x32x28x28 channels-last": ("MaxPool2d", (2,), {}, (64, 32, 28, 28), "channels_last"),
    "batchnorm2d 32, 32x32x32x32": ("BatchNorm2d", (32,), {}, (32, 32, 32, 32)),
    "batchnorm2d 32, 64x32x28x28 channels-last": ("BatchNorm2d", (32,), {}, (64, 32, 28, 28), "channels_last"),
    "linear 784->512, 128": ("Linear", (784, 512), {}, (128, 784)),
    "layernorm 256, 64x64x256": ("LayerNorm", (256,), {}, (64, 64, 256)),
}
# Issue 17's goals: the most easyfit / PyTorch may take (fwd+bwd); cases without one are context.
GOALS = {
    "conv 32->64 3x3 p1, 64x32x28x28": 1.2,
    "conv 1->32 3x3 p1, 64x1x28x28": 1.2,
    "conv 64->128 3x3 s2 p1, 32x64x16x16": 1.2,
    "conv 32->32 3x3 p1 groups 4, 32x32x32x32": 2.0,
    "depthwise conv 64 3x3 p1, 32x64x32x32": 2.0,
    "batchnorm2d 32, 32x32x32x32": 1.2,
    "batchnorm2d 32, 64x32x28x28 channels-last": 1.2,
    "layernorm 256, 64x64x256": 1.5,
}


def stored(a, layout):
    """a (N, C, H, W), stored channels-last in memory when layout asks for it."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if layout else a


def measure(framework, repeats, threads=THREADS, cases=None):
    rng = np.random.default_rng(0)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        nn = torch.nn

        def tensor(a, grad=False):
            return torch.tensor(a, requires_grad=grad)
    else:
        import easyfit as ef
        from easyfit import nn

        def tensor(a, grad=False):
            return ef.tensor(a, requires_grad=grad)
    results = {}
    for name, (layer_name, args, kwargs, shape, *layout) in CASES.items():
        if cases and not any(part in name for part in cases):
            continue
        layer = getattr(nn, layer_name)(*args, **kwargs)
        x = tensor(stored(rng.standard_normal(shape).astype(np.float32), layout), grad=True)
        out_shape = tuple(layer(x).shape)
        seed = tensor(stored(rng.standard_normal(out_shape).astype(np.float32), layout))
        if framework == "torch" and layout:
            x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
            seed = seed.contiguous(memory_format=torch.channels_last)

        def step():
            layer(x).backward(seed)
            x.grad = None
            for p in layer.parameters():
                p.grad = None

        for _ in range(3):
            step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        results[name] = 1000 * statistics.median(times)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["easyfit", "torch"])
    parser.add_argument("--processes", type=int, default=2, help="fresh processes per framework")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=THREADS, help="BLAS/OpenMP threads per framework")
    parser.add_argument("--cases", nargs="*", help="run only the cases whose name contains one of these words")
    args = parser.parse_args()
    if args.framework:
        print(json.dumps(measure(args.framework, args.repeats, args.threads, args.cases)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    runs = {"easyfit": [], "torch": []}
    for round_number in range(args.processes):
        order = ("easyfit", "torch") if round_number % 2 == 0 else ("torch", "easyfit")
        for framework in order:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--framework", framework,
                                  "--repeats", str(args.repeats),
                                  "--threads", str(args.threads), *(["--cases", *args.cases] if args.cases else [])],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"{framework} failed:\n{out.stderr}", file=sys.stderr)
                continue
            runs[framework].append(json.loads(out.stdout.splitlines()[-1]))
    if not runs["easyfit"]:
        sys.exit("easyfit run failed")
    print(f"forward + backward, float32, {args.threads} thread(s), median ms; "
          f"load average {os.getloadavg()[0]:.2f} (above {os.cpu_count()} means other work shared the CPUs)")
    from easyfit.core import compiled
    print(f"compiled kernels (numba): {'on' if compiled.numba_enabled() else 'off'} (EASYFIT_NUMBA=0 turns them off)")
    print(f"{'case':44} {'easyfit':>8} {'torch':>8} {'ratio':>6} {'goal':>5}")
    for name in runs["easyfit"][0]:
        ours = statistics.median(r[name] for r in runs["easyfit"])
        goal = f"{GOALS[name]:5.1f}" if name in GOALS else ""
        if runs["torch"]:
            theirs = statistics.median(r[name] for r in runs["torch"])
            met = ("met" if ours / theirs <= GOALS[name] else "MISSED") if name in GOALS else ""
            print(f"{name:44} {ours:8.2f} {theirs:8.2f} {ours / theirs:6.2f} {goal} {met}")
        else:
            print(f"{name:44} {ours:8.2f} {'n/a':>8} {'':>6} {goal}")


if __name__ == "__main__":
    main()
