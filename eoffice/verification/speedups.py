"""Worker-only speed-ups, installed by the sandbox child at start.

pyHanko reads hex strings one token at a time (~40 % of the time to verify a one-page PDF
goes into the /Contents hex blob). This reads them in chunks with the same acceptance rules,
and fails on an unterminated string instead of looping on EOF.

asn1crypto compares X.509 names after RFC 4518 string preparation, which it caches per parsed
object only; every file re-parses the same signer/issuer names, so ~20 % of a one-page
verification went into re-preparing identical strings. The preparation is a pure function of
the string, so its results are memoised per worker (exceptions are not cached: a malformed
name raises again, exactly as before). Likewise ``Name.__eq__`` is a pure function of the two
DER encodings, and pyHanko compares the same issuer names several times per file (ESS
signing-certificate check, signer lookup, path building): the outcome is memoised per pair of
encodings, and ``Name.hashable`` (the registry's dictionary key) per encoding.

pyHanko extracts the certificates of a signature's CMS twice per signature (once for the
embedded-signature object, once more in ``cms_basic_validation``), each time matching the
signer's issuer/serial and the ESS signing-certificate attribute again. The extraction is a
pure function of the SignedData object, so the second call reuses the first result for the
very same object; errors are raised afresh. The certificates it hands on are swapped for one
canonical parsed object per DER encoding: a batch from one PKI carries the same few
certificates in every file, and asn1crypto parses fields lazily and caches what it derives
(names, extensions, key usage, public key) on the object, all pure functions of the encoding.
"""

from __future__ import annotations

import binascii
import dataclasses
import re
from typing import IO, Any

from asn1crypto import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfStreamError
from pyhanko.sign.validation import generic_cms

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


_PREP_CACHE_MAX = 4096
_prep_cache: dict[str, str] = {}
_original_prep = x509.NameTypeAndValue._ldap_string_prep


def _cached_ldap_string_prep(self: x509.NameTypeAndValue, string: Any) -> Any:
    """Memoised ``NameTypeAndValue._ldap_string_prep`` (same result, same exceptions)."""
    if type(string) is not str:
        return _original_prep(self, string)
    try:
        return _prep_cache[string]
    except KeyError:
        pass
    prepared = _original_prep(self, string)
    if len(_prep_cache) >= _PREP_CACHE_MAX:
        # Hostile batches could carry endless distinct names: bound the memory.
        _prep_cache.clear()
    _prep_cache[string] = prepared
    return prepared


_EQ_CACHE_MAX = 4096
_name_eq_cache: dict[tuple[bytes, bytes], bool] = {}
_original_name_eq = x509.Name.__eq__


def _cached_name_eq(self: x509.Name, other: object) -> bool:
    """Memoised ``x509.Name.__eq__`` keyed by both DER encodings (exceptions not cached)."""
    if not isinstance(other, x509.Name):
        return False
    key = (self.dump(), other.dump())
    try:
        return _name_eq_cache[key]
    except KeyError:
        pass
    result = bool(_original_name_eq(self, other))
    if len(_name_eq_cache) >= _EQ_CACHE_MAX:
        _name_eq_cache.clear()
    _name_eq_cache[key] = result
    return result


def _cached_name_ne(self: x509.Name, other: object) -> bool:
    return not _cached_name_eq(self, other)


_hashable_cache: dict[bytes, str] = {}
_original_name_hashable = x509.Name.hashable


def _cached_name_hashable(self: x509.Name) -> str:
    """Memoised ``x509.Name.hashable`` keyed by the DER encoding."""
    key = self.dump()
    try:
        return _hashable_cache[key]
    except KeyError:
        pass
    value = _original_name_hashable.fget(self)  # type: ignore[attr-defined]
    if len(_hashable_cache) >= _EQ_CACHE_MAX:
        _hashable_cache.clear()
    _hashable_cache[key] = value
    return value  # type: ignore[no-any-return]


_original_extract = generic_cms.extract_certs_for_validation
# (SignedData object, its extracted certificates): holding the object keeps its id unique.
_last_extract: tuple[Any, Any] | None = None


_CERT_CACHE_MAX = 1024
_canonical_certs: dict[bytes, x509.Certificate] = {}


def _canonical(cert: x509.Certificate) -> x509.Certificate:
    """The worker's one parsed object for this exact encoding (``cert`` itself if new)."""
    der = cert.dump()
    known = _canonical_certs.get(der)
    if known is not None:
        return known
    if len(_canonical_certs) >= _CERT_CACHE_MAX:
        _canonical_certs.clear()
    # A fresh parse of the same bytes: the cached object shares nothing with this file's CMS.
    fresh = x509.Certificate.load(der)
    _canonical_certs[der] = fresh
    return fresh


def _extract_certs_once(signed_data: Any) -> Any:
    """``extract_certs_for_validation`` computed once per SignedData object."""
    global _last_extract
    if _last_extract is not None and _last_extract[0] is signed_data:
        return _last_extract[1]
    _last_extract = None
    result = _original_extract(signed_data)
    result = dataclasses.replace(
        result,
        signer_cert=_canonical(result.signer_cert),
        other_certs=[_canonical(c) for c in result.other_certs],
    )
    _last_extract = (signed_data, result)
    return result


def install() -> None:
    """Swap the fast routines in (process-wide: call only in worker processes)."""
    generic.read_hex_string_from_stream = read_hex_string_from_stream
    x509.NameTypeAndValue._ldap_string_prep = _cached_ldap_string_prep  # type: ignore[method-assign]
    # __hash__ stays None as before (asn1crypto keys its dicts on Name.hashable).
    x509.Name.__eq__ = _cached_name_eq  # type: ignore[method-assign,assignment]
    x509.Name.__ne__ = _cached_name_ne  # type: ignore[method-assign,assignment]
    x509.Name.hashable = property(_cached_name_hashable)  # type: ignore[method-assign,assignment]
    # cms_basic_validation looks the name up in its own module's globals.
    generic_cms.extract_certs_for_validation = _extract_certs_once
