"""The agency directory is cached per process and read again only when an agency changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import create_document, listening, send

CLERK = "clerk.tinh"
RECEIVER = "000.00.12.H58"


@contextmanager
def agency_reads(client: TestClient, marker: str = "FROM agencies"
                 ) -> Iterator[list[str]]:
    """The statements containing `marker` (by default: reading the agencies table) while
    the block runs, on every engine of `client`'s requests."""
    seen: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if marker in statement:
            seen.append(statement)

    with listening(client, ("before_cursor_execute", before)):
        yield seen


def _rename(code: str, name: str, *, commit: bool) -> None:
    from eoffice.agencies.service import AgencyTree
    from eoffice.db import new_session
    from eoffice.models import Agency

    with new_session() as session:
        agency = session.exec(select(Agency).where(Agency.code == code)).one()
        agency.name = name
        session.add(agency)
        # The writing transaction sees its own change, whatever the cache holds.
        assert AgencyTree.load(session).by_code[code].name == name
        if commit:
            session.commit()
        else:
            session.rollback()


def test_the_directory_is_read_again_only_after_an_agency_changed(env: Env,
                                                                   as_user: Clients) -> None:
    client, headers = as_user.client, as_user.headers(CLERK)
    first = create_document(client, headers)
    assert send(client, headers, first["id"], [RECEIVER]).status_code == 202
    second = create_document(client, headers)
    with agency_reads(client) as reads:
        sent = send(client, headers, second["id"], [RECEIVER])
    assert sent.status_code == 202, sent.text
    assert reads == []  # routing, numbering and the response used the cached directory
    with agency_reads(client, "directory_version") as version_reads:
        assert send(client, headers, create_document(client, headers)["id"],
                    [RECEIVER]).status_code == 202
    # Each request read the version once, along with its caller (upload, then send).
    assert len(version_reads) == 2
    assert all("FROM users" in statement for statement in version_reads)

    _rename(RECEIVER, "UBND huyện Đổi Tên", commit=True)
    with agency_reads(client) as reads:
        third = create_document(client, headers)
        response = send(client, headers, third["id"], [RECEIVER])
    assert len(reads) == 1  # the first request after the change read it, the next one not
    shown = client.get(f"/api/v1/documents/{third['id']}", headers=headers).json()
    assert response.status_code == 202
    assert shown["deliveries"][0]["recipient_name"] == "UBND huyện Đổi Tên"


def test_a_rolled_back_agency_change_does_not_reach_the_cache(env: Env,
                                                              as_user: Clients) -> None:
    client, headers = as_user.client, as_user.headers(CLERK)
    document = create_document(client, headers)
    assert send(client, headers, document["id"], [RECEIVER]).status_code == 202
    before = client.get(f"/api/v1/documents/{document['id']}", headers=headers).json()
    _rename(RECEIVER, "Tên chưa lưu", commit=False)
    after = client.get(f"/api/v1/documents/{document['id']}", headers=headers).json()
    assert after["deliveries"][0]["recipient_name"] == before["deliveries"][0]["recipient_name"]
    assert after["deliveries"][0]["recipient_name"] != "Tên chưa lưu"
