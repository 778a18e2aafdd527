"""The vision recipe against its PyTorch twin: same data, split, model, schedule and weights.

The twin builds the recipe's small CNN (or ResNet) in torch.nn with the same parameter
names, loads the recipe model's initial weights, trains on exactly the recipe's batches
(the loaders are NumPy: the twin converts each batch), and follows the same one-cycle
learning-rate and momentum (AdamW's beta1) schedule per batch through easyfit's pure
schedule functions, with the same decoupled weight decay. Each framework runs in its own
process; the script prints validation loss, accuracy and seconds per epoch for both.
`--whole-run` times whole processes instead, from start to exit: `easyfit train vision`
(the command line, with its data loading, checkpoints and TensorBoard logs) against this
twin's process (imports, the same data, training and validation).

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python bench/recipe_vision_torch.py [--data digits|fashion-mnist] [--epochs N] [--set key=value ...]
        [--whole-run]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_twin, also when loaded by path

from easyfit.optim.schedule import one_cycle_lr, one_cycle_mom  # noqa: E402
from recipes import vision  # noqa: E402
from recipes.config import resolve  # noqa: E402
from torch_twin import optimizer_step, set_one_cycle  # noqa: E402


def make_config(data, epochs, overrides):
    return resolve(vision.Config, {}, overrides, data=data, epochs=epochs)


def build(config):
    """The recipe's Learner (for its loaders and initial weights), seeded as `easyfit train` does."""
    import easyfit
    easyfit.manual_seed(config.seed)
    return vision.build_learner(config, tempfile.mkdtemp())


def train_easyfit(config):
    learn = build(config)
    learn.remove_cb(learn.progress)
    start = time.perf_counter()
    learn.fit_one_cycle(config.epochs, lr_max=config.lr)
    seconds = time.perf_counter() - start
    valid_loss, accuracy = learn.validate()
    return {"valid_loss": float(valid_loss), "accuracy": float(accuracy), "seconds_per_epoch": seconds / config.epochs}


def torch_cnn(config, in_channels, n_classes, size):
    import torch.nn as tnn
    width, spatial = config.width, size // 4
    return tnn.Sequential(
        tnn.Conv2d(in_channels, width, 3, padding=1), tnn.BatchNorm2d(width), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Conv2d(width, 2 * width, 3, padding=1), tnn.BatchNorm2d(2 * width), tnn.MaxPool2d(2), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(2 * width * spatial * spatial, 128), tnn.ReLU(), tnn.Dropout(config.dropout),
        tnn.Linear(128, n_classes))


def train_torch(config):
    import torch
    torch.set_num_threads(2)
    if config.arch != "cnn":
        raise SystemExit("the PyTorch twin covers --arch cnn")
    learn = build(config)
    dls = learn.dls
    xb, _ = dls.train.one_batch()
    _, channels, size, _ = xb.shape
    model = torch_cnn(config, channels, len(dls.classes), size)
    state = {k: torch.tensor(v.numpy().copy()) for k, v in learn.model.state_dict().items()}
    model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.wd)
    loss_func = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    total = config.epochs * len(dls.train)
    lr_at, mom_at = one_cycle_lr(config.lr), one_cycle_mom()
    step = 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        for xb, yb in dls.train:
            set_one_cycle(optimizer, lr_at, mom_at, step / total)
            loss = loss_func(model(torch.from_numpy(xb.numpy())), torch.from_numpy(yb.numpy()))
            optimizer_step(torch, model, optimizer, loss)
            step += 1
        model.eval()
        losses, correct, count = [], 0, 0
        with torch.no_grad():
            for xb, yb in dls.valid:
                out = model(torch.from_numpy(xb.numpy()))
                target = torch.from_numpy(yb.numpy())
                losses.append(float(loss_func(out, target)) * len(target))
                correct += int((out.argmax(1) == target).sum())
                count += len(target)
    seconds = time.perf_counter() - start
    return {"valid_loss": sum(losses) / count, "accuracy": correct / count, "seconds_per_epoch": seconds / config.epochs}


def whole_runs(config, overrides):
    """Wall clock of `easyfit train vision` and of the twin's process, each from start to exit."""
    root = Path(__file__).resolve().parents[1]
    sets = [f"--set={o}" for o in overrides]
    results = {}
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "easyfit": [sys.executable, "-m", "recipes.cli", "train", "vision", "--data", config.data,
                        "--epochs", str(config.epochs), "--out", str(Path(out) / "run")] + sets,
            "torch": [sys.executable, __file__, "--framework", "torch", "--data", config.data,
                      "--epochs", str(config.epochs)] + sets,
        }
        for framework, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=root)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                print(f"{framework}: failed\n{done.stderr[-2000:]}")
                continue
            if framework == "easyfit":
                accuracy = float(re.search(r"final: .*accuracy ([0-9.]+)", done.stdout).group(1))
            else:
                accuracy = json.loads(done.stdout.strip().splitlines()[-1])["accuracy"]
            results[framework] = (seconds, accuracy)
            print(f"{framework:<8} whole run {seconds:7.1f} s  accuracy {accuracy:.4f}", flush=True)
    if len(results) == 2:
        print(f"easyfit / torch wall clock: {results['easyfit'][0] / results['torch'][0]:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["both", "easyfit", "torch"], default="both")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--whole-run", action="store_true",
                        help="time `easyfit train vision` and the twin's whole process, start to exit")
    args = parser.parse_args(argv)
    config = make_config(args.data, args.epochs, args.overrides)
    if args.whole_run:
        print(f"vision recipe, data {config.data}, arch {config.arch}, {config.epochs} epochs, bs {config.bs}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        whole_runs(config, args.overrides)
        return
    if args.framework != "both":
        result = (train_easyfit if args.framework == "easyfit" else train_torch)(config)
        print(json.dumps(result))
        return
    print(f"vision recipe, data {config.data}, arch {config.arch}, {config.epochs} epochs, bs {config.bs}")
    for framework in ("easyfit", "torch"):
        command = [sys.executable, __file__, "--framework", framework, "--data", config.data,
                   "--epochs", str(config.epochs)] + [f"--set={o}" for o in args.overrides]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{framework}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{framework:<8} valid_loss {r['valid_loss']:.4f}  accuracy {r['accuracy']:.4f}  "
              f"{r['seconds_per_epoch']:.2f} s/epoch")


if __name__ == "__main__":
    main()
