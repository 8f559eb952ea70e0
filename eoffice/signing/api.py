"""Signing API: leader signature, issuance with the seal, two-step signing, job status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from eoffice.db import new_session
from eoffice.deps import CurrentPrincipal, RowId, SessionDep
from eoffice.documents.service import number_notation
from eoffice.errors import ServiceUnavailable, ValidationFailed
from eoffice.models import Document, Job
from eoffice.settings import get_settings
from eoffice.signing import service
from eoffice.signing.schemas import (
    CompleteRequest,
    IssueSignedRequest,
    JobAccepted,
    JobOut,
    LeaderSignRequest,
    PrepareRequest,
)

router = APIRouter(tags=["signing"])

POLL_SECONDS = 0.1


def _accepted(job: Job, session: Session | None = None) -> JobAccepted:
    notation = None
    if session is not None and job.document_id is not None:
        document = session.get(Document, job.document_id)
        notation = number_notation(document) if document else None
    return JobAccepted(job_id=job.id, status=job.status, document_id=job.document_id,
                       progress=job.progress, number_notation=notation)


def _reload(job_id: str) -> Job:
    with new_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.commit()  # ends the read (on SQLite every transaction holds the write lock)
        return job


@router.post("/documents/{document_id}/sign", status_code=202, response_model=JobAccepted)
async def sign_document(document_id: RowId, body: LeaderSignRequest, session: SessionDep,
                        principal: CurrentPrincipal) -> JobAccepted:
    """The leader signs the current revision with their server-held key (Decree 30 step 1).

    Why this shape: the passphrase must never leave this request — not into the database,
    not into the broker, not into a log — yet the PDF work belongs on a crypto worker. So:

    1. here, holding the passphrase in memory only, the key file is unlocked (a wrong
       passphrase fails now: 422 naming ``passphrase``, the attempt kept as a failed job);
       its certificate (public) goes on a new job, committed with a ``signing.prepare``
       outbox row;
    2. the worker reserves the visible field (blue signature image, position, full name),
       computes the CMS signed attributes and stores them (the prepared PDF goes to the blob
       store): job status ``awaiting_signature``;
    3. this request polls the job row without blocking the event loop (bounded by
       ``EOFFICE_SIGN_PREPARE_WAIT_SECONDS``), signs the attributes with the key it holds and
       commits the signature value (public once embedded) with a ``signing.complete`` row;
    4. the worker embeds and checks it and saves the result as a new document revision.

    The unlocked key dies with the request. If the worker does not prepare in time the job
    is failed and the answer is 503 with its id. With eager tasks (tests) step 2 and 4 run
    inside the commits of step 1 and 3: the same code path.
    """
    settings = get_settings()
    passphrase = body.passphrase.get_secret_value()

    def start() -> tuple[str, Any]:
        try:
            job, signer = service.start_leader_signing(
                session, principal, document_id, passphrase=passphrase, level=body.level,
                page=body.page, box=body.box)
        except ValidationFailed as exc:
            if "job_id" in exc.extra:
                session.commit()  # keep the failed attempt (audited) although we answer 422
            raise
        session.commit()  # publishes signing.prepare; with eager tasks it runs right here
        return job.id, signer

    job_id, signer = await run_in_threadpool(start)
    deadline = time.monotonic() + settings.sign_prepare_wait_seconds
    while True:
        job = await run_in_threadpool(_reload, job_id)
        if job.status == "awaiting_signature":
            break
        if job.status == "failed":
            raise service.job_error(job)
        if time.monotonic() >= deadline:
            if await run_in_threadpool(_give_up, job_id):
                raise ServiceUnavailable(
                    "the signing worker did not prepare the document in time; try again",
                    detail_vi="Máy chủ ký chưa chuẩn bị kịp văn bản; vui lòng thử lại",
                    extra={"job_id": job_id})
            continue  # the worker finished just now
        await asyncio.sleep(POLL_SECONDS)

    data_to_sign = service.decode_data_to_sign(job)
    signature = await run_in_threadpool(signer.sign_raw, data_to_sign, "sha256")
    del signer

    def submit() -> JobAccepted:
        with new_session() as own:
            row = own.get(Job, job_id)
            assert row is not None
            service.submit_signature(own, row, signature, kind="signature",
                                     actor=principal.name)
            own.commit()  # publishes signing.complete
        final = _reload(job_id)
        return _accepted(final)

    return await run_in_threadpool(submit)


def _give_up(job_id: str) -> bool:
    with new_session() as session:
        expired = service.expire_if_unprepared(
            session, job_id, "the signing worker did not prepare the document in time")
        session.commit()
        return expired


@router.post("/documents/{document_id}/sign/prepare", status_code=202,
             response_model=JobAccepted)
def prepare_two_step(document_id: RowId, body: PrepareRequest, session: SessionDep,
                     principal: CurrentPrincipal) -> JobAccepted:
    """Two-step signing, step 1: the worker prepares; poll GET /jobs/{id} for the digest."""
    job = service.start_remote_signing(session, principal, document_id,
                                       certificate=body.certificate, chain=body.chain,
                                       level=body.level, page=body.page, box=body.box)
    session.commit()  # publishes signing.prepare
    return _accepted(_reload(job.id))


@router.post("/jobs/{job_id}/complete", status_code=202, response_model=JobAccepted)
def complete_two_step(job_id: str, body: CompleteRequest, session: SessionDep,
                      principal: CurrentPrincipal) -> JobAccepted:
    """Two-step signing, step 2: the device's raw signature or CMS; the worker embeds it."""
    try:
        value, kind = body.decoded()
    except ValueError as exc:
        field = "signature" if body.signature is not None else "cms"
        raise ValidationFailed(str(exc), field=field,
                               detail_vi="Chữ ký phải được mã hóa base64") from None
    job = service.complete_remote(session, principal, job_id, signature=value, kind=kind)
    session.commit()  # publishes signing.complete
    return _accepted(_reload(job.id))


@router.post("/documents/{document_id}/issue-signed", status_code=202,
             response_model=JobAccepted)
def issue_signed(document_id: RowId, session: SessionDep, principal: CurrentPrincipal,
                 body: IssueSignedRequest | None = None) -> JobAccepted:
    """The clerk issues: number and date now, then a job applies the agency's seal over the
    leader's signature and stamps every PDF attachment (Decree 30 step 2)."""
    job = service.start_seal(session, principal, document_id,
                             level=body.level if body else None)
    session.commit()  # publishes signing.seal
    return _accepted(_reload(job.id), session)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, principal: CurrentPrincipal) -> dict[str, Any]:
    """A job's status and progress (its creator's agency only)."""
    return service.job_view(service.get_job(session, principal, job_id))
