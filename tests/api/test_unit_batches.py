"""Group commit of create-and-send requests (deps.UnitBatcher): requests that wait while a
batch runs share the next transaction; each still gets its own answer, a failing one fails
alone, numbers stay gap-free, and a staged file is on disk before the commit and gone after
a rollback (blobs.put_for_commit)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import func
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.helpers import listening, login, make_pdf, metadata

CLERK = "clerk.minhlang"


@contextmanager
def one_batch_of(size: int) -> Iterator[list[int]]:
    """Hold batched requests until `size` of them wait, then let one batch take them all
    (without the gate, how many arrive while another batch runs depends on timing).
    Yields the sizes of the batches that ran."""
    from eoffice.deps import UnitBatcher

    real_submit, real_run = UnitBatcher.submit, UnitBatcher._run
    held: list[Any] = []
    sizes: list[int] = []

    def gated(batcher: UnitBatcher, item: Any) -> None:
        held.append(item)
        if len(held) == size:
            for queued in held:
                real_submit(batcher, queued)

    async def counted(batcher: UnitBatcher, app: Any, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await real_run(batcher, app, batch)

    with mock.patch.object(UnitBatcher, "submit", gated), \
            mock.patch.object(UnitBatcher, "_run", counted):
        yield sizes


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in a thread of its own, all at once; their results in order."""
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _post_all(as_user: Clients, requests: list[dict[str, Any]]) -> list[Any]:
    """POST /documents for each request at once, one thread each."""
    return _at_once([functools.partial(
        as_user.client.post, "/api/v1/documents", headers=request["headers"],
        data=request["data"], files={"file": ("a.pdf", request["pdf"], "application/pdf")})
        for request in requests])


def _request(as_user: Clients, subject: str, receiver: str, **headers: str) -> dict[str, Any]:
    return {"headers": {**as_user.headers(CLERK), **headers},
            "data": {"metadata": json.dumps(metadata(subject=subject)),
                     "recipients": json.dumps([receiver])},
            "pdf": make_pdf(subject)}


def _count_documents() -> int:
    from eoffice.db import new_session
    from eoffice.models import Document

    with new_session() as session:
        return session.exec(select(func.count()).select_from(Document)).one()


def _store_root(env: Env) -> Path:
    from eoffice.blobs.service import LocalBlobStore, get_blob_store

    store = get_blob_store()
    assert isinstance(store, LocalBlobStore)
    return store.root


def test_waiting_sends_share_one_transaction(env: Env, as_user: Clients) -> None:
    from eoffice.db import new_session
    from eoffice.models import OutboxMessage

    receiver = env.user("clerk.vuthu")["agency_code"]
    requests = [_request(as_user, f"Batch {n}", receiver, **{"X-Request-ID": f"req-{n}"})
                for n in range(5)]
    with one_batch_of(5) as sizes:
        responses = _post_all(as_user, requests)
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    assert sizes == [5]
    bodies = [r.json() for r in responses]
    # Each request got its own document back, and the five numbers follow one another.
    assert [b["subject"] for b in bodies] == [f"Batch {n}" for n in range(5)]
    assert sorted(int(b["code_number"]) for b in bodies) == list(range(1, 6))
    assert all(b["status"] == "sent" and len(b["deliveries"]) == 1 for b in bodies)
    root = _store_root(env)
    for request, body in zip(requests, bodies, strict=True):
        sha = hashlib.sha256(request["pdf"]).hexdigest()
        assert body["file_sha256"] == sha
        assert (root / sha[:2] / sha[2:4] / sha).read_bytes() == request["pdf"]
    assert not os.listdir(root / "tmp")  # every staged file was put in place
    # Each request's tasks carry its own request id (into the workers' logs).
    with new_session() as session:
        ids = {row.request_id for row in session.exec(select(OutboxMessage)).all()}
    assert {f"req-{n}" for n in range(5)} <= ids


def test_the_batch_commits_once(env: Env, as_user: Clients) -> None:
    """Five sends by the clerks of two agencies: one query for both callers, the five
    documents' writes, one commit (the tests' eager tasks commit on their own, after it)."""
    receiver = env.user("clerk.vuthu")["agency_code"]
    requests = [_request(as_user, f"Once {n}", receiver) for n in range(5)]
    for request in requests[::2]:
        request["headers"] = as_user.headers("clerk.tinh")
    seen: list[str] = []

    def statement(_conn: object, _cursor: object, text: str, *_: object) -> None:
        seen.append(" ".join(text.split()))

    with one_batch_of(5), listening(as_user.client, ("before_cursor_execute", statement),
                                    ("commit", lambda _conn: seen.append("COMMIT"))):
        responses = _post_all(as_user, requests)
    assert [r.status_code for r in responses] == [201] * 5
    transaction = seen[:seen.index("COMMIT")]
    assert sum("INSERT INTO documents" in s for s in transaction) == 5, transaction
    assert sum("FROM users" in s for s in transaction) == 1, transaction


def test_a_failing_send_fails_alone_and_leaves_no_gap(env: Env, as_user: Clients) -> None:
    receiver = env.user("clerk.vuthu")["agency_code"]
    before = _count_documents()
    requests = [_request(as_user, f"Good {n}", receiver) for n in range(4)]
    # An unknown receiver fails inside the transaction, after its file was staged and its
    # document written; a bad token is refused before anything is written.
    requests.insert(2, _request(as_user, "Unknown receiver", "000.99.99.H58"))
    requests.insert(4, {**_request(as_user, "Bad token", receiver),
                        "headers": {"Authorization": "Bearer not-a-token"}})
    with one_batch_of(6) as sizes:
        responses = _post_all(as_user, requests)
    statuses = [r.status_code for r in responses]
    assert statuses == [201, 201, 422, 201, 401, 201], [r.text for r in responses]
    assert responses[2].json()["field"] == "recipients"
    assert sizes == [6, 5]  # rolled back, then run again without the failing one
    assert _count_documents() == before + 4
    numbers = sorted(int(r.json()["code_number"]) for r in responses if r.status_code == 201)
    assert numbers == list(range(1, 5))  # the rolled-back numbers were taken again
    root = _store_root(env)
    failed = hashlib.sha256(requests[2]["pdf"]).hexdigest()
    assert not (root / failed[:2] / failed[2:4] / failed).exists()
    assert not os.listdir(root / "tmp")  # the rolled-back batches' staged files are gone


def test_a_lost_commit_is_not_run_again(sqlite_env: Env) -> None:
    """A batch whose commit failed on the connection may have committed: no request of it
    runs again, and each gets the 503 its own unit would give."""
    import asyncio
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from sqlalchemy.exc import OperationalError

    from eoffice.app import create_app
    from eoffice.db import BEFORE_COMMIT_STEPS
    from eoffice.deps import UnitBatcher, UnitOfWork, _Queued
    from eoffice.errors import ServiceUnavailable

    with TestClient(create_app()) as client:
        token = login(client, CLERK, sqlite_env.password(CLERK))["Authorization"].split()[1]
    runs: list[int] = []

    def work(session: Any, _principal: Any, number: int) -> int:
        runs.append(number)
        session.info["fail_commit"] = True
        return number

    def lose_connection(session: Any) -> None:
        if session.info.pop("fail_commit", False):
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    async def main() -> list[Any]:
        app = SimpleNamespace(state=SimpleNamespace())
        batcher = UnitBatcher(max_items=10, max_running=1)
        loop = asyncio.get_running_loop()
        units = [UnitOfWork(SimpleNamespace(app=app, state=SimpleNamespace()),  # type: ignore[arg-type]
                            token) for _ in range(3)]
        futures = []
        for number, unit in enumerate(units):
            item = _Queued(unit, work, (number,), None, None, loop.create_future())
            batcher.submit(item)
            futures.append(item.future)
        return await asyncio.gather(*futures, return_exceptions=True)

    BEFORE_COMMIT_STEPS.append(lose_connection)
    try:
        outcomes = asyncio.run(main())
    finally:
        BEFORE_COMMIT_STEPS.remove(lose_connection)
    assert runs == [0, 1, 2]
    assert all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes


def test_staged_files_are_synced_before_the_commit(env: Env, as_user: Clients) -> None:
    receiver = env.user("clerk.vuthu")["agency_code"]
    headers = as_user.headers(CLERK)  # signed in before listening
    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    with mock.patch.object(os, "fsync", fsync), \
            listening(as_user.client, ("commit", lambda _conn: order.append("COMMIT"))):
        response = as_user.client.post(
            "/api/v1/documents", headers=headers,
            data={"metadata": json.dumps(metadata()), "recipients": json.dumps([receiver])},
            files={"file": ("a.pdf", make_pdf("synced first"), "application/pdf")})
    assert response.status_code == 201, response.text
    # The file and its folder (a new fan-out folder), both before the database commits.
    assert order[:order.index("COMMIT")].count("fsync") >= 2


def test_a_large_upload_is_put_off_the_event_loop(env: Env, as_user: Clients) -> None:
    from eoffice.blobs import service as blobs

    receiver = env.user("clerk.vuthu")["agency_code"]
    puts: list[int] = []
    real_put = blobs.LocalBlobStore.put_file

    def put(store: Any, source: Any, max_bytes: int | None = None) -> Any:
        puts.append(threading.get_ident())
        return real_put(store, source, max_bytes=max_bytes)

    loop_thread = as_user.client.portal.call(threading.get_ident)  # type: ignore[union-attr]
    pdf = make_pdf("large") + b"%" + b"x" * 2048 + b"\n"
    with mock.patch.object(blobs, "INLINE_STAGE_MAX", 1024), \
            mock.patch.object(blobs.LocalBlobStore, "put_file", put):
        response = as_user.client.post(
            "/api/v1/documents", headers=as_user.headers(CLERK),
            data={"metadata": json.dumps(metadata()), "recipients": json.dumps([receiver])},
            files={"file": ("a.pdf", pdf, "application/pdf")})
    assert response.status_code == 201, response.text
    assert len(puts) == 1 and puts[0] != loop_thread
    sha = hashlib.sha256(pdf).hexdigest()
    assert response.json()["file_sha256"] == sha
    assert (_store_root(env) / sha[:2] / sha[2:4] / sha).exists()


def test_idempotency_twins_never_share_a_batch(env: Env, as_user: Clients) -> None:
    receiver = env.user("clerk.vuthu")["agency_code"]
    request = _request(as_user, "Twins", receiver, **{"Idempotency-Key": "twins-1"})
    before = _count_documents()
    with one_batch_of(2) as sizes:
        responses = _post_all(as_user, [request, request])
    assert sorted(r.status_code for r in responses) == [201, 201], [r.text for r in responses]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert [r.headers.get("Idempotent-Replayed") for r in responses].count("true") == 1
    assert sizes == [1, 1]
    assert _count_documents() == before + 1


def test_sends_and_status_changes_batch_too(env: Env, as_user: Clients) -> None:
    """The other calls agency systems make per document: a draft's send and a receiver's
    status change, each waiting request in one batch, each with its own answer."""
    receiver = env.user("clerk.vuthu")["agency_code"]
    drafts = [as_user.client.post(
        "/api/v1/documents", headers=as_user.headers(CLERK),
        data={"metadata": json.dumps(metadata(subject=f"Draft {n}"))},
        files={"file": ("a.pdf", make_pdf(f"draft {n}"), "application/pdf")}).json()["id"]
        for n in range(3)]
    with one_batch_of(3) as sizes:
        sent = _at_once([functools.partial(
            as_user.client.post, f"/api/v1/documents/{draft}/send",
            headers=as_user.headers(CLERK), json={"recipients": [receiver]})
            for draft in drafts])
    assert [r.status_code for r in sent] == [202] * 3, [r.text for r in sent]
    assert sizes == [3]
    assert [r.json()["document_id"] for r in sent] == drafts
    deliveries = [r.json()["deliveries"][0]["id"] for r in sent]
    receiving = as_user.headers("clerk.vuthu")
    with one_batch_of(3) as sizes:
        changed = _at_once([functools.partial(
            as_user.client.post, f"/api/v1/deliveries/{delivery}/status",
            headers=receiving, json={"code": "03"}) for delivery in deliveries])
    assert [r.status_code for r in changed] == [200] * 3, [r.text for r in changed]
    assert sizes == [3]
    assert [r.json()["status_code"] for r in changed] == ["03"] * 3
    # Each delivery got an arrival number of its own in the receiver's register.
    assert sorted(r.json()["arrival_number"] for r in changed) == sorted(
        {r.json()["arrival_number"] for r in changed})


def test_requests_of_the_next_loop_turn_join_the_batch(sqlite_env: Env) -> None:
    """A batch starts one turn of the event loop after its first request: a request whose
    parsing ends in that turn joins it instead of starting a batch of its own (without the
    turn, most batches of eight agencies' clerks held one request: bench/api_ab.py)."""
    import asyncio
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from eoffice.app import create_app
    from eoffice.deps import UnitBatcher, UnitOfWork, _Queued

    with TestClient(create_app()) as client:
        token = login(client, CLERK, sqlite_env.password(CLERK))["Authorization"].split()[1]
    sizes: list[int] = []
    real_run = UnitBatcher._run

    async def counted(batcher: UnitBatcher, app: Any, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await real_run(batcher, app, batch)

    def work(_session: Any, principal: Any, number: int) -> tuple[int, str]:
        return number, principal.name

    async def main() -> list[Any]:
        app = SimpleNamespace(state=SimpleNamespace())
        batcher = UnitBatcher(max_items=10, max_running=1)
        loop = asyncio.get_running_loop()
        items = [_Queued(UnitOfWork(SimpleNamespace(app=app, state=SimpleNamespace()),  # type: ignore[arg-type]
                                    token), work, (number,), None, None, loop.create_future())
                 for number in range(3)]
        batcher.submit(items[0])
        loop.call_soon(batcher.submit, items[1])  # the next turn of the loop
        loop.call_soon(batcher.submit, items[2])
        return list(await asyncio.gather(*(item.future for item in items)))

    with mock.patch.object(UnitBatcher, "_run", counted):
        assert asyncio.run(main()) == [(0, CLERK), (1, CLERK), (2, CLERK)]
    assert sizes == [3]
