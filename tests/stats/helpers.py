"""Helpers of the statistics tests."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers import make_pdf, metadata

PDF = make_pdf()


def stats(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    """GET /stats/exchange, asserting success."""
    response = client.get("/api/v1/stats/exchange", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def send(client: TestClient, headers: dict[str, str], recipients: list[str],
         **overrides: Any) -> dict[str, Any]:
    """Create and send an electronic document."""
    created = client.post("/api/v1/documents", headers=headers,
                          data={"metadata": json.dumps(metadata(**overrides))},
                          files={"file": ("a.pdf", PDF, "application/pdf")})
    assert created.status_code == 201, created.text
    sent = client.post(f"/api/v1/documents/{created.json()['id']}/send", headers=headers,
                       json={"recipients": recipients})
    assert sent.status_code == 202, sent.text
    return sent.json()


def register_paper(client: TestClient, headers: dict[str, str], direction: str,
                   **extra: Any) -> dict[str, Any]:
    """Register a paper document in the outgoing or incoming register."""
    meta = metadata(**{k: v for k, v in extra.items() if k not in (
        "registered_on", "sender_code", "sender_name", "original_ref", "recipient_code")})
    for key in ("registered_on", "sender_code", "sender_name", "original_ref",
                "recipient_code"):
        if key in extra:
            meta[key] = extra[key]
    response = client.post(f"/api/v1/registers/{direction}", headers=headers,
                           data={"metadata": json.dumps(meta)})
    assert response.status_code == 201, response.text
    return response.json()
