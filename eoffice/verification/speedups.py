"""Worker-only speed-up for pyHanko's parser, installed by the sandbox child at start.

pyHanko reads hex strings one token at a time (~40 % of the time to verify a one-page PDF
goes into the /Contents hex blob). This reads them in chunks with the same acceptance rules,
and fails on an unterminated string instead of looping on EOF.
"""

from __future__ import annotations

import binascii
import re
from typing import IO, Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfStreamError

_PDF_WHITESPACE = re.compile(rb"[\x00\t\n\x0c\r ]+")
_NOT_HEX = re.compile(rb"[^0-9A-Fa-f]")
_CHUNK = 64 * 1024


def read_hex_string_from_stream(stream: IO[bytes]) -> Any:
    """Drop-in replacement for ``pyhanko.pdf_utils.generic.read_hex_string_from_stream``."""
    stream.read(1)  # the opening '<'
    parts: list[bytes] = []
    while True:
        start = stream.tell()
        chunk = stream.read(_CHUNK)
        if not chunk:
            raise PdfStreamError("Stream ended inside a hex string")
        end = chunk.find(b">")
        if end >= 0:
            parts.append(chunk[:end])
            stream.seek(start + end + 1)
            break
        parts.append(chunk)
    data = _PDF_WHITESPACE.sub(b"", b"".join(parts))
    bad = _NOT_HEX.search(data)
    if bad is not None:
        raise PdfStreamError(f"Unexpected token in hex string: {bad.group()!r}")
    if len(data) % 2:
        data += b"0"
    return generic.pdf_string(binascii.unhexlify(data))


def install() -> None:
    """Swap the parser routine in (process-wide: call only in worker processes)."""
    generic.read_hex_string_from_stream = read_hex_string_from_stream
