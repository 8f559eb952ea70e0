"""Numbers stay unique under concurrent issuance (PostgreSQL, real parallel transactions)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import Env
from tests.helpers import create_document, login

PARALLEL = 12


def test_parallel_issuance_gives_unique_consecutive_numbers(pg_env: Env) -> None:
    from eoffice.app import create_app
    from eoffice.db import new_session
    from eoffice.documents.service import issue_document
    from eoffice.models import Document, User
    from eoffice.users.service import principal_for_user

    with TestClient(create_app()) as client:
        headers = login(client, "clerk.tinh", pg_env.password("clerk.tinh"))
        ids = [create_document(client, headers, type_name="Quyết định")["id"]
               for _ in range(PARALLEL)]
    barrier = threading.Barrier(PARALLEL)
    errors: list[BaseException] = []

    def issue(document_id: int) -> None:
        try:
            with new_session() as session:
                user = session.exec(select(User).where(User.username == "clerk.tinh")).one()
                principal = principal_for_user(session, user)
                document = session.get(Document, document_id)
                assert document is not None
                barrier.wait(timeout=30)
                issue_document(session, principal, document)
                session.commit()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=issue, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with new_session() as session:
        numbers = sorted(d.code_number for d in session.exec(
            select(Document).where(Document.id.in_(ids))).all())  # type: ignore[union-attr]
    assert numbers == [f"{n:02d}" for n in range(1, PARALLEL + 1)]
