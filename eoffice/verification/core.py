"""In-process analysis of one PDF: runs inside a sandboxed worker child (see sandbox.py).

pyHanko does the cryptography, coverage evaluation and difference analysis; this module
decides the verdict itself (stricter than pyHanko's defaults, see DESIGN.md "Known pitfalls").
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import threading
import time
from datetime import datetime
from typing import IO, Any

from asn1crypto import cms, x509
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from pyhanko.pdf_utils.generic import DecodePurpose
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.general import find_cms_attribute_iter
from pyhanko.sign.validation import (
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    PdfSignatureStatus,
    SignatureCoverageLevel,
    TimestampSignatureStatus,
)
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import InsufficientRevinfoError
from pyhanko_certvalidator.policy_decl import DisallowWeakAlgorithmsPolicy
from pyhanko_certvalidator.registry import SimpleTrustManager

from . import diff as extra_diff
from .decree30 import check_decree30
from .options import VerifyOptions
from .policy import chain_findings, weak_algorithm_findings
from .report import (
    INDETERMINATE,
    NO_SIGNATURE_FOUND,
    TOTAL_FAILED,
    TOTAL_PASSED,
    file_report,
    worst,
)

# pyHanko logs every rejected algorithm/odd object at WARNING; the report carries them instead.
logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)

class _CaptureValidationErrors(logging.Handler):
    """pyHanko folds certvalidator errors into coarse sub-indications and only logs the
    cause; keep the causes so the report can say why (and map missing revocation data)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


_CAPTURE = _CaptureValidationErrors()
_cms_logger = logging.getLogger("pyhanko.sign.validation.generic_cms")
_cms_logger.setLevel(logging.WARNING)
_cms_logger.propagate = False
_cms_logger.addHandler(_CAPTURE)


# pyHanko must not reject SHA-1 / RSA-1024 outright: those are acceptable when a timestamp
# proves the signature predates the cut-off, which policy.py decides afterwards. MD2/MD5 and
# RSA < 1024 are never acceptable.
_LENIENT_ALGORITHMS = DisallowWeakAlgorithmsPolicy(
    weak_hash_algos=frozenset({"md2", "md5"}), rsa_key_size_threshold=1024
)

# ETSI allows either key usage for electronic signatures/seals.
_SIGNER_KEY_USAGE = KeyUsageConstraints(
    key_usage={"non_repudiation", "digital_signature"}, match_all_key_usages=False
)

_REVOCATION_MODES = {"require": "require", "soft": "hard-fail", "off": "soft-fail"}

_ACCEPTED_COVERAGE = {"ENTIRE_FILE", "ENTIRE_REVISION"}
_ACCEPTED_MODIFICATIONS = {"NONE", "LTA_UPDATES", "FORM_FILLING"}


# Trust managers by trust-root set: building one parses every root into a trust anchor, and
# the result depends on the roots alone. Rebuilt now and then because lookups of unknown
# issuers leave empty entries behind in it.
_TRUST_MANAGER_USES = 256
_trust_managers: dict[tuple[bytes, ...], list[Any]] = {}


def _trust_manager(roots: list[x509.Certificate]) -> SimpleTrustManager:
    key = tuple(c.dump() for c in roots)
    cached = _trust_managers.get(key)
    if cached is None or cached[1] >= _TRUST_MANAGER_USES:
        if len(_trust_managers) >= 8:
            _trust_managers.clear()
        cached = _trust_managers[key] = [SimpleTrustManager.build(trust_roots=list(roots)), 0]
    cached[1] += 1
    return cached[0]  # type: ignore[no-any-return]


class _RetryNonStrict(Exception):
    """The strict reader refused something a lenient reader may accept (hybrid xrefs...)."""


def _name_of(cert: x509.Certificate | None) -> str | None:
    if cert is None:
        return None
    try:
        subject = cert.subject.native
        return str(subject.get("common_name") or cert.subject.human_friendly)
    except Exception:  # noqa: BLE001 - hostile certificates may not decode
        return None


def _cert_entry(cert: x509.Certificate) -> dict[str, Any]:
    try:
        subject = cert.subject.human_friendly
    except Exception:  # noqa: BLE001
        subject = "<undecodable>"
    return {
        "subject": subject,
        "serial": format(cert.serial_number, "x"),
        "sha256": hashlib.sha256(cert.dump()).hexdigest(),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _revinfo_from_cms(signed_data: cms.SignedData) -> tuple[list[Any], list[Any]]:
    """CRLs and OCSP responses carried inside the CMS (Adobe attribute + SignedData.crls)."""
    crls: list[Any] = []
    ocsps: list[Any] = []
    try:
        for choice in signed_data["crls"] or ():
            if choice.name == "crl":
                crls.append(choice.chosen)
    except Exception:  # noqa: BLE001 - optional data, never decisive on its own
        pass
    try:
        signer_info = signed_data["signer_infos"][0]
        for value in find_cms_attribute_iter(
            signer_info["signed_attrs"], "adobe_revocation_info_archival"
        ):
            crls.extend(value["crl"] or ())
            ocsps.extend(value["ocsp"] or ())
    except Exception:  # noqa: BLE001
        pass
    return crls, ocsps


class _FileAnalysis:
    """State shared by all signatures of one file."""

    def __init__(self, reader: PdfFileReader, options: VerifyOptions) -> None:
        self.reader = reader
        self.options = options
        self.dss_certs: list[x509.Certificate] = []
        self.dss_crls: list[Any] = []
        self.dss_ocsps: list[Any] = []
        self.errors: list[str] = []
        self.fetcher_backends: list[Any] = []
        self._load_dss()

    def _load_dss(self) -> None:
        try:
            dss = DocumentSecurityStore.read_dss(self.reader)
        except Exception:  # noqa: BLE001 - no DSS is the common case
            return
        try:
            self.dss_certs = list(dss.load_certs())
            for ref in dss.crls:
                data = ref.get_object().read_data(DecodePurpose.CRL)
                self.dss_crls.append(asn1_crl.CertificateList.load(data))
            for ref in dss.ocsps:
                data = ref.get_object().read_data(DecodePurpose.OCSP_RESPONSE)
                self.dss_ocsps.append(asn1_ocsp.OCSPResponse.load(data))
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"DSS revocation data unreadable: {exc!r}")

    def validation_context(self, emb: EmbeddedPdfSignature) -> ValidationContext:
        """A fresh context per signature: certvalidator caches path/revocation state."""
        opts = self.options
        crls, ocsps = _revinfo_from_cms(emb.signed_data)
        kwargs: dict[str, Any] = {
            "trust_manager": _trust_manager(opts.trust_roots),
            "other_certs": self.dss_certs,
            "crls": self.dss_crls + crls,
            "ocsps": self.dss_ocsps + ocsps,
            "revocation_mode": _REVOCATION_MODES[opts.revocation],
            "allow_fetching": opts.revocation != "off",
            "algorithm_usage_policy": _LENIENT_ALGORITHMS,
        }
        if opts.revocation != "off":
            from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

            # Leave the parent's hard deadline room to report TRY_LATER instead of a kill.
            backend = AIOHttpFetcherBackend(per_request_timeout=max(1, int(opts.time_limit_s / 4)))
            # The event loop outlives this file (see _run): close the HTTP session ourselves.
            self.fetcher_backends.append(backend)
            kwargs["fetcher_backend"] = backend
        return ValidationContext(**kwargs)

    async def close(self) -> None:
        """Release the HTTP sessions opened for revocation fetching."""
        for backend in self.fetcher_backends:
            try:
                await backend.close()
            except Exception:  # noqa: BLE001 - best effort; the verdict is already made
                pass
        self.fetcher_backends = []


def _status_verdict(
    status: PdfSignatureStatus | TimestampSignatureStatus,
) -> tuple[str, str | None]:
    if not status.intact:
        return TOTAL_FAILED, "HASH_FAILURE"
    if not status.valid:
        return TOTAL_FAILED, "SIG_CRYPTO_FAILURE"
    indic = status.trust_problem_indic
    if indic is not None:
        kind = TOTAL_FAILED if indic.status.name == "FAILED" else INDETERMINATE
        return kind, indic.standard_name
    if not status.trusted:
        return INDETERMINATE, "NO_CERTIFICATE_CHAIN_FOUND"
    return TOTAL_PASSED, None


def _timestamp_entry(ts: TimestampSignatureStatus | None) -> dict[str, Any] | None:
    if ts is None:
        return None
    return {
        "time": _iso(ts.timestamp),
        "intact": bool(ts.intact),
        "valid": bool(ts.valid),
        "trusted": bool(ts.trusted),
        "tsa": _name_of(ts.signing_cert),
        "sub_indication": _status_verdict(ts)[1],
    }


def _revocation_entry(status: Any, mode: str) -> dict[str, Any]:
    details = getattr(status, "revocation_details", None)
    entry: dict[str, Any] = {"mode": mode}
    if details is not None:
        entry.update(
            status="revoked",
            revocation_date=_iso(details.revocation_date),
            reason=str(details.revocation_reason.native),
            ca_revoked=bool(details.ca_revoked),
        )
    elif mode == "off":
        entry["status"] = "not_checked"
    elif status.trusted:
        entry["status"] = "good"
    else:
        entry["status"] = "unknown"
    return entry


def _empty_sig_entry(field: str, kind: str) -> dict[str, Any]:
    return {
        "field": field,
        "fields": [field],
        "type": kind,
        "indication": INDETERMINATE,
        "sub_indication": None,
        "signer": None,
        "signing_time": None,
        "intact": False,
        "valid": False,
        "trusted": False,
        "coverage": None,
        "modification_level": None,
        "timestamp": None,
        "revocation": None,
        "errors": [],
    }


def _algorithms(status: Any) -> dict[str, Any]:
    return {
        "digest": getattr(status, "md_algorithm", None),
        "signature": getattr(status, "pkcs7_signature_mechanism", None),
    }


async def _validate_signature(
    fa: _FileAnalysis, emb: EmbeddedPdfSignature, entry: dict[str, Any], skip_diff: bool = False
) -> tuple[Any, list[tuple[str, str | None]]]:
    """Validate one signature or document timestamp; fill ``entry``; return the verdicts."""
    verdicts: list[tuple[str, str | None]] = []
    _CAPTURE.take()
    vc = fa.validation_context(emb)
    status: PdfSignatureStatus | DocumentTimestampStatus
    if entry["type"] == "document_timestamp":
        status = await async_validate_pdf_timestamp(
            emb, validation_context=vc, skip_diff=skip_diff
        )
        entry["signing_time"] = _iso(status.timestamp)
        entry["timestamp"] = {"time": _iso(status.timestamp), "kind": "document_timestamp"}
    else:
        status = await async_validate_pdf_signature(
            emb,
            signer_validation_context=vc,
            key_usage_settings=_SIGNER_KEY_USAGE,
            skip_diff=skip_diff,
        )
        ts = status.timestamp_validity
        entry["timestamp"] = _timestamp_entry(ts)
        entry["content_timestamp"] = _timestamp_entry(status.content_timestamp_validity)
        signing_time = ts.timestamp if ts is not None else status.signer_reported_dt
        entry["signing_time"] = _iso(signing_time)
        entry["signing_time_source"] = (
            "signature_timestamp" if ts is not None else "claimed" if signing_time else None
        )
        for label, tst in (
            ("signature timestamp", ts),
            ("content timestamp", status.content_timestamp_validity),
        ):
            if tst is None:
                continue
            if not tst.intact:
                # A token whose imprint does not match was copied from elsewhere.
                entry["errors"].append(f"{label} message imprint does not match")
                verdicts.append((TOTAL_FAILED, "HASH_FAILURE"))
            elif not tst.valid:
                entry["errors"].append(f"{label} signature is invalid")
                verdicts.append((TOTAL_FAILED, "SIG_CRYPTO_FAILURE"))
            else:
                v = _status_verdict(tst)
                if v[0] != TOTAL_PASSED:
                    entry["errors"].append(f"{label} not trusted: {v[1]}")
                    verdicts.append(v)
        entry["docmdp"] = {
            "level": emb.docmdp_level.name if emb.docmdp_level is not None else None,
            "ok": status.docmdp_ok,
        }
        if status.seed_value_constraint_error is not None:
            entry["errors"].append(f"seed value: {status.seed_value_constraint_error}")
            verdicts.append((INDETERMINATE, "SIG_CONSTRAINTS_FAILURE"))

    captured = _CAPTURE.take()
    missing_revinfo = False
    for record in captured:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InsufficientRevinfoError):
            missing_revinfo = True
        text = str(exc) if exc is not None else record.getMessage()
        if text and text not in entry["errors"]:
            entry["errors"].append(text[:500])
    if missing_revinfo:
        # ETSI: revocation status not (yet) available -> INDETERMINATE/TRY_LATER.
        verdicts = [
            (INDETERMINATE, "TRY_LATER") if v[1] == "CERTIFICATE_CHAIN_GENERAL_FAILURE" else v
            for v in verdicts
        ]

    entry["signer"] = _name_of(status.signing_cert)
    entry["intact"] = bool(status.intact)
    entry["valid"] = bool(status.valid)
    entry["trusted"] = bool(status.trusted)
    entry["algorithms"] = _algorithms(status)
    entry["revocation"] = _revocation_entry(status, fa.options.revocation)
    if status.validation_path is not None:
        try:
            entry["chain"] = [_cert_entry(c) for c in status.validation_path.iter_certs(True)]
        except Exception:  # noqa: BLE001
            entry["chain"] = []
    main = _status_verdict(status)
    if missing_revinfo and main[1] == "CERTIFICATE_CHAIN_GENERAL_FAILURE":
        main = (INDETERMINATE, "TRY_LATER")
    verdicts.insert(0, main)

    coverage = status.coverage.name if status.coverage is not None else None
    entry["coverage"] = coverage
    if coverage not in _ACCEPTED_COVERAGE:
        entry["errors"].append(f"signature does not cover the whole revision ({coverage})")
        verdicts.append((TOTAL_FAILED, "FORMAT_FAILURE"))

    diff = status.diff_result
    if diff is None:
        level = "NONE" if coverage == "ENTIRE_FILE" else None
    elif isinstance(diff, Exception):
        level = ModificationLevel.OTHER.name
        entry["errors"].append(f"modification after signing: {diff}")
    else:
        level = diff.modification_level.name
        if diff.changed_form_fields:
            entry["changed_form_fields"] = sorted(diff.changed_form_fields)
    entry["modification_level"] = level
    if getattr(status, "docmdp_ok", None) is False and entry["type"] == "signature":
        entry["errors"].append("changes after signing exceed the DocMDP/FieldMDP permissions")
        verdicts.append((INDETERMINATE, "SIG_CONSTRAINTS_FAILURE"))
    return status, verdicts


async def _validate_without_diff(
    fa: _FileAnalysis, emb: EmbeddedPdfSignature, entry: dict[str, Any], first: Exception
) -> tuple[Any, list[tuple[str, str | None]]]:
    """pyHanko's difference analysis chokes on some structures (dangling references, odd
    field names): still check the cryptography, but the changes stay unexplained."""
    entry["errors"] = []
    try:
        status, verdicts = await _validate_signature(fa, emb, entry, skip_diff=True)
    except Exception as exc:  # noqa: BLE001
        entry["errors"].append(f"{type(exc).__name__}: {exc}")
        return None, [_exception_verdict(exc)]
    if entry.get("coverage") == "ENTIRE_REVISION":
        entry["modification_level"] = ModificationLevel.OTHER.name
        entry["errors"].append(
            f"changes after signing could not be analysed: {type(first).__name__}: {first}"
        )
        verdicts.append((INDETERMINATE, "SIG_CONSTRAINTS_FAILURE"))
    return status, verdicts


def _embedded_signatures(
    reader: PdfFileReader,
) -> list[tuple[EmbeddedPdfSignature | None, dict[str, Any], Exception | None]]:
    """Every filled signature field, one entry per signature value (fields merged)."""
    by_ref: dict[Any, tuple[EmbeddedPdfSignature | None, dict[str, Any], Exception | None]] = {}
    out: list[tuple[EmbeddedPdfSignature | None, dict[str, Any], Exception | None]] = []
    for index, (fq_name, sig_obj, sig_field) in enumerate(
        enumerate_sig_fields(reader, filled_status=True)
    ):
        name = str(fq_name)
        try:
            ref = getattr(sig_field.get_object().raw_get("/V"), "reference", None)
        except Exception:  # noqa: BLE001
            ref = None
        key = ref if ref is not None else ("anon", index)
        if key in by_ref:
            # One signature value referenced by several fields counts once.
            by_ref[key][1]["fields"].append(name)
            continue
        try:
            sig_type = sig_obj.get_object().get("/Type")
        except Exception:  # noqa: BLE001
            sig_type = None
        kind = "document_timestamp" if sig_type == "/DocTimeStamp" else "signature"
        entry = _empty_sig_entry(name, kind)
        try:
            emb: EmbeddedPdfSignature | None = EmbeddedPdfSignature(reader, sig_field, name)
            err: Exception | None = None
        except Exception as exc:  # noqa: BLE001 - malformed CMS, missing /ByteRange...
            emb, err = None, exc
        item = (emb, entry, err)
        by_ref[key] = item
        out.append(item)
    return out


async def _analyse(reader: PdfFileReader, options: VerifyOptions, strict: bool) -> dict[str, Any]:
    fa = _FileAnalysis(reader, options)
    try:
        return await _analyse_with(fa, reader, options, strict)
    finally:
        await fa.close()


async def _analyse_with(
    fa: _FileAnalysis, reader: PdfFileReader, options: VerifyOptions, strict: bool
) -> dict[str, Any]:
    try:
        items = _embedded_signatures(reader)
    except Exception as exc:
        if strict:
            raise _RetryNonStrict from exc
        return file_report(
            "", TOTAL_FAILED, "FORMAT_FAILURE", [], [f"cannot enumerate signatures: {exc!r}"]
        )
    if not items:
        return file_report("", NO_SIGNATURE_FOUND, None, [], fa.errors)

    ordered: list[tuple[int, EmbeddedPdfSignature | None, dict[str, Any], Exception | None]] = []
    for emb, entry, err in items:
        order = emb.signed_revision if emb is not None else 10**9
        ordered.append((order, emb, entry, err))
    ordered.sort(key=lambda t: t[0])

    entries: list[dict[str, Any]] = []
    statuses: list[Any] = []
    all_verdicts: list[list[tuple[str, str | None]]] = []
    for _, emb, entry, err in ordered:
        verdicts: list[tuple[str, str | None]] = []
        status = None
        if emb is None:
            entry["errors"].append(f"unreadable signature: {err!r}")
            verdicts.append((TOTAL_FAILED, "FORMAT_FAILURE"))
        else:
            try:
                status, verdicts = await _validate_signature(fa, emb, entry)
            except Exception as exc:  # noqa: BLE001 - anything pyHanko raises is a verdict
                if strict:
                    # Hybrid xrefs, dangling references...: the lenient reader gets a say.
                    raise _RetryNonStrict from exc
                status, verdicts = await _validate_without_diff(fa, emb, entry, exc)
        entries.append(entry)
        statuses.append((emb, status))
        all_verdicts.append(verdicts)

    # Our own stricter look at what changed after each signature (pyHanko's policy is lax).
    for (emb, status), entry, verdicts in zip(statuses, entries, all_verdicts, strict=True):
        if emb is None or status is None:
            continue
        try:
            findings = extra_diff.review(reader, emb, entry)
        except Exception as exc:  # noqa: BLE001
            findings = [
                extra_diff.Finding("OTHER", f"change analysis failed: {type(exc).__name__}")
            ]
        if findings:
            entry["changes"] = [f.as_dict() for f in findings]
            verdicts.extend(extra_diff.verdicts_for(findings, entry))

    # Weak algorithms need proof of existence before the cut-off.
    for idx, ((emb, status), entry, verdicts) in enumerate(
        zip(statuses, entries, all_verdicts, strict=True)
    ):
        if status is None:
            continue
        later_ts = [
            s
            for (e2, s), ent2 in zip(statuses[idx + 1 :], entries[idx + 1 :], strict=True)
            if s is not None and ent2["type"] == "document_timestamp" and ent2["intact"]
        ]
        if emb is not None:
            not_ca = chain_findings(status, list(emb.other_embedded_certs) + fa.dss_certs)
            if not_ca:
                entry["errors"].extend(not_ca)
                verdicts.append((INDETERMINATE, "CHAIN_CONSTRAINTS_FAILURE"))
        findings_w = weak_algorithm_findings(status, options.weak_algorithms_before, later_ts)
        if findings_w:
            entry["errors"].extend(findings_w)
            verdicts.append((INDETERMINATE, "CRYPTO_CONSTRAINTS_FAILURE"))

    for entry, verdicts in zip(entries, all_verdicts, strict=True):
        entry["indication"], entry["sub_indication"] = worst(verdicts or [(INDETERMINATE, None)])

    indication, sub = worst([(e["indication"], e["sub_indication"]) for e in entries])
    report = file_report("", indication, sub, entries, fa.errors)
    report["document_timestamps"] = sum(1 for e in entries if e["type"] == "document_timestamp")
    report["reader"] = "strict" if strict else "lenient"
    if options.decree30:
        report["decree30"] = check_decree30(entries, [s for _, s in statuses])
    return report


# Exceptions that point at a bug on our side rather than at the input: the file must not be
# condemned for them, but it cannot pass either.
_INTERNAL_ERRORS = (TypeError, NameError, AttributeError, ImportError, NotImplementedError)


def _exception_verdict(exc: BaseException) -> tuple[str, str | None]:
    sub = getattr(exc, "ades_subindication", None)
    if sub is not None:
        kind = TOTAL_FAILED if sub.status.name == "FAILED" else INDETERMINATE
        return kind, sub.standard_name
    if isinstance(exc, _INTERNAL_ERRORS):
        return INDETERMINATE, "GENERIC"
    # Parse errors, AssertionError/KeyError from pyHanko on malformed structures, ...
    return TOTAL_FAILED, "FORMAT_FAILURE"


_loops = threading.local()


def _run(coro: Any) -> Any:
    """Like asyncio.run, but one event loop per process (and thread) serves every file (a
    fresh loop per file was ~5 % of a one-page verification). Leftover tasks are cancelled as
    asyncio.run does, so nothing from one file runs on into the next."""
    held: tuple[int, asyncio.AbstractEventLoop] | None = getattr(_loops, "loop", None)
    if held is None or held[0] != os.getpid() or held[1].is_closed():
        # After fork the parent's loop (and its selector) must not be shared.
        held = _loops.loop = (os.getpid(), asyncio.new_event_loop())
    loop = held[1]
    try:
        return loop.run_until_complete(coro)
    finally:
        leftovers = asyncio.all_tasks(loop)
        if leftovers:
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))


def _open_and_analyse(stream: IO[bytes], options: VerifyOptions, strict: bool) -> dict[str, Any]:
    stream.seek(0)
    reader = PdfFileReader(stream, strict=strict)
    return _run(_analyse(reader, options, strict))


# pyHanko's tokenizer makes tens of thousands of 1-byte read()/seek() calls per file; on an
# in-memory buffer they cost a fraction of a buffered file's. Large files stay on disk so the
# worker's memory does not grow with the input.
_IN_MEMORY_MAX = 4 * 1024 * 1024


def _open_pdf(path: str) -> IO[bytes]:
    stream = open(path, "rb")  # noqa: SIM115 - handed to the caller's with-statement
    try:
        if os.fstat(stream.fileno()).st_size > _IN_MEMORY_MAX:
            return stream
        data = stream.read(_IN_MEMORY_MAX + 1)
    except BaseException:
        stream.close()
        raise
    if len(data) > _IN_MEMORY_MAX:
        # It grew while we looked: analyse it from disk after all.
        stream.seek(0)
        return stream
    stream.close()
    return io.BytesIO(data)


def analyse_file(path: str, options: VerifyOptions) -> dict[str, Any]:
    """Verify one file in this process. Never raises; the caller adds sandboxing."""
    start = time.monotonic()
    try:
        with _open_pdf(path) as stream:
            try:
                report = _open_and_analyse(stream, options, strict=True)
            except Exception:  # noqa: BLE001 - includes _RetryNonStrict and strict parse errors
                try:
                    report = _open_and_analyse(stream, options, strict=False)
                except Exception as exc:  # noqa: BLE001
                    report = file_report(
                        "", TOTAL_FAILED, "FORMAT_FAILURE", [], [f"unreadable PDF: {exc!r}"]
                    )
    except OSError as exc:
        report = file_report("", TOTAL_FAILED, "FORMAT_FAILURE", [], [f"cannot open: {exc}"])
    except Exception as exc:  # noqa: BLE001 - last line of defence
        report = file_report("", INDETERMINATE, None, [], [f"internal error: {exc!r}"])
    report["file"] = str(path)
    report["elapsed_ms"] = int((time.monotonic() - start) * 1000)
    # pyHanko hands back str/bool subclasses tied to the reader: keep plain JSON data only.
    return json.loads(json.dumps(report, default=str))


__all__ = ["analyse_file", "SignatureCoverageLevel"]
