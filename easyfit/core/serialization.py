"""Checkpoint files: `save(obj, path)` / `load(path)` as safetensors, never pickle.

A safetensors file is a JSON header plus raw array bytes, so loading one never runs
code, and PyTorch reads the same files (`safetensors.torch.load_file`). `obj` is a
dict whose values are arrays or Tensors (a model's `state_dict()`), or nested dicts,
lists and tuples of those mixed with JSON-able values (an optimizer's `state_dict()`,
a training checkpoint), or a single array or Tensor (as PyTorch programs save a NumPy
array of data with torch.save; it loads back as a NumPy array). Arrays are stored under their dotted path ('opt.state.0.exp_avg');
the nesting and the plain values are kept as JSON in the file's metadata header, so
`load` gives back the same structure. A file written by another program loads as a
flat dict of NumPy arrays.

Writes are atomic: the file is written to a temporary file in the same folder,
flushed to disk (fsync), renamed over the target (os.replace), and the folder is
fsynced; a failed save removes the temporary file and leaves an existing file as it
was.
"""
import json
import os
import tempfile

import numpy as np

from .backend import is_array, to_device, parse_device
from .tensor import Tensor

STRUCTURE_KEY = "easyfit.structure"  # metadata entry holding the nesting and the plain values
SINGLE_ARRAY_NAME = "array"  # the tensor name of a file that holds one bare array
_FORMAT_VERSION = 1


def save(obj, path, metadata=None):
    """Write `obj` (a dict of arrays/Tensors, possibly nested, or one array) to `path` as safetensors.

    `metadata` is an optional dict of str -> str stored in the file's header (readable by
    any safetensors reader, e.g. `safe_open(path, 'np').metadata()`).
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    single = isinstance(obj, Tensor) or is_array(obj)
    if not isinstance(obj, dict) and not single:
        raise TypeError(f"easyfit.save({path!r}): expected a dict (e.g. model.state_dict()) or a single array "
                        f"or Tensor, got {type(obj).__name__}")
    tensors = {}
    tree = _encode(obj, SINGLE_ARRAY_NAME if single else "", tensors, path)
    header = {}
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"easyfit.save({path!r}): metadata must map str to str, got {key!r}: {value!r}")
            if key == STRUCTURE_KEY:
                raise ValueError(f"easyfit.save({path!r}): the metadata key {STRUCTURE_KEY!r} is reserved")
            header[key] = value
    header[STRUCTURE_KEY] = json.dumps({"format": "easyfit", "version": _FORMAT_VERSION, "tree": tree},
                                       allow_nan=True, separators=(",", ":"))
    _write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=header))


def load(path, device=None):
    """Read a safetensors file written by `save` (or by PyTorch, or any safetensors writer).

    Arrays come back as NumPy arrays, or on `device` ('cuda', 'cuda:1') when given;
    bfloat16 tensors (which NumPy lacks) are widened exactly to float32.
    Anything that is not a safetensors file (a pickle, a torch .pt file, garbage)
    raises ValueError naming the file; nothing in the file is ever executed.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    device = parse_device(device)
    _check_header(path)
    try:
        with safe_open(path, framework="np") as reader:
            header = reader.metadata() or {}
            names = list(reader.keys())
            bfloat16 = _bfloat16_entries(path)
            arrays = {name: (_read_bfloat16(path, *bfloat16[name]) if name in bfloat16 else reader.get_tensor(name))
                      for name in names}
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"easyfit.load: {path} is not a readable safetensors file ({error})") from None
    if device != "cpu":
        arrays = {name: to_device(array, device) for name, array in arrays.items()}
    structure = header.get(STRUCTURE_KEY)
    if structure is None:
        return arrays
    try:
        description = json.loads(structure)
        if description.get("format") != "easyfit":
            raise ValueError("unknown format")
        if description.get("version", 0) > _FORMAT_VERSION:
            raise ValueError(f"written by a newer easyfit (format version {description['version']})")
        return _decode(description["tree"], arrays)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"easyfit.load: {path} has a damaged {STRUCTURE_KEY!r} header ({error})") from None


def _raw_header(path):
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        return json.loads(file.read(size)), 8 + size


def _bfloat16_entries(path):
    """Header entries of bfloat16 tensors (PyTorch writes them; NumPy has no such dtype)."""
    header, data_start = _raw_header(path)
    return {name: (entry, data_start) for name, entry in header.items()
            if name != "__metadata__" and entry.get("dtype") == "BF16"}


def _read_bfloat16(path, entry, data_start):
    """A bfloat16 tensor widened to float32 (exactly: bfloat16 is float32's upper 16 bits)."""
    begin, end = entry["data_offsets"]
    with open(path, "rb") as file:
        file.seek(data_start + begin)
        raw = np.frombuffer(file.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


# ----- nesting ----------------------------------------------------------------------------

def _encode(value, name, tensors, path):
    """A JSON description of `value`; its arrays go to `tensors` under their dotted names."""
    if isinstance(value, Tensor):
        value = value.array
    if is_array(value) or isinstance(value, np.generic):
        if name in tensors:
            raise ValueError(f"easyfit.save({path!r}): two entries are both stored as {name!r}; "
                             f"a nested key and a dotted key collide")
        if not name:
            raise ValueError(f"easyfit.save({path!r}): an array needs a non-empty key")
        array = to_device(value, "cpu") if is_array(value) else np.asarray(value)
        # safetensors writes non-contiguous arrays wrongly; np.ascontiguousarray would turn 0-d into 1-d
        tensors[name] = array if array.flags.c_contiguous else array.copy(order="C")
        return {"tensor": name}
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"easyfit.save({path!r}): keys must be str or int, got {key!r} "
                                f"({type(key).__name__}) under {name or 'the top level'!r}")
            items.append([key, _encode(item, f"{name}.{key}" if name else str(key), tensors, path)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(item, f"{name}.{index}" if name else str(index), tensors, path)
                   for index, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": encoded}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"easyfit.save({path!r}): cannot store {name!r} of type {type(value).__name__}; "
                    f"values must be arrays, Tensors, numbers, strings, None, or dicts/lists of those")


def _decode(node, arrays):
    if "tensor" in node:
        return arrays[node["tensor"]]
    if "dict" in node:
        return {key: _decode(item, arrays) for key, item in node["dict"]}
    if "list" in node:
        return [_decode(item, arrays) for item in node["list"]]
    if "tuple" in node:
        return tuple(_decode(item, arrays) for item in node["tuple"])
    return node["value"]


# ----- files ------------------------------------------------------------------------------

def _write_atomically(path, write):
    """Run `write(temporary_path)`, then fsync and rename the temporary over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"easyfit.save: {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"easyfit.save: the folder {folder} of {path} does not exist")
    descriptor, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _file_mode(path))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def _file_mode(path):
    """Keep the mode of the file being replaced; a new file gets the usual 0o666 minus umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX; folders cannot be opened this way on Windows)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_header(path):
    """Refuse files that are not safetensors with a message that says what they look like."""
    try:
        with open(path, "rb") as file:
            start = file.read(9)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"easyfit.load: no such file: {path}") from None
    if len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") + 8 <= size:
        return
    if start[:4] == b"PK\x03\x04":
        raise ValueError(f"easyfit.load: {path} is a zip archive, probably a PyTorch .pt/.pth file (a pickle); "
                         f"easyfit never unpickles files. Convert it in PyTorch with "
                         f"safetensors.torch.save_file(state_dict, 'model.safetensors')")
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ValueError(f"easyfit.load: {path} looks like a Python pickle; easyfit never unpickles files "
                         f"(loading a pickle can run arbitrary code). Save it as safetensors instead")
    raise ValueError(f"easyfit.load: {path} is not a safetensors file ({size} bytes, starting {start!r}; "
                     f"expected an 8-byte header length followed by a JSON header)")
