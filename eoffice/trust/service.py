"""Trust anchors with history: add, remove, sync from files, answer "trusted at T?".

Every change writes a ``trust_events`` row and an audit entry. The *state* of the store is the
SHA-256 of its sorted active fingerprints: a verification report records the state it used,
so re-verification knows when the store changed under it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import pem, x509
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from eoffice.audit.service import record
from eoffice.errors import NotFound, ValidationFailed
from eoffice.models import TrustAnchor, TrustEvent, utcnow
from eoffice.settings import get_settings

CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der"}
DEV_PKI_SOURCE = "dev-pki"
DIR_SOURCE_PREFIX = "dir:"
MAX_CERT_FILE_BYTES = 1024 * 1024


def normalize_fingerprint(value: str) -> str:
    """Accept 'AB:CD:..', 'abcd..' or 'sha256:..'; return 64 lower-case hex characters."""
    cleaned = value.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValidationFailed("fingerprint must be a SHA-256 fingerprint (64 hex digits)",
                               field="fingerprint",
                               detail_vi="Dấu vân tay phải là SHA-256 (64 ký tự hex)")
    return cleaned


def fingerprint_of(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex."""
    return hashlib.sha256(cert.dump()).hexdigest()


def colon_fingerprint(fingerprint: str) -> str:
    """The 'AB:CD:...' form used in certs/FINGERPRINTS.txt and by openssl."""
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


def parse_certificates(data: bytes, name: str = "upload") -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or DER bytes; ValidationFailed otherwise."""
    if not data:
        raise ValidationFailed(f"{name}: empty file", field="file",
                               detail_vi="Tệp chứng thư số rỗng")
    if len(data) > MAX_CERT_FILE_BYTES:
        raise ValidationFailed(f"{name}: a certificate file is at most 1 MB", field="file",
                               detail_vi="Tệp chứng thư số quá lớn")
    certs: list[x509.Certificate] = []
    try:
        if pem.detect(data):
            for kind, _, der in pem.unarmor(data, multiple=True):
                if kind in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                    certs.append(x509.Certificate.load(der))
        else:
            certs.append(x509.Certificate.load(data))
        for cert in certs:
            cert.native  # noqa: B018 - parse fully now so garbage fails here, not later
    except Exception as exc:  # noqa: BLE001 - asn1crypto raises many types on garbage
        raise ValidationFailed(f"{name}: not an X.509 certificate (PEM or DER)", field="file",
                               detail_vi="Tệp không phải chứng thư số X.509 (PEM/DER)") from exc
    if not certs:
        raise ValidationFailed(f"{name}: no certificate found", field="file",
                               detail_vi="Không tìm thấy chứng thư số trong tệp")
    return certs


def _subject(cert: x509.Certificate) -> str:
    try:
        return str(cert.subject.human_friendly)
    except Exception:  # noqa: BLE001
        return "<undecodable subject>"


def _kind(cert: x509.Certificate) -> str:
    return "root" if cert.self_signed else "intermediate"


def _not_after(cert: x509.Certificate) -> datetime | None:
    try:
        value = cert["tbs_certificate"]["validity"]["not_after"].native
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    except Exception:  # noqa: BLE001
        return None


def _pem(cert: x509.Certificate) -> str:
    return pem.armor("CERTIFICATE", cert.dump()).decode()


# --- reading -------------------------------------------------------------------------------

def active_anchors(session: Session) -> list[TrustAnchor]:
    """Anchors in force now, ordered by fingerprint."""
    return list(session.exec(select(TrustAnchor).where(col(TrustAnchor.removed_at).is_(None))
                             .order_by(col(TrustAnchor.fingerprint))).all())


def state_of(fingerprints: list[str]) -> str:
    """The trust-store state hash: SHA-256 of the sorted fingerprints, one per line."""
    return hashlib.sha256("\n".join(sorted(fingerprints)).encode()).hexdigest()


def current_state(session: Session) -> str:
    """State hash of the active anchors."""
    return state_of([a.fingerprint for a in active_anchors(session)])


def get_anchor(session: Session, fingerprint: str) -> TrustAnchor:
    """An anchor (active or removed) by fingerprint, or 404."""
    fp = normalize_fingerprint(fingerprint)
    anchor = session.exec(select(TrustAnchor).where(TrustAnchor.fingerprint == fp)).first()
    if anchor is None:
        raise NotFound(f"no trust anchor with fingerprint {fp}",
                       detail_vi="Không có chứng thư tin cậy với dấu vân tay này")
    return anchor


def anchor_out(anchor: TrustAnchor) -> dict[str, Any]:
    """JSON view of an anchor."""
    return {"fingerprint": anchor.fingerprint,
            "fingerprint_colon": colon_fingerprint(anchor.fingerprint),
            "subject": anchor.subject, "kind": anchor.kind, "source": anchor.source,
            "not_after": anchor.not_after, "added_at": anchor.added_at,
            "added_by": anchor.added_by, "removed_at": anchor.removed_at,
            "removed_by": anchor.removed_by, "active": anchor.removed_at is None}


def trusted_at(session: Session, fingerprint: str, at: datetime) -> dict[str, Any]:
    """Was this certificate a trust anchor at ``at``? Answered from the event history."""
    fp = normalize_fingerprint(fingerprint)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    events = list(session.exec(select(TrustEvent).where(TrustEvent.fingerprint == fp)
                               .order_by(col(TrustEvent.at), col(TrustEvent.id))).all())
    trusted = False
    deciding: TrustEvent | None = None
    for change in events:
        if change.at > at:
            break
        trusted = change.action == "added"
        deciding = change
    return {"fingerprint": fp, "at": at, "trusted": trusted,
            "decided_by": None if deciding is None else {
                "action": deciding.action, "at": deciding.at, "actor": deciding.actor,
                "source": deciding.source},
            "events": [{"action": e.action, "at": e.at, "actor": e.actor, "source": e.source,
                        "state_after": e.state_after} for e in events]}


# --- changing ------------------------------------------------------------------------------

def _log_change(session: Session, anchor: TrustAnchor, action: str, actor: str,
                source: str) -> None:
    session.flush()
    state = current_state(session)
    session.add(TrustEvent(fingerprint=anchor.fingerprint, action=action, actor=actor[:100],
                           source=source[:255], state_after=state))
    record(session, actor=actor, action=f"trust.{action}", object_type="trust_anchor",
           object_id=anchor.fingerprint[:64], agency_id=None,
           data={"subject": anchor.subject, "kind": anchor.kind, "source": source,
                 "state_after": state})
    session.flush()


def add_certificate(session: Session, cert: x509.Certificate, *, actor: str,
                    source: str) -> tuple[TrustAnchor, bool]:
    """Trust ``cert``; returns the anchor and whether the store changed."""
    fp = fingerprint_of(cert)
    anchor = session.exec(select(TrustAnchor).where(TrustAnchor.fingerprint == fp)).first()
    if anchor is not None and anchor.removed_at is None:
        return anchor, False
    now = utcnow()
    if anchor is None:
        anchor = TrustAnchor(fingerprint=fp, subject=_subject(cert), pem=_pem(cert),
                             kind=_kind(cert), source=source[:255], not_after=_not_after(cert),
                             added_at=now, added_by=actor[:100])
        try:
            # A concurrent sync may insert the same certificate: the savepoint keeps our
            # transaction usable if it wins.
            with session.begin_nested():
                session.add(anchor)
        except IntegrityError:
            existing = session.exec(select(TrustAnchor)
                                    .where(TrustAnchor.fingerprint == fp)).one()
            return existing, False
    else:
        anchor.removed_at = None
        anchor.removed_by = None
        anchor.added_at = now
        anchor.added_by = actor[:100]
        anchor.source = source[:255]
        session.add(anchor)
    _log_change(session, anchor, "added", actor, source)
    return anchor, True


def add_from_bytes(session: Session, data: bytes, *, actor: str, source: str,
                   name: str = "upload") -> list[tuple[TrustAnchor, bool]]:
    """Trust every certificate in a PEM/DER file."""
    return [add_certificate(session, cert, actor=actor, source=source)
            for cert in parse_certificates(data, name)]


def remove(session: Session, fingerprint: str, *, actor: str, source: str = "api"
           ) -> TrustAnchor:
    """Stop trusting an anchor (the row stays for history); 404 if unknown, 409 if removed."""
    from eoffice.errors import Conflict

    anchor = get_anchor(session, fingerprint)
    if anchor.removed_at is not None:
        raise Conflict("this trust anchor is already removed",
                       detail_vi="Chứng thư tin cậy này đã bị gỡ bỏ")
    anchor.removed_at = utcnow()
    anchor.removed_by = actor[:100]
    session.add(anchor)
    _log_change(session, anchor, "removed", actor, source)
    return anchor


# --- files: the configured trust folder and the development root -------------------------

def _configured_files() -> list[tuple[str, Path]]:
    """(source, path) of every certificate file that should be an anchor."""
    settings = get_settings()
    files: list[tuple[str, Path]] = []
    trust_dir = settings.trust_dir
    if trust_dir and trust_dir.is_dir():
        for path in sorted(trust_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in CERT_SUFFIXES:
                files.append((f"{DIR_SOURCE_PREFIX}{path.name}", path))
    if settings.environment != "production" and settings.pki_dir is not None:
        root = settings.pki_dir / "root.pem"
        if root.is_file():
            files.append((DEV_PKI_SOURCE, root))
    return files


def _removed_by_hand(session: Session, fingerprint: str) -> bool:
    last = session.exec(select(TrustEvent).where(TrustEvent.fingerprint == fingerprint)
                        .order_by(col(TrustEvent.id).desc())).first()
    return last is not None and last.action == "removed" and not last.source.startswith("sync:")


@dataclass
class SyncResult:
    """What a sync changed."""

    added: list[str]
    removed: list[str]
    errors: list[str]


def sync(session: Session, actor: str = "system") -> SyncResult:
    """Make file-sourced anchors match the files: add new ones, remove vanished ones.

    Anchors added by hand (API, CLI) are never removed by a sync.
    """
    result = SyncResult([], [], [])
    wanted: dict[str, str] = {}
    for source, path in _configured_files():
        try:
            certs = parse_certificates(path.read_bytes(), path.name)
        except (ValidationFailed, OSError) as exc:
            result.errors.append(f"{path}: {getattr(exc, 'detail', exc)}")
            continue
        for cert in certs:
            if _removed_by_hand(session, fingerprint_of(cert)):
                # An operator distrusted it: a file lying around must not undo that.
                wanted[fingerprint_of(cert)] = source
                result.errors.append(f"{path}: removed by an administrator; not re-added")
                continue
            anchor, changed = add_certificate(session, cert, actor=actor, source=source)
            wanted[anchor.fingerprint] = source
            if changed:
                result.added.append(anchor.fingerprint)
    file_sourced = session.exec(select(TrustAnchor)
                                .where(col(TrustAnchor.removed_at).is_(None))).all()
    for anchor in file_sourced:
        from_files = (anchor.source.startswith(DIR_SOURCE_PREFIX)
                      or anchor.source == DEV_PKI_SOURCE)
        if from_files and anchor.fingerprint not in wanted:
            remove(session, anchor.fingerprint, actor=actor, source=f"sync:{anchor.source}")
            result.removed.append(anchor.fingerprint)
    return result


_synced_lock = threading.Lock()
_synced: dict[str, tuple[Any, ...]] = {}


def _files_signature() -> tuple[Any, ...]:
    out = []
    for source, path in _configured_files():
        try:
            stat = path.stat()
            out.append((source, stat.st_mtime_ns, stat.st_size))
        except OSError:
            continue
    return tuple(out)


def ensure_synced(session: Session) -> bool:
    """Sync once per process and database, and again whenever the files change.

    Runs in the caller's transaction; the "done" mark is taken only once it commits, so a
    rolled-back request syncs again next time. Returns True if the store changed.
    """
    url = get_settings().database_url
    signature = _files_signature()
    with _synced_lock:
        if _synced.get(url) == signature:
            return False
    result = sync(session)
    session.info["trust_synced"] = (url, signature)
    return bool(result.added or result.removed)


@event.listens_for(Session, "after_commit")
def _mark_synced(session: Session) -> None:
    done = session.info.pop("trust_synced", None)
    if done is not None:
        with _synced_lock:
            _synced[done[0]] = done[1]


@event.listens_for(Session, "after_rollback")
def _forget_unsynced(session: Session) -> None:
    session.info.pop("trust_synced", None)


def forget_sync_cache() -> None:
    """Force the next ensure_synced to look at the files again (tests, CLI)."""
    with _synced_lock:
        _synced.clear()


def trust_roots(session: Session) -> tuple[list[x509.Certificate], str]:
    """The certificates verification trusts now and the state hash describing them."""
    ensure_synced(session)
    anchors = active_anchors(session)
    certs = [x509.Certificate.load(pem.unarmor(a.pem.encode())[2]) for a in anchors]
    return certs, state_of([a.fingerprint for a in anchors])
