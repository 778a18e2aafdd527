"""Per-op framework overhead: a chain of small elementwise ops, forward + backward.

The chain applies add, mul and tanh in turn to a 16x16 float32 tensor (200 ops in all:
66 rounds of three, then a sum), backpropagates, and reports microseconds per op for
easyfit and PyTorch CPU. Two variants: the add and mul operands are Tensors
(`tanh((y + c) * c)`), or Python floats (`tanh((y + 0.1) * 0.9)`), as in the `x * 0.5`
and `h / math.sqrt(d)` that real models are full of. Each framework runs in its own
fresh process; the processes alternate, and the table gives the median of their medians.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/op_overhead.py
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

ROUNDS = 66            # 3 ops each, plus the final sum: 199 ops
SIZE = 16
OPS = 3 * ROUNDS + 1
# variant -> the (add, mul) operands: None means the Tensor c for both
VARIANTS = {"tensor operands": (None, None), "python-float operands": (0.1, 0.9)}


def measure(framework, repeats, warmup):
    import numpy as np
    rng = np.random.default_rng(0)
    x0 = rng.random((SIZE, SIZE), dtype=np.float32)
    c0 = (rng.random((SIZE, SIZE), dtype=np.float32) * 0.1).astype(np.float32)
    if framework == "torch":
        import torch
        torch.set_num_threads(1)
        x = torch.tensor(x0, requires_grad=True)
        c = torch.tensor(c0)
        tanh = torch.tanh
    else:
        import easyfit as ef
        x = ef.tensor(x0, requires_grad=True)
        c = ef.tensor(c0)
        tanh = ef.tanh

    def chain(shift, scale):
        y = x
        for _ in range(ROUNDS):
            y = tanh((y + shift) * scale)
        return y.sum()

    results = {}
    for variant, (shift, scale) in VARIANTS.items():
        operands = (c, c) if shift is None else (shift, scale)

        def step():
            chain(*operands).backward()
            x.grad = None

        for _ in range(warmup):
            step()
        total, forward = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            total.append((time.perf_counter() - start) / OPS * 1e6)
            start = time.perf_counter()
            chain(*operands)
            forward.append((time.perf_counter() - start) / OPS * 1e6)
        results[variant] = {"total_us": statistics.median(total), "forward_us": statistics.median(forward)}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["easyfit", "torch"])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per framework")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    if args.framework:
        print(json.dumps(measure(args.framework, args.repeats, args.warmup)))
        return
    results = {"easyfit": [], "torch": []}
    for _ in range(args.processes):
        for framework in ("easyfit", "torch"):
            out = subprocess.run([sys.executable, __file__, "--framework", framework, "--repeats",
                                  str(args.repeats), "--warmup", str(args.warmup)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{framework} failed:\n{out.stderr}", file=sys.stderr)
                continue
            results[framework].append(json.loads(out.stdout))
    if not results["easyfit"]:
        sys.exit("easyfit run failed")
    print(f"{'operands':<22} {'framework':<10} {'fwd+bwd us/op':>14} {'fwd us/op':>10}")
    for variant in VARIANTS:
        medians = {}
        for framework, runs in results.items():
            if not runs:
                print(f"{variant:<22} {framework:<10} {'unavailable':>14}")
                continue
            total = statistics.median(r[variant]["total_us"] for r in runs)
            forward = statistics.median(r[variant]["forward_us"] for r in runs)
            medians[framework] = total
            print(f"{variant:<22} {framework:<10} {total:>14.2f} {forward:>10.2f}")
        if "torch" in medians:
            print(f"{variant:<22} ratio easyfit/torch (fwd+bwd): {medians['easyfit'] / medians['torch']:.2f} "
                  f"(target <= 1.0)")


if __name__ == "__main__":
    main()
