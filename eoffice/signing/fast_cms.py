"""Pre-encoded CMS assembly for PAdES signatures (the hot path of every signature).

Why this is fast: pyHanko's ``Signer.async_sign`` builds the whole ``SignedData`` as asn1crypto
objects on every call (certificates set, signer identifier, ESS signing-certificate-v2,
algorithm identifiers) and asn1crypto then re-serialises every nested value, which costs
~10x the RSA operation itself. Nearly all of that is identical from one signature to the next.
:class:`PrecomputedCMSMixin` lets pyHanko build one template signature per digest algorithm
(so the bytes are exactly what pyHanko would produce), keeps the DER of the fixed parts, and
per signature only encodes the message-digest attribute, the signature value and the few
enclosing TLV headers with plain byte concatenation.

Anything outside the plain PAdES case (dry runs, custom attribute providers, CAdES extras,
attribute certificates, encapsulated content, non-PAdES subfilters) goes to pyHanko unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, Signer

# DER of the OIDs we splice in ourselves.
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER tag-length-value with a single-byte tag."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


@dataclass(frozen=True)
class CMSTemplate:
    """DER pieces of a pyHanko-built PAdES CMS that do not change between signatures."""

    fixed_attrs: tuple[bytes, ...]  # every signed attribute except message-digest
    signer_info_head: bytes  # version + sid + digestAlgorithm
    signature_algorithm: bytes
    signed_data_head: bytes  # version + digestAlgorithms + encapContentInfo + [0] certificates

    def signed_attrs(self, digest: bytes) -> bytes:
        """DER ``SET OF Attribute`` (universal SET tag: what the signature covers)."""
        md_attr = der_tlv(0x30, _OID_MESSAGE_DIGEST + der_tlv(0x31, der_tlv(0x04, digest)))
        # DER SET OF: elements sorted by their encodings (asn1crypto does the same)
        return der_tlv(0x31, b"".join(sorted((*self.fixed_attrs, md_attr))))

    def content_info(self, signed_attrs: bytes, signature: bytes,
                     unsigned_attrs: bytes = b"") -> bytes:
        """DER ``ContentInfo`` with one SignerInfo (``signed_attrs`` from :meth:`signed_attrs`)."""
        signer_info = der_tlv(0x30, b"".join((
            self.signer_info_head,
            b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF Attribute
            self.signature_algorithm,
            der_tlv(0x04, signature),
            unsigned_attrs,
        )))
        signed_data = der_tlv(0x30, self.signed_data_head + der_tlv(0x31, signer_info))
        return der_tlv(0x30, _OID_SIGNED_DATA + der_tlv(0xA0, signed_data))


async def build_template(signer: Signer, digest_algorithm: str) -> CMSTemplate:
    """Let pyHanko build one PAdES CMS with a dummy digest and keep its fixed DER parts."""
    dummy_digest = bytes(32)
    attrs = await Signer.signed_attrs(signer, dummy_digest, digest_algorithm,
                                      attr_settings=PdfCMSSignedAttributes(), use_pades=True)
    fixed = tuple(a.dump() for a in attrs if a["type"].native != "message_digest")
    if len(fixed) != len(attrs) - 1:
        raise ValueError("unexpected signed attributes in the PAdES template")
    info = signer._package_signature(  # noqa: SLF001 - pyHanko's own assembly, run once
        digest_algorithm=digest_algorithm, cms_version="v1", signed_attrs=attrs,
        signature=b"\x00", unsigned_attrs=None, encap_content_info=None)
    signed_data = info["content"]
    signer_info = signed_data["signer_infos"][0]
    return CMSTemplate(
        fixed_attrs=fixed,
        signer_info_head=b"".join(signer_info[k].dump(force=True)
                                  for k in ("version", "sid", "digest_algorithm")),
        signature_algorithm=signer_info["signature_algorithm"].dump(force=True),
        signed_data_head=b"".join(signed_data[k].dump(force=True) for k in (
            "version", "digest_algorithms", "encap_content_info", "certificates")),
    )


class PrecomputedCMSMixin:
    """Mixin for a pyHanko ``Signer`` whose certificate and chain are fixed after construction."""

    _cms_templates: dict[str, CMSTemplate]

    def _fast_path_ok(self, *, dry_run: bool, use_pades: bool, is_pdf_sig: bool,
                      settings: PdfCMSSignedAttributes | None, encap: Any) -> bool:
        s: Any = self
        if dry_run or not use_pades or not is_pdf_sig or encap is not None:
            return False
        if s.attribute_certs or s.signed_attr_prov_spec is not None \
                or s.unsigned_attr_prov_spec is not None or s.signing_cert is None:
            return False
        # PAdES ignores signing_time (it lives in the PDF /M entry); CAdES extras do not fit
        # the template.
        return settings is None or getattr(settings, "cades_signed_attrs", None) is None

    async def cms_template(self, digest_algorithm: str) -> CMSTemplate:
        """The cached template for ``digest_algorithm`` (built by pyHanko on first use)."""
        cache = self.__dict__.setdefault("_cms_templates", {})
        template = cache.get(digest_algorithm)
        if template is None:
            self._check_digest_algorithm(digest_algorithm)  # type: ignore[attr-defined]
            template = cache[digest_algorithm] = await build_template(
                self, digest_algorithm)  # type: ignore[arg-type]
        return template

    async def async_sign(self, data_digest: bytes, digest_algorithm: str, dry_run: bool = False,
                         use_pades: bool = False, timestamper: Any = None,
                         signed_attr_settings: PdfCMSSignedAttributes | None = None,
                         is_pdf_sig: bool = True, encap_content_info: Any = None
                         ) -> cms.ContentInfo:
        """pyHanko's ``async_sign`` with the fixed CMS parts spliced in as cached DER."""
        if not self._fast_path_ok(dry_run=dry_run, use_pades=use_pades, is_pdf_sig=is_pdf_sig,
                                  settings=signed_attr_settings, encap=encap_content_info):
            return await super().async_sign(  # type: ignore[misc]
                data_digest, digest_algorithm, dry_run=dry_run, use_pades=use_pades,
                timestamper=timestamper, signed_attr_settings=signed_attr_settings,
                is_pdf_sig=is_pdf_sig, encap_content_info=encap_content_info)
        md = digest_algorithm.lower()
        template = await self.cms_template(md)
        signed_attrs = template.signed_attrs(data_digest)
        signature = await self.async_sign_raw(signed_attrs, md)  # type: ignore[attr-defined]
        unsigned = b""
        if timestamper is not None:
            attrs = await self.unsigned_attrs(  # type: ignore[attr-defined]
                md, signature, signed_attrs=cms.CMSAttributes.load(signed_attrs),
                timestamper=timestamper)
            if attrs is not None:
                unsigned = b"\xa1" + attrs.dump()[1:]  # [1] IMPLICIT SET OF Attribute
        # Lazy parse: pyHanko's embedder calls .dump(), which returns these exact bytes.
        return cms.ContentInfo.load(template.content_info(signed_attrs, signature, unsigned))
