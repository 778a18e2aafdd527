"""Pictures of data: `dls.show_batch()` and the image grids the Learner draws (show_results,
plot_top_losses). matplotlib is the `plot` extra, imported only when a picture is asked for.

Batches are turned back into something to look at by undoing the loader's batch
transforms that can be undone (`Normalize.decode`) and clipping to [0, 1]; texts are
decoded with the vocabulary.
"""
import math
import sys

import numpy as np


def in_notebook():
    """True inside a Jupyter kernel. A program that has not imported IPython runs in none,
    so IPython (0.4 s to import) is not imported just to ask."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    if get_ipython is None:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def pyplot():
    """matplotlib.pyplot, with a clear error naming the extra when matplotlib is missing.
    Outside a notebook the file-only Agg backend is chosen (no window, works without a display)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib, which is not installed. Install it with: "
                          "pip install 'easyfit[plot]'") from None
    import matplotlib.pyplot as plt
    if not in_notebook():
        matplotlib.use("Agg", force=False)
    return plt


def finish(plt, fig, path):
    """Save to `path` and close, or return the figure (a notebook shows it)."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
        return path
    return fig


def displayable_images(x, batch_tfms=()):
    """(N, H, W, 3) or (N, H, W) float images in [0, 1] from an (N, C, H, W) model input batch."""
    x = np.asarray(x, dtype=np.float32)
    for transform in reversed(list(batch_tfms or ())):
        decode = getattr(transform, "decode", None)
        if decode is not None:
            x = np.asarray(decode(x), dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"cannot draw inputs of shape {x.shape} as images: expected (N, C, H, W) with 1 or 3 "
                         "channels")
    if x.max() > 1.5:   # still on the 0..255 scale (no ImageToFloat)
        x = x / 255.0
    x = np.clip(np.moveaxis(x, 1, -1), 0.0, 1.0)
    return x[..., 0] if x.shape[-1] == 1 else x


def show_images(images, titles, path=None, ncols=None, figsize_per_image=2.2):
    """A grid of images with a title each; saved to `path` (PNG) or returned as a figure."""
    plt = pyplot()
    n = len(images)
    if n == 0:
        raise ValueError("nothing to show: no images")
    ncols = ncols or min(n, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(figsize_per_image * ncols, figsize_per_image * nrows + 0.3),
                             squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index < n:
            image = images[index]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
            ax.set_title(titles[index], fontsize=8)
    return finish(plt, fig, path)


def label_name(classes, label):
    """The class name of a label index when `classes` are known, else the label itself."""
    label = np.asarray(label)
    if classes and label.ndim == 0 and label.dtype.kind in "iu" and 0 <= int(label) < len(classes):
        return str(classes[int(label)])
    return str(label.item() if label.ndim == 0 else label.tolist())


def show_batch(dls, dl=None, max_n=9, path=None, ncols=None, file=None):
    """Draw (images) or print (texts) the first `max_n` items of a batch with their labels.

    `dl` defaults to the training loader. Image batches (N, C, H, W) become a grid,
    saved to `path` or returned as a matplotlib figure; text batches (token ids, with
    `dls.vocab`) are printed, one text and its label a line, to `file`.
    """
    dl = dl if dl is not None else dls.train
    batch = dl.one_batch()
    xb, yb = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else \
        (batch[0] if isinstance(batch, (tuple, list)) else batch, None)
    x = xb.numpy_cpu() if hasattr(xb, "numpy_cpu") else np.asarray(xb)
    y = yb.numpy_cpu() if hasattr(yb, "numpy_cpu") else (np.asarray(yb) if yb is not None else None)
    n = min(max_n, len(x))
    classes = getattr(dls, "classes", None)
    vocab = getattr(dls, "vocab", None)
    if x.ndim == 2 and x.dtype.kind in "iu" and vocab is not None:
        pad = getattr(vocab, "pad_idx", None)
        lines = []
        for i in range(n):
            tokens = [vocab.itos[t] for t in x[i] if t != pad]
            label = label_name(classes, y[i]) if y is not None and y.ndim == 1 else ""
            lines.append(f"{label}\t{' '.join(tokens)}" if label else " ".join(tokens))
        print("\n".join(lines), file=file)
        return lines
    images = displayable_images(x[:n], getattr(dl, "batch_tfms", ()))
    titles = [label_name(classes, y[i]) if y is not None and y.ndim == 1 else "" for i in range(n)]
    return show_images(images, titles, path=path, ncols=ncols)
