"""A development PKI (province seal, one leader) served over real HTTP for the whole session.

The service finds it through EOFFICE_PKI_DIR / EOFFICE_PKI_BASE_URL, as `eoffice serve` would:
its root is synced into the trust store, its province seal signs PDF reports and its TSA
anchors the audit trail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eoffice.agencies.demo import demo_agencies, demo_users
from eoffice.signing.pki import init_pki
from tests.helpers import running_pki_services

LEADER = "leader.tinh"


@dataclass
class DevPki:
    """The served development PKI."""

    dir: Path
    base_url: str

    @property
    def root(self) -> Path:
        return self.dir / "root.pem"

    def user_p12(self, username: str) -> tuple[Path, str]:
        return (self.dir / "users" / f"{username}.p12",
                (self.dir / "users" / f"{username}.pass").read_text().strip())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPki]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/pki"
    province = demo_agencies()[0]
    users = [u for u in demo_users() if u.username == LEADER]
    directory = init_pki(tmp_path_factory.mktemp("dev-pki"), base_url=base_url,
                         agencies=[province], users=users, with_images=False)
    previous = {k: os.environ.get(k) for k in ("EOFFICE_PKI_DIR", "EOFFICE_PKI_BASE_URL",
                                               "EOFFICE_TRUST_DIR")}
    os.environ["EOFFICE_PKI_DIR"] = str(directory)
    os.environ["EOFFICE_PKI_BASE_URL"] = base_url
    # An empty trust folder: the repository's certs/trust must not leak into the tests.
    os.environ["EOFFICE_TRUST_DIR"] = str(tmp_path_factory.mktemp("trust-dir"))
    with running_pki_services(directory, port):
        yield DevPki(directory, base_url)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _fresh_trust_sync() -> None:
    """Each test has its own database: forget which databases this process synced."""
    from eoffice.trust.service import forget_sync_cache

    forget_sync_cache()
