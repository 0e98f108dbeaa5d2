"""The loader on small files the tests write, and on the real data when present."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import data

SMALL = {"train_images": (12, 28, 28), "train_labels": (12,),
         "test_images": (5, 28, 28), "test_labels": (5,)}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


@pytest.fixture
def small_official(monkeypatch):
    """Shrink the official specs to tiny arrays whose checksums the test knows,
    so the whole load path (header, size, SHA-256) runs on small files."""
    rng = np.random.default_rng(0)
    arrays, specs = {}, {}
    for key, shape in SMALL.items():
        arr = rng.integers(0, 256 if "images" in key else 10, shape, dtype=np.uint8)
        raw = idx_bytes(arr)
        old = data.OFFICIAL[key]
        specs[key] = data._Official(old.stem, shape, hashlib.sha256(raw).hexdigest(), len(raw))
        arrays[key] = arr
    monkeypatch.setattr(data, "OFFICIAL", specs)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache-for-tests")
    monkeypatch.delenv("FASTSOFTMAX_DATA", raising=False)
    return arrays


def write_idx_dir(directory, arrays, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        name = data.OFFICIAL[key].stem
        raw = idx_bytes(arr)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return directory


@pytest.mark.parametrize("gz", [False, True])
def test_reads_idx_files(tmp_path, small_official, gz):
    write_idx_dir(tmp_path, small_official, gz=gz)
    ds = fs.load_fashion_mnist(tmp_path, download=False)
    assert ds.train_images.shape == (12, 784) and ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images, small_official["train_images"].reshape(12, 784))
    np.testing.assert_array_equal(ds.test_labels, small_official["test_labels"])
    assert ds.test_labels.dtype == np.int64
    assert len(ds.class_names) == 10 and ds.class_names[9] == "Ankle boot"


def test_corrupt_file_is_named(tmp_path, small_official):
    arrays = dict(small_official)
    bad = arrays["test_images"].copy()
    bad[0, 0, 0] ^= 1  # one flipped bit: header fine, checksum wrong
    arrays["test_images"] = bad
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(fs.DataError, match="t10k-images-idx3-ubyte.*SHA-256"):
        fs.load_fashion_mnist(tmp_path)


def test_truncated_file_is_named(tmp_path, small_official):
    write_idx_dir(tmp_path, small_official)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(fs.DataError, match="train-labels-idx1-ubyte: truncated"):
        fs.load_fashion_mnist(tmp_path)


def test_truncated_gzip_is_named(tmp_path, small_official):
    write_idx_dir(tmp_path, small_official, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(fs.DataError, match="train-images-idx3-ubyte.gz"):
        fs.load_fashion_mnist(tmp_path)


def test_wrong_magic_and_dimensions(tmp_path, small_official):
    write_idx_dir(tmp_path, small_official)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float elements instead of unsigned bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(fs.DataError, match="t10k-labels-idx1-ubyte: IDX element type"):
        fs.load_fashion_mnist(tmp_path)
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(fs.DataError, match="not an IDX file"):
        fs.load_fashion_mnist(tmp_path)
    path.write_bytes(idx_bytes(np.zeros(6)))  # 6 labels where 5 are expected
    with pytest.raises(fs.DataError, match=r"dimensions \(6,\), expected \(5,\)"):
        fs.load_fashion_mnist(tmp_path)


def test_forged_header_does_not_allocate(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31))
    with pytest.raises(fs.DataError, match="too many"):
        data.read_idx(path)


def test_explicit_data_dir_does_not_fall_back(tmp_path, small_official, monkeypatch):
    good = write_idx_dir(tmp_path / "good", small_official)
    monkeypatch.setenv("FASTSOFTMAX_DATA", str(good))
    with pytest.raises(FileNotFoundError, match="data_dir=.*empty"):
        fs.load_fashion_mnist(tmp_path / "empty")
    # ...while without data_dir the environment variable is used
    assert fs.load_fashion_mnist(download=False).source == good


def test_missing_data_names_every_place_and_the_fixes(tmp_path, small_official, monkeypatch):
    monkeypatch.setenv("FASTSOFTMAX_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    with pytest.raises(FileNotFoundError) as info:
        fs.load_fashion_mnist(download=False)
    msg = str(info.value)
    for place in ("env", "cache", "debian"):
        assert str(tmp_path / place) in msg
    for fix in ("apt-get install dataset-fashion-mnist", "data_dir", "FASTSOFTMAX_DATA",
                "download"):
        assert fix in msg


def test_download_verifies_then_renames(tmp_path, small_official, monkeypatch):
    mirror = write_idx_dir(tmp_path / "mirror", small_official, gz=True)
    monkeypatch.setattr(data, "DOWNLOAD_URL", mirror.as_uri() + "/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    ds = fs.load_fashion_mnist()
    np.testing.assert_array_equal(ds.train_labels, small_official["train_labels"])
    assert sorted(p.name for p in (tmp_path / "cache" / "fastsoftmax").iterdir()) == sorted(
        data.OFFICIAL[k].stem + ".gz" for k in SMALL)


def test_corrupt_download_leaves_nothing(tmp_path, small_official, monkeypatch):
    mirror = write_idx_dir(tmp_path / "mirror", small_official, gz=True)
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03garbage"))
    monkeypatch.setattr(data, "DOWNLOAD_URL", mirror.as_uri() + "/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    with pytest.raises(fs.DataError, match="t10k-images"):
        fs.load_fashion_mnist()
    names = [p.name for p in (tmp_path / "cache" / "fastsoftmax").iterdir()]
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.startswith(".download")]


def write_npy_dir(directory, images_dtype=np.uint8):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for key, n in (("train", 60000), ("test", 10000)):
        images = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        if images_dtype != np.uint8:  # in [0, 1], computed in the float type itself
            images = np.multiply(images, 1 / 255, dtype=images_dtype)
        np.save(directory / f"fashion_mnist_{key}_images.npy", images)
        np.save(directory / f"fashion_mnist_{key}_labels.npy", rng.integers(0, 10, n))
    return directory


@pytest.mark.parametrize("images_dtype", [np.uint8, np.float32])
def test_reads_homework_npy(tmp_path, images_dtype):
    write_npy_dir(tmp_path, images_dtype)
    ds = fs.load_fashion_mnist(tmp_path)
    assert ds.train_images.shape == (60000, 784) and ds.train_images.dtype == images_dtype
    assert ds.test_labels.shape == (10000,)
    # float pixels are used as given by the trainer
    fs.evaluate(fs.init_params(784, 2, 10), ds.test_images[:10], ds.test_labels[:10])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10000, 783), np.uint8), r"shape \(10000, 783\)"),
    (np.full((10000, 784), 2.0, np.float32), r"float pixels must be finite and lie in \[0, 1\]"),
    (np.zeros((10000, 784), np.complex64), "dtype complex64"),
])
def test_bad_npy_images(tmp_path, bad, match):
    write_npy_dir(tmp_path)
    np.save(tmp_path / "fashion_mnist_test_images.npy", bad)
    with pytest.raises(fs.DataError, match="fashion_mnist_test_images.npy: " + match):
        fs.load_fashion_mnist(tmp_path)


def test_bad_npy_labels_and_pickles(tmp_path):
    write_npy_dir(tmp_path)
    np.save(tmp_path / "fashion_mnist_train_labels.npy", np.full(60000, 10))
    with pytest.raises(fs.DataError, match="train_labels.npy: labels must lie in 0..9"):
        fs.load_fashion_mnist(tmp_path)
    np.save(tmp_path / "fashion_mnist_train_labels.npy", np.array([{"x": 1}] * 60000),
            allow_pickle=True)
    with pytest.raises(fs.DataError, match="train_labels.npy: not a readable .npy"):
        fs.load_fashion_mnist(tmp_path)


@pytest.mark.realdata
def test_real_data_shapes_counts_and_checksums(real_data):
    assert real_data.train_images.shape == (60000, 784)
    assert real_data.test_images.shape == (10000, 784)
    assert real_data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(real_data.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(real_data.test_labels), [1000] * 10)
    # The checksums were verified on load; check the content against them again.
    for key, spec in data.OFFICIAL.items():
        arr = getattr(real_data, key)
        raw = idx_bytes(arr.reshape(spec.shape))
        assert hashlib.sha256(raw).hexdigest() == spec.sha256, key
