"""From model outputs to predictions: the loss's activation, decoding, per-item losses,
and turning one raw item into a model input (for `predict`)."""
import copy
import os

import numpy as np

from ..core.tensor import Tensor


def to_numpy(x):
    if isinstance(x, Tensor):
        return x.numpy_cpu()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def softmax(scores, axis=1):
    shifted = scores - scores.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def sigmoid(scores):
    return 1.0 / (1.0 + np.exp(-scores))


def _class_axis(array):
    return 1 if array.ndim >= 2 else 0


def activation_for(loss_func):
    """A function on NumPy arrays turning raw outputs into what users read (probabilities).

    A loss may define `activation(array)` itself; otherwise cross-entropy gives softmax
    over the class axis (1), NLL (log-probabilities) exp, BCE-with-logits sigmoid, and
    regression losses nothing (None).
    """
    own = getattr(loss_func, "activation", None)
    if callable(own):
        return lambda x: to_numpy(own(x))
    name = type(loss_func).__name__
    if name == "CrossEntropyLoss":
        return lambda x: softmax(to_numpy(x), axis=_class_axis(to_numpy(x)))
    if name == "NLLLoss":
        return lambda x: np.exp(to_numpy(x))
    if name == "BCEWithLogitsLoss":
        return lambda x: sigmoid(to_numpy(x))
    return None


def decode(loss_func, preds):
    """Decoded predictions from activated ones: class indices for classification losses,
    0/1 for binary ones, the values themselves for regression. A loss may define `decodes`."""
    own = getattr(loss_func, "decodes", None)
    if callable(own):
        return to_numpy(own(preds))
    name = type(loss_func).__name__
    preds = to_numpy(preds)
    if name in ("CrossEntropyLoss", "NLLLoss"):
        return preds.argmax(axis=_class_axis(preds))
    if name in ("BCEWithLogitsLoss", "BCELoss"):
        return (preds > 0.5).astype(np.int64)
    return preds


def per_item_losses(loss_func, raw_preds, targets):
    """The loss of every item (averaged over any further axes), as a float array of length N.

    Uses the loss with reduction='none' when it has that option, else calls it item by item.
    """
    pred, target = Tensor(raw_preds), Tensor(targets)
    if hasattr(loss_func, "reduction"):
        unreduced = copy.copy(loss_func)
        unreduced.reduction = "none"
        losses = to_numpy(unreduced(pred, target)).astype(np.float64)
        if losses.ndim > 1:
            losses = losses.reshape(len(losses), -1).mean(axis=1)
        if losses.shape == (len(raw_preds),):
            return losses
    return np.array([float(loss_func(Tensor(raw_preds[i:i + 1]), Tensor(targets[i:i + 1])).item())
                     for i in range(len(raw_preds))])


def check_one_item(learn, item):
    """Refuse several items given to `predict` (a list of files or texts, or a batch array):
    the model would see them as one item and answer with wrong numbers."""
    several = None
    if isinstance(item, (list, tuple)) and item and all(
            isinstance(part, (str, os.PathLike, np.ndarray, Tensor)) for part in item):
        several = f"a {type(item).__name__} of {len(item)} items"
    elif isinstance(item, (np.ndarray, Tensor)):
        from .export import item_ndim_of
        expected = item_ndim_of(learn.dls)
        if expected is not None and item.ndim > expected:
            several = (f"an array of shape {tuple(item.shape)}, where one item has {expected} "
                       f"ax{'is' if expected == 1 else 'es'}")
    if several is not None:
        raise ValueError(f"predict takes one item, got {several}. For several items use "
                         "dl = learn.dls.test_dl(items) and preds, _ = learn.get_preds(dl=dl)")


def prepare_item(learn, item):
    """One raw item made into a batch of one: a text (with text data: tokenized and encoded
    with the data's tokenizer and vocab), an image file path, an array or a Tensor.

    The validation loader's item and batch transforms are applied, as in validation.
    """
    dl = learn.dls.valid if getattr(learn.dls, "valid", None) is not None else learn.dls.train
    tokenizer, vocab = getattr(learn.dls, "tokenizer", None), getattr(learn.dls, "vocab", None)
    if isinstance(item, str) and tokenizer is not None and hasattr(vocab, "encode"):
        return np.asarray(vocab.encode(tokenizer(item)), dtype=np.int64)[None]
    from .export import image_mode_of
    mode = image_mode_of(learn.dls)
    if isinstance(item, (str, os.PathLike)):
        from ..data.vision import decode_image
        item = decode_image(item, mode)
    x = to_numpy(item)
    if mode is not None:
        from ..data.vision import convert_image_mode
        x = convert_image_mode(x, mode)
    return transform_batch(x, getattr(dl, "item_tfms", ()), getattr(dl, "batch_tfms", ()))


def transform_batch(x, item_tfms, batch_tfms):
    from ..data.loader import apply_transforms
    rng = np.random.default_rng(0)  # validation transforms are deterministic; this only satisfies the API
    x = apply_transforms(list(item_tfms), x, rng)
    return apply_transforms(list(batch_tfms), np.asarray(x)[None], rng)


def label_of(learn, decoded):
    """The class name of a decoded class index when the data has `classes`; otherwise the value."""
    classes = getattr(learn.dls, "classes", None) if learn.dls is not None else None
    decoded = np.asarray(decoded)
    if classes and decoded.ndim == 0 and decoded.dtype.kind in "iu" and 0 <= int(decoded) < len(classes):
        return classes[int(decoded)]
    return decoded.item() if decoded.ndim == 0 else decoded
