"""Engine behaviour on PDFs signed here with a generated, fixed-time test PKI."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from eoffice.verification import VerifyOptions, verify_file, verify_files
from eoffice.verification.testing import (
    SigningPKI,
    add_dss,
    issue,
    make_pdf,
    make_pki,
    make_root,
    sign,
)


@pytest.fixture(scope="module")
def pki() -> SigningPKI:
    return make_pki()


@pytest.fixture(scope="module")
def signed(pki: SigningPKI) -> bytes:
    return sign(make_pdf(text_field=True), pki.leaves["leader"], pki.root)


def _write(tmp_path: Path, data: bytes, name: str = "doc.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _opts(pki: SigningPKI, **kw: object) -> VerifyOptions:
    kw.setdefault("revocation", "off")
    kw.setdefault("time_limit_s", 20.0)
    return VerifyOptions(trust_roots=[pki.root.asn1], **kw)  # type: ignore[arg-type]


def _incremental(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    writer = IncrementalPdfFileWriter(io.BytesIO(data))
    edit(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_clean_signature_passes_without_revocation(tmp_path: Path, pki: SigningPKI, signed: bytes):
    report = verify_file(_write(tmp_path, signed), _opts(pki))
    assert report["indication"] == "TOTAL_PASSED", report
    sig = report["signatures"][0]
    assert sig["intact"] and sig["valid"] and sig["trusted"]
    assert sig["coverage"] == "ENTIRE_FILE" and sig["modification_level"] == "NONE"
    assert sig["signer"] == "Nguyen Van An"
    assert [c["subject"] for c in sig["chain"]][0].startswith("Common Name: eoffice Test Root CA")


def test_revocation_required_but_missing_is_not_passed(tmp_path: Path, pki: SigningPKI, signed):
    report = verify_file(_write(tmp_path, signed), _opts(pki, revocation="require"))
    assert report["indication"] == "INDETERMINATE", report
    assert report["sub_indication"] == "TRY_LATER"


def test_clean_signature_with_embedded_crl_passes_require(tmp_path: Path, pki: SigningPKI, signed):
    data = add_dss(signed, [pki.root.asn1], [pki.crl()])
    report = verify_file(_write(tmp_path, data), _opts(pki, revocation="require"))
    assert report["indication"] == "TOTAL_PASSED", report
    assert report["signatures"][0]["modification_level"] in ("LTA_UPDATES", "NONE")
    assert report["signatures"][0]["revocation"]["status"] == "good"


def test_revoked_signer(tmp_path: Path, pki: SigningPKI):
    victim = issue(pki.root, "Tran Thi Binh", org="UBND", given="Binh")
    pki_revoked = SigningPKI(root=pki.root, revoked={victim.cert.serial_number})
    data = sign(make_pdf(), victim, pki.root)
    data = add_dss(data, [pki.root.asn1], [pki_revoked.crl()])
    report = verify_file(_write(tmp_path, data), _opts(pki, revocation="require"))
    assert (report["indication"], report["sub_indication"]) in {
        ("TOTAL_FAILED", "REVOKED"),
        ("INDETERMINATE", "REVOKED_NO_POE"),
    }, report
    assert report["signatures"][0]["revocation"]["status"] == "revoked"


def test_unknown_root(tmp_path: Path, signed: bytes):
    other = make_root("Some Other Root")
    report = verify_file(
        _write(tmp_path, signed), VerifyOptions(trust_roots=[other.asn1], revocation="off")
    )
    assert report["indication"] == "INDETERMINATE"
    assert report["sub_indication"] == "NO_CERTIFICATE_CHAIN_FOUND"


def test_flipped_byte_in_signed_range(tmp_path: Path, pki: SigningPKI, signed: bytes):
    pos = signed.index(b"Hello signed page 1")
    tampered = signed[:pos] + b"J" + signed[pos + 1 :]
    report = verify_file(_write(tmp_path, tampered), _opts(pki))
    assert (report["indication"], report["sub_indication"]) == ("TOTAL_FAILED", "HASH_FAILURE")
    assert report["signatures"][0]["intact"] is False


def _page(writer: IncrementalPdfFileWriter) -> tuple[generic.DictionaryObject, generic.Reference]:
    page_ref = writer.root["/Pages"]["/Kids"].raw_get(0)
    return page_ref.get_object(), page_ref.reference


def test_page_content_changed_after_signing(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        page, ref = _page(w)
        new = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 720 Td (Pay 1000000) Tj ET")
        page["/Contents"] = w.add_object(new)
        w.mark_update(ref)

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED"
    assert report["signatures"][0]["modification_level"] == "OTHER"
    assert any(c["kind"].startswith("PAGE") for c in report["signatures"][0]["changes"])


def test_content_stream_overwritten_in_place(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        page, _ = _page(w)
        ref = page.raw_get("/Contents").reference
        w.objects[(ref.generation, ref.idnum)] = generic.StreamObject(
            stream_data=b"BT /F1 24 Tf 72 720 Td (Forged) Tj ET"
        )

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED", report
    assert report["signatures"][0]["modification_level"] == "OTHER"


def test_page_added_after_signing(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        content = w.add_object(generic.StreamObject(stream_data=b"BT ET"))
        new_page = generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (0, 0, 612, 792)]
                ),
                generic.NameObject("/Contents"): content,
            }
        )
        w.insert_page(new_page)

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] == "TOTAL_FAILED", report
    assert any(c["kind"] == "PAGES_CHANGED" for c in report["signatures"][0]["changes"])


def test_form_field_appearance_replaced(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        field_ref = w.root["/AcroForm"]["/Fields"].raw_get(0)
        field = field_ref.get_object()
        ap = generic.StreamObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/XObject"),
                generic.NameObject("/Subtype"): generic.NameObject("/Form"),
                generic.NameObject("/BBox"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (0, 0, 200, 30)]
                ),
            },
            stream_data=b"BT /F1 12 Tf 2 8 Td (999 000 VND) Tj ET",
        )
        field["/AP"] = generic.DictionaryObject({generic.NameObject("/N"): w.add_object(ap)})
        w.mark_update(field_ref)

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED", report
    assert any(c["kind"] == "APPEARANCE_REPLACED" for c in report["signatures"][0]["changes"])


def test_form_field_value_replaced(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        field_ref = w.root["/AcroForm"]["/Fields"].raw_get(0)
        field_ref.get_object()["/V"] = generic.TextStringObject("999 000 VND")
        w.mark_update(field_ref)

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED", report
    assert report["signatures"][0]["modification_level"] == "OTHER"


def test_signature_dictionary_edited(tmp_path: Path, pki: SigningPKI, signed: bytes):
    def edit(w: IncrementalPdfFileWriter) -> None:
        sig_field = w.root["/AcroForm"]["/Fields"][1]
        sig_ref = sig_field.raw_get("/V")
        sig_ref.get_object()["/Reason"] = generic.TextStringObject("Approved by someone else")
        w.mark_update(sig_ref)

    report = verify_file(_write(tmp_path, _incremental(signed, edit)), _opts(pki))
    assert report["indication"] == "TOTAL_FAILED", report


def test_second_signature_is_an_allowed_change(tmp_path: Path, pki: SigningPKI, signed: bytes):
    data = sign(signed, pki.leaves["seal"], pki.root, field_name="Seal")
    report = verify_file(_write(tmp_path, data), _opts(pki, decree30=True))
    assert report["indication"] == "TOTAL_PASSED", report
    assert [s["field"] for s in report["signatures"]] == ["Signature1", "Seal"]
    assert report["decree30"]["conformant"] is True, report["decree30"]
    assert report["decree30"]["order"] == ["personal", "seal"]


def test_decree30_reversed_order_not_conformant(tmp_path: Path, pki: SigningPKI):
    data = sign(make_pdf(), pki.leaves["seal"], pki.root, field_name="Seal")
    data = sign(data, pki.leaves["leader"], pki.root, field_name="Leader")
    report = verify_file(_write(tmp_path, data), _opts(pki, decree30=True))
    assert report["indication"] == "TOTAL_PASSED", report
    assert report["decree30"]["conformant"] is False
    assert report["decree30"]["order"] == ["seal", "personal"]


def test_decree30_single_signature_not_conformant(tmp_path: Path, pki: SigningPKI, signed: bytes):
    report = verify_file(_write(tmp_path, signed), _opts(pki, decree30=True))
    assert report["decree30"]["conformant"] is False


def test_sha1_without_timestamp_is_not_passed(tmp_path: Path, pki: SigningPKI):
    data = sign(make_pdf(), pki.leaves["leader"], pki.root, md_algorithm="sha1")
    report = verify_file(_write(tmp_path, data), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED", report
    assert report["sub_indication"] == "CRYPTO_CONSTRAINTS_FAILURE"


def test_short_rsa_key_is_not_passed(tmp_path: Path, pki: SigningPKI):
    weak = issue(pki.root, "Le Van Cuong", org="UBND", given="Cuong", bits=1024)
    report = verify_file(_write(tmp_path, sign(make_pdf(), weak, pki.root)), _opts(pki))
    assert report["sub_indication"] == "CRYPTO_CONSTRAINTS_FAILURE", report


def test_no_signature(tmp_path: Path, pki: SigningPKI):
    report = verify_file(_write(tmp_path, make_pdf()), _opts(pki))
    assert report["indication"] == "NO_SIGNATURE_FOUND"
    assert report["signatures"] == []


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\xff" * 5000,
        b"%PDF-1.7\n" + b"garbage " * 1000,
        b"PK\x03\x04 not a pdf at all",
    ],
    ids=["empty", "binary", "pdf-header-garbage", "zip"],
)
def test_garbage_is_rejected_cleanly(tmp_path: Path, pki: SigningPKI, payload: bytes):
    report = verify_file(_write(tmp_path, payload), _opts(pki, time_limit_s=10))
    assert report["indication"] in ("NO_SIGNATURE_FOUND", "TOTAL_FAILED"), report
    assert report["indication"] != "TOTAL_PASSED"


def test_truncated_signed_pdf(tmp_path: Path, pki: SigningPKI, signed: bytes):
    report = verify_file(_write(tmp_path, signed[: len(signed) // 2]), _opts(pki))
    assert report["indication"] != "TOTAL_PASSED", report


def test_decompression_bomb_answers_in_time(tmp_path: Path, pki: SigningPKI, signed: bytes):
    bomb = zlib.compress(b"\0" * (512 * 1024 * 1024), 9)

    def edit(w: IncrementalPdfFileWriter) -> None:
        page, ref = _page(w)
        stream = generic.StreamObject(
            {generic.NameObject("/Filter"): generic.NameObject("/FlateDecode")},
            encoded_data=bomb,
        )
        page["/Contents"] = w.add_object(stream)
        w.mark_update(ref)

    opts = _opts(pki, time_limit_s=10, memory_limit_mb=768)
    report = verify_file(_write(tmp_path, _incremental(signed, edit)), opts)
    assert report["indication"] != "TOTAL_PASSED", report
    assert report["elapsed_ms"] <= 11000


def test_hanging_file_is_cut_off_and_the_pool_survives(tmp_path: Path, pki: SigningPKI, signed):
    # A time limit far below one verification forces a timeout kill; the next file in the
    # same batch must still be verified by a replacement worker.
    good = _write(tmp_path, signed, "good.pdf")
    opts = _opts(pki, time_limit_s=0.001)
    reports = list(verify_files([good], opts))
    assert reports[0]["indication"] == "INDETERMINATE"
    assert "time limit" in reports[0]["errors"][0]
    reports = list(verify_files([good, good, good], _opts(pki), workers=1))
    assert [r["indication"] for r in reports] == ["TOTAL_PASSED"] * 3


def test_batch_keeps_input_order(tmp_path: Path, pki: SigningPKI, signed: bytes):
    files = [
        _write(tmp_path, signed, "a.pdf"),
        _write(tmp_path, make_pdf(), "b.pdf"),
        _write(tmp_path, b"junk", "c.pdf"),
        tmp_path / "missing.pdf",
    ]
    reports = list(verify_files(files, _opts(pki)))
    assert [Path(r["file"]).name for r in reports] == ["a.pdf", "b.pdf", "c.pdf", "missing.pdf"]
    assert [r["indication"] for r in reports][:2] == ["TOTAL_PASSED", "NO_SIGNATURE_FOUND"]
    assert reports[3]["indication"] == "TOTAL_FAILED"
