"""Downloader: checksum verification, archives and plain files, a clear error offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from rnnguard.errors import ConfigError, DataError
from rnnguard.tasks import download as dl

CONTENT = {"train.txt": b" a b \n", "valid.txt": b" b \n", "test.txt": b" a \n"}


def make_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in CONTENT.items():
            info = tarfile.TarInfo(f"simple-examples/data/ptb.char.{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_ptb(monkeypatch: pytest.MonkeyPatch) -> dl.Dataset:
    files = {n: ("sha256", hashlib.sha256(d).hexdigest()) for n, d in CONTENT.items()}
    ds = dataclasses.replace(dl.PTB_CHAR, files=files)
    monkeypatch.setitem(dl.DATASETS, "ptb-char", ds)
    return ds


def test_archive_download_verified_and_reused(tmp_path: Path, fake_ptb: dl.Dataset) -> None:
    url = make_archive(tmp_path / "simple-examples.tgz").as_uri()
    folder = dl.download("ptb-char", tmp_path / "data", urls=(url,))
    assert folder == tmp_path / "data" / "ptb-char"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CONTENT
    # Already present and valid: no network needed (this URL cannot be reached).
    assert dl.download("ptb-char", tmp_path / "data", urls=("http://127.0.0.1:9/x.tgz",)) == folder


def test_checksum_mismatch_keeps_nothing(tmp_path: Path, fake_ptb: dl.Dataset,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    bad = dict(fake_ptb.files, **{"valid.txt": ("sha256", "0" * 64)})
    monkeypatch.setitem(dl.DATASETS, "ptb-char", dataclasses.replace(fake_ptb, files=bad))
    url = make_archive(tmp_path / "a.tgz").as_uri()
    with pytest.raises(DataError, match="sha256") as info:
        dl.download("ptb-char", tmp_path / "data", urls=(url,))
    assert "0" * 64 in str(info.value)
    assert not (tmp_path / "data" / "ptb-char").exists() or not any(
        (tmp_path / "data" / "ptb-char").iterdir()
    )


def test_offline_error_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        dl.download(
            "ptb-char", tmp_path, urls=("http://127.0.0.1:9/simple-examples.tgz",), timeout=5
        )
    msg = str(info.value)
    assert "offline" in msg and str(tmp_path / "ptb-char") in msg and "by hand" in msg


def test_plain_files_with_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "f.gz").write_bytes(b"payload")
    ds = dl.Dataset("tiny", (src.as_uri(),), {"f.gz": ("md5", hashlib.md5(b"payload").hexdigest())},
                    subdir="tiny")  # fmt: skip
    monkeypatch.setitem(dl.DATASETS, "tiny", ds)
    folder = dl.download("tiny", tmp_path / "data")
    assert (folder / "f.gz").read_bytes() == b"payload"


def test_unknown_dataset_and_algorithm() -> None:
    with pytest.raises(ConfigError, match="data set"):
        dl.download("imagenet", ".")
    with pytest.raises(ConfigError, match="algorithm"):
        dl.file_digest(b"", "sha1")
    assert dl.PTB_CHAR.files["train.txt"][1].startswith("e313d914")
