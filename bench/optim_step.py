"""The optimizer step alone: easyfit against torch.optim on the 784-512-512-10 MLP's parameters.

Gradients are fixed random arrays; each timed call is one `opt.step()` over the six
parameters (669,706 floats). Each framework runs in a fresh process with 2 threads; the
processes alternate and the table gives the best of their medians, in microseconds.
NumPy's binary ufuncs make SGD with momentum four passes over the parameters
(PyTorch's fused multiply-add makes it three), so this shows how close the step is to
that floor and how much of the train-step benchmark it is.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/optim_step.py
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = [(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)]
CASES = {
    "SGD momentum": ("SGD", dict(lr=0.01, momentum=0.9)),
    "SGD nesterov+wd": ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    "Adam": ("Adam", dict(lr=1e-3)),
    "AdamW": ("AdamW", dict(lr=1e-3)),
    "RMSprop": ("RMSprop", dict(lr=1e-3)),
}
THREADS = 2


def measure(framework, case, repeats=300):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    grads = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    name, kwargs = CASES[case]
    if framework == "torch":
        import torch
        torch.set_num_threads(THREADS)
        params = [torch.tensor(a, requires_grad=True) for a in arrays]
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g)
        opt = getattr(torch.optim, name)(params, **kwargs)
    else:
        import easyfit as ef
        import easyfit.optim
        params = [ef.tensor(a, requires_grad=True) for a in arrays]
        for p, g in zip(params, grads):
            p.grad = ef.from_numpy(g)
        opt = getattr(easyfit.optim, name)(params, **kwargs)
    for _ in range(10):
        opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("easyfit", "torch"))
    parser.add_argument("--case", choices=tuple(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.framework:
        print(json.dumps({"us": measure(args.framework, args.case)}))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    print(f"optimizer step over the MLP's 669,706 parameters, best of {args.rounds} process medians "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'case':18} {'easyfit us':>10} {'torch us':>9} {'ratio':>6}")
    for case in CASES:
        best = {"easyfit": float("inf"), "torch": float("inf")}
        for round_number in range(args.rounds):
            for framework in (("easyfit", "torch") if round_number % 2 == 0 else ("torch", "easyfit")):
                output = subprocess.run([sys.executable, os.path.abspath(__file__), "--framework", framework,
                                         "--case", case], capture_output=True, text=True, env=env, check=True)
                best[framework] = min(best[framework], json.loads(output.stdout.strip().splitlines()[-1])["us"])
        print(f"{case:18} {best['easyfit']:10.0f} {best['torch']:9.0f} {best['easyfit'] / best['torch']:6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
