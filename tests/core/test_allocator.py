"""The malloc tuning at import: freed activations are reused without page faults."""
import json
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="malloc tuning applies to glibc only")

# Allocate eight 4 MiB arrays and free them all, 30 times over (as a training step does
# with its activations), and count the minor page faults that costs.
CHILD = r"""
import json, resource
import numpy as np
import easyfit
from easyfit.core.allocator import malloc_tuning
arrays = [np.ones(1 << 20, np.float32) for _ in range(8)]  # the first round faults either way
del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    arrays = [np.ones(1 << 20, np.float32) for _ in range(8)]
    del arrays
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": malloc_tuning()[0], "reason": malloc_tuning()[1], "faults": faults}))
"""


def run_child(**env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_malloc_reuses_freed_arrays_without_page_faults():
    tuned = run_child()
    untuned = run_child(EASYFIT_TUNE_MALLOC="0")
    assert tuned["tuned"], tuned["reason"]
    assert not untuned["tuned"] and "EASYFIT_TUNE_MALLOC" in untuned["reason"]
    # glibc trims the freed 32 MiB and faults it back in every round (about 30 * 8 * 1024
    # pages); reused heap memory faults hardly at all.
    assert untuned["faults"] > 30 * 1024
    assert tuned["faults"] < 2 * 1024


@glibc_only
def test_users_own_malloc_settings_are_left_alone():
    result = run_child(MALLOC_TRIM_THRESHOLD_="131072")
    assert not result["tuned"]
    assert "MALLOC_TRIM_THRESHOLD_" in result["reason"]
