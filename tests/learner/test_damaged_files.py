"""Issue 15 items 7, 8 and 11: damaged, crafted or foreign files give one clear error naming
the file, never changed values, a raw library error, a RecursionError or a huge allocation."""
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import easyfit as ef
from easyfit import nn
from easyfit.core.serialization import load_with_metadata
from easyfit.learner import Learner, load_learner
from easyfit.learner.export import ExportError, METADATA_KEY as EXPORT_KEY
from easyfit.learner.checkpoint import METADATA_KEY as CHECKPOINT_KEY
from conftest import make_dls, make_model, weights, assert_bytes_equal


def exported(tmp_path):
    learn = Learner(make_dls(), make_model(hidden=4), nn.CrossEntropyLoss(), path=tmp_path)
    return learn, pathlib.Path(learn.export(tmp_path / "export.safetensors"))


def flipped_copies(path, folder):
    """One copy of `path` per byte, with that byte's bit 5 flipped."""
    data = pathlib.Path(path).read_bytes()
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x20
        copy = folder / f"flip{position}.safetensors"
        copy.write_bytes(bytes(damaged))
        yield position, copy


def test_every_byte_flip_in_an_export_is_refused_or_harmless(tmp_path):
    learn, path = exported(tmp_path)
    original = weights(learn.model)
    folder = tmp_path / "flips"
    folder.mkdir()
    harmless = 0
    for position, copy in flipped_copies(path, folder):
        try:
            loaded = load_learner(copy)
        except ValueError as error:  # ExportError is a ValueError
            assert str(copy) in str(error), (position, error)
        else:  # a flip in the name of the checksum's own metadata key: nothing read back changed
            assert_bytes_equal(weights(loaded.model), original)
            harmless += 1
        copy.unlink()
    assert harmless <= len("easyfit.sha256")


def test_every_byte_flip_in_a_saved_file_is_refused_or_harmless(tmp_path):
    state = {"model": make_model(hidden=2).state_dict(), "opt": {"lr": 0.001, "betas": (0.9, 0.99), "step": 3}}
    path = tmp_path / "state.safetensors"
    ef.save(state, path)
    original = ef.load(path)
    folder = tmp_path / "flips"
    folder.mkdir()
    refused = 0
    for position, copy in flipped_copies(path, folder):
        try:
            loaded = ef.load(copy)
        except ValueError as error:
            assert str(copy) in str(error), (position, error)
            refused += 1
        else:  # only a flip that changes nothing that is read back may load
            assert loaded["opt"] == original["opt"], position
            assert_bytes_equal(loaded["model"], original["model"])
        copy.unlink()
    assert refused >= len(path.read_bytes()) - len("easyfit.sha256")


def _craft_export(path, change):
    """Rewrite an export's description with `change(description)`, with a valid checksum (as an
    attacker would: the checksum guards against damage, not against a crafted file)."""
    tensors, metadata = load_with_metadata(path)
    description = json.loads(metadata[EXPORT_KEY])
    change(description)
    ef.save(tensors, path, metadata={EXPORT_KEY: json.dumps(description)})


def _make_first_linear_huge(description):
    first = description["model"]["children"][0]
    first["args"]["in_features"] = first["args"]["out_features"] = {"value": 20_000}


CRAFTED = """
import resource, sys
from easyfit.learner import load_learner
try:
    load_learner(sys.argv[1])
except Exception as error:
    print(type(error).__name__, error)
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_crafted_export_describing_a_huge_model_is_refused_before_allocating(tmp_path):
    _, path = exported(tmp_path)
    _craft_export(path, _make_first_linear_huge)  # Linear(20000, 20000): 1.6 GB, next to 400 bytes of weights
    with pytest.raises(ExportError, match="describes a model larger than the weights it holds"):
        load_learner(path)
    script = tmp_path / "crafted.py"
    script.write_text(CRAFTED)
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300,
                          cwd=pathlib.Path(ef.__file__).parent.parent)
    assert "ExportError" in done.stdout, done.stdout + done.stderr
    maxrss_mb = int(done.stdout.split("maxrss_kb")[1]) / 1024
    assert maxrss_mb < 800, f"loading the crafted export used {maxrss_mb:.0f} MB"


def test_an_export_whose_description_does_not_match_its_weights_is_refused(tmp_path):
    _, path = exported(tmp_path)

    def change(description):
        description["model"]["children"][0]["args"]["out_features"] = {"value": 3}  # fewer parameters than stored
    _craft_export(path, change)
    with pytest.raises(ExportError, match="differ from the weights it holds"):
        load_learner(path)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(pickle.dumps({"w": [1, 2]})), "looks like a Python pickle"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("archive/data.pkl", b"x"), "is a zip archive"),
    (lambda p: None, "is truncated"),
    (lambda p: p.write_bytes(b""), "is not a safetensors file"),
])
def test_load_learner_on_foreign_or_truncated_files_says_what_they_are(tmp_path, make, message):
    _, path = exported(tmp_path)
    if message == "is truncated":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        make(path)
    with pytest.raises(ValueError, match=message) as info:
        load_learner(path)
    assert str(path) in str(info.value)


def _deep(depth):
    return "[" * depth + "]" * depth


def test_deeply_nested_json_in_metadata_is_a_clear_error(tmp_path):
    _, path = exported(tmp_path)
    tensors, _ = load_with_metadata(path)
    ef.save(tensors, path, metadata={EXPORT_KEY: _deep(100_000)})
    with pytest.raises(ExportError, match="nests deeper than"):
        load_learner(path)
    # the structure header of an easyfit.save file, and a checkpoint's description
    from safetensors.numpy import save_file
    raw = tmp_path / "raw.safetensors"
    save_file({"a": np.zeros(2)}, str(raw), metadata={"easyfit.structure": _deep(100_000)})
    with pytest.raises(ValueError, match="nests deeper than"):
        ef.load(raw)
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path)
    saved = learn.save("ckpt")
    arrays, _ = load_with_metadata(saved)
    ef.save(arrays, saved, metadata={CHECKPOINT_KEY: _deep(100_000)})
    with pytest.raises(ValueError, match="nests deeper than"):
        learn.load("ckpt")


@pytest.mark.parametrize("missing", ["rng", "progress", "data", "format"])
def test_a_checkpoint_description_missing_a_key_names_the_file_and_the_key(tmp_path, missing):
    learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path)
    saved = learn.save("ckpt")
    arrays, metadata = load_with_metadata(saved)
    description = json.loads(metadata[CHECKPOINT_KEY])
    del description[missing]
    ef.save(arrays, saved, metadata={CHECKPOINT_KEY: json.dumps(description)})
    with pytest.raises(ValueError, match=str(saved)) as info:
        learn.load("ckpt")
    assert missing in str(info.value) or "not an easyfit learner checkpoint" in str(info.value)


def test_checkpoints_and_exports_get_the_same_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        learn = Learner(make_dls(), make_model(), nn.CrossEntropyLoss(), path=tmp_path)
        files = [learn.save("ckpt"), pathlib.Path(learn.export(tmp_path / "export.safetensors"))]
        ef.save({"a": np.zeros(2)}, tmp_path / "state.safetensors")
        files.append(tmp_path / "state.safetensors")
    finally:
        os.umask(mask)
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o644)}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["ckpt.safetensors"]  # no 0600 sidecar


def test_max_over_a_non_empty_axis_of_an_empty_tensor_and_pad_of_a_0d_tensor_follow_numpy():
    x = ef.zeros((0, 3), requires_grad=True)
    y = ef.max(x, axis=1)
    assert y.shape == np.max(np.zeros((0, 3)), axis=1).shape == (0,)
    y.sum().backward()
    assert x.grad.shape == (0, 3)
    assert ef.min(ef.zeros((2, 0, 3)), axis=(0, 2)).shape == (0,)
    with pytest.raises(ValueError, match="zero-size axis"):
        ef.max(x, axis=0)  # NumPy refuses this one too
    t = ef.tensor(3.0, requires_grad=True)
    padded = ef.pad(t, 2)
    assert padded.shape == np.pad(np.array(3.0), 2).shape == () and padded.item() == 3.0
    padded.backward()
    assert t.grad.item() == 1.0
