"""Shared test configuration: every test starts from the same global seed."""
import pytest

import easyfit


@pytest.fixture(autouse=True)
def _seed_everything():
    easyfit.manual_seed(0)
    yield
