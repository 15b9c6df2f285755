"""Fetch public data sets into a data dir, verifying checksums; a clear error when offline.

Nothing is ever bundled with rnnguard: the files go to the folder the user names, and every file is
checked against a known SHA-256 (PTB-char) or MD5 (MNIST archives, as published) before it is kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnguard.errors import ConfigError, DataError
from rnnguard.utils.io import atomic_write_bytes

__all__ = ["DATASETS", "Dataset", "download", "file_digest"]


@dataclass(frozen=True)
class Dataset:
    """Where a data set comes from and what its files must hash to."""

    name: str
    urls: tuple[str, ...]
    """Archive or file URLs, tried in order (mirrors)."""
    files: dict[str, tuple[str, str]]
    """Target file name -> (algorithm, hex digest) of the file as stored."""
    members: dict[str, str] | None = None
    """For a tar archive: target file name -> the end of its member path inside the archive."""
    subdir: str = ""


PTB_CHAR = Dataset(
    name="ptb-char",
    urls=("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",),
    files={
        "train.txt": ("sha256", "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9"),
        "valid.txt": ("sha256", "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8"),
        "test.txt": ("sha256", "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe"),
    },
    members={
        "train.txt": "data/ptb.char.train.txt",
        "valid.txt": "data/ptb.char.valid.txt",
        "test.txt": "data/ptb.char.test.txt",
    },
    subdir="ptb-char",
)

_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST = Dataset(
    name="mnist",
    urls=(_MNIST_BASE,),
    files={
        "train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    subdir="mnist",
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (PTB_CHAR, MNIST)}


def file_digest(data: bytes, algorithm: str) -> str:
    """Hex digest of ``data`` with ``algorithm`` (``sha256`` or ``md5``)."""
    if algorithm not in ("sha256", "md5"):
        raise ConfigError(f"algorithm must be 'sha256' or 'md5', got {algorithm!r}")
    return hashlib.new(algorithm, data).hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"could not download {url} ({reason}); are you offline?") from exc


def _verify(name: str, data: bytes, expected: tuple[str, str], source: str) -> None:
    algorithm, digest = expected
    got = file_digest(data, algorithm)
    if got != digest:
        raise DataError(
            f"{name} from {source} has {algorithm} {got}, expected {digest}; the download is "
            "corrupt or not the expected file, nothing was kept"
        )


def download(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    urls: tuple[str, ...] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download data set ``name`` into ``data_dir/<subdir>`` and return that folder.

    Files already present with the right checksum are kept; each new file is verified before it
    is written (atomically). ``urls`` overrides the source (a mirror, or a ``file://`` URL).
    """
    if name not in DATASETS:
        raise ConfigError(f"data set must be one of {sorted(DATASETS)}, got {name!r}")
    ds = DATASETS[name]
    target = Path(data_dir) / ds.subdir
    sources = urls or ds.urls
    todo = {}
    for fname, expected in ds.files.items():
        path = target / fname
        if path.is_file() and file_digest(path.read_bytes(), expected[0]) == expected[1]:
            continue
        todo[fname] = expected
    if not todo:
        return target
    hint = f"; without internet, copy the files {sorted(ds.files)} into {str(target)!r} by hand"
    errors = []
    for base in sources:
        try:
            if ds.members is not None:
                archive = _fetch(base, timeout)
                with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                    names = tar.getnames()
                    blobs = {}
                    for fname in todo:
                        suffix = ds.members[fname]
                        found = next((n for n in names if n.endswith(suffix)), None)
                        member = tar.extractfile(found) if found else None
                        if member is None:
                            raise DataError(f"{suffix} missing from {base}")
                        blobs[fname] = member.read()
            else:
                blobs = {f: _fetch(base.rstrip("/") + "/" + f, timeout) for f in todo}
            for fname, data in blobs.items():
                _verify(fname, data, todo[fname], base)
        except (DataError, tarfile.TarError, KeyError) as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        for fname, data in blobs.items():
            atomic_write_bytes(target / fname, data)
        return target
    raise DataError(f"could not get {name}: {'; '.join(errors)}{hint}")
