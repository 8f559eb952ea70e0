"""Reconciliation fixes corrupted aggregates; charts and the signed monthly report render."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.stats.helpers import register_paper, send, stats

COMMUNE = "clerk.minhlang"
DISTRICT = "clerk.vuthu"


def test_reconcile_logs_and_fixes_drift(env: Env, as_user: Clients,
                                        caplog: pytest.LogCaptureFixture) -> None:
    from eoffice.db import new_session
    from eoffice.models import StatsCell
    from eoffice.stats.service import reconcile

    client = as_user.client
    send(client, as_user.headers(COMMUNE), [env.user(DISTRICT)["agency_code"]])
    before = stats(client, as_user.headers("auditor"))
    with new_session() as session:
        cell = session.exec(select(StatsCell).where(StatsCell.direction == "out")).first()
        assert cell is not None and cell.electronic == 1
        cell.electronic = 40
        session.add(cell)
        session.commit()
    assert stats(client, as_user.headers("auditor"))["electronic"] == before["electronic"] + 39
    with new_session() as session:
        run = reconcile(session)
        session.commit()
    assert run.cells_fixed == 1 and run.drift["examples"][0]["differences"]["electronic"] == {
        "stored": 40, "expected": 1}
    assert "stats drift: 1 of" in caplog.text
    assert stats(client, as_user.headers("auditor"))["electronic"] == before["electronic"]
    runs = client.get("/api/v1/stats/reconcile-runs", headers=as_user.headers("auditor"))
    assert runs.status_code == 200 and runs.json()[0]["cells_fixed"] == 1
    with new_session() as session:
        assert reconcile(session).cells_fixed == 0


def test_charts_and_signed_monthly_report(sqlite_env: Env, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from eoffice.agencies.demo import demo_agencies
    from eoffice.app import create_app
    from eoffice.settings import get_settings
    from eoffice.signing.pki import init_pki
    from tests.helpers import login

    # Only the province seal signs the report: a one-agency PKI keeps the test fast.
    init_pki(get_settings().pki_dir, agencies=demo_agencies()[:1], users=[],
             with_images=False)
    with TestClient(create_app()) as client:
        def headers(name: str) -> dict[str, str]:
            return login(client, name, sqlite_env.password(name))
        send(client, headers(COMMUNE), [sqlite_env.user(DISTRICT)["agency_code"]])
        register_paper(client, headers(DISTRICT), "outgoing")
        auditor = headers("auditor")
        for chart in ("trend", "ranking"):
            response = client.get(f"/api/v1/stats/charts/{chart}.svg", headers=auditor)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("image/svg+xml")
            assert "<svg" in response.text and "Tỷ lệ" in response.text
        from eoffice.timeutil import local_today

        month = local_today().strftime("%Y-%m")
        pdf = client.get("/api/v1/stats/reports/monthly.pdf", headers=auditor,
                         params={"month": month})
        assert pdf.status_code == 200, pdf.text
        path = tmp_path / "report.pdf"
        path.write_bytes(pdf.content)
        info = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True)
        assert "Signature #1" in info.stdout, info.stdout + info.stderr
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True,
                              text=True).stdout
        assert "BÁO CÁO TÌNH HÌNH TRAO ĐỔI VĂN BẢN ĐIỆN TỬ" in text
        assert "Xếp hạng" in text
        subprocess.run(["pdftoppm", "-png", "-r", "60", str(path), str(tmp_path / "page")],
                       check=True)
        assert (tmp_path / "page-2.png").exists()
        bad = client.get("/api/v1/stats/reports/monthly.pdf", headers=auditor,
                         params={"month": "2026-13"})
        assert bad.status_code == 422
