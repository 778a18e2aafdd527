"""ClassificationInterpretation: where a classifier goes wrong."""
import numpy as np

from .decoding import label_of


class ClassificationInterpretation:
    """Predictions, targets and per-item losses of a classifier over a loader.

    Build it with `ClassificationInterpretation.from_learner(learn)` (validation set by
    default); `confusion_matrix()`, `most_confused()`, `top_losses()`,
    `print_top_losses()`.
    """

    def __init__(self, learn, preds, targets, decoded, losses):
        self.learn, self.preds, self.targets, self.decoded, self.losses = learn, preds, targets, decoded, losses
        classes = getattr(learn.dls, "classes", None)
        n = preds.shape[1] if preds.ndim > 1 else 2
        self.classes = list(classes) if classes else list(range(n))

    @classmethod
    def from_learner(cls, learn, dl=None):
        preds, targets, decoded, losses = learn.get_preds(dl, with_decoded=True, with_loss=True)
        if targets is None:
            raise ValueError("ClassificationInterpretation needs a loader with targets")
        return cls(learn, preds, targets, decoded, losses)

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

    def top_losses(self, k=None, largest=True):
        """(losses, indices) of the k items with the largest (or smallest) loss."""
        order = np.argsort(-self.losses if largest else self.losses, kind="stable")
        if k is not None:
            order = order[:k]
        return self.losses[order], order

    def print_top_losses(self, k=9, file=None):
        """A text table of the k worst items: index, actual, predicted, loss, probability of the prediction."""
        losses, indices = self.top_losses(k)
        lines = [f"{'item':>6}  {'actual':>12}  {'predicted':>12}  {'loss':>8}  {'prob':>6}"]
        for loss, index in zip(losses, indices):
            actual = label_of(self.learn, self.targets[index])
            predicted = label_of(self.learn, self.decoded[index])
            prob = float(self.preds[index].max()) if self.preds.ndim > 1 else float(self.preds[index])
            lines.append(f"{int(index):>6}  {str(actual):>12}  {str(predicted):>12}  {loss:>8.4f}  {prob:>6.3f}")
        print("\n".join(lines), file=file)

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
