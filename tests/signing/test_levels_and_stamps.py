"""Every kind of output, checked independently with poppler's pdfsig."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from pyhanko.pdf_utils.reader import PdfFileReader

from eoffice.agencies.demo import demo_users
from eoffice.signing import appearance as ap
from eoffice.signing import engine
from eoffice.signing.engine import Level, SigningOptions
from eoffice.signing.errors import OrderError

from .conftest import Pki, pdfsig, require_tool


def _user(username: str):
    return next(u for u in demo_users() if u.username == username)


@pytest.mark.parametrize("level", list(Level))
def test_each_level_is_valid_for_pdfsig(level: Level, pki: Pki, nssdb: Path, sample_pdf: Path,
                                        tmp_path: Path) -> None:
    before = sample_pdf.read_bytes()
    out = tmp_path / "out.pdf"
    signer = pki.signer("users", "leader.tinh")
    engine.sign_pdf_file(sample_pdf, out, signer, options=SigningOptions(
        level=level, tsa_url=pki.tsa_url, trust_roots=(pki.root,)))
    assert sample_pdf.read_bytes() == before
    sigs = pdfsig(out, nssdb)
    assert sigs[0].valid, sigs[0].raw
    assert sigs[0].common_name == _user("leader.tinh").full_name
    with open(out, "rb") as handle:
        reader = PdfFileReader(handle)
        embedded = reader.embedded_regular_signatures[0]
        unsigned = embedded.signer_info["unsigned_attrs"].native or []
        has_ts = any(a["type"] == "signature_time_stamp_token" for a in unsigned)
        assert has_ts == level.needs_timestamp
        dss = reader.root.get("/DSS")
        assert (dss is not None) == level.needs_revocation
        if dss is not None:
            dss = dss.get_object()
            assert len(dss.get("/OCSPs", [])) + len(dss.get("/CRLs", [])) >= 2
        doc_ts = [s for s in reader.embedded_signatures if s.sig_object_type == "/DocTimeStamp"]
        assert len(doc_ts) == (1 if level is Level.B_LTA else 0)
    if level in (Level.B_B, Level.B_T):
        assert sigs[0].total  # B-LT/LTA append a DSS revision after the signature
    else:
        assert "Not total document signed" in sigs[0].raw  # DSS appended, as PAdES prescribes


def _sign_leader(pki: Pki, src: Path, out: Path) -> engine.SignResult:
    user = _user("leader.tinh")
    return engine.sign_as_leader(
        src, out, pki.signer("users", user.username), position=user.position,
        full_name=user.full_name, competence="TM. Ủy ban nhân dân",
        signature_image=pki.dir / "images" / "signatures" / f"{user.username}.png",
        options=SigningOptions(level=Level.B_T, tsa_url=pki.tsa_url))


def _render(pdf: Path, page: int, out_prefix: Path) -> Image.Image:
    tool = require_tool("pdftoppm")
    subprocess.run([tool, "-png", "-r", "100", "-f", str(page), "-l", str(page),
                    "-singlefile", str(pdf), str(out_prefix)], check=True, timeout=60)
    return Image.open(f"{out_prefix}.png").convert("RGB")


def _count(img: Image.Image, box: tuple[int, int, int, int], predicate) -> int:
    region = img.crop(box)
    return sum(1 for px in region.getdata() if predicate(px))


def _blue(px: tuple[int, int, int]) -> bool:
    return px[2] > 120 and px[0] < 100 and px[1] < 120


def _red(px: tuple[int, int, int]) -> bool:
    return px[0] > 150 and px[1] < 90 and px[2] < 100


def _dark(px: tuple[int, int, int]) -> bool:
    return sum(px) < 200


def _pt_to_px(box: ap.Box, page_h: float, dpi: int = 100) -> tuple[int, int, int, int]:
    k = dpi / 72
    x1, y1, x2, y2 = box
    return int(x1 * k), int((page_h - y2) * k), int(x2 * k), int((page_h - y1) * k)


def test_leader_then_seal_render_and_validate(pki: Pki, nssdb: Path, sample_pdf: Path,
                                              tmp_path: Path, province_code: str) -> None:
    leader_pdf, sealed_pdf = tmp_path / "leader.pdf", tmp_path / "sealed.pdf"
    _sign_leader(pki, sample_pdf, leader_pdf)
    info = engine.check_leader_signature_present(leader_pdf, [pki.root])
    assert info.page == 1  # last page of 2 (0-based)
    engine.issue_with_seal(
        leader_pdf, sealed_pdf, pki.signer("seals", province_code),
        seal_image=pki.dir / "images" / "seals" / f"{province_code}.png",
        number_notation="15/QĐ-UBND", issued_on=dt.date(2026, 11, 3), trust_roots=[pki.root],
        options=SigningOptions(level=Level.B_T, tsa_url=pki.tsa_url))
    sigs = pdfsig(sealed_pdf, nssdb)
    assert [s.valid for s in sigs] == [True, True], [s.raw for s in sigs]
    assert sigs[1].total and not sigs[0].total
    assert sigs[1].common_name == "Ủy ban nhân dân tỉnh Thái Bình"

    # Look at the pixels: blue signature inside the image area, red seal over its left third,
    # and none of the seal over the right two thirds.
    page_h = 841.89
    img = _render(sealed_pdf, 2, tmp_path / "sealed")
    img.save(tmp_path / "sealed-page.png")
    ix1, iy1, ix2, iy2 = ap.leader_image_rect(info.box)
    third = (ix2 - ix1) / 3
    left = _pt_to_px((ix1, iy1, ix1 + third, iy2), page_h)
    right = _pt_to_px((ix1 + third + 5, iy1, ix2, iy2), page_h)
    assert _count(img, right, _blue) > 100
    assert _count(img, left, _red) > 300
    assert _count(img, right, _red) < 20
    seal_px = _pt_to_px(ap.seal_box_over(info.box), page_h)
    assert _count(img, seal_px, _red) > 1500
    # Full name (black text) under the image, position line above it.
    x1, y1, x2, y2 = info.box
    assert _count(img, _pt_to_px((x1, y1, x2, iy1), page_h), _dark) > 80
    assert _count(img, _pt_to_px((x1, iy2, x2, y2), page_h), _dark) > 150


def test_issue_refused_without_leader_signature(pki: Pki, sample_pdf: Path, tmp_path: Path,
                                                province_code: str) -> None:
    out = tmp_path / "x.pdf"
    with pytest.raises(OrderError) as info:
        engine.issue_with_seal(
            sample_pdf, out, pki.signer("seals", province_code),
            seal_image=pki.dir / "images" / "seals" / f"{province_code}.png",
            number_notation="1/QĐ-UBND", issued_on=dt.date(2026, 1, 2), trust_roots=[pki.root])
    assert info.value.status_code == 422 and not out.exists()


def test_issue_refused_when_leader_untrusted(pki: Pki, sample_pdf: Path, tmp_path: Path,
                                             province_code: str) -> None:
    leader_pdf = tmp_path / "leader.pdf"
    _sign_leader(pki, sample_pdf, leader_pdf)
    other_root = pki.dir / "services" / "tsa.pem"  # any certificate that is not our root
    with pytest.raises(OrderError):
        engine.check_leader_signature_present(leader_pdf, [other_root])


@pytest.mark.parametrize("kind", ["attachment", "copy"])
def test_text_stamps_top_right(kind: str, pki: Pki, nssdb: Path, sample_pdf: Path,
                               tmp_path: Path, province_code: str) -> None:
    out = tmp_path / f"{kind}.pdf"
    moment = dt.datetime(2026, 11, 3, 2, 15, 22, tzinfo=dt.UTC)  # 09:15:22 in Hà Nội
    signer = pki.signer("seals", province_code)
    if kind == "attachment":
        engine.stamp_attachment(sample_pdf, out, signer, number_notation="15/QĐ-UBND",
                                signing_time=moment)
        expected = ["15/QĐ-UBND", "2026-11-03T09:15:22+07:00"]
    else:
        engine.stamp_copy(sample_pdf, out, signer, copy_type="SAO Y",
                          agency_name="Ủy ban nhân dân tỉnh Thái Bình", signing_time=moment)
        expected = ["SAO Y", "Ủy ban nhân dân tỉnh Thái Bình", "2026-11-03T09:15:22+07:00"]
    sigs = pdfsig(out, nssdb)
    assert sigs[0].valid and sigs[0].total, sigs[0].raw
    # The stamp text is real, extractable text in the embedded Termes subset.
    tool = require_tool("pdftotext")
    text = subprocess.run([tool, "-f", "1", "-l", "1", str(out), "-"], capture_output=True,
                          text=True, check=True).stdout
    for line in expected:
        assert line in text
    fonts = subprocess.run([require_tool("pdffonts"), str(out)], capture_output=True,
                           text=True, check=True).stdout
    assert "TeXGyreTermes" in fonts and "Liberation" not in fonts
    img = _render(out, 1, tmp_path / kind)
    img.save(tmp_path / f"{kind}-page.png")
    w, h = img.size
    top_right = (w // 2, 0, w, h // 8)
    assert _count(img, top_right, _dark) > 150
    assert _count(img, (0, h // 8, w, h), _blue) == 0  # no image anywhere
    assert _count(img, (0, 0, w, h), _red) == 0
    # Letter spacing sanity: the time line is about 130 pt wide at 10 pt, not spread out.
    cols = [x for x in range(w // 2, w) if _count(img, (x, 0, x + 1, h // 8), _dark) > 0]
    assert 100 <= (max(cols) - min(cols)) * 72 / 100 <= 200
