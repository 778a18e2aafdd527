"""The `easyfit` command line.

    easyfit recipes                          list the recipes and their default data
    easyfit train RECIPE [options]           train, log to TensorBoard, checkpoint, export
                                             (--nprocs N: data-parallel over N processes)
    easyfit lr-find RECIPE [options]         suggest learning rates
    easyfit predict RUN INPUTS...            classify images or texts with a trained run
    easyfit generate RUN --prompt TEXT       sample text from a trained char-RNN run
    easyfit info RUN                         the run's recipe, config, results and files
    easyfit export RUN OUT.onnx              the trained model as ONNX (runs in onnxruntime)

Each `train` writes a new run folder, easyfit-runs/RECIPE/run-001, run-002, ... (or --out);
a RUN argument is a run folder or easyfit-runs/RECIPE for the latest run (see recipes.runs).

Exit codes: 0 success, 1 failure while running, 2 bad usage or config, 3 data or run
folder not found. Errors are one line on stderr; set EASYFIT_DEBUG=1 for a traceback.
"""
import argparse
import os
import functools
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import easyfit

from . import available, get_recipe, runs
from .config import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
RUN_HELP = "a run folder, or a recipe's folder (easyfit-runs/RECIPE) for its latest run"


class UsageError(Exception):
    """A command line that cannot be run as given."""


def _at_least(minimum):
    """An argparse type: an int >= minimum (a bad value is a usage error, exit 2)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _add_config_options(parser):
    parser.add_argument("recipe", help="recipe name (see: easyfit recipes)")
    parser.add_argument("--data", help="a named dataset or a path to the data (default: the recipe's own)")
    parser.add_argument("--arch", help="model architecture (recipe-specific)")
    parser.add_argument("--epochs", type=_at_least(1), help="number of epochs")
    parser.add_argument("--bs", type=_at_least(1), help="batch size")
    parser.add_argument("--seed", type=int, help="random seed (data split, initialisation, shuffling)")
    parser.add_argument("--config", metavar="FILE", help="a .json or .toml file of config settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config setting (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: a new numbered run folder, "
                                                     "easyfit-runs/RECIPE/run-NNN)")


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (as every other easyfit error), pointing at --help."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser():
    # allow_abbrev=False everywhere: '--epoch 3' must be an error, not silently '--epochs 3'
    parser = _Parser(prog="easyfit", description="Train ready-made deep-learning recipes.",
                                     epilog="Exit codes: 0 ok, 1 failure, 2 bad usage/config, 3 not found.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"easyfit {easyfit.__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    verbs.add_parser("recipes", allow_abbrev=False, help="list the recipes and their default data")

    train = verbs.add_parser("train", allow_abbrev=False, help="train a recipe")
    _add_config_options(train)
    rate = train.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=float, help="maximum learning rate of the one-cycle schedule")
    rate.add_argument("--lr-find", action="store_true", help="pick the learning rate with the lr finder")
    train.add_argument("--logdir", metavar="DIR", help="TensorBoard log folder (default: OUT/tensorboard)")
    train.add_argument("--resume", metavar="RUN", help="continue the interrupted run in this output folder "
                                                       "(or from this checkpoint file inside it)")
    train.add_argument("--nprocs", type=int, default=1, metavar="N",
                       help="train data-parallel over N processes (runs mpiexec -n N itself; --bs is per process)")

    finder = verbs.add_parser("lr-find", allow_abbrev=False, help="suggest learning rates for a recipe")
    _add_config_options(finder)

    predict = verbs.add_parser("predict", allow_abbrev=False, help="predict with a trained run")
    predict.add_argument("out_dir", metavar="RUN", help=RUN_HELP)
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files or folders of images; texts or .csv files (per the recipe)")

    generate = verbs.add_parser("generate", allow_abbrev=False, help="generate text with a trained char-RNN run")
    generate.add_argument("out_dir", metavar="RUN", help=RUN_HELP)
    generate.add_argument("--prompt", default="", help="text to start from")
    generate.add_argument("--length", type=int, default=300, help="characters to generate")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (> 0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    generate.add_argument("--seed", type=int, default=None, help="random seed for sampling")

    info = verbs.add_parser("info", allow_abbrev=False, help="show a run's recipe, config, results and files")
    info.add_argument("out_dir", metavar="RUN", help=RUN_HELP)

    onnx = verbs.add_parser("export", allow_abbrev=False, help="export a trained run's model to ONNX (needs easyfit[onnx])")
    onnx.add_argument("out_dir", metavar="RUN", help=RUN_HELP)
    onnx.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the newest onnxruntime runs)")
    return parser


def _config_from_args(recipe, args):
    from .run import resolve_config
    arguments = {"data": args.data, "arch": args.arch, "epochs": args.epochs, "bs": args.bs, "seed": args.seed}
    if getattr(args, "lr", None) is not None:
        arguments["lr"] = args.lr
    return resolve_config(recipe, args.config, args.overrides, **arguments)


def _resume_folder(value):
    path = Path(value)
    if path.is_file() and path.parent.name == "models":
        return path.parent.parent
    return runs.resolve_run_dir(path)


def _resume_command(recipe_name, out_dir, nprocs=1):
    """The command that continues this run after an interruption, as the user would type it,
    or None while the run has no checkpoint to continue from yet."""
    from .run import RESUMABLE
    if not (Path(out_dir) / "models" / f"{RESUMABLE}.safetensors").is_file():
        return None
    return (f"easyfit train {recipe_name} --resume {shlex.quote(str(out_dir))}"
            + (f" --nprocs {nprocs}" if nprocs > 1 else ""))


def _refuse_changes_on_resume(args):
    """A resumed run continues the same call with its saved config; an option that would change
    it (--epochs 9) is an error, not silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name in ("data", "arch", "epochs", "bs", "seed", "config", "lr")
             if getattr(args, name, None) is not None]
    if args.overrides:
        given.append("--set")
    if getattr(args, "lr_find", False):
        given.append("--lr-find")
    if given:
        raise UsageError(f"--resume continues the run with the config it was started with; {', '.join(given)} "
                         "cannot change it (the schedule and data order depend on it). Resume without them, or "
                         "start a new run with --out")


# Set in the ranks that `easyfit train ... --nprocs N` starts (the command itself reports for them).
LAUNCHED_BY_NPROCS = "EASYFIT_LAUNCHED_BY_NPROCS"


def _mpiexec():
    """The mpiexec beside this Python (pip's mpich puts it there), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise UsageError("--nprocs needs MPI's mpiexec, which was not found; install the MPI extra: "
                         "pip install 'easyfit[mpi]' (or run: mpiexec -n N easyfit train ...)")
    return found


def _launcher():
    """mpiexec, after checking that the processes it starts will find mpi4py."""
    try:
        import mpi4py  # noqa: F401  (checked here: the children need it)
    except ImportError:
        raise UsageError("--nprocs needs mpi4py, which is not installed; install the MPI extra: "
                         "pip install 'easyfit[mpi]'") from None
    return _mpiexec()


def launch_processes(nprocs, argv):
    """Run this same command line in `nprocs` processes under mpiexec; returns their exit code.

    mpiexec runs in its own session, so a Ctrl-C reaches this process alone, which
    passes it on to mpiexec once (mpiexec hands it to every rank; a second Ctrl-C makes
    mpiexec end them at once), waits for the ranks to end, then raises KeyboardInterrupt
    as a run in one process would. SIGTERM and SIGHUP are passed on too, and the
    command still waits for the ranks and tidies the run folder.
    """
    command = [_launcher(), "-n", str(nprocs), sys.executable, "-m", "recipes.cli"] + list(argv)
    # the ranks leave telling the user what to do after an interruption to this command
    environment = dict(os.environ, **{LAUNCHED_BY_NPROCS: "1"})
    process = subprocess.Popen(command, start_new_session=True, env=environment)

    def forward(signum, frame):  # being in its own session, mpiexec no longer gets these with us
        if process.poll() is None:
            process.send_signal(signum)
    forwarded = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    interrupted = False
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                forward(signal.SIGINT, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if interrupted:
        raise KeyboardInterrupt
    return code


def _without_nprocs(argv):
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nprocs":
            skip = True
        elif not item.startswith("--nprocs="):
            out.append(item)
    return out


def _refuse_unless_data_parallel(recipe, nprocs):
    if nprocs > 1 and not getattr(recipe, "DATA_PARALLEL", True):
        raise UsageError(f"the {recipe.NAME} recipe cannot train on {nprocs} processes: its data loader cannot be "
                         "shared out between processes; train it in one process (without --nprocs or mpiexec)")


def _train_on_processes(args, argv):
    """`easyfit train ... --nprocs N`: check the command here, then run it under mpiexec.

    Everything a run in one process checks before training (recipe, config, --resume)
    is checked before any process starts. A new run's folder is claimed here and given
    to the ranks (--out), and once they end, successful or not, it is finished as a
    one-process run's is: marked `latest` if it holds a checkpoint or a model, removed
    if not; after a Ctrl-C the resume command is printed (by `main`).
    """
    from easyfit import distributed
    nprocs = args.nprocs
    if nprocs < 1:
        raise UsageError(f"--nprocs must be at least 1, got {nprocs}")
    if distributed.launched_by_mpi():
        raise UsageError("--nprocs starts mpiexec itself; under mpiexec leave it out "
                         "(mpiexec -n N easyfit train RECIPE)")
    forwarded = _without_nprocs(sys.argv[1:] if argv is None else argv)
    new_run = None
    if args.resume:
        out_dir = _resume_folder(args.resume)
        recipe, _ = _checked_resume(args, out_dir)
    else:
        recipe = get_recipe(args.recipe)
        _config_from_args(recipe, args)  # a bad setting is a usage error now, not in every rank later
        out_dir = Path(args.out) if args.out else None
    _refuse_unless_data_parallel(recipe, nprocs)
    _launcher()  # a missing mpi4py or mpiexec is reported before a run folder is made
    if out_dir is None:
        out_dir = new_run = runs.new_run_dir(recipe.NAME)
        forwarded = forwarded + ["--out", str(out_dir)]
    args.resume_command = functools.partial(_resume_command, recipe.NAME, out_dir, nprocs)
    try:
        return launch_processes(nprocs, forwarded)
    finally:
        if new_run is not None:
            runs.finish_run(new_run)


def _checked_resume(args, out_dir):
    """(recipe, config) of the run `--resume` names, after checking that it can be resumed as asked."""
    from . import run
    recipe, config = run.read_run(out_dir)
    if recipe.NAME != args.recipe:
        raise UsageError(f"--resume {args.resume}: that run is of recipe {recipe.NAME!r}, not {args.recipe!r}")
    if args.out and Path(args.out) != out_dir:
        raise UsageError("--out and --resume name different folders; a run resumes where it was written")
    _refuse_changes_on_resume(args)
    if run.is_finished(out_dir):
        raise UsageError(f"--resume {args.resume}: the run in {out_dir} has already finished (it has "
                         f"{run.RESULTS_FILE} and {run.MODEL_FILE}); nothing to resume. To train more, "
                         "start a new run with --out")
    return recipe, config


def _refused_under_mpiexec(recipe):
    """Under `mpiexec -n N easyfit train RECIPE` with a recipe that cannot train data-parallel:
    every rank finds it before any collective, rank 0 alone says so, and all exit with the
    usage code (no MPI_Abort needed: nobody waits for anybody)."""
    from easyfit import distributed
    if not distributed.launched_by_mpi() or distributed.init() == 1:
        return False
    try:
        _refuse_unless_data_parallel(recipe, distributed.world_size())
    except UsageError as error:
        if distributed.is_main():
            print(f"easyfit: error: {error}", file=sys.stderr)
        return True
    return False


def run_command(args, argv=None):
    from . import run
    if args.verb == "train" and args.nprocs != 1:
        return _train_on_processes(args, argv)
    if args.verb == "recipes":
        for name in available():
            recipe = get_recipe(name)
            print(f"{name:<10} {recipe.DESCRIPTION}\n{'':<10} default data: {recipe.DEFAULT_DATA}")
        return EXIT_OK
    if args.verb == "train":
        if args.resume:
            out_dir = _resume_folder(args.resume)
            recipe, config = _checked_resume(args, out_dir)
            args.resume_command = functools.partial(_resume_command, recipe.NAME, out_dir)
            if _refused_under_mpiexec(recipe):
                return EXIT_USAGE
            run.train(recipe, config, out_dir, logdir=args.logdir, resume=True)
            return EXIT_OK
        recipe = get_recipe(args.recipe)
        config = _config_from_args(recipe, args)
        if _refused_under_mpiexec(recipe):
            return EXIT_USAGE
        from easyfit import distributed
        if args.out:
            out_dir = Path(args.out)
            if run.is_finished(out_dir) and distributed.is_main():  # under mpiexec: said once
                print(f"easyfit: {out_dir} holds a finished run; training again replaces it", file=sys.stderr)
            args.resume_command = functools.partial(_resume_command, recipe.NAME, out_dir)
            run.train(recipe, config, out_dir, logdir=args.logdir, lr_find=args.lr_find)
            return EXIT_OK
        # Every run keeps its own folder; under mpiexec rank 0 claims it and tells the others.
        out_dir = runs.new_run_dir(recipe.NAME) if distributed.is_main() else None
        out_dir = Path(distributed.broadcast(None if out_dir is None else str(out_dir)))
        args.resume_command = functools.partial(_resume_command, recipe.NAME, out_dir)
        try:
            run.train(recipe, config, out_dir, logdir=args.logdir, lr_find=args.lr_find)
        finally:
            if distributed.is_main():
                runs.finish_run(out_dir)
        return EXIT_OK
    if args.verb == "lr-find":
        recipe = get_recipe(args.recipe)
        config = _config_from_args(recipe, args)
        run.find_lr(recipe, config, Path(args.out) if args.out else run.default_out_dir(recipe.NAME))
        return EXIT_OK
    if args.verb == "predict":
        recipe, config, learn = run.load_run(runs.resolve_run_dir(args.out_dir))
        for line in recipe.predict(learn, config, args.inputs):
            print(line)
        return EXIT_OK
    if args.verb == "generate":
        recipe, config, learn = run.load_run(runs.resolve_run_dir(args.out_dir))
        if not hasattr(recipe, "generate"):
            raise UsageError(f"the {recipe.NAME} recipe does not generate text; use: easyfit predict")
        if args.temperature <= 0:
            raise UsageError(f"--temperature must be > 0, got {args.temperature}")
        print(recipe.generate(learn, config, args.prompt, length=args.length, temperature=args.temperature,
                              top_k=args.top_k, seed=args.seed))
        return EXIT_OK
    if args.verb == "info":
        run.info(runs.resolve_run_dir(args.out_dir))
        return EXIT_OK
    if args.verb == "export":
        recipe, config, learn = run.load_run(runs.resolve_run_dir(args.out_dir))
        example = recipe.build_dataloaders(config).valid.one_batch()[0]   # an input batch of the run's data
        path = learn.export_onnx(Path(args.output).resolve(), example=example, opset_version=args.opset)
        print(f"wrote {path}")
        return EXIT_OK
    raise UsageError("no command given; try: easyfit --help")


def _report_interrupt(args):
    """After Ctrl-C: say how to resume, once. Under mpiexec rank 0 says it (after `finally` has
    tidied the run folder) and then ends every process as it exits; the other ranks wait for
    that. In the ranks that `--nprocs` started, the command that started them says it."""
    from easyfit import distributed
    processes = distributed.world_size() if distributed.is_initialized() else 1
    if processes > 1:
        if not distributed.is_main():
            distributed.wait_for_main_to_end()
        distributed.end_job_at_exit(EXIT_FAILURE)
        if os.environ.get(LAUNCHED_BY_NPROCS):
            return
    resume = getattr(args, "resume_command", None)
    command = resume() if resume is not None else None
    if command:
        if processes > 1:  # the user's own mpiexec: resume the same way
            command = f"mpiexec -n {processes} {command}"
        print(f"easyfit: interrupted (resume with: {command})", file=sys.stderr)
    elif resume is not None:
        print("easyfit: interrupted before the first checkpoint was written: nothing to resume; "
              "run the same command again", file=sys.stderr)
    else:
        print("easyfit: interrupted", file=sys.stderr)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return run_command(args, argv)
    except KeyboardInterrupt:
        _report_interrupt(args)
        return EXIT_FAILURE
    except Exception as error:  # one clear line, not a traceback, unless debugging
        if os.environ.get("EASYFIT_DEBUG"):
            raise
        code = EXIT_FAILURE
        if isinstance(error, (UsageError, ConfigError)):
            code = EXIT_USAGE
        elif isinstance(error, (FileNotFoundError, ImportError)):
            code = EXIT_NOT_FOUND
        from easyfit import distributed
        if distributed.is_initialized() and distributed.world_size() > 1:
            # the other processes may be waiting for this one: end them all
            distributed.abort(f"easyfit: error (rank {distributed.rank()}): {error}", code)
        print(f"easyfit: error: {error}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
