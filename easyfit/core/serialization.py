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

Whole objects (PyTorch's `torch.save(model, f)`): an object that is none of the above
(a Module, say) is stored as its class's name and its attributes, recursively; arrays
stay arrays, shared objects (tied weights) stay shared. `load` rebuilds such an object
only from classes it may trust: easyfit's own, and those the caller lists with
`safe_globals([...])` or `add_safe_globals([...])`, as PyTorch's `weights_only` loading
asks. It creates each object without calling its `__init__` and sets its attributes, so
loading runs no code of the file's choosing. Lambdas and local classes cannot be stored.

`path` may also be an open binary file (`open(name, 'wb')` for save, `'rb'` for load).

Writes to a path are atomic: the file is written to a temporary file in the same folder,
flushed to disk (fsync), renamed over the target (os.replace), and the folder is
fsynced; a failed save removes the temporary file and leaves an existing file as it
was. A temporary file left by a killed save (`.NAME.PID.XXXXXXXX.tmp`, PID no longer
running) is removed by the next save or load of NAME.

Integrity: `save` stores the SHA-256 of the arrays (names, dtypes, shapes, bytes) and
of the other metadata under `easyfit.sha256`; `load` recomputes it and refuses a file
whose contents changed since (a flipped bit, a truncated copy) with an error naming
the file. Files from other writers carry no checksum and load unchecked.
A write to an open file object is as durable as that file object.
"""
import errno
import hashlib
import importlib
import io
import json
import os
import re
import tempfile
import types

import numpy as np

from .backend import is_array, to_device, parse_device
from .tensor import Tensor

STRUCTURE_KEY = "easyfit.structure"  # metadata entry holding the nesting and the plain values
CHECKSUM_KEY = "easyfit.sha256"      # metadata entry holding the SHA-256 of everything else
SINGLE_ARRAY_NAME = "array"  # the tensor name of a file that holds one bare array
_FORMAT_VERSION = 1
MAX_JSON_DEPTH = 200                 # deeper JSON in a file's metadata is refused before parsing


def save(obj, path, metadata=None):
    """Write `obj` (a dict of arrays/Tensors, possibly nested; one array; or an object) to `path` as safetensors.

    `path` may also be a file opened for binary writing (as torch.save takes one); the
    bytes are then written to it at its position, and the atomic rename is the caller's
    business. `metadata` is an optional dict of str -> str stored in the file's header
    (readable by any safetensors reader, e.g. `safe_open(path, 'np').metadata()`).
    """
    from safetensors.numpy import save as to_bytes, save_file

    # -- an open file (issue 16) --
    file = path if hasattr(path, "write") else None
    if file is not None and isinstance(file, io.TextIOBase):
        raise TypeError(f"easyfit.save: {getattr(file, 'name', 'the file')} is open in text mode; open it with 'wb'")
    path = str(getattr(file, "name", "<file object>")) if file is not None else os.fspath(path)
    # --
    single = isinstance(obj, Tensor) or is_array(obj)
    if isinstance(obj, (list, tuple, set, str, int, float, bool, type(None))):
        raise TypeError(f"easyfit.save({path!r}): expected a dict (e.g. model.state_dict()), a single array "
                        f"or Tensor, or an object such as a Module, got {type(obj).__name__}")
    tensors = {}
    tree = _encode(obj, SINGLE_ARRAY_NAME if single else "", tensors, path, memo={})
    header = {}
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"easyfit.save({path!r}): metadata must map str to str, got {key!r}: {value!r}")
            if key in (STRUCTURE_KEY, CHECKSUM_KEY):
                raise ValueError(f"easyfit.save({path!r}): the metadata key {key!r} is reserved")
            header[key] = value
    header[STRUCTURE_KEY] = json.dumps({"format": "easyfit", "version": _FORMAT_VERSION, "tree": tree},
                                       allow_nan=True, separators=(",", ":"))
    header[CHECKSUM_KEY] = _checksum(tensors, header)
    if file is not None:
        file.write(to_bytes(tensors, metadata=header))
        return
    _write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=header))


def load(path, device=None):
    """Read a safetensors file written by `save` (or by PyTorch, or any safetensors writer).

    Arrays come back as NumPy arrays, or on `device` ('cuda', 'cuda:1') when given;
    bfloat16 tensors (which NumPy lacks) are widened exactly to float32.
    Anything that is not a safetensors file (a pickle, a torch .pt file, garbage), or a
    file whose checksum no longer matches, raises ValueError naming the file; nothing in
    the file is ever executed.
    """
    return load_with_metadata(path, device)[0]


def load_with_metadata(path, device=None, caller="easyfit.load"):
    """(`load(path)`, the file's metadata dict of str -> str), read once and checked."""
    from safetensors import safe_open

    if _is_readable_file(path):
        with tempfile.TemporaryDirectory(prefix="easyfit-load-") as folder:
            temporary = os.path.join(folder, os.path.basename(str(getattr(path, "name", "file"))) or "file")
            with open(temporary, "wb") as copy:
                copy.write(path.read())
            return load_with_metadata(temporary, device, caller)
    path = os.fspath(path)
    device = parse_device(device)
    remove_stale_temporaries(path)
    _check_header(path, caller)
    _check_complete(path, caller)
    try:
        with safe_open(path, framework="np") as reader:
            header = reader.metadata() or {}
            names = list(reader.keys())
            bfloat16 = _bfloat16_entries(path)
            arrays = {name: (_read_bfloat16(path, *bfloat16[name]) if name in bfloat16 else reader.get_tensor(name))
                      for name in names}
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"{caller}: {path} is not a readable safetensors file ({error})") from None
    expected = header.get(CHECKSUM_KEY)
    if expected is not None and _checksum(arrays, header) != expected:
        raise ValueError(f"{caller}: {path} is damaged: its contents do not match the SHA-256 stored when it was "
                         "written (a changed byte, a bad copy or a failing disk); restore it from a good copy")
    if device != "cpu":
        arrays = {name: to_device(array, device) for name, array in arrays.items()}
    structure = header.get(STRUCTURE_KEY)
    if structure is None:
        return arrays, header
    try:
        description = parse_json(structure, f"the {STRUCTURE_KEY!r} header of {path}")
        if description.get("format") != "easyfit":
            raise ValueError("unknown format")
        if description.get("version", 0) > _FORMAT_VERSION:
            raise ValueError(f"written by a newer easyfit (format version {description['version']})")
        return _decode(description["tree"], arrays, memo={}, path=path), header
    except UntrustedGlobalError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{caller}: {path} has a damaged {STRUCTURE_KEY!r} header ({error})") from None


def _raw_header(path):
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        return parse_json(file.read(size).decode("utf-8"), f"the header of {path}"), 8 + size


def _bfloat16_entries(path):
    """Header entries of bfloat16 tensors (PyTorch writes them; NumPy has no such dtype)."""
    header, data_start = _raw_header(path)
    return {name: (entry, data_start) for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and entry.get("dtype") == "BF16"}


def _read_bfloat16(path, entry, data_start):
    """A bfloat16 tensor widened to float32 (exactly: bfloat16 is float32's upper 16 bits)."""
    begin, end = entry["data_offsets"]
    with open(path, "rb") as file:
        file.seek(data_start + begin)
        raw = np.frombuffer(file.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


# ----- nesting ----------------------------------------------------------------------------

def _encode(value, name, tensors, path, memo, in_object=False):
    """A JSON description of `value`; its arrays go to `tensors` under their dotted names.

    Inside an object (`in_object`), Tensors keep their class and `requires_grad`, and an
    object or Tensor met again (tied weights) is stored as a reference to its first name.
    """
    if _is_object(value) or (in_object and isinstance(value, Tensor)):
        if id(value) in memo:
            return {"ref": memo[id(value)][0]}
        memo[id(value)] = (name, value)  # keep `value` alive so its id is not reused
    if isinstance(value, Tensor):
        node = _encode(value.array, name, tensors, path, memo)
        if in_object:
            node.update({"class": _global_name(type(value), name, path), "requires_grad": value.requires_grad})
        return node
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
            items.append([key, _encode(item, f"{name}.{key}" if name else str(key), tensors, path, memo, in_object)])
        return {"dict": items}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        encoded = [_encode(item, f"{name}.{index}" if name else str(index), tensors, path, memo, in_object)
                   for index, item in enumerate(items)]
        kind = "tuple" if isinstance(value, tuple) else "list" if isinstance(value, list) else "set"
        return {kind: encoded}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if in_object and isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return {"global": _global_name(value, name, path)}
    if _is_object(value):
        state = _encode(vars(value), name, tensors, path, memo, in_object=True)
        return {"object": _global_name(type(value), name, path), "name": name, "state": state}
    raise TypeError(f"easyfit.save({path!r}): cannot store {name!r} of type {type(value).__name__}; "
                    f"values must be arrays, Tensors, numbers, strings, None, dicts/lists of those, "
                    f"or objects made of them")


def _is_object(value):
    """An instance of an ordinary class, stored as its class name and its attributes."""
    return (hasattr(value, "__dict__") and not isinstance(value, (type, types.FunctionType, types.ModuleType,
                                                                 types.BuiltinFunctionType, types.MethodType))
            and type(value).__reduce_ex__ is object.__reduce_ex__)


def _global_name(thing, name, path):
    """'module:qualname' of a class or function, refusing what cannot be found again by that name."""
    module, qualname = getattr(thing, "__module__", None), getattr(thing, "__qualname__", "")
    if not module or "<" in qualname:
        raise TypeError(f"easyfit.save({path!r}): cannot store {name or 'the object'!r}: {thing!r} has no "
                        f"importable name (a lambda or a class/function defined inside a function)")
    return f"{module}:{qualname}"


def _decode(node, arrays, memo, path):
    if not isinstance(node, dict):
        raise TypeError(f"a node of the tree is a {type(node).__name__}, expected an object")
    if "ref" in node:
        return memo[node["ref"]]
    if "tensor" in node:
        if node["tensor"] not in arrays:
            raise KeyError(f"the tree names a tensor {node['tensor']!r} that the file does not hold")
        array = arrays[node["tensor"]]
        if "class" not in node:
            return array
        cls = _trusted(node["class"], path, "tensor class")
        if not (isinstance(cls, type) and issubclass(cls, Tensor)):
            raise ValueError(f"{node['class']} is not a Tensor class")
        tensor = cls(array, requires_grad=bool(node.get("requires_grad", False)))
        memo[node["tensor"]] = tensor
        return tensor
    if "dict" in node:
        return {key: _decode(item, arrays, memo, path) for key, item in node["dict"]}
    if "list" in node:
        return [_decode(item, arrays, memo, path) for item in node["list"]]
    if "tuple" in node:
        return tuple(_decode(item, arrays, memo, path) for item in node["tuple"])
    if "set" in node:
        return {_decode(item, arrays, memo, path) for item in node["set"]}
    if "global" in node:
        return _trusted(node["global"], path, "function or class")
    if "object" in node:
        cls = _trusted(node["object"], path, "class")
        if not isinstance(cls, type):
            raise ValueError(f"{node['object']} is not a class")
        made = cls.__new__(cls)
        memo[node["name"]] = made
        made.__dict__.update(_decode(node["state"], arrays, memo, path))
        return made
    return node["value"]


# ----- which classes and functions `load` may rebuild --------------------------------------

class UntrustedGlobalError(ValueError):
    """A file names a class or function that `load` has not been allowed to rebuild."""


_ALLOWED = []          # add_safe_globals
_ALLOWED_SCOPES = []   # one list per active `with safe_globals(...)`


def add_safe_globals(safe_globals):
    """Allow `load` to rebuild objects of these classes (and to restore these functions), from now on."""
    _ALLOWED.extend(_checked_globals(safe_globals))


def get_safe_globals():
    """The classes and functions allowed by `add_safe_globals` and active `safe_globals` blocks."""
    return list(_ALLOWED) + [entry for scope in _ALLOWED_SCOPES for entry in scope]


def clear_safe_globals():
    """Forget everything `add_safe_globals` allowed."""
    _ALLOWED.clear()


class safe_globals:
    """`with safe_globals([MyModel, ...]): load(f)`: allow these classes and functions inside the block.

    easyfit's own classes and functions are always allowed; a program's own classes (a
    model defined in its script) must be listed, as in PyTorch's `weights_only` loading.
    """

    def __init__(self, safe_globals):
        self.entries = _checked_globals(safe_globals)

    def __enter__(self):
        _ALLOWED_SCOPES.append(self.entries)
        return self

    def __exit__(self, *exception):
        _ALLOWED_SCOPES.remove(self.entries)
        return False


def _checked_globals(entries):
    entries = [entry[0] if isinstance(entry, tuple) else entry for entry in entries]
    for entry in entries:
        if not hasattr(entry, "__qualname__") or not hasattr(entry, "__module__"):
            raise TypeError(f"safe_globals takes classes and functions, got {entry!r}")
    return entries


def _trusted(global_name, path, what):
    """The class or function `module:qualname`, when it is easyfit's own or allowed; else a clear error."""
    for entry in get_safe_globals():
        if f"{entry.__module__}:{entry.__qualname__}" == global_name:
            return entry
    module_name, _, qualname = global_name.partition(":")
    if module_name == "easyfit" or module_name.startswith("easyfit."):
        try:
            found = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
                if isinstance(found, types.ModuleType):
                    raise AttributeError(part)
        except (ImportError, AttributeError):
            found = None
        # easyfit's own object, defined in that module or, where it has moved since the file was
        # written (tensor.py's ops to arithmetic.py, ...), still importable from there
        defined_in = getattr(found, "__module__", None) or ""
        if found is not None and (defined_in == "easyfit" or defined_in.startswith("easyfit.")) and \
                getattr(found, "__qualname__", "") == qualname:
            return found
    raise UntrustedGlobalError(
        f"easyfit.load: {path} holds a {what} {global_name.replace(':', '.')}, which load does not rebuild "
        f"unless allowed. If you trust this file, allow it: "
        f"`with easyfit.serialization.safe_globals([{qualname}]): easyfit.load(...)` "
        f"(or easyfit.serialization.add_safe_globals([...]))")


def _is_readable_file(source):
    return hasattr(source, "read") and not isinstance(source, (str, bytes, os.PathLike))


# ----- files ------------------------------------------------------------------------------

def write_bytes_atomically(path, data):
    """Write `data` to `path` as `save` writes its files: atomically, fsynced, with the usual
    permissions (0666 minus the umask, or the replaced file's mode). For other file formats
    easyfit writes (ONNX)."""
    def write(temporary):
        with open(temporary, "wb") as out:
            out.write(data)
    _write_atomically(os.fspath(path), write)


def _write_atomically(path, write):
    """Run `write(temporary_path)`, then fsync and rename the temporary over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"easyfit.save: {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"easyfit.save: the folder {folder} of {path} does not exist")
    remove_stale_temporaries(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp",
                                             dir=folder)
    os.close(descriptor)
    try:
        try:
            write(temporary)
        except Exception as error:  # safetensors reports a failed write (a full disk) as its own error type
            if isinstance(error, OSError) or "I/O error" not in str(error):
                raise
            code = errno.ENOSPC if "os error 28" in str(error) else errno.EIO
            raise OSError(code, f"easyfit.save: writing {path} failed ({os.strerror(code)}); "
                                "an existing file there is unchanged") from None
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


def _check_header(path, caller="easyfit.load"):
    """Refuse files that are not safetensors with a message that says what they look like."""
    try:
        with open(path, "rb") as file:
            start = file.read(9)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{caller}: no such file: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{caller}: {path} is a folder, not a safetensors file") from None
    if len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") + 8 <= size:
        return
    if start[:4] == b"PK\x03\x04":
        raise ValueError(f"{caller}: {path} is a zip archive, probably a PyTorch .pt/.pth file (a pickle); "
                         f"easyfit never unpickles files. Convert it in PyTorch with "
                         f"safetensors.torch.save_file(state_dict, 'model.safetensors')")
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ValueError(f"{caller}: {path} looks like a Python pickle; easyfit never unpickles files "
                         f"(loading a pickle can run arbitrary code). Save it as safetensors instead")
    if len(start) == 9 and start[8:9] == b"{":
        raise ValueError(f"{caller}: {path} is truncated ({size} bytes, but its header alone claims "
                         f"{int.from_bytes(start[:8], 'little') + 8}); an interrupted copy or download?")
    raise ValueError(f"{caller}: {path} is not a safetensors file ({size} bytes, starting {start!r}; "
                     f"expected an 8-byte header length followed by a JSON header)")


# ----- integrity, bounded JSON and stale temporary files (issue 15) ------------------------

def _check_complete(path, caller):
    """A file shorter than its header says (an interrupted copy) is reported as truncated."""
    try:
        header, data_start = _raw_header(path)
        end = max((int(entry["data_offsets"][1]) for name, entry in header.items()
                   if name != "__metadata__" and isinstance(entry, dict)), default=0)
    except Exception:  # a damaged header: safetensors' own check reports it
        return
    size = os.path.getsize(path)
    if data_start + end > size:
        raise ValueError(f"{caller}: {path} is truncated ({size} bytes, but its header describes "
                         f"{data_start + end}); an interrupted copy or download?")


def _checksum(arrays, metadata):
    """SHA-256 (hex) of the arrays (sorted by name: name, dtype, shape, bytes) and of the metadata
    entries other than the checksum itself: what `load` must give back unchanged."""
    digest = hashlib.sha256()
    for key in sorted(metadata):
        if key != CHECKSUM_KEY:
            digest.update(json.dumps([key, metadata[key]]).encode("utf-8"))
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(json.dumps([name, np.dtype(array.dtype).str, list(array.shape)]).encode("utf-8"))
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def parse_json(text, where, max_depth=MAX_JSON_DEPTH):
    """json.loads with the nesting depth checked first: deep nesting in a crafted file is a
    ValueError naming `where`, never a RecursionError."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    brackets = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    depth = np.cumsum((brackets == ord("[")).astype(np.int64) + (brackets == ord("{"))
                      - (brackets == ord("]")) - (brackets == ord("}")))
    if depth.size and depth.max() > max_depth:
        raise ValueError(f"{where} nests deeper than {max_depth} levels; refusing to parse it")
    try:
        return json.loads(text)
    except RecursionError:  # belt and braces: the scan above should make this unreachable
        raise ValueError(f"{where} nests too deeply to parse") from None
    except ValueError as error:
        raise ValueError(f"{where} is not valid JSON ({error})") from None


def remove_stale_temporaries(path):
    """Delete temporary files that killed saves of `path` left in its folder.

    Only our own pattern is touched: `.NAME.PID.XXXXXXXX.tmp` whose process PID is no longer
    running (a live save by another process is left alone), and `.NAME.XXXXXXXX.tmp` from
    easyfit versions that did not record the PID.
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix):-len(".tmp")].split(".")
        if len(middle) == 2 and middle[0].isdigit():
            if int(middle[0]) == os.getpid() or _process_exists(int(middle[0])):
                continue
        elif len(middle) != 1 or len(middle[0]) != 8:
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _process_exists(pid):
    if os.name != "posix":  # signal 0 means CTRL_C_EVENT on Windows: assume the writer may be alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
