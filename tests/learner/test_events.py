"""The event machinery: order of events, registration checks, sorting, cancelling."""
import pytest

from easyfit import nn
from easyfit.learner import (Learner, Callback, EVENTS, CancelBatchException, CancelTrainException,
                             CancelValidException, CancelEpochException, CancelFitException, CancelStepException)
from conftest import make_dls, make_model


class EventLog(Callback):
    """Records every event it sees, with whether the learner was training."""

    def __init__(self):
        self.events = []


for _event in EVENTS:
    def _hook(self, _event=_event):
        self.events.append(_event)
    setattr(EventLog, _event, _hook)


def small_learner(cbs=(), n_train=4, n_valid=2, batch_size=2):
    dls = make_dls(batch_size=batch_size, n_train=n_train, n_valid=n_valid)
    return Learner(dls, make_model(), nn.CrossEntropyLoss(), cbs=list(cbs), default_cbs=False)


TRAIN_BATCH = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
               "after_step", "after_batch"]
VALID_BATCH = ["before_batch", "after_pred", "after_loss", "after_batch"]


def test_whole_event_sequence_of_a_short_fit():
    log = EventLog()
    small_learner([log]).fit(2)
    epoch = (["before_epoch", "before_train"] + TRAIN_BATCH * 2 + ["after_train", "before_validate"]
             + VALID_BATCH * 1 + ["after_validate", "after_epoch"])
    assert log.events == ["before_fit"] + epoch * 2 + ["after_fit"]


def test_validate_runs_only_the_validation_events():
    log = EventLog()
    learn = small_learner([log], n_valid=4)
    learn.validate()
    assert log.events == ["before_validate"] + VALID_BATCH * 2 + ["after_validate"]


@pytest.mark.parametrize("name", ["after_batchh", "before_fitt", "afterbatch", "before_epochs"])
def test_a_method_named_like_an_event_is_an_error_at_registration(name):
    bad = type("Typo", (Callback,), {name: lambda self: None})
    with pytest.raises(AttributeError, match=name):
        small_learner([bad()])


def test_ordinary_helper_methods_are_allowed():
    ok = type("Helper", (Callback,), {"plot_loss": lambda self: None, "compute": lambda self: None})
    small_learner([ok()]).fit(1)


def test_callbacks_run_sorted_by_order_and_reach_the_learner():
    seen = []

    class Late(Callback):
        order = 10

        def before_fit(self):
            seen.append(("late", self.learner))

    class Early(Callback):
        order = -5

        def before_fit(self):
            seen.append(("early", self.learner))

    learn = small_learner([Late(), Early()])
    learn.fit(1)
    assert seen == [("early", learn), ("late", learn)]


def test_a_subclass_need_not_call_super_init():
    class NoSuper(Callback):
        def __init__(self):
            self.calls = 0

        def after_batch(self):
            self.calls += 1

    cb = NoSuper()
    small_learner([cb]).fit(1)
    assert cb.calls == 2 + 1  # two training batches, one validation batch


def test_undefined_hooks_are_not_registered():
    class OnlyFit(Callback):
        def before_fit(self):
            pass

    learn = small_learner([OnlyFit()])
    assert all(not hooks for event, hooks in learn._hooks_train.items() if event != "before_fit")
    assert len(learn._hooks_train["before_fit"]) == 1


def test_callbacks_are_reached_by_name_without_delegation():
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    assert learn.recorder.learner is learn
    assert not hasattr(learn.recorder, "model")  # no attribute delegation to the learner


def test_passing_a_class_instead_of_an_instance_is_explained():
    with pytest.raises(TypeError, match="instances"):
        small_learner([EventLog])


def _raiser(event, exception, when=lambda learn: True):
    def hook(self):
        if when(self.learner):
            raise exception()
    return type("Raiser", (Callback,), {event: hook})()


def test_cancel_batch_skips_the_rest_of_the_batch_but_runs_after_batch():
    log = EventLog()
    learn = small_learner([log, _raiser("after_loss", CancelBatchException, lambda l: l.training)])
    learn.fit(1)
    assert log.events.count("before_backward") == 0
    assert log.events.count("after_batch") == 3


def test_cancel_train_goes_on_with_validation():
    log = EventLog()
    small_learner([log, _raiser("before_batch", CancelTrainException, lambda l: l.training)]).fit(1)
    # the exception leaves the batch at once (no after_batch), then the train phase
    assert log.events == ["before_fit", "before_epoch", "before_train", "before_batch", "after_train", "before_validate"] + VALID_BATCH + ["after_validate", "after_epoch", "after_fit"]


def test_cancel_validate_skips_validation():
    log = EventLog()
    small_learner([log, _raiser("before_validate", CancelValidException)]).fit(1)
    assert "after_pred" not in log.events[log.events.index("before_validate"):]
    assert log.events[-3:] == ["after_validate", "after_epoch", "after_fit"]


def test_cancel_epoch_and_cancel_fit():
    log = EventLog()
    small_learner([log, _raiser("after_train", CancelEpochException)]).fit(2)
    assert log.events.count("before_validate") == 0 and log.events.count("after_epoch") == 2
    log = EventLog()
    small_learner([log, _raiser("after_batch", CancelFitException)]).fit(3)
    assert log.events.count("before_epoch") == 1 and log.events[-1] == "after_fit"


def test_cancel_step_keeps_weights():
    learn = small_learner([_raiser("before_step", CancelStepException)])
    before = {k: v.numpy().copy() for k, v in learn.model.state_dict().items()}
    learn.fit(1)
    after = learn.model.state_dict()
    assert all((before[k] == after[k].numpy()).all() for k in before)


def test_remove_cb_and_name_clash():
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    recorder = learn.recorder
    with pytest.raises(ValueError, match="already registered"):
        learn.add_cb(type(recorder)())
    learn.remove_cb(recorder)
    assert not hasattr(learn, "recorder") and recorder not in learn.cbs


def test_public_signatures_follow_design_md():
    import inspect
    import easyfit
    from easyfit.optim import Adam

    def names(func):
        return list(inspect.signature(func).parameters)

    assert names(Learner)[:10] == ["dls", "model", "loss_func", "opt_func", "lr", "metrics", "cbs", "wd", "path",
                                   "model_dir"]
    defaults = inspect.signature(Learner).parameters
    assert defaults["opt_func"].default is Adam and defaults["lr"].default == 1e-3
    assert defaults["model_dir"].default == "models"
    assert names(Learner.fit)[1:4] == ["n_epoch", "lr", "cbs"]
    one_cycle = inspect.signature(Learner.fit_one_cycle).parameters
    assert list(one_cycle)[1:7] == ["n_epoch", "lr_max", "div", "div_final", "pct_start", "moms"]
    assert [one_cycle[n].default for n in ("div", "div_final", "pct_start", "moms")] == [25., 1e5, 0.25,
                                                                                          (0.95, 0.85, 0.95)]
    assert "resume" in one_cycle and "resume" in inspect.signature(Learner.fit).parameters
    assert easyfit.Learner is Learner and callable(easyfit.load_learner)
    assert EVENTS == ("before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
                      "before_backward", "after_backward", "before_step", "after_step", "after_batch",
                      "after_train", "before_validate", "after_validate", "after_epoch", "after_fit")
