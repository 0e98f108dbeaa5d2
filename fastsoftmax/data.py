"""Fashion-MNIST: find, verify and read the four files.

Reads the official IDX files (gzip-compressed or not) and the four ``.npy``
files of the original NumPy homework.  Files are untrusted input: headers are
checked before anything large is allocated, ``.npy`` files are read without
pickle, and the official files must match their published SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class _Official:
    stem: str  # file name without .gz
    shape: tuple  # shape of the array it holds
    sha256: str  # of the uncompressed file
    size: int  # bytes, uncompressed


OFFICIAL = {
    "train_images": _Official("train-images-idx3-ubyte", (60000, 28, 28),
                              "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                              47_040_016),
    "train_labels": _Official("train-labels-idx1-ubyte", (60000,),
                              "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                              60_008),
    "test_images": _Official("t10k-images-idx3-ubyte", (10000, 28, 28),
                             "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                             7_840_016),
    "test_labels": _Official("t10k-labels-idx1-ubyte", (10000,),
                             "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                             10_008),
}
NPY_NAMES = {key: f"fashion_mnist_{key}.npy" for key in OFFICIAL}


def fingerprint(*arrays) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes: which data a sweep used."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


@dataclass
class Dataset:
    """Fashion-MNIST in memory.

    Attributes
    ----------
    train_images : ndarray, shape (60000, 784), uint8 (or float in [0, 1] from .npy)
    train_labels : ndarray, shape (60000,), int64 in 0..9
    test_images : ndarray, shape (10000, 784)
    test_labels : ndarray, shape (10000,), int64 in 0..9
    class_names : tuple of 10 str
    source : Path, the directory the files came from
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path
    class_names: tuple = field(default=CLASS_NAMES)


# --------------------------------------------------------------------------
# IDX


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path, expected: _Official | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes; with ``expected``, verify it fully.

    Returns an array of the header's shape, uint8.  Raises :class:`DataError`
    naming the file on a wrong magic number, unexpected dimensions, a
    truncated or over-long body, or a checksum mismatch.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with _open_idx(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (bad magic number {head.hex()})")
            if head[2] != 0x08:
                raise DataError(f"{path}: IDX element type 0x{head[2]:02x} is not unsigned byte")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            if expected is not None and dims != expected.shape:
                raise DataError(f"{path}: IDX dimensions {dims}, expected {expected.shape}")
            count = math.prod(dims)  # Python ints: a forged header cannot overflow this
            # The header is checked before the body is allocated, so a forged
            # header cannot ask for more than the expected shape.
            if expected is None and count > 10**9:
                raise DataError(f"{path}: IDX header claims {count} values, too many")
            body = f.read(count)
            if len(body) < count:
                raise DataError(f"{path}: truncated: header says {count} values, "
                                f"file holds {len(body)}")
            if f.read(1):
                raise DataError(f"{path}: trailing bytes after {count} values")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataError(f"{path}: cannot be read: {exc}") from None
    if expected is not None:
        digest.update(head + dims_raw + body)
        if digest.hexdigest() != expected.sha256:
            raise DataError(f"{path}: SHA-256 {digest.hexdigest()} does not match the "
                            f"official {expected.stem} ({expected.sha256}): corrupt file")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


# --------------------------------------------------------------------------
# .npy


def read_npy(path, kind: str, n: int) -> np.ndarray:
    """Read one homework ``.npy`` file: images (n, 784) or labels (n,).

    Images may be uint8 pixels or floats in [0, 1]; labels integers in 0..9.
    There is no official checksum for these, so shape, dtype and value range
    are checked instead.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file: {exc}") from None
    if kind == "images":
        if arr.shape != (n, 784):
            raise DataError(f"{path}: shape {arr.shape}, expected ({n}, 784)")
        if arr.dtype == np.uint8:
            return np.array(arr)
        if arr.dtype.kind != "f":
            raise DataError(f"{path}: dtype {arr.dtype}, expected uint8 or float")
        arr = np.array(arr)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{path}: float pixels must be finite and lie in [0, 1]")
        return arr
    if arr.shape != (n,):
        raise DataError(f"{path}: shape {arr.shape}, expected ({n},)")
    arr = np.array(arr)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DataError(f"{path}: labels must be integers")
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{path}: dtype {arr.dtype}, expected integer labels")
    if arr.min() < 0 or arr.max() > 9:
        raise DataError(f"{path}: labels must lie in 0..9, found {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------
# finding the files


def cache_dir() -> Path:
    """Per-user cache: ``$XDG_CACHE_HOME/fastsoftmax`` or ``~/.cache/fastsoftmax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastsoftmax"


def _idx_path(directory: Path, spec: _Official) -> Path | None:
    for name in (spec.stem, spec.stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _find_format(directory: Path) -> str | None:
    """'idx' or 'npy' when ``directory`` holds all four files of a format."""
    if all(_idx_path(directory, spec) for spec in OFFICIAL.values()):
        return "idx"
    if all((directory / name).is_file() for name in NPY_NAMES.values()):
        return "npy"
    return None


def _read_dir(directory: Path, fmt: str) -> Dataset:
    if fmt == "idx":
        arrays = {key: read_idx(_idx_path(directory, spec), spec) for key, spec in OFFICIAL.items()}
        arrays = {key: (a.reshape(a.shape[0], -1) if a.ndim == 3 else a.astype(np.int64))
                  for key, a in arrays.items()}
    else:
        arrays = {key: read_npy(directory / NPY_NAMES[key], key.split("_")[1],
                                OFFICIAL[key].shape[0]) for key in OFFICIAL}
    return Dataset(**arrays, source=directory)


def download_official(directory: Path) -> None:
    """Fetch the four official gz files into ``directory``.

    Each is written to a temporary file in the same directory, verified
    (IDX header and SHA-256 of its content), then renamed into place, so an
    interrupted or corrupt download never leaves a file that looks complete.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for spec in OFFICIAL.values():
        target = directory / (spec.stem + ".gz")
        if target.is_file():
            continue
        url = DOWNLOAD_URL + spec.stem + ".gz"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".gz")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
                shutil.copyfileobj(r, out)
            try:
                read_idx(Path(tmp), spec)
            except DataError as exc:
                raise DataError(f"downloaded {url} failed verification, not kept: "
                                f"{str(exc).split(': ', 1)[1]}") from None
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_fashion_mnist(data_dir=None, *, download: bool = True) -> Dataset:
    """Load Fashion-MNIST, verified.

    Looks, in order, in ``data_dir`` (if given, and only there); the
    environment variable ``FASTSOFTMAX_DATA``; the per-user cache
    (:func:`cache_dir`); Debian's ``/usr/share/datasets/fashion-mnist``;
    then, if ``download``, fetches the official files into the cache.

    Returns
    -------
    Dataset with train_images (60000, 784), train_labels (60000,),
    test_images (10000, 784), test_labels (10000,), class_names.

    Raises
    ------
    FileNotFoundError
        No place holds the files; the message lists every place tried.
    DataError (a ValueError)
        A file is truncated, corrupt, has a wrong magic number or does not
        match the official checksum; the message names the file.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        fmt = _find_format(directory)
        if fmt is None:
            raise FileNotFoundError(
                f"data_dir={str(directory)!r} does not hold the four Fashion-MNIST files "
                f"(IDX: {', '.join(s.stem + '[.gz]' for s in OFFICIAL.values())}; or .npy: "
                f"{', '.join(NPY_NAMES.values())})")
        return _read_dir(directory, fmt)
    places = []
    env = os.environ.get("FASTSOFTMAX_DATA")
    if env:
        places.append((Path(env), "FASTSOFTMAX_DATA"))
    places += [(cache_dir(), "cache"), (DEBIAN_DIR, "Debian package dataset-fashion-mnist")]
    for directory, _ in places:
        fmt = _find_format(directory)
        if fmt is not None:
            return _read_dir(directory, fmt)
    tried = "; ".join(f"{d} ({why})" for d, why in places)
    if download:
        try:
            download_official(cache_dir())
        except OSError as exc:
            tried += f"; download from {DOWNLOAD_URL} failed: {exc}"
        else:
            return _read_dir(cache_dir(), "idx")
    raise FileNotFoundError(
        "Fashion-MNIST not found. Looked in: " + tried + ". To fix: on Debian/Ubuntu "
        "`sudo apt-get install dataset-fashion-mnist`; or pass data_dir=DIR (CLI: --data DIR) "
        "naming a folder with the four files; or set FASTSOFTMAX_DATA=DIR; or allow "
        "download=True with internet access.")


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into training and validation indices.

    Returns (train, val): sorted int64 index arrays, ``round(n * val_fraction)``
    of them for validation.  The same (n, val_fraction, seed) always gives the
    same split, so every configuration of a sweep sees the same data.
    """
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training or validation "
                         f"examples out of {n}")
    perm = np.random.default_rng(np.random.SeedSequence([seed, 1])).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
