"""The `easyfit` command line.

    easyfit recipes                          list the recipes and their default data
    easyfit train RECIPE [options]           train, log to TensorBoard, checkpoint, export
    easyfit lr-find RECIPE [options]         suggest learning rates
    easyfit predict OUT_DIR INPUTS...        classify images or texts with a trained run
    easyfit generate OUT_DIR --prompt TEXT   sample text from a trained char-RNN run
    easyfit info OUT_DIR                     the run's recipe, config, results and files
    easyfit export OUT_DIR OUT.onnx          the trained model as ONNX (runs in onnxruntime)

Exit codes: 0 success, 1 failure while running, 2 bad usage or config, 3 data or run
folder not found. Errors are one line on stderr; set EASYFIT_DEBUG=1 for a traceback.
"""
import argparse
import os
import sys
from pathlib import Path

import easyfit

from . import available, get_recipe
from .config import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


class UsageError(Exception):
    """A command line that cannot be run as given."""


def _add_config_options(parser):
    parser.add_argument("recipe", help="recipe name (see: easyfit recipes)")
    parser.add_argument("--data", help="a named dataset or a path to the data (default: the recipe's own)")
    parser.add_argument("--arch", help="model architecture (recipe-specific)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--bs", type=int, help="batch size")
    parser.add_argument("--seed", type=int, help="random seed (data split, initialisation, shuffling)")
    parser.add_argument("--config", metavar="FILE", help="a .json or .toml file of config settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config setting (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: easyfit-runs/RECIPE)")


def build_parser():
    parser = argparse.ArgumentParser(prog="easyfit", description="Train ready-made deep-learning recipes.",
                                     epilog="Exit codes: 0 ok, 1 failure, 2 bad usage/config, 3 not found.")
    parser.add_argument("--version", action="version", version=f"easyfit {easyfit.__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    verbs.add_parser("recipes", help="list the recipes and their default data")

    train = verbs.add_parser("train", help="train a recipe")
    _add_config_options(train)
    rate = train.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=float, help="maximum learning rate of the one-cycle schedule")
    rate.add_argument("--lr-find", action="store_true", help="pick the learning rate with the lr finder")
    train.add_argument("--logdir", metavar="DIR", help="TensorBoard log folder (default: OUT/tensorboard)")
    train.add_argument("--resume", metavar="RUN", help="continue the interrupted run in this output folder "
                                                       "(or from this checkpoint file inside it)")

    finder = verbs.add_parser("lr-find", help="suggest learning rates for a recipe")
    _add_config_options(finder)

    predict = verbs.add_parser("predict", help="predict with a trained run")
    predict.add_argument("out_dir", metavar="OUT_DIR", help="the run's output folder")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or texts (per the recipe)")

    generate = verbs.add_parser("generate", help="generate text with a trained char-RNN run")
    generate.add_argument("out_dir", metavar="OUT_DIR")
    generate.add_argument("--prompt", default="", help="text to start from")
    generate.add_argument("--length", type=int, default=300, help="characters to generate")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (> 0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    generate.add_argument("--seed", type=int, default=None, help="random seed for sampling")

    info = verbs.add_parser("info", help="show a run's recipe, config, results and files")
    info.add_argument("out_dir", metavar="OUT_DIR")

    onnx = verbs.add_parser("export", help="export a trained run's model to ONNX (needs easyfit[onnx])")
    onnx.add_argument("out_dir", metavar="OUT_DIR", help="the run's output folder")
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
    return path


def run_command(args):
    from . import run
    if args.verb == "recipes":
        for name in available():
            recipe = get_recipe(name)
            print(f"{name:<10} {recipe.DESCRIPTION}\n{'':<10} default data: {recipe.DEFAULT_DATA}")
        return EXIT_OK
    if args.verb == "train":
        if args.resume:
            out_dir = _resume_folder(args.resume)
            recipe, config = run.read_run(out_dir)
            if recipe.NAME != args.recipe:
                raise UsageError(f"--resume {args.resume}: that run is of recipe {recipe.NAME!r}, not {args.recipe!r}")
            if args.out and Path(args.out) != out_dir:
                raise UsageError("--out and --resume name different folders; a run resumes where it was written")
            run.train(recipe, config, out_dir, logdir=args.logdir, resume=True)
            return EXIT_OK
        recipe = get_recipe(args.recipe)
        config = _config_from_args(recipe, args)
        out_dir = Path(args.out) if args.out else run.default_out_dir(recipe.NAME)
        run.train(recipe, config, out_dir, logdir=args.logdir, lr_find=args.lr_find)
        return EXIT_OK
    if args.verb == "lr-find":
        recipe = get_recipe(args.recipe)
        config = _config_from_args(recipe, args)
        run.find_lr(recipe, config, Path(args.out) if args.out else run.default_out_dir(recipe.NAME))
        return EXIT_OK
    if args.verb == "predict":
        recipe, config, learn = run.load_run(args.out_dir)
        for line in recipe.predict(learn, config, args.inputs):
            print(line)
        return EXIT_OK
    if args.verb == "generate":
        recipe, config, learn = run.load_run(args.out_dir)
        if not hasattr(recipe, "generate"):
            raise UsageError(f"the {recipe.NAME} recipe does not generate text; use: easyfit predict")
        if args.temperature <= 0:
            raise UsageError(f"--temperature must be > 0, got {args.temperature}")
        print(recipe.generate(learn, config, args.prompt, length=args.length, temperature=args.temperature,
                              top_k=args.top_k, seed=args.seed))
        return EXIT_OK
    if args.verb == "info":
        run.info(args.out_dir)
        return EXIT_OK
    if args.verb == "export":
        recipe, config, learn = run.load_run(args.out_dir)
        example = recipe.build_dataloaders(config).valid.one_batch()[0]   # an input batch of the run's data
        path = learn.export_onnx(Path(args.output).resolve(), example=example, opset_version=args.opset)
        print(f"wrote {path}")
        return EXIT_OK
    raise UsageError("no command given; try: easyfit --help")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("easyfit: interrupted (resume with: easyfit train RECIPE --resume OUT_DIR)", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # one clear line, not a traceback, unless debugging
        if os.environ.get("EASYFIT_DEBUG"):
            raise
        code = EXIT_FAILURE
        if isinstance(error, (UsageError, ConfigError)):
            code = EXIT_USAGE
        elif isinstance(error, (FileNotFoundError, ImportError)):
            code = EXIT_NOT_FOUND
        print(f"easyfit: error: {error}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
