"""ClassificationInterpretation: where a classifier goes wrong."""
from pathlib import Path

import numpy as np

from .decoding import label_of


def loader_items(dl):
    """The files behind a loader's items in the order it yields them (skipped ones left out),
    or None: a shuffled loader, or a dataset without files."""
    files = getattr(getattr(dl, "dataset", None), "files", None)
    if files is None or getattr(dl, "shuffle", False):
        return None
    skipped = getattr(dl, "skipped", None) or {}
    return [f for index, f in enumerate(files) if index not in skipped]


class ClassificationInterpretation:
    """Predictions, targets and per-item losses of a classifier over a loader.

    Build it with `ClassificationInterpretation.from_learner(learn)` (validation set by
    default); `confusion_matrix()`, `most_confused()`, `top_losses()` (with the files
    behind the items: `with_items=True`), `print_top_losses()`, `plot_top_losses()`.
    """

    def __init__(self, learn, preds, targets, decoded, losses, items=None, dl=None):
        self.learn, self.preds, self.targets, self.decoded, self.losses = learn, preds, targets, decoded, losses
        self.items, self.dl = items, dl
        classes = getattr(learn.dls, "classes", None)
        n = preds.shape[1] if preds.ndim > 1 else 2
        self.classes = list(classes) if classes else list(range(n))

    @classmethod
    def from_learner(cls, learn, dl=None):
        """Interpret the predictions over `dl` (the validation loader by default). `items` holds
        each prediction's file when the loader's dataset has files and a fixed order."""
        dl = dl if dl is not None else learn.dls.valid
        preds, targets, decoded, losses = learn.get_preds(dl, with_decoded=True, with_loss=True)
        if targets is None:
            raise ValueError("ClassificationInterpretation needs a loader with targets")
        items = loader_items(dl)
        if items is not None and len(items) != len(preds):
            items = None
        return cls(learn, preds, targets, decoded, losses, items, dl)

    def confusion_matrix(self):
        """counts[actual, predicted] as an (n_classes, n_classes) int array."""
        n = len(self.classes)
        actual = self.targets.reshape(-1).astype(np.int64)
        predicted = self.decoded.reshape(-1).astype(np.int64)
        return np.bincount(actual * n + predicted, minlength=n * n).reshape(n, n)

    def most_confused(self, min_val=1):
        """[(actual, predicted, count)] for off-diagonal cells with count >= min_val, most frequent first."""
        matrix = self.confusion_matrix()
        pairs = [(self.classes[i], self.classes[j], int(matrix[i, j]))
                 for i in range(len(matrix)) for j in range(len(matrix)) if i != j and matrix[i, j] >= min_val]
        return sorted(pairs, key=lambda pair: -pair[2])

    def top_losses(self, k=None, largest=True, with_items=False):
        """(losses, indices) of the k items with the largest (or smallest) loss; with
        `with_items`, (losses, indices, items): each one's file (None where the data has none)."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")
        if k is not None:
            order = order[:k]
        if with_items:
            return self.losses[order], order, [self.item(i) for i in order]
        return self.losses[order], order

    def item(self, index):
        """The file behind prediction `index` (a Path), or None when the data has no files."""
        return self.items[int(index)] if self.items is not None else None

    def print_top_losses(self, k=9, file=None):
        """A text table of the k worst items: index, actual, predicted, loss, probability of the prediction."""
        losses, indices = self.top_losses(k)
        with_files = self.items is not None
        lines = [f"{'item':>6}  {'actual':>12}  {'predicted':>12}  {'loss':>8}  {'prob':>6}" +
                 ("  file" if with_files else "")]
        for loss, index in zip(losses, indices):
            actual = label_of(self.learn, self.targets[index])
            predicted = label_of(self.learn, self.decoded[index])
            prob = float(self.preds[index].max()) if self.preds.ndim > 1 else float(self.preds[index])
            lines.append(f"{int(index):>6}  {str(actual):>12}  {str(predicted):>12}  {loss:>8.4f}  {prob:>6.3f}" +
                         (f"  {self.item(index)}" if with_files else ""))
        print("\n".join(lines), file=file)

    def plot_top_losses(self, k=9, path=None, ncols=None, largest=True):
        """The k items with the largest losses drawn as images (matplotlib, the `plot` extra),
        each titled "predicted / actual / loss / probability of the actual class" and its
        file name where the data has files; saved to `path` (PNG) or returned as a figure."""
        from ..data.show import displayable_images, show_images
        losses, indices = self.top_losses(k, largest=largest)
        inputs = self._inputs()
        if inputs.ndim != 4:
            raise ValueError(f"plot_top_losses draws image inputs (N, C, H, W); these inputs have shape "
                             f"{inputs.shape}: use print_top_losses")
        images = displayable_images(inputs[indices], getattr(self.dl, "batch_tfms", ()))
        titles = []
        for loss, index in zip(losses, indices):
            actual, predicted = label_of(self.learn, self.targets[index]), label_of(self.learn, self.decoded[index])
            prob = float(self.preds[index][int(self.targets[index])]) if self.preds.ndim > 1 else \
                float(self.preds[index])
            title = f"{predicted} / {actual} / {loss:.2f} / {prob:.2f}"
            if self.items is not None:
                title += f"\n{Path(self.item(index)).name}"
            titles.append(title)
        return show_images(images, titles, path=path, ncols=ncols)

    def _inputs(self):
        """The loader's model inputs, in the order of the predictions (computed once, when drawn)."""
        if getattr(self, "_input_cache", None) is None:
            if self.dl is None:
                raise ValueError("this interpretation was built without its loader; use from_learner(learn, dl)")
            inputs = self.learn.get_preds(self.dl, with_input=True)[0]
            self._input_cache = inputs[0] if isinstance(inputs, tuple) else inputs
        return self._input_cache

    def plot_confusion_matrix(self, path=None):
        """The confusion matrix as an image (matplotlib), saved to `path` or returned."""
        from .recorder import _pyplot, _finish
        plt = _pyplot()
        matrix = self.confusion_matrix()
        fig, ax = plt.subplots(figsize=(max(4, len(matrix) * 0.6), max(4, len(matrix) * 0.6)))
        ax.imshow(matrix, cmap="Blues")
        ticks = range(len(self.classes))
        ax.set_xticks(ticks, [str(c) for c in self.classes], rotation=90)
        ax.set_yticks(ticks, [str(c) for c in self.classes])
        for i in range(len(matrix)):
            for j in range(len(matrix)):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        return _finish(plt, fig, path)
