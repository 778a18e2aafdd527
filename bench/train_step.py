"""Training-step benchmarks: easyfit against PyTorch CPU, forward + backward + optimizer step.

Five models (float32, synthetic data of the stated shapes, one fixed batch reused):

    mlp     784-512-512-10 MLP, batch 128, SGD momentum 0.9
    cnn     LeNet-like CNN on 1x28x28: conv 32 and conv 64 (3x3, pad 1, ReLU), 2x2 max-pool,
            linear 128, linear 10 (PyTorch's MNIST example layout); batch 64, Adam
    resnet  small ResNet with BatchNorm on 3x32x32: stem conv 32, three stages of one basic block
            (32, 64 stride 2, 128 stride 2), global average pool, linear 10; batch 32, SGD momentum
    lstm    character model: embedding 128x128, 2-layer LSTM hidden 256 (batch_first), linear 128,
            sequence 64, batch 32, Adam, gradient clipping at norm 1.0
    text    classifier: embedding 20,000x64, mean over the non-padding positions of length-200
            sequences, linear 2; batch 64, Adam

Each measurement runs in a fresh subprocess (`--framework F --model M`) with 2 threads
(OMP/OpenBLAS/MKL_NUM_THREADS=2, torch.set_num_threads(2); `--threads N` to change): a few warm-up steps, then the
median of many timed steps, and the process's peak RSS; for easyfit also one more step's
peak array memory as tracemalloc counts it ("easyfit step MB": activations, saved arrays,
gradients and temporaries, without the libraries' code and data). The driver (no --framework)
alternates the frameworks, `--rounds` processes each, and prints per model the best of
each framework's process medians (the one least disturbed by other load on the machine;
the load average is printed before and after), the ratio easyfit/PyTorch and both peak
RSS values. The verdict against issue 17's goal uses the paired ratio: the median over
rounds of each round's easyfit / PyTorch (its two processes ran back to back), which
holds steadier than best against best when the machine's speed drifts. A model whose
easyfit layers do not exist yet is reported as "not available yet".

`--busy N` measures each model twice: as above, then again while N other processes keep
N cores busy (bench/busy.py), and prints each framework's slowdown (busy / quiet). The
thread counts stay as set (a user's settings); easyfit lowers its BLAS threads itself
when it sees the cores taken (easyfit.core.threads).

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py
    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_step.py --busy 1
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

MODELS = ("mlp", "cnn", "resnet", "lstm", "text")
TARGETS = {"mlp": 0.9, "cnn": 1.0, "resnet": 1.0, "lstm": 1.0, "text": 1.0}   # issue 17's goals
# (warm-up steps, timed steps, time cap in seconds for the timed part)
STEPS = {"mlp": (20, 300, 20.0), "cnn": (5, 40, 25.0), "resnet": (5, 40, 25.0),
         "lstm": (3, 25, 25.0), "text": (10, 200, 20.0)}
THREADS = 2


# ----- models, written once for both frameworks ------------------------------------------

class Framework:
    """What a model definition needs from a framework: nn, relu, an optimizer, arrays to tensors."""

    def __init__(self, name):
        self.name = name
        if name == "torch":
            import torch
            torch.set_num_threads(THREADS)
            torch.manual_seed(0)
            self.lib, self.nn = torch, torch.nn
            self.relu = torch.relu
            self.optim = torch.optim
            self.clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
            self.no_grad = torch.no_grad
        else:
            import easyfit
            import easyfit.nn
            import easyfit.optim
            easyfit.manual_seed(0)
            self.lib, self.nn = easyfit, easyfit.nn
            self.relu = easyfit.relu
            self.optim = easyfit.optim
            self.clip_grad_norm_ = getattr(easyfit.nn.utils, "clip_grad_norm_", None)
            self.no_grad = easyfit.no_grad

    def tensor(self, array):
        return self.lib.from_numpy(array)  # both frameworks share the array's memory

    def sum_over(self, x, axis):
        return x.sum(dim=axis) if self.name == "torch" else x.sum(axis=axis)



def build_mlp(fw, rng):
    nn = fw.nn
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x = rng.standard_normal((128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128).astype(np.int64)
    opt = fw.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()
    return model, opt, (lambda out, target: loss_func(out, target)), fw.tensor(x), fw.tensor(y), None


def build_cnn(fw, rng):
    nn = fw.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, 10))
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int64)
    opt = fw.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()
    return model, opt, (lambda out, target: loss_func(out, target)), fw.tensor(x), fw.tensor(y), None


def build_resnet(fw, rng):
    nn, relu = fw.nn, fw.relu

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            else:
                self.shortcut = nn.Identity()

        def forward(self, x):
            out = relu(self.bn1(self.conv1(x)))
            return relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                          BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int64)
    opt = fw.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()
    return model, opt, (lambda out, target: loss_func(out, target)), fw.tensor(x), fw.tensor(y), None


def build_lstm(fw, rng):
    nn = fw.nn
    vocab, hidden, seq, batch = 128, 256, 64, 32

    class CharModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, 128)
            self.lstm = nn.LSTM(128, hidden, num_layers=2, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, tokens):
            out, _ = self.lstm(self.embedding(tokens))
            return self.head(out.reshape((batch * seq, hidden)))

    if fw.clip_grad_norm_ is None:
        raise AttributeError("easyfit.nn.utils.clip_grad_norm_ does not exist yet")
    model = CharModel()
    x = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    y = rng.integers(0, vocab, batch * seq).astype(np.int64)
    opt = fw.optim.Adam(model.parameters(), lr=2e-3)
    loss_func = nn.CrossEntropyLoss()
    params = list(model.parameters())
    return model, opt, (lambda out, target: loss_func(out, target)), fw.tensor(x), fw.tensor(y), \
        (lambda: fw.clip_grad_norm_(params, 1.0))


def build_text(fw, rng):
    nn = fw.nn
    vocab, dim, length, batch = 20_000, 64, 200, 64
    lengths = rng.integers(20, length + 1, batch)
    tokens = rng.integers(1, vocab, (batch, length)).astype(np.int64)
    mask = np.zeros((batch, length), np.float32)
    for row, n in enumerate(lengths):
        tokens[row, n:] = 0
        mask[row, :n] = 1.0
    mask3 = fw.tensor(mask[:, :, None].copy())
    counts = fw.tensor(lengths.astype(np.float32)[:, None].copy())

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
            self.head = nn.Linear(dim, 2)

        def forward(self, tokens):
            summed = fw.sum_over(self.embedding(tokens) * mask3, 1)  # masked mean over the real tokens
            return self.head(summed / counts)

    model = TextClassifier()
    y = rng.integers(0, 2, batch).astype(np.int64)
    opt = fw.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()
    return model, opt, (lambda out, target: loss_func(out, target)), fw.tensor(tokens), fw.tensor(y), None


def mlp_matmuls(fw, rng):
    """The MLP step's eight matrix products alone, as its Linear layers compute them.

    Forward x @ W.T for three layers; backward g.T @ h for each weight and g @ W for the
    two hidden inputs. Raw NumPy matmul for easyfit (what its Linear calls) and torch.mm
    under no_grad for PyTorch: the BLAS time neither framework can go below.
    """
    sizes = [(784, 512), (512, 512), (512, 10)]
    weights = [rng.standard_normal((n_out, n_in)).astype(np.float32) for n_in, n_out in sizes]
    x = rng.standard_normal((128, 784)).astype(np.float32)
    hidden = [rng.standard_normal((128, 512)).astype(np.float32) for _ in range(2)]
    grads = [rng.standard_normal((128, n_out)).astype(np.float32) for _, n_out in sizes]
    if fw.name == "torch":
        mm = fw.lib.mm
        weights, x, hidden, grads = ([fw.tensor(a) for a in weights], fw.tensor(x),
                                     [fw.tensor(a) for a in hidden], [fw.tensor(a) for a in grads])
        t = lambda a: a.t()
    else:
        mm, t = np.matmul, np.transpose
    inputs = [x] + hidden

    def products():
        for layer in range(3):
            mm(inputs[layer], t(weights[layer]))
            mm(t(grads[layer]), inputs[layer])
            if layer:
                mm(grads[layer], weights[layer])

    return products


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "resnet": build_resnet, "lstm": build_lstm, "text": build_text}


# ----- one measurement (child process) -------------------------------------------------------

def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_peak_mb(step):
    """The most array memory one more step holds at once above what lives between steps
    (activations, saved arrays, gradients, temporaries; NumPy reports its allocations to
    tracemalloc, PyTorch does not). Measured after the timed steps and the RSS reading."""
    import gc
    import tracemalloc
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        step()
        return (tracemalloc.get_traced_memory()[1] - before) / 2 ** 20
    finally:
        tracemalloc.stop()


def measure(framework, model_name):
    rng = np.random.default_rng(0)
    fw = Framework(framework)
    try:
        model, opt, loss_func, x, y, after_backward = BUILDERS[model_name](fw, rng)
    except (ImportError, AttributeError, NotImplementedError) as error:
        return {"available": False, "reason": f"{type(error).__name__}: {error}"}
    model.train()

    def step():
        loss = loss_func(model(x), y)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        opt.zero_grad()
        return loss

    warmup, count, cap = STEPS[model_name]
    first_loss = float(step().item())
    for _ in range(warmup - 1):
        step()
    times = []
    start_all = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - start_all > cap and len(times) >= 10:
            break
    last_loss = float(loss.item())
    result = {"available": True, "median_ms": 1000 * statistics.median(times), "steps": len(times),
              "peak_rss_mb": peak_rss_mb(), "first_loss": first_loss, "last_loss": last_loss}
    if framework == "easyfit":
        result["step_peak_mb"] = step_peak_mb(step)
    if model_name == "mlp":
        products = mlp_matmuls(fw, rng)
        with fw.no_grad():
            for _ in range(warmup):
                products()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                products()
                times.append(time.perf_counter() - start)
        result["matmuls_ms"] = 1000 * statistics.median(times)
    return result


# ----- the driver ------------------------------------------------------------------------------

def run_child(framework, model_name):
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    command = [sys.executable, os.path.abspath(__file__), "--framework", framework, "--model", model_name,
               "--threads", str(THREADS)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"available": False, "reason": f"failed (exit {result.returncode}): {tail[0]}"}
    return json.loads(lines[-1])


def measure_rounds(model_name, rounds):
    """`rounds` processes per framework, alternating; {framework: [result, ...]}."""
    results = {"easyfit": [], "torch": []}
    for round_number in range(rounds):
        order = ("easyfit", "torch") if round_number % 2 == 0 else ("torch", "easyfit")
        for framework in order:
            results[framework].append(run_child(framework, model_name))
    return results


def best(results, framework, key="median_ms"):
    return min(r[key] for r in results[framework])


def paired_ratio(results, key="median_ms"):
    """The median over rounds of easyfit / PyTorch, each round's two processes run back to
    back: the issue's "median ratio of alternating fresh processes". On a machine whose
    speed drifts from minute to minute it holds steadier than best against best, which
    pairs each framework's luckiest process."""
    return statistics.median(ours[key] / theirs[key] for ours, theirs in zip(results["easyfit"], results["torch"]))


def main():
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("easyfit", "torch"))
    parser.add_argument("--model", choices=MODELS)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset for the driver")
    parser.add_argument("--rounds", type=int, default=2, help="processes per framework and model (alternated)")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads per framework (default 2)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="also measure with N cores kept busy by other processes; print the slowdowns")
    args = parser.parse_args()
    THREADS = args.threads
    if args.framework:
        print(json.dumps(measure(args.framework, args.model)))
        return
    for variable in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if variable in os.environ:
            print(f"note: {variable} is set; it forces a slower BLAS kernel (run with env -u {variable})")
    if args.busy:
        return main_busy(args)
    header = (f"{'model':8} {'easyfit ms':>11} {'torch ms':>9} {'ratio':>6} {'paired':>6} {'target':>7} "
              f"{'easyfit MB':>11} {'torch MB':>9} {'mem ratio':>9} {'easyfit step MB':>15}")
    print(f"train step, float32, {THREADS} threads; ms/step = best of {args.rounds} alternating processes' "
          f"medians, ratio = best against best; paired = median over rounds of each round's own ratio "
          f"(the verdict); load average before: {os.getloadavg()[0]:.2f}")
    print(header)
    print("-" * len(header), flush=True)
    for model_name in args.models.split(","):
        results = measure_rounds(model_name, args.rounds)
        unavailable = [r for r in results["easyfit"] + results["torch"] if not r["available"]]
        if unavailable:
            reason = next(r["reason"] for r in unavailable)
            print(f"{model_name:8} not available yet ({reason})")
            continue
        ours, theirs = best(results, "easyfit"), best(results, "torch")
        our_mb = max(r["peak_rss_mb"] for r in results["easyfit"])
        their_mb = max(r["peak_rss_mb"] for r in results["torch"])
        ratio, paired = ours / theirs, paired_ratio(results)
        verdict = "ok" if paired <= TARGETS[model_name] else "MISS"
        print(f"{model_name:8} {ours:11.2f} {theirs:9.2f} {ratio:6.2f} {paired:6.2f} {'<=' + str(TARGETS[model_name]):>7} "
              f"{our_mb:11.0f} {their_mb:9.0f} {our_mb / their_mb:9.2f} "
              f"{max(r.get('step_peak_mb', 0) for r in results['easyfit']):15.1f}  {verdict}", flush=True)
        if model_name == "mlp":
            our_products, their_products = best(results, "easyfit", "matmuls_ms"), best(results, "torch", "matmuls_ms")
            print(f"{'':8} its 8 matmuls alone: NumPy {our_products:.2f} ms, torch {their_products:.2f} ms; "
                  f"no overhead at all would give {our_products / theirs:.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (above {THREADS} means other work shared the CPUs)")


def main_busy(args):
    """Each model quiet, then with args.busy cores busy: both frameworks' slowdowns."""
    from busy import busy_cores
    header = (f"{'model':8} {'easyfit ms':>11} {'torch ms':>9} {'ratio':>6} {'busy: easyfit':>14} "
              f"{'torch':>8} {'ratio':>6} {'slowdown easyfit':>17} {'torch':>6}")
    print(f"train step, float32, {THREADS} threads, quiet then {args.busy} core(s) kept busy; best of "
          f"{args.rounds} alternating processes' medians; load average before: {os.getloadavg()[0]:.2f}")
    print(header)
    print("-" * len(header), flush=True)
    for model_name in args.models.split(","):
        quiet = measure_rounds(model_name, args.rounds)
        with busy_cores(args.busy):
            loaded = measure_rounds(model_name, args.rounds)
        if any(not r["available"] for r in quiet["easyfit"] + quiet["torch"] + loaded["easyfit"] + loaded["torch"]):
            print(f"{model_name:8} not available")
            continue
        q = {f: best(quiet, f) for f in ("easyfit", "torch")}
        b = {f: best(loaded, f) for f in ("easyfit", "torch")}
        print(f"{model_name:8} {q['easyfit']:11.2f} {q['torch']:9.2f} {q['easyfit'] / q['torch']:6.2f} "
              f"{b['easyfit']:14.2f} {b['torch']:8.2f} {b['easyfit'] / b['torch']:6.2f} "
              f"{b['easyfit'] / q['easyfit']:17.2f} {b['torch'] / q['torch']:6.2f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
