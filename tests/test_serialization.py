"""easyfit.save / easyfit.load: safetensors round trips, torch interop, refusing pickles, atomicity."""
import os
import pickle

import numpy as np
import pytest

import easyfit as ef
from easyfit.core import serialization


def files_in(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_])
def test_round_trip_keeps_dtype_shape_and_values(dtype, tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    scalar = np.array(7, dtype=dtype)
    ef.save({"x": array, "scalar": scalar, "empty": np.zeros((0, 3), dtype)}, tmp_path / "a.safetensors")
    loaded = ef.load(tmp_path / "a.safetensors")
    assert sorted(loaded) == ["empty", "scalar", "x"]
    for name, original in [("x", array), ("scalar", scalar)]:
        assert loaded[name].dtype == original.dtype and loaded[name].shape == original.shape
        np.testing.assert_array_equal(loaded[name], original)
    assert loaded["empty"].shape == (0, 3)


def test_non_contiguous_arrays_and_tensors_are_stored_as_their_values(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    views = {"transposed": base.T, "strided": base[:, ::2], "reversed": base[::-1], "fortran": np.asfortranarray(base),
             "tensor": ef.tensor(base)[1:, 2:4], "broadcast": np.broadcast_to(np.arange(3.0), (2, 3))}
    ef.save(views, tmp_path / "views.safetensors")
    loaded = ef.load(tmp_path / "views.safetensors")
    for name, view in views.items():
        np.testing.assert_array_equal(loaded[name], np.asarray(view), err_msg=name)


def test_nested_structure_and_plain_values_round_trip(tmp_path):
    checkpoint = {
        "model": {"0.weight": np.ones((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)},
        "opt": {"state": {0: {"step": np.array(3, np.int64), "exp_avg": np.full(2, 0.5, np.float32)}},
                "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0], "name": None}]},
        "epoch": 4, "rng": {"state": {"state": 2**100 + 1, "inc": 3}}, "nan": float("nan"), "flag": True,
        "mixed": [np.arange(3), "text", (1.5, np.eye(2))],
    }
    ef.save(checkpoint, tmp_path / "c.safetensors")
    loaded = ef.load(tmp_path / "c.safetensors")
    assert sorted(loaded) == sorted(checkpoint)
    np.testing.assert_array_equal(loaded["model"]["0.weight"], checkpoint["model"]["0.weight"])
    assert list(loaded["opt"]["state"]) == [0]  # integer keys stay integers
    assert int(loaded["opt"]["state"][0]["step"]) == 3
    assert loaded["opt"]["param_groups"] == [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0], "name": None}]
    assert loaded["epoch"] == 4 and loaded["rng"]["state"]["state"] == 2**100 + 1 and loaded["flag"] is True
    assert np.isnan(loaded["nan"])
    assert loaded["mixed"][1] == "text" and loaded["mixed"][2][0] == 1.5
    np.testing.assert_array_equal(loaded["mixed"][2][1], np.eye(2))


def test_a_flat_state_dict_keeps_its_keys_as_tensor_names(tmp_path):
    from safetensors import safe_open
    ef.save({"layers.0.weight": np.ones(3, np.float32)}, tmp_path / "m.safetensors", metadata={"author": "me"})
    with safe_open(str(tmp_path / "m.safetensors"), "np") as reader:
        assert list(reader.keys()) == ["layers.0.weight"]
        assert reader.metadata()["author"] == "me"


def test_colliding_names_and_bad_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="'a.b'"):
        ef.save({"a": {"b": np.ones(1)}, "a.b": np.ones(1)}, path)
    with pytest.raises(TypeError, match=r"cannot store 'opt.fn' of type function"):
        ef.save({"opt": {"fn": lambda x: x}}, path)
    with pytest.raises(TypeError, match="expected a dict .* a single array or Tensor, or an object such as a Module, got list"):
        ef.save([np.ones(1)], path)
    with pytest.raises(ValueError, match="reserved"):
        ef.save({"a": np.ones(1)}, path, metadata={serialization.STRUCTURE_KEY: "x"})
    assert files_in(tmp_path) == []


def test_refuses_pickles_torch_files_and_garbage_naming_the_file(tmp_path):
    pickled = tmp_path / "weights.pkl"
    pickled.write_bytes(pickle.dumps({"w": np.ones(3)}))
    with pytest.raises(ValueError, match=r"weights\.pkl looks like a Python pickle"):
        ef.load(pickled)
    zipped = tmp_path / "model.pt"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ValueError, match=r"model\.pt is a zip archive, probably a PyTorch"):
        ef.load(zipped)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(200))
    with pytest.raises(ValueError, match=r"garbage\.bin is not a safetensors file"):
        ef.load(garbage)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"tiny\.safetensors is not a safetensors file \(3 bytes"):
        ef.load(tiny)
    # a valid-looking header that lies about its contents
    liar = tmp_path / "liar.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    liar.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"liar\.safetensors is truncated"):  # the header describes more data
        ef.load(liar)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*missing\.safetensors"):
        ef.load(tmp_path / "missing.safetensors")


def test_loading_a_pickle_never_runs_it(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "exploded"),))

    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(ValueError):
        ef.load(path)
    assert not (tmp_path / "exploded").exists()


def test_a_failing_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ef.save({"w": np.ones(3, np.float32)}, path)
    old_bytes = path.read_bytes()

    import safetensors.numpy

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ef.save({"w": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == old_bytes
    assert files_in(tmp_path) == ["ckpt.safetensors"]


def test_an_interrupted_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ef.save({"w": np.ones(3, np.float32)}, path)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ef.save({"w": np.zeros(3, np.float32)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(ef.load(path)["w"], np.ones(3))
    assert files_in(tmp_path) == ["ckpt.safetensors"]


def test_save_writes_through_a_temporary_in_the_same_folder_and_fsyncs(tmp_path, monkeypatch):
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(serialization.os, "replace", lambda src, dst: (calls.append(("replace", src, dst)),
                                                                      real_replace(src, dst))[1])
    monkeypatch.setattr(serialization.os, "fsync", lambda fd: (calls.append(("fsync",)), real_fsync(fd))[1])
    path = tmp_path / "m.safetensors"
    ef.save({"w": np.ones(2)}, path)
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"]  # file data, rename, then the folder entry
    source = calls[1][1]
    assert os.path.dirname(source) == str(tmp_path) and source != str(path)


def test_overwriting_keeps_the_file_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    ef.save({"w": np.ones(2)}, path)
    os.chmod(path, 0o640)
    ef.save({"w": np.zeros(2)}, path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(ef.load(str(path))["w"], np.zeros(2))


def test_saving_to_a_folder_or_a_missing_folder_fails_clearly(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        ef.save({"w": np.ones(2)}, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ef.save({"w": np.ones(2)}, tmp_path / "nope" / "m.safetensors")


def test_files_saved_by_easyfit_load_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    ef.save({"fc.weight": weight.T, "fc.bias": ef.tensor([1.0, 2.0]), "steps": np.array(5, np.int64),
             "mask": np.array([True, False])}, tmp_path / "m.safetensors")
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert torch.equal(loaded["fc.weight"], torch.from_numpy(weight.T.copy()))
    assert loaded["fc.bias"].dtype == torch.float32 and loaded["fc.bias"].tolist() == [1.0, 2.0]
    assert loaded["steps"].shape == () and loaded["steps"].item() == 5
    assert loaded["mask"].dtype == torch.bool


def test_files_saved_by_torch_load_in_easyfit(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    save_file(state, str(tmp_path / "torch.safetensors"))
    loaded = ef.load(tmp_path / "torch.safetensors")
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        assert loaded[name].dtype == value.numpy().dtype
        np.testing.assert_array_equal(loaded[name], value.numpy())
    assert loaded["1.num_batches_tracked"].dtype == np.int64


def test_load_to_a_device_without_cuda_names_the_extra_or_moves(tmp_path):
    ef.save({"w": np.ones(2, np.float32)}, tmp_path / "m.safetensors")
    assert ef.load(tmp_path / "m.safetensors", device="cpu")["w"].dtype == np.float32
    if ef.cuda.is_available():
        loaded = ef.load(tmp_path / "m.safetensors", device="cuda")
        assert ef.tensor(loaded["w"]).device == "cuda:0"
    else:
        with pytest.raises(RuntimeError, match="easyfit\\[cuda\\]"):
            ef.load(tmp_path / "m.safetensors", device="cuda")


def test_torch_bfloat16_tensors_load_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    values = torch.tensor([[1.5, -2.25], [3e30, 1e-20]], dtype=torch.bfloat16)
    save_file({"w": values, "b": torch.ones(2)}, str(tmp_path / "bf16.safetensors"))
    loaded = ef.load(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == np.float32 and loaded["w"].shape == (2, 2)
    np.testing.assert_array_equal(loaded["w"], values.float().numpy())
    np.testing.assert_array_equal(loaded["b"], np.ones(2, np.float32))


@pytest.mark.parametrize("make", [lambda a: a, ef.from_numpy], ids=["ndarray", "Tensor"])
def test_a_single_array_round_trips_as_a_numpy_array(make, tmp_path):
    data = np.sin(np.arange(12.0).reshape(3, 4) / 7)  # float64, as PyTorch's sine-wave example saves
    path = tmp_path / "traindata.pt"
    ef.save(make(data), path)
    loaded = ef.load(path)
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, data)
    scalar = tmp_path / "scalar.pt"
    ef.save(np.array(2.5, dtype=np.float32), scalar)
    assert ef.load(scalar).shape == () and ef.load(scalar) == np.float32(2.5)


def test_save_writes_to_an_open_binary_file(tmp_path):
    import io
    state = {"w": ef.arange(6.0).reshape(2, 3), "step": 3}
    with open(tmp_path / "a.safetensors", "wb") as f:
        ef.save(state, f)
    loaded = ef.load(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(loaded["w"], state["w"].numpy())
    assert loaded["step"] == 3
    buffer = io.BytesIO()
    ef.save(state, buffer)
    # The same file as saving to a path, up to the order of the header's metadata entries
    # (safetensors keeps them in a hash map, so two writes may order them differently).
    assert len(buffer.getvalue()) == (tmp_path / "a.safetensors").stat().st_size
    buffer.seek(0)
    again = ef.load(buffer)
    np.testing.assert_array_equal(again["w"], loaded["w"])
    assert again["step"] == 3
    with open(tmp_path / "b.txt", "w") as text, pytest.raises(TypeError, match="text mode; open it with 'wb'"):
        ef.save(state, text)
