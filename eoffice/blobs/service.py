"""Files stored once, addressed by SHA-256; written and read as streams."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlmodel import Session

from eoffice.db import insert_ignore
from eoffice.errors import PayloadTooLarge, ServiceUnavailable
from eoffice.models import Blob, utcnow
from eoffice.settings import get_settings

CHUNK = 1024 * 1024


class BlobCorrupted(ServiceUnavailable):
    """The stored bytes no longer match their address."""


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


class BlobStore(Protocol):
    """Where file content lives; rows in `blobs` point here."""

    def put_file(self, source: BinaryIO, max_bytes: int | None = None) -> StoredFile: ...

    def open(self, sha256: str) -> BinaryIO: ...

    @contextmanager
    def local_path(self, sha256: str) -> Iterator[Path]:  # pragma: no cover - protocol
        yield Path()

    def exists(self, sha256: str) -> bool: ...

    def ping(self) -> None: ...


class _VerifyingReader:
    """Streams a blob and raises at the end if its hash does not match the address."""

    def __init__(self, raw: BinaryIO, expected: str) -> None:
        self._raw = raw
        self._expected = expected
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._hash.update(data)
        elif self._hash.hexdigest() != self._expected:
            raise BlobCorrupted(f"stored file {self._expected} is corrupted",
                                detail_vi="Tệp lưu trữ bị hỏng")
        return data

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBlobStore:
    """The embedded default: a folder, two levels of fan-out by hash prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, source: BinaryIO, max_bytes: int | None = None) -> StoredFile:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"file larger than {max_bytes} bytes",
                                              detail_vi="Tệp vượt quá dung lượng cho phép")
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            target = self._path(sha)
            if target.exists():
                os.unlink(tmp_name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, target)
            return StoredFile(sha, size)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise

    def open(self, sha256: str) -> BinaryIO:
        return _VerifyingReader(open(self._path(sha256), "rb"), sha256)  # type: ignore[return-value]

    @contextmanager
    def local_path(self, sha256: str) -> Iterator[Path]:
        yield self._path(sha256)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise ServiceUnavailable("blob folder not writable")


def get_blob_store() -> BlobStore:
    """The configured blob store."""
    settings = get_settings()
    assert settings.blob_dir is not None
    return LocalBlobStore(settings.blob_dir)


def store_upload(session: Session, source: BinaryIO, *, content_type: str,
                 max_bytes: int | None = None) -> StoredFile:
    """Stream a file into the store and make sure its row exists (no commit)."""
    stored = get_blob_store().put_file(source, max_bytes=max_bytes)
    # Two uploads of the same file may race: the row is content-addressed, so either wins.
    insert_ignore(session, Blob, {"sha256": stored.sha256, "size": stored.size,
                                  "content_type": content_type, "created_at": utcnow()})
    return stored


def copy_to(sha256: str, target: BinaryIO) -> None:
    """Copy a stored blob into an open file, verifying its hash."""
    with get_blob_store().open(sha256) as reader:
        shutil.copyfileobj(reader, target, CHUNK)  # type: ignore[misc]
