"""Gettext catalogues of the web UI: Vietnamese by default, English on request.

Message ids are English. The catalogues live in ``locale/<lang>/LC_MESSAGES/messages.po``;
the compiled ``.mo`` files beside them are committed, and when a ``.mo`` is missing or older
than its ``.po`` (a fresh checkout, an edit) the ``.po`` is compiled in memory instead, so a
clone works without a build step.

``python -m eoffice.web.i18n extract`` refreshes both ``.po`` files from the templates and the
Python sources (English gets msgstr = msgid; new Vietnamese entries stay empty for a
translator, and the catalogue test fails until they are filled); ``... compile`` writes the
``.mo`` files.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"
HERE = Path(__file__).resolve().parent
LOCALE_DIR = HERE / "locale"
# Python keywords: N_ marks a message for extraction without translating it yet;
# routes.translate(request, msg) and routes.flash(request, msg, ...) take it second.
KEYWORDS = {"_": None, "gettext": None, "N_": None, "ngettext": (1, 2), "translate": (2,),
            "flash": (2,)}
METHOD_MAP = [("templates/**.html", "jinja2"), ("**.py", "python")]


def N_(message: str) -> str:  # noqa: N802 - gettext convention
    """Mark a message for extraction; it is translated where it is shown."""
    return message


def po_path(lang: str) -> Path:
    """The catalogue source of one language."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"


def read_catalog(lang: str) -> Catalog:
    """The parsed .po catalogue of one language."""
    with po_path(lang).open("rb") as handle:
        return read_po(handle, locale=lang)


@lru_cache(maxsize=len(LANGUAGES))
def translations(lang: str) -> Translations:
    """Compiled translations for a language (compiled in memory when the .mo is stale)."""
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    po = po_path(lang)
    mo = po.with_suffix(".mo")
    if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
        with mo.open("rb") as handle:
            return Translations(handle, domain="messages")
    buffer = io.BytesIO()
    write_mo(buffer, read_catalog(lang))
    buffer.seek(0)
    return Translations(buffer, domain="messages")


def gettext_for(lang: str) -> Callable[[str], str]:
    """A `_` function for templates and messages in this language."""
    return translations(lang).gettext


def extract_messages() -> dict[str, list[tuple[str, int]]]:
    """Every message id used by the web UI, with where it occurs."""
    found: dict[str, list[tuple[str, int]]] = {}
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(HERE), METHOD_MAP, options_map=options, keywords=KEYWORDS):
        ids: Iterable[str] = message if isinstance(message, tuple) else (message,)
        for msgid in ids:
            if msgid:
                found.setdefault(msgid, []).append((filename, lineno))
    return found


def update_catalogs() -> None:
    """Bring both .po files in line with the sources, keeping existing translations."""
    found = extract_messages()
    for lang in LANGUAGES:
        old: dict[str, str] = {}
        if po_path(lang).exists():
            old = {str(m.id): str(m.string) for m in read_catalog(lang) if m.id}
        catalog = Catalog(locale=lang, project="eoffice", domain="messages",
                          charset="utf-8", fuzzy=False)
        for msgid in sorted(found):
            string = old.get(msgid, "")
            if lang == "en" and not string:
                string = msgid
            catalog.add(msgid, string, locations=sorted(set(found[msgid]))[:3])
        po_path(lang).parent.mkdir(parents=True, exist_ok=True)
        with po_path(lang).open("wb") as handle:
            write_po(handle, catalog, width=100, sort_output=True)


def compile_catalogs() -> None:
    """Write the .mo file of each language."""
    for lang in LANGUAGES:
        with po_path(lang).with_suffix(".mo").open("wb") as handle:
            write_mo(handle, read_catalog(lang))
    translations.cache_clear()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "extract":
        update_catalogs()
    elif command == "compile":
        compile_catalogs()
    else:
        print("usage: python -m eoffice.web.i18n extract|compile", file=sys.stderr)
        sys.exit(2)
