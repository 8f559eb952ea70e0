"""Fixtures of the platform tests: a moto S3 server, free ports, settings switches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server over real HTTP (no S3 server installs here)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def reset_settings() -> None:
    """Forget cached settings, engines and blob-store clients after changing the env."""
    from eoffice.blobs.service import _s3_store
    from eoffice.db import engine_for
    from eoffice.settings import get_settings

    get_settings.cache_clear()
    engine_for.cache_clear()
    _s3_store.cache_clear()


@pytest.fixture
def s3_settings(moto_s3: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Point the blob store at a fresh bucket of the moto server; yields the bucket name."""
    bucket = f"eoffice-{os.urandom(4).hex()}"
    secret = tmp_path / "s3-secret"
    secret.write_text("testing-secret\n")
    for key, value in {"EOFFICE_BLOB_BACKEND": "s3", "EOFFICE_S3_ENDPOINT_URL": moto_s3,
                       "EOFFICE_S3_BUCKET": bucket, "EOFFICE_S3_ACCESS_KEY": "testing",
                       "EOFFICE_S3_SECRET_KEY_FILE": str(secret),
                       "EOFFICE_S3_CREATE_BUCKET": "true"}.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    yield bucket
    monkeypatch.undo()
    reset_settings()
