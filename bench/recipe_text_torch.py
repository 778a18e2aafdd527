"""The text recipe's PyTorch twin: the same model, data split, batches and schedule in PyTorch.

It trains what `easyfit train text` trains, so the two can be compared on accuracy and
time per epoch:

- data: the recipe's own `build_dataloaders(config)` (easyfit.data: same tokenizer,
  vocab, split, and the same batches in the same order every epoch);
- model: the same architecture written with torch.nn, with the same parameter names,
  starting from the easyfit model's initial weights (built after
  `easyfit.manual_seed(config.seed)`, as `easyfit train` does), or from PyTorch's own
  initialisation with `--init torch`;
- schedule: easyfit's pure one-cycle functions (`one_cycle_lr`, `one_cycle_mom`) set
  lr and Adam's beta1 before every batch at progress batch/total, as the Learner does;
  gradient-norm clipping and Adam's L2 weight decay as configured.

Dropout masks are the only random draws the two do not share.

    python bench/recipe_text_torch.py                       # the recipe's defaults (fortunes, lstm)
    python bench/recipe_text_torch.py --arch transformer --epochs 3 --set layers=2
    python bench/recipe_text_torch.py --both                # easyfit then PyTorch, one table

Prints one JSON line per framework: final valid loss, accuracy and seconds per epoch.
Run benchmarks under the shared lock:
    flock /tmp/easyfit-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/recipe_text_torch.py --both
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_twin, also when loaded by path

import easyfit  # noqa: E402
from easyfit.optim.schedule import one_cycle_lr, one_cycle_mom  # noqa: E402
from recipes import text as recipe  # noqa: E402
from recipes.config import resolve  # noqa: E402
from torch_twin import optimizer_step, set_one_cycle  # noqa: E402

MOMS = (0.95, 0.85, 0.95)   # fit_one_cycle's defaults (div=25, div_final=1e5, pct_start=0.25)


def torch_models(torch):
    """The recipe's two architectures in torch.nn, parameter names equal to easyfit's."""
    nn = torch.nn

    def padding_mask(tokens, pad_idx):
        real = tokens != pad_idx
        return real.unsqueeze(2).float(), real.sum(1)

    def reverse_within_lengths(x, lengths):
        steps = torch.arange(x.shape[1])[None, :]
        lengths = lengths[:, None]
        index = torch.where(steps < lengths, lengths - 1 - steps, steps)
        return x[torch.arange(x.shape[0])[:, None], index]

    def masked_mean_max(states, mask, lengths):
        mean = (states * mask).sum(1) / lengths.clamp(min=1).to(states.dtype)[:, None]
        maximum = torch.where(mask > 0, states, torch.tensor(-1e9, dtype=states.dtype)).amax(1)
        return torch.cat([mean, maximum], 1)

    class RNNClassifier(nn.Module):
        def __init__(self, vocab_size, n_classes, cell="lstm", emb_dim=128, hidden=128, layers=1, dropout=0.3,
                     pad_idx=1):
            super().__init__()
            self.pad_idx = pad_idx
            rnn = nn.LSTM if cell == "lstm" else nn.GRU
            self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
            sizes = [emb_dim] + [2 * hidden] * (layers - 1)
            self.forward_rnns = nn.ModuleList([rnn(size, hidden, batch_first=True) for size in sizes])
            self.backward_rnns = nn.ModuleList([rnn(size, hidden, batch_first=True) for size in sizes])
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(4 * hidden, n_classes)

        def forward(self, tokens):
            mask, lengths = padding_mask(tokens, self.pad_idx)
            x = self.drop(self.embedding(tokens))
            for layer, (forward_rnn, backward_rnn) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
                if layer:
                    x = self.drop(x)
                ahead, _ = forward_rnn(x)
                back, _ = backward_rnn(reverse_within_lengths(x, lengths))
                x = torch.cat([ahead, reverse_within_lengths(back, lengths)], 2)
            return self.head(self.drop(masked_mean_max(x, mask, lengths)))

    class TransformerBlock(nn.Module):
        def __init__(self, dim, heads, ff_dim, dropout=0.1):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.norm2 = nn.LayerNorm(dim)
            self.feed_forward = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout),
                                              nn.Linear(ff_dim, dim))
            self.drop = nn.Dropout(dropout)

        def forward(self, x, padding):
            normed = self.norm1(x)
            attended, _ = self.attention(normed, normed, normed, key_padding_mask=padding, need_weights=False)
            x = x + self.drop(attended)
            return x + self.drop(self.feed_forward(self.norm2(x)))

    class TransformerClassifier(nn.Module):
        def __init__(self, vocab_size, n_classes, dim=128, heads=4, ff_dim=256, layers=2, max_len=128,
                     dropout=0.1, pad_idx=1):
            super().__init__()
            self.max_len, self.pad_idx = max_len, pad_idx
            self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_idx)
            self.positions = nn.Embedding(max_len, dim)
            self.blocks = nn.ModuleList([TransformerBlock(dim, heads, ff_dim, dropout) for _ in range(layers)])
            self.norm = nn.LayerNorm(dim)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(dim, n_classes)

        def forward(self, tokens):
            tokens = tokens[:, :self.max_len]
            mask, lengths = padding_mask(tokens, self.pad_idx)
            padding = tokens == self.pad_idx
            x = self.drop(self.embedding(tokens) + self.positions(torch.arange(tokens.shape[1])[None, :]))
            for block in self.blocks:
                x = block(x, padding)
            x = self.norm(x)
            pooled = (x * mask).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]
            return self.head(self.drop(pooled))

    return RNNClassifier, TransformerClassifier


def build_torch_model(torch, config, vocab_size, n_classes, pad_idx):
    RNNClassifier, TransformerClassifier = torch_models(torch)
    if config.arch in ("lstm", "gru"):
        return RNNClassifier(vocab_size, n_classes, cell=config.arch, emb_dim=config.emb_dim, hidden=config.hidden,
                             layers=config.layers, dropout=config.dropout, pad_idx=pad_idx)
    return TransformerClassifier(vocab_size, n_classes, dim=config.hidden, heads=config.heads, ff_dim=config.ff_dim,
                                 layers=config.layers, max_len=config.max_len, dropout=config.dropout,
                                 pad_idx=pad_idx)


def load_easyfit_weights(torch, torch_model, easyfit_model):
    """Copy an easyfit state dict into the twin (same names and shapes, or an error naming the difference)."""
    source = {key: np.array(value.numpy(), copy=True) for key, value in easyfit_model.state_dict().items()}
    target = torch_model.state_dict()
    if set(source) != set(target):
        raise KeyError(f"parameter names differ: only easyfit {sorted(set(source) - set(target))}, "
                       f"only torch {sorted(set(target) - set(source))}")
    for key, value in source.items():
        if tuple(target[key].shape) != value.shape:
            raise ValueError(f"{key}: easyfit shape {value.shape}, torch shape {tuple(target[key].shape)}")
    torch_model.load_state_dict({key: torch.from_numpy(value) for key, value in source.items()})


def batches(loader, epoch):
    """The (tokens, labels) arrays of `loader`'s epoch `epoch`, in the order easyfit's Learner sees them."""
    dataset, collate = loader.dataset, loader.collate_fn
    for indices in loader.batches_for_epoch(epoch):
        yield collate([dataset[int(i)] for i in indices])


def evaluate(torch, model, loader):
    """(mean loss, accuracy) over the loader, weighted by items like easyfit's validate()."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in batches(loader, 0):
            x, y = torch.from_numpy(xb), torch.from_numpy(yb)
            out = model(x)
            loss_sum += float(torch.nn.functional.cross_entropy(out, y)) * len(yb)
            correct += int((out.argmax(1) == y).sum())
            count += len(yb)
    return loss_sum / count, correct / count


def train_torch(config, init="easyfit", threads=None, log=print, max_steps=None):
    """Train the twin; returns {valid_loss, accuracy, seconds_per_epoch, train_losses, ...}.

    `max_steps` stops after that many batches (the schedule still spans `config.epochs`)
    and returns only the per-batch training losses.
    """
    import torch
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_torch(torch, config, init, log, max_steps)
    finally:
        torch.set_num_threads(previous_threads)


def _train_torch(torch, config, init, log, max_steps):
    easyfit.manual_seed(config.seed)   # as `easyfit train` does before building the learner
    dls = recipe.build_dataloaders(config)
    vocab_size, n_classes, pad_idx = len(dls.vocab), len(dls.classes), dls.vocab.pad_idx
    easyfit_model = recipe.build_model(config, vocab_size, n_classes, pad_idx)
    torch.manual_seed(config.seed)
    model = build_torch_model(torch, config, vocab_size, n_classes, pad_idx)
    if init == "easyfit":
        load_easyfit_weights(torch, model, easyfit_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(MOMS[0], 0.999),
                                 weight_decay=config.wd)
    lr_at, mom_at = one_cycle_lr(config.lr), one_cycle_mom(MOMS)
    per_epoch = len(dls.train.batches_for_epoch(0))
    total = config.epochs * per_epoch
    step, epoch_seconds, train_losses = 0, [], []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.train()
        losses = []
        for xb, yb in batches(dls.train, epoch):
            set_one_cycle(optimizer, lr_at, mom_at, step / total)
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
            optimizer_step(torch, model, optimizer, loss, config.clip)
            losses.append(float(loss.detach()))
            step += 1
            if max_steps is not None and step >= max_steps:
                return {"framework": "torch", "train_losses": train_losses + losses}
        train_losses += losses
        valid_loss, accuracy = evaluate(torch, model, dls.valid)
        epoch_seconds.append(time.perf_counter() - start)
        log(f"torch epoch {epoch}: train_loss {np.mean(losses):.4f} valid_loss {valid_loss:.4f} "
            f"accuracy {accuracy:.4f} ({epoch_seconds[-1]:.1f} s)")
    return {"framework": "torch", "arch": config.arch, "valid_loss": valid_loss, "accuracy": accuracy,
            "epochs": config.epochs, "seconds_per_epoch": round(float(np.mean(epoch_seconds)), 2),
            "init": init, "threads": torch.get_num_threads()}


def train_easyfit(config, log=print):
    """`easyfit train text` with this config, in a temporary folder; returns its results."""
    from recipes import run
    with tempfile.TemporaryDirectory() as out_dir:
        results = run.train(recipe, config, Path(out_dir), log=log)
    return {"framework": "easyfit", "arch": config.arch, "valid_loss": results["valid_loss"],
            "accuracy": results["accuracy"], "epochs": config.epochs,
            "seconds_per_epoch": results["seconds_per_epoch"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--init", choices=("easyfit", "torch"), default="easyfit",
                        help="start from the easyfit model's initial weights (default) or PyTorch's own init")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--both", action="store_true", help="train with easyfit first, then the PyTorch twin")
    args = parser.parse_args(argv)
    config = resolve(recipe.Config, None, args.overrides, arch=args.arch, epochs=args.epochs, data=args.data)
    log = (lambda message: print(message, file=sys.stderr))
    rows = []
    if args.both:
        rows.append(train_easyfit(config, log=log))
        print(json.dumps(rows[-1]), flush=True)
    rows.append(train_torch(config, init=args.init, threads=args.threads, log=log))
    print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
