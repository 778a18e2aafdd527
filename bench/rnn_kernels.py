"""Recurrent layers, forward + backward: easyfit's fused sequence ops against torch.nn.

A 2-layer LSTM (the char model's shape: input 128, hidden 256, sequence 64, batch 32),
and the same for GRU, float32, loss = sum of the outputs, parameter gradients cleared
each step. Each framework runs in its own fresh process with 2 threads; processes
alternate, and the table gives the median over rounds of each process's median step time.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn_kernels.py
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

SEQ_LEN, BATCH, INPUT, HIDDEN, LAYERS = 64, 32, 128, 256, 2


def measure(framework, kind, repeats, warmup):
    import numpy as np
    x0 = np.random.default_rng(0).standard_normal((SEQ_LEN, BATCH, INPUT)).astype(np.float32)
    if framework == "torch":
        import torch
        torch.set_num_threads(2)
        layer = getattr(torch.nn, kind)(INPUT, HIDDEN, num_layers=LAYERS)
        x = torch.tensor(x0, requires_grad=True)
        no_grad = torch.no_grad
    else:
        import easyfit as ef
        import easyfit.nn as nn
        layer = getattr(nn, kind)(INPUT, HIDDEN, num_layers=LAYERS)
        x = ef.tensor(x0, requires_grad=True)
        no_grad = ef.no_grad
    params = list(layer.parameters())

    def step():
        output, _ = layer(x)
        output.sum().backward()
        for p in params:
            p.grad = None
        x.grad = None

    for _ in range(warmup):
        step()
    total, forward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        with no_grad():
            layer(x)
        forward.append(time.perf_counter() - start)
    return {"step_ms": statistics.median(total) * 1e3, "forward_ms": statistics.median(forward) * 1e3}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per framework")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--kinds", default="LSTM,GRU")
    parser.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.repeats, args.warmup)))
        return
    print(f"{LAYERS}-layer recurrent layer, input {INPUT}, hidden {HIDDEN}, seq {SEQ_LEN}, batch {BATCH}, float32")
    print(f"{'layer':6} {'framework':9} {'fwd+bwd ms':>11} {'fwd ms':>8}")
    for kind in args.kinds.split(","):
        results = {"easyfit": [], "torch": []}
        for _ in range(args.rounds):
            for framework in ("easyfit", "torch"):
                out = subprocess.run([sys.executable, __file__, "--worker", framework, kind, "--repeats",
                                      str(args.repeats), "--warmup", str(args.warmup)],
                                     capture_output=True, text=True, check=True)
                results[framework].append(json.loads(out.stdout))
        summary = {}
        for framework, runs in results.items():
            step = statistics.median(r["step_ms"] for r in runs)
            fwd = statistics.median(r["forward_ms"] for r in runs)
            summary[framework] = step
            print(f"{kind:6} {framework:9} {step:11.1f} {fwd:8.1f}")
        print(f"{kind:6} ratio easyfit/torch (fwd+bwd): {summary['easyfit'] / summary['torch']:.2f}")


if __name__ == "__main__":
    main()
