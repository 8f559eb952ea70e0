"""Files stored once, addressed by SHA-256; written and read as streams."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sqlalchemy import event
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session

from eoffice.db import BEFORE_COMMIT_STEPS, offload_blocking, start_blocking, wait_before_commit
from eoffice.errors import PayloadTooLarge, ServiceUnavailable
from eoffice.models import Blob, utcnow
from eoffice.rows import insert_ignore
from eoffice.settings import get_settings

CHUNK = 1024 * 1024


class BlobCorrupted(ServiceUnavailable):
    """The stored bytes no longer match their address."""


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


@dataclass(frozen=True)
class StagedFile:
    """A file of the local store written under a temporary name, not yet synced."""

    sha256: str
    size: int
    tmp_name: str


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


def _fsync_directory(path: Path) -> None:
    """Make a rename into `path` durable (the directory entry is data of its own)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """The embedded default: a folder, two levels of fan-out by hash prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp_dir = str(root / "tmp")
        self._tmp_made = False

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, source: BinaryIO, max_bytes: int | None = None) -> StoredFile:
        staged = self._write(source, max_bytes, durable=True)
        folder = self._place(staged)
        if folder is not None:
            _fsync_directory(folder)
        return StoredFile(staged.sha256, staged.size)

    def stage_file(self, source: BinaryIO, max_bytes: int | None = None) -> StagedFile:
        """Written under a temporary name and not synced: publish_staged makes it durable
        and puts it at its address (see put_for_commit)."""
        return self._write(source, max_bytes, durable=False)

    def publish_staged(self, staged: Sequence[StagedFile]) -> None:
        """Sync staged files, move them to their addresses, sync the folders that changed
        (each once)."""
        for item in staged:
            fd = os.open(item.tmp_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        folders = {folder for item in staged if (folder := self._place(item)) is not None}
        for folder in folders:
            _fsync_directory(folder)

    def discard_staged(self, staged: Sequence[StagedFile]) -> None:
        for item in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.tmp_name)

    def _write(self, source: BinaryIO, max_bytes: int | None, durable: bool) -> StagedFile:
        # Folders are made when missing, not asked for on every file: mkdir(exist_ok=True)
        # is a failing system call and a caught exception each time (35 us of an upload's
        # ~250 us of CPU, most of the rest being the two fsyncs).
        if not self._tmp_made:
            os.makedirs(self._tmp_dir, exist_ok=True)
            self._tmp_made = True
        digest = hashlib.sha256()
        size = 0
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir)
        except FileNotFoundError:  # the folder was removed under us
            os.makedirs(self._tmp_dir, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"file larger than {max_bytes} bytes",
                                              detail_vi="Tệp vượt quá dung lượng cho phép")
                    digest.update(chunk)
                    out.write(chunk)
                if durable:
                    # The row naming this file commits durably (WAL fsync) right after;
                    # the file must be on disk first, or a power cut leaves a row without
                    # content.
                    out.flush()
                    os.fsync(out.fileno())
            return StagedFile(digest.hexdigest(), size, tmp_name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def _place(self, staged: StagedFile) -> Path | None:
        """Move a synced file to its address; the folder to sync, None if the address
        already held the file (content-addressed: the same bytes)."""
        target = self._path(staged.sha256)
        try:
            if target.exists():
                os.unlink(staged.tmp_name)
                return None
            if not os.path.isdir(target.parent):  # the first file of its fan-out folder
                target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.tmp_name, target)
            return target.parent
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.tmp_name)
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


class S3BlobStore:
    """An S3-compatible bucket (MinIO, Ceph, AWS) shared by every api and worker node.

    Uploads are hashed while they stream to a local spool file (the address is only known
    at the end), then sent with multipart upload; nothing is held whole in memory.
    """

    def __init__(self, *, bucket: str, endpoint_url: str | None, access_key: str | None,
                 secret_key: str | None, region: str = "us-east-1", spool_dir: Path | None = None,
                 create_bucket: bool = False) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.spool_dir = spool_dir
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region,
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=60))
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # Another node created it first.
                if exc.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    @staticmethod
    def key(sha256: str) -> str:
        """The object key of a blob (fan-out prefixes keep listings manageable)."""
        return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def put_file(self, source: BinaryIO, max_bytes: int | None = None) -> StoredFile:
        from boto3.s3.transfer import TransferConfig

        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(f"file larger than {max_bytes} bytes",
                                          detail_vi="Tệp vượt quá dung lượng cho phép")
                digest.update(chunk)
                spool.write(chunk)
            sha = digest.hexdigest()
            if not self.exists(sha):
                spool.seek(0)
                self.client.upload_fileobj(
                    spool, self.bucket, self.key(sha),
                    ExtraArgs={"Metadata": {"sha256": sha}},
                    Config=TransferConfig(multipart_threshold=8 * CHUNK,
                                          multipart_chunksize=8 * CHUNK, max_concurrency=4))
        return StoredFile(sha, size)

    def open(self, sha256: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(sha256) from exc
            raise ServiceUnavailable("blob store unavailable",
                                     detail_vi="Kho tệp tạm thời không truy cập được") from exc
        return _VerifyingReader(body, sha256)  # type: ignore[return-value]

    @contextmanager
    def local_path(self, sha256: str) -> Iterator[Path]:
        # Libraries that need a real file (pyHanko, pdf tools) get a verified temporary copy.
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.spool_dir, suffix=".blob")
        try:
            with os.fdopen(fd, "wb") as out, self.open(sha256) as reader:
                shutil.copyfileobj(reader, out, CHUNK)  # type: ignore[misc]
            yield Path(name)
        finally:
            if os.path.exists(name):
                os.unlink(name)

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


@lru_cache(maxsize=4)
def _s3_store(bucket: str, endpoint_url: str, access_key: str, secret_key: str, region: str,
              spool_dir: str, create_bucket: bool) -> S3BlobStore:
    # boto3 clients are thread-safe and costly to build: one per configuration per process.
    return S3BlobStore(bucket=bucket, endpoint_url=endpoint_url, access_key=access_key,
                       secret_key=secret_key, region=region, spool_dir=Path(spool_dir),
                       create_bucket=create_bucket)


def get_blob_store() -> BlobStore:
    """The configured blob store: the local folder (embedded default) or an S3 bucket."""
    settings = get_settings()
    assert settings.blob_dir is not None
    if settings.blob_backend == "s3":
        return _s3_store(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_access_key,
                         settings.s3_secret_key, settings.s3_region,
                         str(settings.blob_dir / "spool"), settings.s3_create_bucket)
    return _local_store(settings.blob_dir)


@lru_cache(maxsize=4)
def _local_store(root: Path) -> LocalBlobStore:
    return LocalBlobStore(root)


def store_upload(session: Session, source: BinaryIO, *, content_type: str,
                 max_bytes: int | None = None) -> StoredFile:
    """A request's upload into the store (put_for_commit) and its row (no commit)."""
    stored = put_for_commit(session, source, max_bytes=max_bytes)
    insert_ignore(session, Blob, blob_row(stored, content_type))
    return stored


# Files up to this size are staged where the request runs; larger ones (spooled to disk by
# the form parser) are written in a worker thread, so the event loop never copies them.
INLINE_STAGE_MAX = 1024 * 1024
_STAGED = "eoffice_staged_blobs"


def put_for_commit(session: Session, source: BinaryIO, max_bytes: int | None = None
                   ) -> StoredFile:
    """Store a request's upload so that it is durable when `session` commits, and before.

    On the local store a small file is written at once under a temporary name, without a
    sync; just before the database commits, every file the transaction staged is synced and
    put at its address in one hop off the event loop (a unit of work's or a batch's), and
    a rollback deletes them. One hop per transaction instead of one per file (the hop and
    the thread's share of the interpreter lock cost more of the API's CPU than the write,
    bench/routing.py), and it runs while the deferred rows are written. Nothing reads a
    staged file before the commit; other stores (S3) and large files are put at once, off
    the loop, as before.
    """
    store = get_blob_store()
    if isinstance(store, LocalBlobStore) and _remaining_size(source) <= INLINE_STAGE_MAX:
        staged = store.stage_file(source, max_bytes)
        session.info.setdefault(_STAGED, (store, []))[1].append(staged)
        return StoredFile(staged.sha256, staged.size)
    return offload_blocking(store.put_file, source, max_bytes=max_bytes)


def _remaining_size(source: BinaryIO) -> int:
    try:
        position = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(position)
    except (AttributeError, OSError, ValueError):  # not seekable: treat as large
        return INLINE_STAGE_MAX + 1
    return end - position


def _publish_staged(session: Session) -> None:
    pending: tuple[LocalBlobStore, list[StagedFile]] | None = session.info.pop(_STAGED, None)
    if pending is None:
        return
    store, staged = pending
    # Synced while the transaction's deferred rows are written; done before the commit.
    finished = start_blocking(store.publish_staged, staged)

    def wait() -> None:
        try:
            finished()
        except BaseException:
            store.discard_staged(staged)
            raise

    wait_before_commit(session, wait)


BEFORE_COMMIT_STEPS.append(_publish_staged)


@event.listens_for(Session, "after_transaction_end")
def _discard_unpublished(session: Session, transaction: SessionTransaction) -> None:
    """A transaction that ended without its commit (rolled back) leaves no staged file."""
    if transaction.parent is None:
        pending = session.info.pop(_STAGED, None)
        if pending is not None:
            pending[0].discard_staged(pending[1])


def blob_row(stored: StoredFile, content_type: str) -> dict[str, Any]:
    """The row naming a stored file. Insert it ignoring conflicts: two uploads of the same
    file may race, and the row is content-addressed, so either wins."""
    return {"sha256": stored.sha256, "size": stored.size, "content_type": content_type,
            "created_at": utcnow()}


def copy_to(sha256: str, target: BinaryIO) -> None:
    """Copy a stored blob into an open file, verifying its hash."""
    with get_blob_store().open(sha256) as reader:
        shutil.copyfileobj(reader, target, CHUNK)  # type: ignore[misc]
