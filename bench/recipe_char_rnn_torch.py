"""The char-RNN recipe against its PyTorch twin: same data, split, model, schedule and clipping.

The twin trains a torch.nn model of the recipe's architecture (Embedding -> LSTM/GRU ->
Dropout -> Linear) on exactly the recipe's batches (`recipes.char_rnn.build_dataloaders`
is pure NumPy: the twin reads the same epoch matrices and BPTT windows), carries the
hidden state across windows the same way (detached, reset each epoch and for
validation), clips the gradient norm, and follows the same one-cycle learning-rate and
momentum (Adam's beta1) schedule per batch through easyfit's pure schedule functions.
By default the twin also starts from the recipe's initial weights (easyfit's state dict
has PyTorch's parameter names and shapes), so only dropout masks and floating-point
rounding differ; `--independent-init` lets PyTorch initialise its own.

    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python bench/recipe_char_rnn_torch.py [--framework both|easyfit|torch] [--epochs N] \\
        [--set key=value ...] [--independent-init] [--json results.json]

Prints each framework's final validation loss, accuracy, perplexity and seconds per
epoch (training + validation; easyfit without TensorBoard or checkpoints, as the twin).
"""
import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_twin, also when loaded by path

import numpy as np  # noqa: E402

from easyfit.optim.schedule import one_cycle_lr, one_cycle_mom  # noqa: E402
from recipes import char_rnn  # noqa: E402
from recipes.config import resolve  # noqa: E402
from torch_twin import optimizer_step, set_one_cycle  # noqa: E402


def make_config(epochs=None, overrides=()):
    return resolve(char_rnn.Config, {}, overrides, epochs=epochs)


def easyfit_initial_state(config):
    """The recipe model's initial weights (as NumPy arrays) for `config`'s seed: what train_easyfit starts from."""
    import easyfit
    easyfit.manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        model = char_rnn.build_learner(config, out_dir).model
    return {key: value.numpy().copy() for key, value in model.state_dict().items()}


def train_easyfit(config, log=print):
    """Train the recipe's Learner (as `easyfit train char-rnn` does, minus TensorBoard and checkpoints)."""
    import easyfit
    easyfit.manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        learn = char_rnn.build_learner(config, out_dir)
        learn.remove_cb(learn.progress)
        start = time.perf_counter()
        learn.fit_one_cycle(config.epochs, lr_max=config.lr)
        seconds = time.perf_counter() - start
        valid_loss, acc, ppl = learn.validate()
    result = {"framework": "easyfit", "valid_loss": valid_loss, "accuracy": acc, "perplexity": ppl,
              "seconds_per_epoch": seconds / config.epochs,
              "train_losses": [float(v) for v in learn.recorder.losses[-3:]]}
    log(_line(result))
    return result


def torch_model(config, vocab_size):
    import torch
    from torch import nn

    class TorchCharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(vocab_size, config.emb_size)
            rnn_class = nn.LSTM if config.arch == "lstm" else nn.GRU
            self.rnn = rnn_class(config.emb_size, config.hidden_size, config.num_layers, batch_first=True,
                                 dropout=config.dropout if config.num_layers > 1 else 0.0)
            self.output_dropout = nn.Dropout(config.dropout)
            self.decoder = nn.Linear(config.hidden_size, vocab_size)
            self.hidden_state = None

        def forward(self, x):
            state = self.hidden_state
            if state is not None and (state[0] if isinstance(state, tuple) else state).shape[1] != x.shape[0]:
                state = None
            out, state = self.rnn(self.encoder(x), state)
            self.hidden_state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            return self.decoder(self.output_dropout(out))

    if config.arch not in char_rnn.ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose one of: {', '.join(char_rnn.ARCHS)}")
    torch.manual_seed(config.seed)
    return TorchCharRNN()


def _windows(loader, epoch):
    """The (inputs, targets) int64 arrays of every batch of `loader` in epoch `epoch`."""
    inputs, targets = loader.stream_matrices(epoch)
    for start, stop in loader.batches_for_epoch(epoch):
        yield inputs[:, start:stop], targets[:, start:stop]


def _validate_torch(model, loader):
    import torch
    model.eval()
    model.hidden_state = None
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in _windows(loader, 0):
            scores = model(torch.from_numpy(np.ascontiguousarray(x)))
            target = torch.from_numpy(np.ascontiguousarray(y))
            loss = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]), target.reshape(-1))
            total_loss += float(loss) * target.numel()
            correct += int((scores.argmax(-1) == target).sum())
            count += target.numel()
    model.hidden_state = None
    return total_loss / count, correct / count


def train_torch(config, initial_state=None, log=print):
    """Train the PyTorch twin on the recipe's own batches; returns the same result dict as train_easyfit.

    `initial_state` (from `easyfit_initial_state`) gives the starting weights; None: PyTorch's own init.
    """
    import torch
    dls = char_rnn.build_dataloaders(config)
    model = torch_model(config, len(dls.vocab))
    if initial_state is not None:
        model.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in initial_state.items()})
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.wd)
    lr_schedule, mom_schedule = one_cycle_lr(config.lr), one_cycle_mom()
    total = config.epochs * len(dls.train)
    step, losses = 0, []
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        model.hidden_state = None
        for x, y in _windows(dls.train, epoch):
            set_one_cycle(optimizer, lr_schedule, mom_schedule, step / total)
            scores = model(torch.from_numpy(np.ascontiguousarray(x)))
            target = torch.from_numpy(np.ascontiguousarray(y))
            loss = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]), target.reshape(-1))
            optimizer_step(torch, model, optimizer, loss, config.clip)
            losses.append(float(loss.detach()))
            step += 1
        valid_loss, acc = _validate_torch(model, dls.valid)
    seconds = time.perf_counter() - start
    result = {"framework": "torch", "valid_loss": valid_loss, "accuracy": acc, "perplexity": math.exp(valid_loss),
              "seconds_per_epoch": seconds / config.epochs, "train_losses": losses[-3:]}
    log(_line(result))
    return result


def _line(result):
    return (f"{result['framework']:>8}: valid_loss {result['valid_loss']:.4f}  accuracy {result['accuracy']:.4f}  "
            f"perplexity {result['perplexity']:.3f}  {result['seconds_per_epoch']:.1f} s/epoch")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("both", "easyfit", "torch"), default="both")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--independent-init", action="store_true",
                        help="let PyTorch initialise its own weights (default: start from the recipe's)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    config = make_config(args.epochs, args.overrides)
    print(f"config: {config}")
    results = []
    if args.framework in ("both", "easyfit"):
        results.append(train_easyfit(config))
    if args.framework in ("both", "torch"):
        initial_state = None if args.independent_init else easyfit_initial_state(config)
        results.append(train_torch(config, initial_state))
    if len(results) == 2:
        ours, theirs = results
        print(f"easyfit/torch: valid_loss {ours['valid_loss'] / theirs['valid_loss'] - 1:+.2%}, accuracy "
              f"{100 * (ours['accuracy'] - theirs['accuracy']):+.2f} points, time per epoch "
              f"{ours['seconds_per_epoch'] / theirs['seconds_per_epoch']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(config), "shared_init": not args.independent_init,
                                               "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
