"""Usual first-hour mistakes get a clear answer (issue 14, item 13)."""
import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.learner import Learner
from conftest import make_dls, make_model, weights, assert_bytes_equal


def test_a_loss_class_instead_of_an_instance_says_to_instantiate_it():
    with pytest.raises(TypeError, match=r"instantiate it: loss_func=CrossEntropyLoss\(\)"):
        Learner(make_dls(), make_model(), nn.CrossEntropyLoss)


@pytest.mark.parametrize("call", [
    lambda learn: learn.fit_one_cycle(1, lr_max="3e-3"),
    lambda learn: learn.fit(1, lr="3e-3"),
    lambda learn: learn.fit_one_cycle(1, lr_max=slice("1e-4", 1e-3)),
])
def test_a_learning_rate_given_as_a_string_is_refused(call):
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="must be a number.*without quotes"):
        call(learn)


def test_a_learner_lr_given_as_a_string_is_refused():
    with pytest.raises(TypeError, match="lr must be a number"):
        Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), lr="1e-3")


def test_fit_zero_epochs_warns_and_changes_nothing():
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    before = weights(learn.model)
    with pytest.warns(UserWarning, match="n_epoch is 0"):
        learn.fit(0)
    with pytest.warns(UserWarning, match="n_epoch is 0"):
        learn.fit_one_cycle(0)
    assert_bytes_equal(weights(learn.model), before)
    assert learn.recorder.values == []


@pytest.mark.parametrize("layer, shape", [(lambda: nn.Linear(3, 2), (4, 3)),
                                          (lambda: nn.Conv2d(1, 2, 3), (1, 1, 5, 5)),
                                          (lambda: nn.BatchNorm2d(1), (2, 1, 3, 3)),
                                          (lambda: nn.LayerNorm(3), (4, 3))])
def test_a_float64_input_to_float32_weights_names_the_layer_and_both_dtypes(layer, shape):
    module = layer()
    x = ef.tensor(np.ones(shape, dtype=np.float64))
    with pytest.raises(TypeError, match=r"input is float64 but the layer's weight is float32") as info:
        module(x)
    assert type(module).__name__ in str(info.value)
    assert module(x.astype(ef.float32)).dtype == np.float32
    module.to(np.float64)
    assert module(x).dtype == np.float64


def test_fine_tune_without_a_frozen_phase_does_not_warn():
    import warnings
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fine_tune(1, freeze_epochs=0)
    assert len(learn.recorder.values) == 1
