"""The Vietnamese and English catalogues are complete and the committed .mo files current."""

from __future__ import annotations

import io
import re

from babel.messages.mofile import read_mo

from eoffice.web.i18n import LANGUAGES, extract_messages, po_path, read_catalog

PLACEHOLDER = re.compile(r"%\(\w+\)s")


def test_every_message_is_translated_in_both_languages() -> None:
    used = set(extract_messages())
    assert len(used) > 150  # the extractor really walked the templates and the code
    for lang in LANGUAGES:
        catalog = read_catalog(lang)
        translated = {str(m.id): str(m.string) for m in catalog if m.id}
        missing = sorted(used - set(translated))
        assert not missing, f"{lang}: message ids not in the catalogue: {missing[:10]}"
        empty = sorted(i for i in used if not translated[i].strip())
        assert not empty, f"{lang}: untranslated message ids: {empty[:10]}"
        fuzzy = [str(m.id) for m in catalog if m.id and m.fuzzy]
        assert not fuzzy, f"{lang}: fuzzy entries: {fuzzy[:10]}"
        for msgid in used:
            assert sorted(PLACEHOLDER.findall(msgid)) == sorted(
                PLACEHOLDER.findall(translated[msgid])), f"{lang}: placeholders of {msgid!r}"


def test_vietnamese_is_really_vietnamese() -> None:
    vi = {str(m.id): str(m.string) for m in read_catalog("vi") if m.id}
    assert vi["Username"] == "Tên đăng nhập"
    assert vi["Password"] == "Mật khẩu"
    assert vi["Subject"] == "Trích yếu"
    assert vi["Recipients"] == "Nơi nhận"
    assert vi["Send"] == "Gửi"
    same = [k for k, v in vi.items() if k == v and any(c.isalpha() for c in k)]
    assert not same, f"copied instead of translated: {same[:10]}"


def test_committed_mo_files_match_the_po_files() -> None:
    for lang in LANGUAGES:
        with po_path(lang).with_suffix(".mo").open("rb") as handle:
            compiled = {str(m.id): str(m.string) for m in read_mo(io.BytesIO(handle.read()))
                        if m.id}
        source = {str(m.id): str(m.string) for m in read_catalog(lang) if m.id}
        assert compiled == source, f"{lang}: run `python -m eoffice.web.i18n compile`"
