"""The sine-wave example's setting with equal starting points: one LBFGS step, both frameworks.

PyTorch's time_sequence_prediction example cannot be given the same initial weights in
both frameworks without changing its code (each draws from its own generator), so
bench/pytorch_examples.py compares it loosely. This script builds the same model (two
LSTMCells of 51 units and a Linear, float64; the program of
tests/pytorch_style/test_lbfgs_lstmcells.py) on the example's data (100 sine waves of
length 1000 made with NumPy's seed 2, as generate_sine_wave.py makes them), copies
PyTorch's initial weights into easyfit, takes one LBFGS step (lr 0.8, up to 20 closure
calls) in each, and prints every closure loss of both.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/sine_wave_same_start.py [--seed 0]
"""
import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "pytorch_style"))

import torch  # noqa: E402  (an oracle here, as in every comparison benchmark)

import easyfit  # noqa: E402
import test_lbfgs_lstmcells as program  # noqa: E402
from twin_runs import copy_state  # noqa: E402


def sine_waves(count=100, length=1000, period=20):
    """The example's data: sin(x / period) for shifted ranges x, shifts drawn with NumPy's seed 2."""
    np.random.seed(2)
    x = np.empty((count, length), "int64")
    x[:] = np.array(range(length)) + np.random.randint(-4 * period, 4 * period, count).reshape(count, 1)
    return np.sin(x / 1.0 / period).astype("float64")


def one_step(framework, model, data):
    input, target = framework.from_numpy(data[3:, :-1]), framework.from_numpy(data[3:, 1:])
    criterion = framework.nn.MSELoss()
    optimizer = framework.optim.LBFGS(model.parameters(), lr=0.8)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = criterion(model(input), target)
        losses.append(loss.item())
        loss.backward()
        return loss

    start = time.perf_counter()
    optimizer.step(closure)
    return losses, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for PyTorch's initial weights")
    args = parser.parse_args()
    program.HIDDEN = 51
    data = sine_waves()
    torch.manual_seed(args.seed)
    theirs, ours = program.make_model(torch), program.make_model(easyfit)
    copy_state(theirs, ours, easyfit)
    results = {name: one_step(framework, model, data)
               for name, framework, model in (("PyTorch", torch, theirs), ("easyfit", easyfit, ours))}
    for name, (losses, seconds) in results.items():
        print(f"{name:8} {seconds:6.1f} s  " + " ".join(f"{loss:.6g}" for loss in losses))
    ours_losses, theirs_losses = results["easyfit"][0], results["PyTorch"][0]
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours_losses, theirs_losses))
    print(f"{len(ours_losses)} vs {len(theirs_losses)} closure calls; largest relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
