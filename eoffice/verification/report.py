"""Report vocabulary (ETSI EN 319 102-1 indications) and small helpers shared by the engine."""

from __future__ import annotations

from typing import Any

TOTAL_PASSED = "TOTAL_PASSED"
TOTAL_FAILED = "TOTAL_FAILED"
INDETERMINATE = "INDETERMINATE"
NO_SIGNATURE_FOUND = "NO_SIGNATURE_FOUND"

# NO_SIGNATURE_FOUND ranks with TOTAL_FAILED for batch purposes: nothing was proven.
_RANK = {TOTAL_PASSED: 0, INDETERMINATE: 1, NO_SIGNATURE_FOUND: 2, TOTAL_FAILED: 3}

#: Sub-indications that only say "we could not establish trust/time/revocation";
#: they never explain an attack on their own.
TRUST_OR_TIME_SUBINDICATIONS = frozenset(
    {
        "NO_CERTIFICATE_CHAIN_FOUND",
        "TRY_LATER",
        "OUT_OF_BOUNDS_NO_POE",
        "OUT_OF_BOUNDS_NOT_REVOKED",
        "NO_POE",
        "REVOCATION_OUT_OF_BOUNDS_NO_POE",
        "EXPIRED",
        "NOT_YET_VALID",
    }
)


def rank(indication: str) -> int:
    """Severity of an indication; higher is worse."""
    return _RANK.get(indication, _RANK[TOTAL_FAILED])


def worst(verdicts: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    """The worst (indication, sub_indication) pair; the first one wins among equals."""
    best: tuple[str, str | None] = (TOTAL_PASSED, None)
    for verdict in verdicts:
        if _key(verdict) > _key(best):
            best = verdict
    return best


def _key(verdict: tuple[str, str | None]) -> tuple[int, int]:
    # Among equally bad verdicts, one that names a concrete defect beats "could not check".
    explains = verdict[1] is not None and verdict[1] not in TRUST_OR_TIME_SUBINDICATIONS
    return rank(verdict[0]), int(explains)


def file_report(
    path: str,
    indication: str,
    sub_indication: str | None,
    signatures: list[dict[str, Any]] | None = None,
    errors: list[str] | None = None,
    elapsed_ms: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Build a file-level report in the contract shape."""
    report: dict[str, Any] = {
        "file": path,
        "indication": indication,
        "sub_indication": sub_indication,
        "signatures": signatures or [],
        "elapsed_ms": elapsed_ms,
    }
    if errors:
        report["errors"] = errors
    report.update(extra)
    return report


def failure_report(
    path: str, indication: str, sub_indication: str | None, reason: str, elapsed_ms: int = 0
) -> dict[str, Any]:
    """A report for a file that could not be analysed at all."""
    return file_report(path, indication, sub_indication, [], [reason], elapsed_ms)
