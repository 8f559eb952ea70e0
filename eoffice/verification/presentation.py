"""Human-readable view of a stored report: verdicts in words and colour, Vietnamese first.

One presentation model feeds both the HTML page (Jinja2) and the signed PDF (fpdf2), so the
two always say the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eoffice.timeutil import VIETNAM

# indication -> (Vietnamese, English, colour)
VERDICTS: dict[str, tuple[str, str, str]] = {
    "TOTAL_PASSED": ("Hợp lệ", "Valid", "#1b7f3b"),
    "TOTAL_FAILED": ("Không hợp lệ", "Invalid", "#b3261e"),
    "INDETERMINATE": ("Chưa xác định được", "Indeterminate", "#b26a00"),
    "NO_SIGNATURE_FOUND": ("Không có chữ ký số", "No signature found", "#6b6b6b"),
}

# ETSI EN 319 102-1 sub-indications -> (Vietnamese, English) explanations.
SUB_INDICATIONS: dict[str, tuple[str, str]] = {
    "HASH_FAILURE": ("Nội dung đã bị thay đổi sau khi ký (sai giá trị băm)",
                     "The signed content was altered (hash mismatch)"),
    "SIG_CRYPTO_FAILURE": ("Chữ ký không khớp với khóa công khai của người ký",
                           "The signature does not verify with the signer's public key"),
    "FORMAT_FAILURE": ("Tệp hoặc chữ ký sai định dạng",
                       "The file or the signature is malformed"),
    "REVOKED": ("Chứng thư số của người ký đã bị thu hồi",
                "The signer's certificate is revoked"),
    "NO_CERTIFICATE_CHAIN_FOUND": ("Không tìm thấy chuỗi chứng thư đến một gốc tin cậy",
                                   "No certificate chain to a trusted root"),
    "TRY_LATER": ("Chưa lấy được thông tin thu hồi (OCSP/CRL); thử lại sau",
                  "Revocation information (OCSP/CRL) not available yet; try later"),
    "EXPIRED": ("Chứng thư số đã hết hạn tại thời điểm kiểm tra",
                "The certificate had expired at validation time"),
    "NOT_YET_VALID": ("Chứng thư số chưa có hiệu lực", "The certificate is not yet valid"),
    "OUT_OF_BOUNDS_NO_POE": ("Chứng thư hết hạn và không có bằng chứng thời điểm ký",
                             "Certificate expired and no proof of signing time"),
    "OUT_OF_BOUNDS_NOT_REVOKED": ("Chứng thư hết hạn (không bị thu hồi), thiếu bằng chứng",
                                  "Certificate expired (not revoked), no proof of time"),
    "NO_POE": ("Không có bằng chứng về thời điểm ký", "No proof of existence of the signature"),
    "CRYPTO_CONSTRAINTS_FAILURE": ("Thuật toán mật mã yếu hoặc không được chấp nhận",
                                   "Weak or unacceptable cryptographic algorithm"),
    "CRYPTO_CONSTRAINTS_FAILURE_NO_POE": ("Thuật toán yếu và không có bằng chứng thời điểm",
                                          "Weak algorithm without proof of time"),
    "SIG_CONSTRAINTS_FAILURE": ("Chữ ký không đáp ứng ràng buộc (phạm vi ký, thay đổi sau ký)",
                                "Signature constraints not met (coverage, later changes)"),
    "CHAIN_CONSTRAINTS_FAILURE": ("Chuỗi chứng thư không đáp ứng ràng buộc",
                                  "Certificate chain constraints not met"),
    "CERTIFICATE_CHAIN_GENERAL_FAILURE": ("Lỗi chung khi kiểm tra chuỗi chứng thư",
                                          "General certificate chain failure"),
    "SIGNED_DATA_NOT_FOUND": ("Không tìm thấy dữ liệu được ký", "Signed data not found"),
}

COVERAGE: dict[str, tuple[str, str]] = {
    "ENTIRE_FILE": ("Toàn bộ tệp", "The entire file"),
    "ENTIRE_REVISION": ("Toàn bộ phiên bản tại thời điểm ký (có phần bổ sung sau)",
                        "The whole revision at signing time (later additions exist)"),
    "CONTIGUOUS_BLOCK_FROM_START": ("Chỉ một phần đầu tệp", "Only a leading part of the file"),
    "UNCLEAR": ("Không rõ phạm vi", "Unclear coverage"),
}

MODIFICATIONS: dict[str, tuple[str, str]] = {
    "NONE": ("Không có thay đổi sau khi ký", "No changes after signing"),
    "LTA_UPDATES": ("Chỉ bổ sung dữ liệu kiểm tra dài hạn (DSS/dấu thời gian)",
                    "Only long-term validation data added (DSS/timestamps)"),
    "FORM_FILLING": ("Điền biểu mẫu / thêm chữ ký sau", "Form filling / later signatures"),
    "ANNOTATIONS": ("Thêm chú thích sau khi ký", "Annotations added after signing"),
    "OTHER": ("Có thay đổi khác sau khi ký", "Other changes after signing"),
}

REVOCATION: dict[str, tuple[str, str]] = {
    "good": ("Còn hiệu lực (đã kiểm tra OCSP/CRL)", "Not revoked (OCSP/CRL checked)"),
    "revoked": ("Đã bị thu hồi", "Revoked"),
    "unknown": ("Không xác định", "Unknown"),
    "not_checked": ("Không kiểm tra", "Not checked"),
}


def verdict(indication: str | None) -> dict[str, str]:
    """Words and colour of an indication."""
    vi, en, colour = VERDICTS.get(indication or "", (indication or "?", indication or "?",
                                                     "#6b6b6b"))
    return {"code": indication or "", "vi": vi, "en": en, "colour": colour}


def explain(sub_indication: str | None) -> dict[str, str] | None:
    """Words for a sub-indication (the code itself when unknown)."""
    if not sub_indication:
        return None
    vi, en = SUB_INDICATIONS.get(sub_indication, (sub_indication, sub_indication))
    return {"code": sub_indication, "vi": vi, "en": en}


def _pair(table: dict[str, tuple[str, str]], key: str | None) -> dict[str, str] | None:
    if not key:
        return None
    vi, en = table.get(key, (key, key))
    return {"code": key, "vi": vi, "en": en}


def vn_time(value: Any) -> str | None:
    """An ISO timestamp shown in Vietnam time (+07:00)."""
    if not value:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.isoformat(timespec="seconds")
    return moment.astimezone(VIETNAM).isoformat(timespec="seconds")


def _signature(sig: dict[str, Any]) -> dict[str, Any]:
    timestamp = sig.get("timestamp") or None
    revocation = sig.get("revocation") or {}
    return {
        "field": sig.get("field"),
        "type": sig.get("type", "signature"),
        "verdict": verdict(sig.get("indication")),
        "reason": explain(sig.get("sub_indication")),
        "signer": sig.get("signer") or "—",
        "certificate_kind": sig.get("certificate_kind"),
        "signing_time": vn_time(sig.get("signing_time")),
        "signing_time_source": sig.get("signing_time_source"),
        "checks": [
            ("Toàn vẹn / Intact", sig.get("intact")),
            ("Chữ ký đúng / Cryptographically valid", sig.get("valid")),
            ("Tin cậy / Trusted chain", sig.get("trusted")),
        ],
        "coverage": _pair(COVERAGE, sig.get("coverage")),
        "modification": _pair(MODIFICATIONS, sig.get("modification_level")),
        "chain": [c.get("subject", "") for c in sig.get("chain") or []],
        "revocation": {
            "status": _pair(REVOCATION, revocation.get("status")),
            "mode": revocation.get("mode"),
            "revocation_date": vn_time(revocation.get("revocation_date")),
            "reason": revocation.get("reason"),
        } if revocation else None,
        "timestamp": {
            "time": vn_time(timestamp.get("time") or timestamp.get("gen_time")),
            "tsa": timestamp.get("tsa"), "valid": timestamp.get("valid"),
            "trusted": timestamp.get("trusted"),
        } if isinstance(timestamp, dict) else None,
        "algorithms": sig.get("algorithms") or {},
        "errors": [str(e) for e in sig.get("errors") or []],
    }


def present(row: Any) -> dict[str, Any]:
    """The presentation model of a stored VerificationReport row."""
    report: dict[str, Any] = row.report or {}
    decree30 = report.get("decree30")
    return {
        "id": row.id,
        "file": report.get("file") or "",
        "blob_sha256": row.blob_sha256,
        "verdict": verdict(row.indication),
        "reason": explain(row.sub_indication),
        "created_at": vn_time(row.created_at),
        "trust_state": row.trust_state,
        "purpose": getattr(row, "purpose", "upload"),
        "document_id": row.document_id,
        "signatures": [_signature(s) for s in report.get("signatures") or []],
        "errors": [str(e) for e in report.get("errors") or []],
        "document_timestamps": report.get("document_timestamps", 0),
        "decree30": None if not isinstance(decree30, dict) else {
            "conformant": bool(decree30.get("conformant")),
            "reasons": [str(r) for r in decree30.get("reasons") or []]},
        "elapsed_ms": report.get("elapsed_ms"),
    }
