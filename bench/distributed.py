"""Data-parallel benchmarks: easyfit.distributed's cost over raw MPI, and 2 processes vs 2 threads.

1. allreduce: float32 buffers from 1 KB to 64 MB summed over 2 processes. Per size, the
   median time of raw mpi4py `comm.Allreduce(MPI.IN_PLACE, buf)`, of easyfit's
   `all_reduce_(buf)` (in place, what the gradient buckets use) and of `all_reduce(x)`
   (returns a new array: one extra copy), interleaved so that both see the same load.
   The overhead is easyfit's time over raw MPI's, minus one.
2. training step: the MLP and CNN of bench/train_step.py (MLP 784-512-512-10 at global
   batch 128, SGD momentum; CNN conv32-conv64-pool-fc128-fc10 at global batch 64, Adam).
   One process with 2 BLAS threads takes the whole batch (and, for reference, one
   process with 1 thread); 2 processes with 1 BLAS thread each take half of it and average gradients (`GradientAverager`, as the
   Learner does). Reported: the median step time of each, the throughput ratio
   (1-process step time / 2-process step time: > 1 means 2 processes train faster) and
   the share of the 2-process step spent in the gradient allreduce.
3. overlap: whether starting each gradient bucket's allreduce during backward (non-blocking
   Iallreduce, as PyTorch DDP does from gradient hooks) would hide communication here;
   emulated with each model's measured backward time and gradient size (see worker_overlap).

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/distributed.py

Needs mpi4py and mpiexec (pip install 'easyfit[mpi]').
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = [2**10 * 4**i for i in range(9)]   # 1 KB .. 64 MB
STEPS = {"mlp": (10, 60), "cnn": (3, 15)}  # (warm-up, timed) steps


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _env(threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# ----- workers ----------------------------------------------------------------------------
def worker_allreduce():
    from mpi4py import MPI
    from easyfit.distributed import world
    comm = MPI.COMM_WORLD
    results = []
    for nbytes in SIZES:
        n = nbytes // 4
        buf = np.ones(n, dtype=np.float32)
        repeats = int(min(2000, max(10, 2**28 // nbytes)))
        timings = {"raw": [], "inplace": [], "raw_new": [], "copy": []}
        calls = {"raw": lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM),
                 "inplace": lambda: world.all_reduce_(buf),
                 "raw_new": lambda: comm.Allreduce(buf, np.empty_like(buf), op=MPI.SUM),
                 "copy": lambda: world.all_reduce(buf)}
        for _ in range(3):  # warm up
            for call in calls.values():
                call()
        for _ in range(repeats):
            for name, call in calls.items():
                comm.Barrier()
                start = time.perf_counter()
                call()
                timings[name].append(time.perf_counter() - start)
                buf[...] = 1.0  # keep values finite
        medians = {name: statistics.median(values) for name, values in timings.items()}
        results.append({"bytes": nbytes, "repeats": repeats, **medians})
    results.append(_gradient_buckets(comm, MPI))
    if comm.rank == 0:
        print(json.dumps(results))


def _gradient_buckets(comm, MPI):
    """GradientAverager.reduce on the MLP's and CNN's gradients vs one raw Allreduce of as many bytes."""
    sys.path.insert(0, str(HERE))
    from train_step import Framework, build_cnn, build_mlp
    import easyfit
    from easyfit.distributed import GradientAverager
    out = {}
    for name, build in (("mlp", build_mlp), ("cnn", build_cnn)):
        model = build(Framework("easyfit"), np.random.default_rng(0))[0]
        params = list(model.parameters())
        flat = np.ones(sum(int(np.prod(p.shape)) for p in params), dtype=np.float32)
        averager = GradientAverager(model)
        raw, ours = [], []
        for _ in range(40):
            for p in params:
                p.grad = easyfit.ones(p.shape)
            comm.Barrier()
            start = time.perf_counter()
            averager.reduce(average=False)
            ours.append(time.perf_counter() - start)
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            raw.append(time.perf_counter() - start)
            flat[...] = 1.0
        out[name] = {"bytes": flat.nbytes, "raw": statistics.median(raw[5:]), "buckets": statistics.median(ours[5:])}
    return out


def worker_overlap(model_name):
    """Could starting each bucket's allreduce during backward (Iallreduce from gradient hooks) hide it?

    easyfit's engine has no gradient hooks, so this measures the mechanism itself on the
    model's numbers: its backward time C (measured on this process's share) as k = 4
    chunks of BLAS work, and its gradient bytes as 4 buckets. "blocking" runs the chunks,
    then allreduces the buckets (what easyfit does); "overlapped" starts a non-blocking
    Iallreduce of bucket i right after chunk i and waits at the end, testing the requests
    between sub-chunks as hooks firing per parameter would (MPI progresses only inside
    MPI calls unless MPICH's asynchronous progress thread is switched on).
    """
    sys.path.insert(0, str(HERE))
    from mpi4py import MPI
    from train_step import Framework, build_cnn, build_mlp
    import easyfit
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    fw = Framework("easyfit")
    model, opt, loss_func, x, y, _ = {"mlp": build_mlp, "cnn": build_cnn}[model_name](fw, np.random.default_rng(0))
    x_share, y_share = easyfit.tensor(x.numpy()[rank::size]), easyfit.tensor(y.numpy()[rank::size])
    backward = []
    for i in range(STEPS[model_name][0] + 5):
        loss = loss_func(model(x_share), y_share)
        start = time.perf_counter()
        loss.backward()
        backward.append(time.perf_counter() - start)
        opt.zero_grad()
    compute_time = statistics.median(backward[2:])
    n = sum(int(np.prod(p.shape)) for p in model.parameters())
    buckets = np.array_split(np.ones(n, np.float32), 4)
    a = np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32)
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        a @ a
        reps += 1
    reps = max(1, int(reps / 0.2 * compute_time / 16))  # 4 chunks x 4 sub-chunks = the backward's time

    def sub_chunk():
        for _ in range(reps):
            a @ a

    def compute_only():
        for _ in range(16):
            sub_chunk()

    for _ in range(2):  # calibrate on the real thing, the same in both processes
        took = []
        for _ in range(3):
            start = time.perf_counter()
            compute_only()
            took.append(time.perf_counter() - start)
        reps = comm.allreduce(max(1, round(reps * compute_time / statistics.median(took))), op=MPI.MIN)

    def comm_only():
        for b in buckets:
            comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)

    def blocking():
        compute_only()
        comm_only()

    def overlapped():
        requests = []
        for b in buckets:
            for _ in range(4):
                sub_chunk()
                if requests:
                    MPI.Request.Testall(requests)
            requests.append(comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM))
        MPI.Request.Waitall(requests)

    timings = {name: [] for name in ("compute", "comm", "blocking", "overlapped")}
    calls = {"compute": compute_only, "comm": comm_only, "blocking": blocking, "overlapped": overlapped}
    for i in range(14):
        for name, call in calls.items():
            comm.Barrier()
            start = time.perf_counter()
            call()
            elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            if i >= 2:
                timings[name].append(elapsed)
            for b in buckets:
                b[...] = 1.0
    if rank == 0:
        print(json.dumps({"backward": compute_time, "bytes": n * 4,
                          **{name: statistics.median(values) for name, values in timings.items()}}))


def worker_step(model_name, nprocs):
    sys.path.insert(0, str(HERE))
    from train_step import Framework, build_cnn, build_mlp
    import easyfit
    from easyfit import distributed as dist
    from easyfit.distributed import GradientAverager
    rank = dist.rank()
    fw = Framework("easyfit")
    model, opt, loss_func, x, y, _ = {"mlp": build_mlp, "cnn": build_cnn}[model_name](fw, np.random.default_rng(0))
    dist.broadcast_parameters(model)
    x_share, y_share = easyfit.tensor(x.numpy()[rank::nprocs]), easyfit.tensor(y.numpy()[rank::nprocs])
    averager = GradientAverager(model)
    warmup, timed = STEPS[model_name]
    steps, comms = [], []
    for i in range(warmup + timed):
        dist.barrier()
        start = time.perf_counter()
        loss = loss_func(model(x_share), y_share)
        if nprocs > 1:
            loss = loss * (1.0 / nprocs)  # equal shares: the summed gradients are the global mean's
        loss.backward()
        comm_start = time.perf_counter()
        if nprocs > 1:
            averager.reduce(average=False)
        comm_time = time.perf_counter() - comm_start
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            steps.append(time.perf_counter() - start)
            comms.append(comm_time)
    step, comm = statistics.median(steps), statistics.median(comms)
    steps_all = dist.all_gather(step)
    if rank == 0:
        print(json.dumps({"step": max(steps_all), "comm": comm, "params": int(sum(np.prod(p.shape) for p in model.parameters()))}))


# ----- driver -----------------------------------------------------------------------------
def _run(command, threads):
    result = subprocess.run(command, capture_output=True, text=True, env=_env(threads))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["allreduce", "step", "overlap"])
    parser.add_argument("--model", choices=list(STEPS))
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="processes per configuration (best median kept)")
    parser.add_argument("--part", choices=["all", "allreduce", "step", "overlap"], default="all",
                        help="which benchmark to run")
    args = parser.parse_args()
    if args.worker == "allreduce":
        return worker_allreduce()
    if args.worker == "step":
        return worker_step(args.model, args.nprocs)
    if args.worker == "overlap":
        return worker_overlap(args.model)
    mpiexec = _mpiexec()
    if mpiexec is None:
        sys.exit("bench/distributed.py needs mpiexec: pip install 'easyfit[mpi]'")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    me = [sys.executable, str(Path(__file__).resolve())]
    if args.part in ("all", "allreduce"):
        bench_allreduce(mpiexec, me, args.rounds)
    if args.part in ("all", "step"):
        bench_steps(mpiexec, me, args.rounds)
    if args.part in ("all", "overlap"):
        bench_overlap(mpiexec, me, args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def bench_allreduce(mpiexec, me, n_rounds):
    rounds = [_run([mpiexec, "-n", "2", *me, "--worker", "allreduce"], 1) for _ in range(n_rounds)]
    print("allreduce of float32 over 2 processes (best of the rounds' medians)")
    print("in place: raw Allreduce(IN_PLACE, buf) vs all_reduce_(buf); new array: raw "
          "Allreduce(buf, np.empty_like(buf)) vs all_reduce(buf)")
    print(f"{'size':>8} {'raw MPI':>10} {'all_reduce_':>12} {'overhead':>9} {'raw new':>10} {'all_reduce':>11} "
          f"{'overhead':>9} {'GB/s raw':>9}")
    for i, nbytes in enumerate(SIZES):
        raw, inplace, raw_new, copy = (min(r[i][name] for r in rounds) for name in ("raw", "inplace", "raw_new",
                                                                                     "copy"))
        size = f"{nbytes // 2**20} MB" if nbytes >= 2**20 else f"{nbytes // 2**10} KB"
        print(f"{size:>8} {raw * 1e6:>8.1f}us {inplace * 1e6:>10.1f}us {inplace / raw - 1:>8.1%} "
              f"{raw_new * 1e6:>8.1f}us {copy * 1e6:>9.1f}us {copy / raw_new - 1:>8.1%} {nbytes / raw / 1e9:>9.2f}")
    print("\na model's gradients: GradientAverager.reduce (pack into buckets, reduce, unpack) vs one raw "
          "Allreduce of as many bytes")
    for model in ("mlp", "cnn"):
        raw = min(r[-1][model]["raw"] for r in rounds)
        ours = min(r[-1][model]["buckets"] for r in rounds)
        print(f"{model:>6} {rounds[0][-1][model]['bytes'] / 2**20:>6.2f} MB  raw {raw * 1e3:.2f} ms  "
              f"buckets {ours * 1e3:.2f} ms  overhead {ours / raw - 1:.1%}")


def bench_steps(mpiexec, me, n_rounds):
    print("\ntraining step, same global batch: 1 process x 2 BLAS threads vs 2 processes x 1 thread")
    print(f"{'model':>6} {'params':>9} {'1x1 step':>10} {'1x2 step':>10} {'2x1 step':>10} "
          f"{'throughput 2x1/1x2':>19} {'comm share':>11}")
    for model in STEPS:
        single = min((_run([*me, "--worker", "step", "--model", model, "--nprocs", "1"], 1)
                      for _ in range(n_rounds)), key=lambda r: r["step"])
        one = min((_run([*me, "--worker", "step", "--model", model, "--nprocs", "1"], 2) for _ in range(n_rounds)),
                  key=lambda r: r["step"])
        two = min((_run([mpiexec, "-n", "2", *me, "--worker", "step", "--model", model, "--nprocs", "2"], 1)
                   for _ in range(n_rounds)), key=lambda r: r["step"])
        print(f"{model:>6} {one['params']:>9,} {single['step'] * 1e3:>8.1f}ms {one['step'] * 1e3:>8.1f}ms "
              f"{two['step'] * 1e3:>8.1f}ms "
              f"{one['step'] / two['step']:>19.2f} {two['comm'] / two['step']:>10.1%}")


def bench_overlap(mpiexec, me, n_rounds):
    print("\noverlapping the gradient allreduce with backward (emulated: backward's time as BLAS work in 4 chunks, "
          "the gradients as 4 buckets; 2 processes x 1 thread)")
    print(f"{'model':>6} {'MB':>6} {'backward':>9} {'compute':>9} {'allreduce':>10} {'blocking':>9} "
          f"{'overlapped':>11} {'gain':>6} {'ideal gain':>11}")
    for model in STEPS:
        best = min((_run([mpiexec, "-n", "2", *me, "--worker", "overlap", "--model", model], 1)
                    for _ in range(n_rounds)), key=lambda r: r["overlapped"] + r["blocking"])
        ideal = best["blocking"] - max(best["compute"], best["comm"])
        print(f"{model:>6} {best['bytes'] / 2**20:>6.2f} {best['backward'] * 1e3:>7.1f}ms {best['compute'] * 1e3:>7.1f}ms "
              f"{best['comm'] * 1e3:>8.2f}ms {best['blocking'] * 1e3:>7.1f}ms {best['overlapped'] * 1e3:>9.1f}ms "
              f"{1 - best['overlapped'] / best['blocking']:>6.1%} {ideal / best['blocking']:>10.1%}")


if __name__ == "__main__":
    main()
