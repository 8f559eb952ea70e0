"""Numbers stay unique under concurrent issuance (PostgreSQL, real parallel transactions)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlmodel import select

from tests.conftest import Env
from tests.helpers import create_document, login

PARALLEL = 12


def _run_together(target: Callable[[int], None], items: list[int],
                  errors: list[BaseException]) -> None:
    """`target` for each item, each in its own thread; `errors` (what the threads caught)
    must be empty afterwards."""
    threads = [threading.Thread(target=target, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


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

    _run_together(issue, ids, errors)
    with new_session() as session:
        numbers = sorted(d.code_number for d in session.exec(
            select(Document).where(Document.id.in_(ids))).all())  # type: ignore[union-attr]
    assert numbers == [f"{n:02d}" for n in range(1, PARALLEL + 1)]


def test_parallel_create_and_send_numbers_from_the_first_of_the_year(pg_env: Env) -> None:
    """A new document sent at once takes its number in the one statement that writes it
    (an upsert of the register's counter): parallel senders, on a register with no
    number yet this year, still get 01, 02, ... with no gap and no repeat."""
    from io import BytesIO

    from eoffice.db import new_session
    from eoffice.documents.schemas import DocumentMetadata
    from eoffice.exchange.service import create_and_send
    from eoffice.models import Delivery, Document, RegisterCounter, User
    from eoffice.users.service import principal_for_user
    from tests.helpers import make_pdf, metadata

    receiver = pg_env.user("clerk.vuthu")["agency_code"]
    with new_session() as session:
        user = session.exec(select(User).where(User.username == "clerk.tinh")).one()
        assert not session.exec(select(RegisterCounter).where(
            RegisterCounter.agency_id == user.agency_id)).all()
    barrier = threading.Barrier(PARALLEL)
    errors: list[BaseException] = []
    ids: list[int] = []

    def send(n: int) -> None:
        try:
            with new_session() as session:
                sender = session.exec(select(User).where(User.username == "clerk.tinh")).one()
                principal = principal_for_user(session, sender)
                meta = DocumentMetadata.model_validate(metadata(subject=f"Văn bản {n}"))
                barrier.wait(timeout=30)
                document, deliveries = create_and_send(
                    session, principal, meta, BytesIO(make_pdf(f"song song {n}")), "a.pdf",
                    [], [receiver])
                assert len(deliveries) == 1
                session.commit()
                ids.append(document.id or 0)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    _run_together(send, list(range(PARALLEL)), errors)
    with new_session() as session:
        numbers = sorted(d.code_number for d in session.exec(
            select(Document).where(Document.id.in_(ids))).all())  # type: ignore[union-attr]
        delivered = session.exec(select(Delivery.document_id).where(
            Delivery.document_id.in_(ids))).all()  # type: ignore[union-attr]
    assert numbers == [f"{n:02d}" for n in range(1, PARALLEL + 1)]
    assert sorted(delivered) == sorted(ids)
