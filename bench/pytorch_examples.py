"""PyTorch's own example programs, run on easyfit with only their import lines changed.

Takes a checkout of github.com/pytorch/examples (a work tree, or a bare git directory,
whose HEAD is read), and for each program below:

1. writes its files to a temporary folder with ONLY the import lines rewritten by
   `rewrite_imports` (the one thing this runner knows about easyfit: `import torch`
   becomes `import easyfit as torch`, `torch.X` modules become `easyfit.X`, torchvision
   becomes the harness adapter `bench/examples_torchvision`), and runs it on easyfit;
2. writes the files unchanged to another folder and runs them under PyTorch on the
   same data, arguments and seeds;
3. each run in its own process, with a time limit; prints a table: program, the import
   lines changed, easyfit's result, PyTorch's result, and whether they match.

Data is local: MNIST and VAE read Fashion-MNIST (Debian's dataset-fashion-mnist) placed
under MNIST's file names in `data/MNIST/raw/` (a subset, so a run takes seconds); the
word-level language model reads fortunes (Debian's `fortunes`) converted to the
train.txt/valid.txt/test.txt layout it expects. Nothing is downloaded.

The two frameworks draw different random numbers from the same seed (torch's generator is
not easyfit's), so initial weights, dropout masks and shuffles differ: "match" compares
the final figures with a tolerance stated per program (`MATCH_RULES`, printed with the
table). Where the data are identical in both runs (the sine waves, the word LM's corpus)
the first loss, seen before any update, is compared too: it checks that the default
initialisations have the same scale.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python bench/pytorch_examples.py /work/.mirror/pytorch+examples/repo
    python bench/pytorch_examples.py PATH --only regression vae --keep /tmp/runs
"""
import argparse
import gzip
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
TORCHVISION_ADAPTER = "examples_torchvision"

# ------------------------------------------------------------------------------------
# the rewrite table: import lines only
# ------------------------------------------------------------------------------------
_IMPORT = re.compile(r"^(?P<indent>\s*)import\s+(?P<module>[\w.]+)(?:\s+as\s+(?P<alias>\w+))?\s*(?P<comment>#.*)?$")
_FROM = re.compile(r"^(?P<indent>\s*)from\s+(?P<module>[\w.]+)\s+import\s+(?P<names>.+)$")


def _easyfit_module(module):
    """The module that replaces `module` on easyfit, or None when the line is not PyTorch's."""
    head, _, tail = module.partition(".")
    if head == "torch":
        return "easyfit" + ("." + tail if tail else "")
    if head == "torchvision":
        return TORCHVISION_ADAPTER + ("." + tail if tail else "")
    return None


def rewrite_imports(source, drop=()):
    """`(new source, [(line number, old line, new line), ...])`: only import statements change.

    `import torch` -> `import easyfit as torch` (the program keeps calling it `torch`);
    `import torch.X [as Y]` -> `import easyfit.X [as Y]`; `from torch.X import ...` ->
    `from easyfit.X import ...`; torchvision likewise -> the harness adapter package.
    `drop` names modules (as the program spells them, e.g. 'torch.onnx') whose plain
    `import` lines become comments: for measuring a program whose optional module is not
    in this easyfit yet; the runner prints such lines with the others.
    """
    lines = source.splitlines(keepends=True)
    changes = []
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        ending = line[len(text):]
        new = None
        match = _IMPORT.match(text)
        if match and match["module"] in drop:
            new = f"{match['indent']}pass  # dropped by the runner (--drop-import): {text.strip()}"
        elif match and _easyfit_module(match["module"]):
            module, alias = match["module"], match["alias"]
            replacement = _easyfit_module(module)
            if alias:
                new = f"{match['indent']}import {replacement} as {alias}"
            elif "." not in module and module == "torch":
                new = f"{match['indent']}import {replacement} as torch"
            else:
                new = f"{match['indent']}import {replacement}"
            if match["comment"]:
                new += "  " + match["comment"]
        else:
            match = _FROM.match(text)
            if match and _easyfit_module(match["module"]):
                new = f"{match['indent']}from {_easyfit_module(match['module'])} import {match['names']}"
        if new is not None and new != text:
            lines[number - 1] = new + ending
            changes.append((number, text.strip(), new.strip()))
    return "".join(lines), changes


# ------------------------------------------------------------------------------------
# reading the examples checkout
# ------------------------------------------------------------------------------------
class Checkout:
    """Files of a pytorch/examples checkout: a work tree or a bare git directory (its HEAD)."""

    def __init__(self, path):
        self.path = Path(path)
        self.bare = not (self.path / "mnist").is_dir() and (self.path / "HEAD").is_file()
        if not self.bare and not (self.path / "mnist").is_dir():
            raise SystemExit(f"{self.path} is neither a pytorch/examples work tree nor a bare git directory")

    def read(self, relative):
        if self.bare:
            return subprocess.run(["git", "-C", str(self.path), "show", f"HEAD:{relative}"], check=True,
                                  capture_output=True, text=True).stdout
        return (self.path / relative).read_text(encoding="utf-8")

    def revision(self):
        git_dir = ["git", "-C", str(self.path)]
        result = subprocess.run(git_dir + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return result.stdout.strip() or "unknown"


# ------------------------------------------------------------------------------------
# local data
# ------------------------------------------------------------------------------------
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")
MNIST_TRAIN_IMAGES = 3000
MNIST_TEST_IMAGES = 1000
FORTUNE_CATEGORY = "computers"


def _write_idx(path, array):
    """An IDX file (uint8 data) as MNIST's raw files are laid out."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def prepare_mnist(folder):
    """`folder/MNIST/raw/`: the first images of Fashion-MNIST under MNIST's raw file names."""
    from easyfit.data import datasets
    (train_x, train_y), (test_x, test_y) = datasets.fashion_mnist(path=FASHION_MNIST, download=False)
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _write_idx(raw / "train-images-idx3-ubyte", train_x[:MNIST_TRAIN_IMAGES])
    _write_idx(raw / "train-labels-idx1-ubyte", train_y[:MNIST_TRAIN_IMAGES].astype(np.uint8))
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x[:MNIST_TEST_IMAGES])
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y[:MNIST_TEST_IMAGES].astype(np.uint8))
    return f"Fashion-MNIST, first {MNIST_TRAIN_IMAGES} train / {MNIST_TEST_IMAGES} test images"


def prepare_fortunes(folder):
    """`folder/{train,valid,test}.txt`: one fortune a line, lower-cased, punctuation split off.

    Fortune i goes to valid when i % 10 == 8, to test when i % 10 == 9, else to train.
    """
    from easyfit.data import datasets
    texts = datasets.fortune_corpus(FORTUNES, categories=[FORTUNE_CATEGORY])
    token = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")
    splits = {"train": [], "valid": [], "test": []}
    for i, text in enumerate(texts):
        line = " ".join(token.findall(text.lower()))
        splits["valid" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(line)
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in splits.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    words = sum(len(line.split()) + 1 for line in splits["train"])
    return f"fortunes '{FORTUNE_CATEGORY}' ({len(texts)} fortunes, {words} training tokens)"


# ------------------------------------------------------------------------------------
# the programs: files, arguments, what they print
# ------------------------------------------------------------------------------------
def _last_float(pattern, text):
    found = re.findall(pattern, text)
    return float(found[-1]) if found else None


def _first_float(pattern, text):
    found = re.findall(pattern, text)
    return float(found[0]) if found else None


@dataclass
class Program:
    name: str
    folder: str                      # in the examples checkout
    files: list                      # copied (and, for easyfit, rewritten)
    commands: list                   # argument lists, run in order in the program's folder
    data: str = None                 # "mnist" | "fortunes" | None
    extra_dirs: list = field(default_factory=list)
    parse: callable = None           # output -> {figure: value}
    match_rule: str = ""             # what "match" means, in words
    match: callable = None           # (easyfit figures, torch figures) -> bool
    torch_env: dict = field(default_factory=dict)  # environment the original needs under today's PyTorch


def _parse_mnist(text):
    result = re.findall(r"Test set: Average loss: ([\d.]+), Accuracy: (\d+)/(\d+)", text)
    if not result:
        return {}
    loss, correct, total = result[-1]
    return {"test loss": float(loss), "accuracy %": 100.0 * int(correct) / int(total),
            "first train loss": _first_float(r"Loss: ([\d.]+)", text)}


def _parse_regression(text):
    found = re.search(r"Loss: ([\d.]+) after (\d+) batches", text)
    learned = re.search(r"Learned function:\s*(.*)", text)
    actual = re.search(r"Actual function:\s*(.*)", text)
    if not (found and learned and actual):
        return {}
    coefficients = [[float(c) for c in re.findall(r"[+-]\d+\.\d+", line[1])] for line in (learned, actual)]
    return {"loss": float(found[1]), "batches": int(found[2]),
            "max |learned - actual|": max(abs(a - b) for a, b in zip(*coefficients))}


def _parse_sine(text):
    losses = re.findall(r"^loss: ([\d.eE+-]+)", text, flags=re.M)
    tests = re.findall(r"^test loss: ([\d.eE+-]+)", text, flags=re.M)
    if not tests:
        return {}
    return {"first loss": float(losses[0]), "last train loss": float(losses[-1]),
            "test loss": float(tests[-1]), "closure calls": len(losses)}


def _parse_vae(text):
    train = _last_float(r"Epoch: \d+ Average loss: ([\d.]+)", text)
    test = _last_float(r"Test set loss: ([\d.]+)", text)
    if train is None or test is None:
        return {}
    return {"first batch loss": _first_float(r"Loss: ([\d.]+)", text), "train loss": train, "test loss": test}


def _parse_word_lm(text):
    test = re.search(r"End of training \| test loss\s+([\d.]+) \| test ppl\s+([\d.]+)", text)
    valid = _last_float(r"valid loss\s+([\d.]+)", text)
    if not test:
        return {}
    return {"first logged loss": _first_float(r"\| loss\s+([\d.]+) \|", text), "valid loss": valid, "test loss": float(test[1]), "test ppl": float(test[2])}


def _within(a, b, relative):
    return a is not None and b is not None and abs(a - b) <= relative * max(abs(a), abs(b))


PROGRAMS = [
    Program(
        "mnist", "mnist", ["main.py"],
        [["main.py", "--epochs", "1", "--batch-size", "64", "--test-batch-size", "1000", "--log-interval", "20",
          "--no-accel"]],
        data="mnist", parse=_parse_mnist,
        match_rule="1 epoch; test accuracy within 3 points and test loss within 15%",
        match=lambda e, t: abs(e["accuracy %"] - t["accuracy %"]) <= 3 and _within(e["test loss"], t["test loss"], 0.15)),
    Program(
        "regression", "regression", ["main.py"], [["main.py"]],
        parse=_parse_regression,
        match_rule="both reach the program's own stop (smooth L1 < 1e-3 on a batch) and learn their target "
                   "polynomial's coefficients to 0.25 (that stop leaves them ~0.1 off; the targets are random "
                   "draws, so they differ between frameworks, and the number of batches is not compared)",
        match=lambda e, t: all(r["loss"] < 1e-3 and r["max |learned - actual|"] <= 0.25 for r in (e, t))),
    Program(
        "time_sequence_prediction", "time_sequence_prediction", ["generate_sine_wave.py", "train.py"],
        [["generate_sine_wave.py"], ["train.py", "--steps", "1"]],
        parse=_parse_sine,
        # generate_sine_wave.py pickles a NumPy array with torch.save; PyTorch >= 2.6 refuses to torch.load it
        # by default (weights_only=True), so the original program fails there without this switch.
        torch_env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
        match_rule="same NumPy-made sine waves; 1 LBFGS step (up to 20 closure calls) in float64: first loss "
                   "within 10% (init scale), final train and test loss within a factor of 3 of each other",
        match=lambda e, t: (_within(e["first loss"], t["first loss"], 0.10)
                            and max(e["last train loss"], t["last train loss"])
                            <= 3 * min(e["last train loss"], t["last train loss"])
                            and max(e["test loss"], t["test loss"]) <= 3 * min(e["test loss"], t["test loss"]))),
    Program(
        "vae", "vae", ["main.py"],
        [["main.py", "--epochs", "1", "--log-interval", "20", "--no-accel"]],
        data="mnist", extra_dirs=["results"], parse=_parse_vae,
        match_rule="1 epoch; first batch loss within 2% (init scale), train and test loss within 5%",
        match=lambda e, t: (_within(e["first batch loss"], t["first batch loss"], 0.02)
                            and _within(e["train loss"], t["train loss"], 0.05)
                            and _within(e["test loss"], t["test loss"], 0.05))),
]
_WORD_LM_FILES = ["main.py", "data.py", "model.py"]
_WORD_LM_ARGS = ["--data", "../data/fortunes", "--epochs", "2", "--emsize", "64", "--nhid", "64", "--bptt", "35",
                 "--batch_size", "20", "--log-interval", "20", "--save", "model.pt"]
_WORD_LM_RULE = "same corpus; 2 epochs; valid and test loss within 3% (so perplexity within about 3% x loss)"


def _word_lm_match(e, t):
    return _within(e["valid loss"], t["valid loss"], 0.03) and _within(e["test loss"], t["test loss"], 0.03)


PROGRAMS += [
    Program("word_language_model (LSTM, tied)", "word_language_model", _WORD_LM_FILES,
            [["main.py", *_WORD_LM_ARGS, "--model", "LSTM", "--tied"]],
            data="fortunes", parse=_parse_word_lm, match_rule=_WORD_LM_RULE, match=_word_lm_match),
    Program("word_language_model (Transformer)", "word_language_model", _WORD_LM_FILES,
            [["main.py", *_WORD_LM_ARGS, "--model", "Transformer", "--nhead", "2", "--lr", "5"]],
            data="fortunes", parse=_parse_word_lm, match_rule=_WORD_LM_RULE, match=_word_lm_match),
]


# ------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------
def torchvision_importable():
    """Whether `import torchvision` works beside the installed torch (PyPI's wheel is a CUDA build)."""
    result = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if result.returncode == 0:
        return True, ""
    last = (result.stderr.strip().splitlines() or ["?"])[-1]
    return False, last


def _environment(framework, adapter_for_torch, threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    path = [str(BENCH)]
    if framework == "easyfit":
        path.insert(0, str(REPO_ROOT))
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["MPLBACKEND"] = "Agg"
    if framework == "torch" and adapter_for_torch:
        env["EXAMPLES_TORCHVISION_FRAMEWORK"] = "torch"
    return env


@dataclass
class Run:
    ok: bool
    seconds: float
    figures: dict
    error: str
    log: Path


def _program_sources(checkout, program, framework, torchvision_ok, drop):
    """{file name: text} for one framework, and the import lines changed (easyfit's, or torch's adapter)."""
    sources, changes = {}, []
    for name in program.files:
        text = checkout.read(f"{program.folder}/{name}")
        if framework == "easyfit":
            text, changed = rewrite_imports(text, drop)
            changes += [(name, *c) for c in changed]
        elif not torchvision_ok and "torchvision" in text:
            lines = text.splitlines(keepends=True)
            for number, line in enumerate(lines, start=1):
                if re.match(r"\s*(from|import)\s+torchvision\b", line):
                    new = line.replace("torchvision", TORCHVISION_ADAPTER, 1)
                    changes.append((name, number, line.strip(), new.strip()))
                    lines[number - 1] = new
            text = "".join(lines)
        sources[name] = text
    return sources, changes


def _error_of(output):
    """The last exception line of a failed run's output (with the frame that raised it)."""
    lines = [line for line in output.splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", lines[index]) or lines[index].startswith("Traceback"):
            where = [line.strip() for line in lines[:index] if line.strip().startswith("File ")]
            return (where[-1] + ": " if where else "") + lines[index]
    return lines[-1] if lines else "no output"


def run_program(checkout, program, framework, work, timeout, torchvision_ok, threads, drop=()):
    folder = work / framework / program.name.split(" ")[0]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sources, changes = _program_sources(checkout, program, framework, torchvision_ok, drop)
    for name, text in sources.items():
        (folder / name).write_text(text, encoding="utf-8")
    for extra in program.extra_dirs:
        (folder / extra).mkdir()
    data_link = work / framework / "data"
    if not data_link.exists():
        data_link.symlink_to(work / "data")
    log = work / f"{framework}-{program.name.replace(' ', '_').replace('(', '').replace(')', '').replace(',', '')}.log"
    env = _environment(framework, not torchvision_ok, threads)
    if framework == "torch":
        env.update(program.torch_env)
    output, start, ok = "", time.perf_counter(), True
    for command in program.commands:
        try:
            result = subprocess.run([sys.executable, *command], cwd=folder, env=env, capture_output=True, text=True,
                                    timeout=timeout)
            output += f"$ python {' '.join(command)}\n{result.stdout}{result.stderr}"
            if result.returncode != 0:
                ok = False
                break
        except subprocess.TimeoutExpired as expired:
            partial = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            output += f"$ python {' '.join(command)}\n{partial}\nTimeoutExpired: more than {timeout} s\n"
            ok = False
            break
    seconds = time.perf_counter() - start
    log.write_text(output, encoding="utf-8")
    figures = program.parse(output) if ok else {}
    if ok and not figures:
        ok = False
    return Run(ok, seconds, figures, "" if ok else _error_of(output), log), changes


def _format_figures(figures):
    parts = []
    for key, value in figures.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
        else:
            text = str(value)
        parts.append(f"{key} {text}")
    return ", ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples", help="a pytorch/examples checkout or bare git directory")
    parser.add_argument("--only", nargs="*", help="program names (prefixes) to run")
    parser.add_argument("--frameworks", nargs="*", default=["easyfit", "torch"], choices=["easyfit", "torch"])
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for each program run")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads for every run, the same for both frameworks (default 1: on a "
                             "shared machine, spinning BLAS threads make small matrix products 50x slower)")
    parser.add_argument("--drop-import", nargs="*", default=[], metavar="MODULE",
                        help="turn `import MODULE` lines into comments in the easyfit run (e.g. torch.onnx while "
                             "easyfit.onnx is not merged); reported with the changed lines")
    parser.add_argument("--keep", help="folder for the rewritten programs, data and logs (default: a temporary one)")
    args = parser.parse_args(argv)

    checkout = Checkout(args.examples)
    programs = [p for p in PROGRAMS if not args.only or any(p.name.startswith(o) for o in args.only)]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pytorch-examples-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"pytorch/examples at {checkout.revision()}; work folder {work}")
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    print(f"CPU: {cpu.split(':', 1)[-1].strip() or platform.processor()}, {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}; {args.threads} BLAS/OpenMP thread(s) per run")
    torchvision_ok, why = torchvision_importable() if "torch" in args.frameworks else (True, "")
    if not torchvision_ok:
        print(f"torchvision cannot be imported here ({why}); the PyTorch runs of mnist and vae use the harness "
              f"adapter {TORCHVISION_ADAPTER} with PyTorch tensors (their torchvision import lines are shown)")
    needs = {p.data for p in programs}
    if "mnist" in needs:
        print("data:", prepare_mnist(work / "data"))
    if "fortunes" in needs:
        print("data:", prepare_fortunes(work / "data" / "fortunes"))

    rows = []
    for program in programs:
        runs, changes = {}, {}
        for framework in args.frameworks:
            runs[framework], changes[framework] = run_program(checkout, program, framework, work, args.timeout,
                                                              torchvision_ok, args.threads, args.drop_import)
            state = f"{runs[framework].seconds:.1f} s" if runs[framework].ok else "FAILED"
            print(f"  {program.name:<36} {framework:<8} {state}  ({runs[framework].log.name})", flush=True)
        rows.append((program, runs, changes))

    print("\nImport lines changed for easyfit (nothing else in the programs is touched):")
    for program, runs, changes in rows:
        for name, value in program.torch_env.items():
            print(f"  {program.folder}: the PyTorch run sets {name}={value}")
        if program.name.startswith("word_language_model (T"):
            continue  # same files as the LSTM run
        print(f"  {program.folder}: {len(changes.get('easyfit', []))} lines")
        for name, number, old, new in changes.get("easyfit", []):
            print(f"    {name}:{number}: {old:<45} -> {new}")
        for name, number, old, new in changes.get("torch", []):
            print(f"    (PyTorch run) {name}:{number}: {old} -> {new}")

    print("\n| program | lines changed | easyfit | PyTorch | match |")
    print("|---|---|---|---|---|")
    for program, runs, changes in rows:
        cells = []
        for framework in ("easyfit", "torch"):
            run = runs.get(framework)
            if run is None:
                cells.append("not run")
            elif run.ok:
                cells.append(f"{_format_figures(run.figures)} ({run.seconds:.0f} s)")
            else:
                cells.append(f"FAILED: {run.error}")
        both = all(framework in runs and runs[framework].ok for framework in ("easyfit", "torch"))
        verdict = ("yes" if program.match(runs["easyfit"].figures, runs["torch"].figures) else "NO") if both else "-"
        lines = len(changes.get("easyfit", []))
        print(f"| {program.name} | {lines} | {cells[0]} | {cells[1]} | {verdict} |")
    print("\nWhat \"match\" means:")
    for program, _, _ in rows:
        print(f"  {program.name}: {program.match_rule}")
    failed = [p.name for p, runs, _ in rows if not all(r.ok for r in runs.values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
