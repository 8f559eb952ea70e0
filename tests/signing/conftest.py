"""Fixtures for the signing tests: a small dev PKI served over real HTTP, an NSS database for
pdfsig, sample PDFs. Validity windows of the test PKI are fixed calendar dates (see pki.py), so
results do not depend on the day the suite runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eoffice.agencies.demo import demo_agencies, demo_users
from eoffice.signing.keys import LoadedKeySigner, load_p12_signer
from eoffice.signing.pki import init_pki
from eoffice.signing.samples import write_sample_pdf
from tests.helpers import free_port, running_pki_services


def require_tool(name: str) -> str:
    """Path of an external tool; missing = failure under CI=true, skip otherwise."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian packages: see certs/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path



@dataclass
class Pki:
    """A test PKI and its running services."""

    dir: Path
    base_url: str

    @property
    def root(self) -> Path:
        return self.dir / "root.pem"

    @property
    def tsa_url(self) -> str:
        return f"{self.base_url}/tsa"

    def passphrase(self, kind: str, ident: str) -> str:
        return (self.dir / kind / f"{ident}.pass").read_text().strip()

    def signer(self, kind: str, ident: str) -> LoadedKeySigner:
        return load_p12_signer(self.dir / kind / f"{ident}.p12", self.passphrase(kind, ident),
                               check=False)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """Province + one department, their leaders and clerks, served on a free port."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/pki"
    agencies = demo_agencies()[:2]
    codes = {a.code for a in agencies}
    users = [u for u in demo_users() if u.agency_code in codes]
    directory = init_pki(tmp_path_factory.mktemp("pki"), base_url=base_url,
                         agencies=agencies, users=users)
    with running_pki_services(directory, port):
        yield Pki(directory, base_url)


@pytest.fixture(scope="session")
def nssdb(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NSS database trusting the test root for signing (for pdfsig): trust flags C,C,C
    (with C,, the root is trusted for TLS only and pdfsig says the issuer is not trusted)."""
    certutil = require_tool("certutil")
    directory = tmp_path_factory.mktemp("nss")
    subprocess.run([certutil, "-N", "-d", f"sql:{directory}", "--empty-password"], check=True)
    subprocess.run([certutil, "-d", f"sql:{directory}", "-A", "-n", "eoffice-dev-root",
                    "-t", "C,C,C", "-a", "-i", str(pki.root)], check=True)
    return directory


@dataclass
class PdfsigSignature:
    """One signature as pdfsig reports it."""

    index: int
    common_name: str
    valid: bool
    total: bool
    raw: str


def pdfsig(path: Path, nssdb: Path) -> list[PdfsigSignature]:
    """Run poppler's pdfsig and parse its per-signature report."""
    tool = require_tool("pdfsig")
    result = subprocess.run([tool, "-nssdir", f"sql:{nssdb}", str(path)],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    blocks = re.split(r"^Signature #(\d+):", out, flags=re.M)
    sigs = []
    for i in range(1, len(blocks), 2):
        body = blocks[i + 1]
        cn = re.search(r"Signer Certificate Common Name: (.*)", body)
        sigs.append(PdfsigSignature(
            index=int(blocks[i]), common_name=cn.group(1).strip() if cn else "",
            # Valid for pdfsig: the signature checks out and the certificate chains to the
            # dev root the NSS database trusts for signing.
            valid=("Signature Validation: Signature is Valid." in body
                   and "Certificate Validation: Certificate is Trusted." in body),
            total="Total document signed" in body and "Not total document signed" not in body,
            raw=body))
    return sigs


@pytest.fixture
def sample_pdf(tmp_path: Path) -> Path:
    """A fresh 2-page PDF."""
    return write_sample_pdf(tmp_path / "input.pdf", 2)


@pytest.fixture(scope="session")
def leader_username(pki: Pki) -> str:
    return "leader.tinh"


@pytest.fixture(scope="session")
def province_code() -> str:
    return demo_agencies()[0].code
