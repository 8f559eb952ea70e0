"""Fixtures of the signing-job tests: one small dev PKI per session, served over real HTTP
(OCSP/CRL/TSA on a free port) so B-T signatures get a real timestamp, and the settings that
point a test installation at it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Clients
from tests.helpers import free_port, make_pdf, metadata, running_pki_services

# The province and one department are enough: a leader, a clerk and an officer each, plus an
# outsider agency. init_pki for these takes ~2 s instead of ~18 s for the whole demo.
AGENCY_SLUGS = ("tinh", "snv")


def require_tool(name: str) -> str:
    """Path of an external tool; missing = failure under CI=true, skip otherwise."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} not installed (Debian: poppler-utils, libnss3-tools)")
        pytest.skip(f"{name} not installed")
    return path


@dataclass
class ServicePki:
    """The session's dev PKI and the URL its services answer on."""

    dir: Path
    base_url: str

    @property
    def root(self) -> Path:
        return self.dir / "root.pem"

    def passphrase(self, username: str) -> str:
        return (self.dir / "users" / f"{username}.pass").read_text().strip()

    def p12(self, username: str) -> Path:
        return self.dir / "users" / f"{username}.p12"


@pytest.fixture(scope="session")
def service_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicePki]:
    """init_pki once (two agencies) and serve OCSP/CRL/TSA in a background thread."""
    from eoffice.agencies.demo import demo_agencies, demo_users
    from eoffice.signing.pki import init_pki

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/pki"
    agencies = [a for a in demo_agencies() if a.slug in AGENCY_SLUGS]
    codes = {a.code for a in agencies}
    users = [u for u in demo_users() if u.agency_code in codes]
    directory = init_pki(tmp_path_factory.mktemp("service-pki"), base_url=base_url,
                         agencies=agencies, users=users)
    (directory / "no-extra-trust").mkdir()
    with running_pki_services(directory, port):
        yield ServicePki(directory, base_url)


@pytest.fixture(autouse=True)
def _pki_settings(service_pki: ServicePki, monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse fixtures run before `env`, which reads the environment when it is created.
    monkeypatch.setenv("EOFFICE_PKI_DIR", str(service_pki.dir))
    monkeypatch.setenv("EOFFICE_PKI_BASE_URL", service_pki.base_url)
    monkeypatch.setenv("EOFFICE_TRUST_DIR", str(service_pki.dir / "no-extra-trust"))
    monkeypatch.setenv("EOFFICE_SIGN_PREPARE_WAIT_SECONDS", "20")


def override_settings(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """Change settings of the running test installation."""
    from eoffice.settings import get_settings

    for key, value in values.items():
        monkeypatch.setenv(f"EOFFICE_{key.upper()}", str(value))
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def nssdb(service_pki: ServicePki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NSS database trusting the dev root for signing (C,C,C; with C,, it is trusted
    for TLS only and pdfsig says the issuer is not trusted), for poppler's pdfsig."""
    certutil = require_tool("certutil")
    directory = tmp_path_factory.mktemp("nss")
    subprocess.run([certutil, "-N", "-d", f"sql:{directory}", "--empty-password"], check=True)
    subprocess.run([certutil, "-d", f"sql:{directory}", "-A", "-n", "eoffice-dev-root",
                    "-t", "C,C,C", "-a", "-i", str(service_pki.root)], check=True)
    return directory


def pdfsig(path: Path, nssdb: Path) -> list[dict[str, Any]]:
    """Each signature as pdfsig reports it: common name, valid, whole document covered."""
    tool = require_tool("pdfsig")
    result = subprocess.run([tool, "-nssdir", f"sql:{nssdb}", str(path)],
                            capture_output=True, text=True, timeout=60)
    blocks = re.split(r"^Signature #(\d+):", result.stdout + result.stderr, flags=re.M)
    found = []
    for i in range(1, len(blocks), 2):
        body = blocks[i + 1]
        name = re.search(r"Signer Certificate Common Name: (.*)", body)
        found.append({"common_name": name.group(1).strip() if name else "",
                      # the signature checks out and its certificate chains to the
                      # dev root the NSS database trusts for signing
                      "valid": ("Signature Validation: Signature is Valid." in body
                                and "Certificate Validation: Certificate is Trusted." in body),
                      "raw": body})
    return found


def verify(path: Path, root: Path, decree30: bool = False) -> dict[str, Any]:
    """The verification engine's report, trusting the dev root, revocation off."""
    from eoffice.verification import VerifyOptions, load_certificates, verify_file

    return verify_file(path, VerifyOptions(trust_roots=load_certificates([root]),
                                           revocation="off", decree30=decree30))


def new_document(as_user: Clients, username: str = "officer.tinh",
                 attachments: list[tuple[str, bytes, str]] | None = None) -> dict[str, Any]:
    """A draft with a 2-page PDF (and attachments) created through the API."""
    files: list[tuple[str, tuple[str, bytes, str]]] = [
        ("file", ("van-ban.pdf", make_pdf("Quyet dinh thu nghiem", pages=2), "application/pdf"))]
    for name, data, content_type in attachments or []:
        files.append(("attachments", (name, data, content_type)))
    response = as_user.client.post(
        "/api/v1/documents", headers=as_user.headers(username),
        data={"metadata": json.dumps(metadata(type_name="Quyết định"))}, files=files)
    assert response.status_code == 201, response.text
    return dict(response.json())


def download(client: TestClient, headers: dict[str, str], document_id: int, target: Path,
             revision: int | None = None) -> Path:
    """Save a document's file (a given revision) to ``target``."""
    params = {"revision": revision} if revision else None
    response = client.get(f"/api/v1/documents/{document_id}/file", headers=headers,
                          params=params)
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return target
