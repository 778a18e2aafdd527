"""Events, the Callback base class and the exceptions that cancel a phase of training.

The Learner runs each phase of training (fit, epoch, train, validate, batch, backward,
step) between a `before_<phase>` and an `after_<phase>` event. A callback takes part by
defining methods named after events; it reaches the Learner as `self.learner`. Names
are checked when a callback is registered, so `after_batchh` is an error rather than a
hook that silently never runs.
"""
import difflib
import re

# Every event, in the order they happen within a phase.
EVENTS = (
    "before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
    "before_backward", "after_backward", "before_step", "after_step", "after_batch",
    "after_train", "before_validate", "after_validate", "after_epoch", "after_fit",
)
_EVENT_SET = frozenset(EVENTS)


class CancelFitException(Exception):
    """Raise from a callback to stop training; `after_fit` still runs."""


class CancelEpochException(Exception):
    """Raise to skip the rest of this epoch (training and validation); `after_epoch` still runs."""


class CancelTrainException(Exception):
    """Raise to skip the rest of this epoch's training; `after_train` and validation still run."""


class CancelValidException(Exception):
    """Raise to skip this epoch's validation; `after_validate` still runs."""


class CancelBatchException(Exception):
    """Raise to skip the rest of this batch (e.g. its step); `after_batch` still runs."""


class CancelBackwardException(Exception):
    """Raise from `before_backward` to skip the backward pass; `after_backward` still runs."""


class CancelStepException(Exception):
    """Raise from `before_step` to skip the optimizer step; `after_step` still runs."""


def _snake_case(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Callback:
    """Base class for callbacks. Define methods named after `EVENTS` to take part.

    Class attributes (override them as class attributes or set them on the instance):
    `order` sorts callbacks (lower runs first), `run_train` / `run_valid` say whether
    the callback's batch-level hooks run while training / validating, and
    `run_lr_find` whether it takes part in `Learner.lr_find` (a callback that saves
    files or stops training early should not), and `main_process_only` that in
    data-parallel training (`Learner.distrib_ctx`) only rank 0 runs it (set it for a
    callback that prints or writes files).
    A subclass need not call `super().__init__()`.
    """
    order = 0
    run_train = True
    run_valid = True
    run_lr_find = True
    main_process_only = False
    learner = None

    @property
    def name(self):
        """The attribute under which the learner exposes this callback (`learn.recorder`)."""
        class_name = type(self).__name__
        if class_name.endswith("Callback") and class_name != "Callback":
            class_name = class_name[:-len("Callback")]
        return _snake_case(class_name)

    def state_dict(self):
        """JSON-serialisable state saved with `Learner.save` (numpy arrays allowed too).

        In data-parallel training it is asked in every process before rank 0 alone writes
        the checkpoint, so it may gather what each process holds a part of."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load but got keys {sorted(state)}; "
                             "define load_state_dict to restore it")

    def __repr__(self):
        return f"{type(self).__name__}()"


def event_hooks(callback):
    """The event methods a callback defines, after checking that no name only looks like one.

    A public method whose name starts with `before_`/`after_`, or is close to an event
    name, but is not an event is almost always a typo: refusing it at registration
    saves a training run whose hook never fired.
    """
    hooks = {}
    for name in _public_callables(type(callback)):
        if name in _EVENT_SET:
            hooks[name] = getattr(callback, name)
            continue
        close = difflib.get_close_matches(name, EVENTS, n=1, cutoff=0.8)
        if name.startswith(("before_", "after_")) or close:
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise AttributeError(
                f"{type(callback).__name__}.{name} looks like an event hook but {name!r} is not an event; "
                f"{hint}events are: {', '.join(EVENTS)}")
    return hooks


def _public_callables(cls):
    names = []
    for klass in cls.__mro__:
        if klass is Callback or klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in names:
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod)):
                names.append(name)
    return names
