"""One PyTorch-style program, run under easyfit and under PyTorch from the same start.

The programs in this folder are written once, as functions taking the framework module
(`easyfit` or `torch`) as their first argument and spelling everything the PyTorch way.
The framework's random generator is not shared (easyfit's is NumPy's), so a comparison
builds the model under PyTorch, copies its state_dict into the easyfit model (parameter
names are PyTorch's), feeds both the same NumPy data, and compares what each step gives.
"""
import numpy as np

import easyfit

FLOAT32 = dict(rtol=2e-4, atol=2e-5)   # float32 noise after a few steps of the same program
FLOAT64 = dict(rtol=1e-7, atol=1e-9)


def state_arrays(model):
    """The model's state_dict as NumPy arrays (copies), whatever the framework."""
    return {name: np.array(value.detach().cpu().numpy(), copy=True) for name, value in model.state_dict().items()}


def copy_state(source, target, framework):
    """Load `source`'s weights into `target`, a model of `framework` with the same parameter names."""
    target.load_state_dict({name: framework.tensor(array) for name, array in state_arrays(source).items()})


def assert_same_state(easyfit_model, torch_model, tolerance=FLOAT32):
    ours, theirs = state_arrays(easyfit_model), state_arrays(torch_model)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], err_msg=name, **tolerance)

