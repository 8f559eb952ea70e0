"""Trust store: admin API, history ("trusted at T?"), file sync, CLI, audit entries."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

from eoffice.models import AuditEvent, TrustEvent
from eoffice.verification.testing import make_root
from tests.conftest import Clients, Env


def _pem(name: str) -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization

    cert = make_root(name, bits=2048).cert
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert.public_bytes(serialization.Encoding.PEM), hashlib.sha256(der).hexdigest()


def _engine():  # type: ignore[no-untyped-def]
    from eoffice.db import get_engine

    return get_engine()


def test_admin_adds_and_removes_with_history(env: Env, as_user: Clients) -> None:
    client, admin = as_user.client, as_user.headers("admin")
    pem, fp = _pem("Trust Test Root")
    before = client.get("/api/v1/trust/anchors", headers=admin).json()
    assert [a["source"] for a in before["items"]] == ["dev-pki"]

    added = client.post("/api/v1/trust/anchors", headers=admin,
                        files={"file": ("root.pem", pem, "application/x-pem-file")})
    assert added.status_code == 201, added.text
    assert added.json()["added"][0]["fingerprint"] == fp
    assert added.json()["state"] != before["state"]
    again = client.post("/api/v1/trust/anchors", headers=admin,
                        files={"file": ("root.pem", pem, "application/x-pem-file")}).json()
    assert again["added"] == [] and again["unchanged"][0]["fingerprint"] == fp
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    colon = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    removed = client.delete(f"/api/v1/trust/anchors/{colon}", headers=admin)
    assert removed.status_code == 200 and removed.json()["removed_by"] == "admin"
    assert client.delete(f"/api/v1/trust/anchors/{fp}", headers=admin).status_code == 409
    after = client.get("/api/v1/trust/anchors", headers=admin).json()
    assert after["state"] == before["state"]
    everything = client.get("/api/v1/trust/anchors?include_removed=true", headers=admin).json()
    assert fp in [a["fingerprint"] for a in everything["items"]]

    auditor = as_user.headers("auditor")
    then = client.get("/api/v1/trust/history", headers=auditor,
                      params={"fingerprint": fp, "at": between.isoformat()}).json()
    assert then["trusted"] is True and then["decided_by"]["action"] == "added"
    now = client.get("/api/v1/trust/history", headers=auditor, params={"fingerprint": fp})
    assert now.json()["trusted"] is False
    assert [e["action"] for e in now.json()["events"]] == ["added", "removed"]
    long_ago = client.get("/api/v1/trust/history", headers=auditor,
                          params={"fingerprint": fp, "at": "2020-01-01T00:00:00Z"}).json()
    assert long_ago["trusted"] is False and long_ago["decided_by"] is None

    with Session(_engine()) as session:
        actions = [e.action for e in session.exec(select(AuditEvent).where(
            AuditEvent.object_type == "trust_anchor", AuditEvent.object_id == fp)).all()]
        assert actions == ["trust.added", "trust.removed"]
        assert len(session.exec(select(TrustEvent).where(TrustEvent.fingerprint == fp)).all()) == 2


def test_only_admins_change_the_store(env: Env, as_user: Clients) -> None:
    client = as_user.client
    pem, fp = _pem("Someone Else Root")
    for user in ("clerk.tinh", "leader.tinh", "auditor"):
        response = client.post("/api/v1/trust/anchors", headers=as_user.headers(user),
                               files={"file": ("r.pem", pem, "application/x-pem-file")})
        assert response.status_code == 403
    assert client.get("/api/v1/trust/anchors",
                      headers=as_user.headers("clerk.tinh")).status_code == 403
    admin = as_user.headers("admin")
    garbage = client.post("/api/v1/trust/anchors", headers=admin,
                          files={"file": ("r.pem", b"not a certificate", "text/plain")})
    assert garbage.status_code == 422 and garbage.json()["field"] == "file"
    assert client.delete(f"/api/v1/trust/anchors/{fp}", headers=admin).status_code == 404
    assert client.delete("/api/v1/trust/anchors/xyz", headers=admin).status_code == 422
    assert client.get("/api/v1/trust/history", headers=admin,
                      params={"fingerprint": "zz"}).status_code == 422


def test_trust_folder_sync_and_cli(env: Env, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from eoffice.cli import app
    from eoffice.settings import get_settings
    from eoffice.trust.service import forget_sync_cache

    folder = tmp_path / "trust"
    folder.mkdir()
    pem, fp = _pem("Folder Root")
    (folder / "folder-root.pem").write_bytes(pem)
    (folder / "README.md").write_text("not a certificate")
    monkeypatch.setenv("EOFFICE_TRUST_DIR", str(folder))
    get_settings.cache_clear()
    forget_sync_cache()
    runner = CliRunner()
    synced = runner.invoke(app, ["trust", "sync"])
    assert synced.exit_code == 0, synced.output
    assert f"added: {fp}" in synced.output
    listed = runner.invoke(app, ["trust", "list"])
    assert fp in listed.output and "dir:folder-root.pem" in listed.output

    (folder / "folder-root.pem").unlink()
    resynced = runner.invoke(app, ["trust", "sync"])
    assert f"removed: {fp}" in resynced.output

    extra_pem, extra_fp = _pem("CLI Root")
    cert_file = tmp_path / "cli-root.pem"
    cert_file.write_bytes(extra_pem)
    assert runner.invoke(app, ["trust", "add", str(cert_file)]).exit_code == 0
    history = runner.invoke(app, ["trust", "history", extra_fp])
    assert '"trusted": true' in history.output
    assert runner.invoke(app, ["trust", "remove", extra_fp]).exit_code == 0
    assert runner.invoke(app, ["trust", "remove", extra_fp]).exit_code == 1
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    assert runner.invoke(app, ["trust", "add", str(bad)]).exit_code == 2
    get_settings.cache_clear()


def test_verify_cli_reads_the_trust_folder(env: Env, tmp_path: Path, monkeypatch, dev_pki) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from eoffice.cli import app
    from eoffice.settings import get_settings
    from tests.verification_service.helpers import signed_pdf

    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(signed_pdf(dev_pki, tmp_path))
    folder = tmp_path / "trust"
    folder.mkdir()
    runner = CliRunner()
    monkeypatch.delenv("EOFFICE_TRUST_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # settings.trust_dir defaults to certs/trust
    get_settings.cache_clear()
    untrusted = runner.invoke(app, ["verify", str(pdf), "--revocation", "off"])
    assert untrusted.exit_code == 1
    (tmp_path / "certs" / "trust").mkdir(parents=True)
    shutil.copy(dev_pki.root, tmp_path / "certs" / "trust" / "dev-root.pem")
    trusted = runner.invoke(app, ["verify", str(pdf), "--revocation", "off"])
    assert trusted.exit_code == 0, trusted.output
    get_settings.cache_clear()
