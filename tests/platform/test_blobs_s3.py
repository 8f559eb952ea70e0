"""The S3 blob backend against moto's S3 server over HTTP, and the API on top of it."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Env
from tests.helpers import login, make_pdf, metadata


def _store():  # type: ignore[no-untyped-def]
    from eoffice.blobs.service import S3BlobStore, get_blob_store

    store = get_blob_store()
    assert isinstance(store, S3BlobStore)
    return store


def test_roundtrip_streams_and_deduplicates(s3_settings: str) -> None:
    store = _store()
    # Larger than the multipart threshold: the upload goes up in parts from the spool file.
    data = os.urandom(9 * 1024 * 1024 + 123)
    sha = hashlib.sha256(data).hexdigest()
    assert not store.exists(sha)
    stored = store.put_file(io.BytesIO(data))
    assert (stored.sha256, stored.size) == (sha, len(data))
    assert store.exists(sha)
    head = store.client.head_object(Bucket=s3_settings, Key=store.key(sha))
    assert head["ContentLength"] == len(data) and head["Metadata"]["sha256"] == sha
    with store.open(sha) as reader:
        assert reader.read() == data
    # The same content again is one object, not two.
    store.put_file(io.BytesIO(data))
    listed = store.client.list_objects_v2(Bucket=s3_settings)["Contents"]
    assert [o["Key"] for o in listed] == [store.key(sha)]
    with store.local_path(sha) as path:
        kept = Path(path)
        assert kept.read_bytes() == data
    assert not kept.exists(), "the temporary download is removed after use"


def test_corrupted_object_is_detected_on_read(s3_settings: str) -> None:
    from eoffice.blobs.service import BlobCorrupted

    store = _store()
    stored = store.put_file(io.BytesIO(b"%PDF-1.7 original"))
    store.client.put_object(Bucket=s3_settings, Key=store.key(stored.sha256),
                            Body=b"%PDF-1.7 tampered")
    with pytest.raises(BlobCorrupted):
        with store.open(stored.sha256) as reader:
            while reader.read(4):
                pass
    with pytest.raises(BlobCorrupted):
        with store.local_path(stored.sha256):
            pass


def test_size_limit_stores_nothing(s3_settings: str) -> None:
    from eoffice.errors import PayloadTooLarge

    store = _store()
    with pytest.raises(PayloadTooLarge):
        store.put_file(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert store.client.list_objects_v2(Bucket=s3_settings).get("KeyCount", 0) == 0


def test_missing_object_and_unreachable_store(s3_settings: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from eoffice.app import readiness
    from tests.platform.conftest import free_port, reset_settings

    store = _store()
    with pytest.raises(FileNotFoundError):
        store.open("0" * 64)
    assert readiness()["blob_store"] == "ok"
    monkeypatch.setenv("EOFFICE_S3_BUCKET", "no-such-bucket")
    monkeypatch.setenv("EOFFICE_S3_CREATE_BUCKET", "false")
    reset_settings()
    assert readiness()["blob_store"].startswith("error")
    monkeypatch.setenv("EOFFICE_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    reset_settings()
    assert readiness()["blob_store"].startswith("error")


def test_api_upload_and_download_through_s3(sqlite_env: Env, s3_settings: str) -> None:
    from eoffice.app import create_app

    pdf = make_pdf("S3 backed document")
    with TestClient(create_app()) as client:
        assert client.get("/readyz").json()["checks"]["blob_store"] == "ok"
        headers = login(client, "clerk.minhlang", sqlite_env.password("clerk.minhlang"))
        created = client.post("/api/v1/documents", headers=headers,
                              data={"metadata": json.dumps(metadata())},
                              files={"file": ("a.pdf", pdf, "application/pdf")})
        assert created.status_code == 201, created.text
        sha = hashlib.sha256(pdf).hexdigest()
        assert _store().exists(sha)
        # Nothing went to the local folder: another node could not have read it there.
        assert not any((sqlite_env.data_dir / "blobs").glob(f"**/{sha}"))
        download = client.get(f"/api/v1/documents/{created.json()['id']}/file",
                              headers=headers)
        assert download.status_code == 200 and download.content == pdf
