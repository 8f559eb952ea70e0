"""Shared test helpers: PDFs, sign-in, metadata."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient


def request_engines(client: TestClient) -> list[Any]:
    """Every engine the app's requests use: the sync one and, on PostgreSQL, the one the
    units of work run on (deps.UnitOfWork; made by the app's lifespan)."""
    from eoffice.db import get_engine

    units = getattr(client.app.state, "unit_engines", {})  # type: ignore[attr-defined]
    return [get_engine(), *(unit.sync_engine for unit in units.values())]


@contextmanager
def listening(client: TestClient, *listeners: tuple[str, Any]) -> Iterator[None]:
    """(event name, function) listeners on every engine of `client`'s requests."""
    from sqlalchemy import event

    engines = request_engines(client)
    for engine in engines:
        for name, function in listeners:
            event.listen(engine, name, function)
    try:
        yield
    finally:
        for engine in engines:
            for name, function in listeners:
                event.remove(engine, name, function)


def make_pdf(text: str = "Văn bản thử nghiệm", pages: int = 1) -> bytes:
    """A small real PDF made with pyHanko's writer."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.content import RawContent
    from pyhanko.pdf_utils.layout import BoxConstraints
    from pyhanko.pdf_utils.writer import PdfFileWriter

    writer = PdfFileWriter()
    safe = text.encode("ascii", "replace").decode()
    for number in range(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({safe} {number + 1}) Tj ET".encode()
        font = generic.DictionaryObject({
            generic.NameObject("/Type"): generic.NameObject("/Font"),
            generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
            generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica")})
        resources = generic.DictionaryObject({
            generic.NameObject("/Font"): generic.DictionaryObject(
                {generic.NameObject("/F1"): writer.add_object(font)})})
        content = RawContent(stream, resources, BoxConstraints(612, 792))
        page = generic.DictionaryObject({
            generic.NameObject("/Type"): generic.NameObject("/Page"),
            generic.NameObject("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(v) for v in (0, 0, 612, 792)]),
            generic.NameObject("/Resources"): resources,
            generic.NameObject("/Contents"): writer.add_object(
                generic.StreamObject(stream_data=content.data)),
        })
        writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def metadata(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type_name": "Công văn",
        "subject": "V/v triển khai kế hoạch chuyển đổi số năm 2026",
        "priority": 0,
        "signer_info": {"competence": "TM.", "position": "Chủ tịch",
                        "full_name": "Nguyễn Văn An"},
        "to_places": ["Như trên", "Lưu: VT"],
    }
    base.update(overrides)
    return base


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/token",
                           data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def create_document(client: TestClient, headers: dict[str, str], pdf: bytes | None = None,
                    **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/v1/documents", headers=headers,
                           data={"metadata": json.dumps(metadata(**overrides))},
                           files={"file": ("van-ban.pdf", pdf or make_pdf(),
                                           "application/pdf")})
    assert response.status_code == 201, response.text
    return response.json()


def override_settings(monkeypatch: Any, **values: Any) -> None:
    """Change settings for the rest of one test (environment + cache reset)."""
    from eoffice.settings import get_settings

    for key, value in values.items():
        monkeypatch.setenv(f"EOFFICE_{key.upper()}", str(value))
    get_settings.cache_clear()


def send(client: TestClient, headers: dict[str, str], document_id: int,
         recipients: list[str], **kwargs: Any) -> Any:
    return client.post(f"/api/v1/documents/{document_id}/send", headers=headers,
                       json={"recipients": recipients}, **kwargs)


def inbox_item(client: TestClient, headers: dict[str, str], document_id: int) -> dict[str, Any]:
    items = client.get("/api/v1/inbox", headers=headers, params={"limit": 200}).json()["items"]
    return next(i for i in items if i["document_id"] == document_id)


def status(client: TestClient, headers: dict[str, str], delivery_id: int, code: str,
           **extra: Any) -> Any:
    return client.post(f"/api/v1/deliveries/{delivery_id}/status", headers=headers,
                       json={"code": code, **extra})


def assert_problem(response: Any, status_code: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status_code and body["detail"]
    if field is not None:
        assert field in (body.get("field") or ""), body
    return dict(body)


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_pki_services(directory: Path, port: int) -> Iterator[None]:
    """The dev PKI's OCSP, CRL and TSA served by uvicorn in a thread for one test session."""
    import threading
    import time

    import uvicorn

    from eoffice.signing.pki_services import create_standalone_app

    server = uvicorn.Server(uvicorn.Config(create_standalone_app(directory), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "PKI services did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def point_producer_at(broker_url: str, polling_interval: float = 0.1) -> None:
    """Make the in-process Celery app publish to broker_url from now on.

    Celery keeps its producer and connection pools in kombu's process-wide registry, keyed by
    broker URL. Closing only the app's pool leaves a closed pool registered under that URL, so a
    later test on the same URL (random Redis databases do repeat) fails with "Acquire on closed
    pool" and its messages sit in the outbox. Resetting the whole registry avoids that.
    """
    from kombu import pools

    import workers.celery_app as celery_module

    app = celery_module.celery_app
    app.conf.broker_url = broker_url
    app.conf.broker_transport_options = celery_module.transport_options(
        broker_url, polling_interval)
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def restore_producer() -> None:
    """Point the in-process Celery app back at the configured broker."""
    from eoffice.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    point_producer_at(settings.broker_url, settings.broker_polling_interval)
