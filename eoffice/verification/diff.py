"""Stricter review of what changed after a signature than pyHanko's default diff policy.

pyHanko's policy accepts, for instance, a text field whose signed value is overwritten later
(DSS "shadow replace"), or new annotations drawn over signed content. These checks compare the
signed revision with the final one and report every change we do not positively recognise as
harmless (later signatures, DSS/VRI, document timestamps, filling *empty* fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature

from .report import INDETERMINATE, TOTAL_FAILED

# Hostile files nest pages/fields arbitrarily deep; bound the walk.
_MAX_DEPTH = 64
_MAX_NODES = 20000

#: Findings that mean the signed document itself was altered (DSS policy: FAIL).
_FAILING_KINDS = frozenset({"PAGES_CHANGED", "SIGNATURE_DICTIONARY_CHANGED", "SIGNATURE_REPLACED"})


@dataclass(frozen=True)
class Finding:
    """One classified change made after the signature."""

    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON form for the report."""
        return {"kind": self.kind, "detail": self.detail}


def _ref(obj: Any) -> generic.Reference | None:
    if isinstance(obj, generic.IndirectObject):
        return obj.reference
    return None


def _deref(obj: Any) -> Any:
    return obj.get_object() if isinstance(obj, generic.IndirectObject) else obj


def _pages(root: generic.DictionaryObject) -> list[tuple[generic.Reference | None, Any]]:
    """Leaf pages in order, with their references, cycle- and depth-safe."""
    out: list[tuple[generic.Reference | None, Any]] = []
    seen: set[Any] = set()

    def walk(node_raw: Any, depth: int) -> None:
        if depth > _MAX_DEPTH or len(seen) > _MAX_NODES:
            raise ValueError("page tree too deep or too large")
        ref = _ref(node_raw)
        if ref is not None:
            if ref in seen:
                raise ValueError("cyclic page tree")
            seen.add(ref)
        node = _deref(node_raw)
        if not isinstance(node, generic.DictionaryObject):
            return
        if node.get("/Type") == "/Pages" or "/Kids" in node:
            for kid in node.get("/Kids", generic.ArrayObject()):
                walk(kid, depth + 1)
        else:
            out.append((ref, node))

    walk(root.raw_get("/Pages"), 0)
    return out


def _fields(root: generic.DictionaryObject) -> dict[str, tuple[Any, generic.DictionaryObject]]:
    """Terminal form fields by fully qualified name (with inherited /FT)."""
    out: dict[str, tuple[Any, generic.DictionaryObject]] = {}
    try:
        top = _deref(_deref(root.raw_get("/AcroForm")).raw_get("/Fields"))
    except (KeyError, AttributeError):
        return out
    seen: set[Any] = set()

    def walk(raw: Any, prefix: str, ft: Any, depth: int) -> None:
        if depth > _MAX_DEPTH or len(seen) > _MAX_NODES:
            return
        ref = _ref(raw)
        if ref is not None:
            if ref in seen:
                return
            seen.add(ref)
        node = _deref(raw)
        if not isinstance(node, generic.DictionaryObject):
            return
        name = node.get("/T")
        fq = f"{prefix}.{name}" if prefix and name is not None else str(name or prefix)
        ft = node.get("/FT", ft)
        kids = node.get("/Kids")
        if kids and any("/T" in _deref(k) for k in kids if isinstance(_deref(k), dict)):
            for kid in kids:
                walk(kid, fq, ft, depth + 1)
            return
        out[fq] = (ref, node, ft)  # type: ignore[assignment]

    if isinstance(top, generic.ArrayObject):
        for item in top:
            walk(item, "", None, 0)
    return out


def _fingerprint(value: Any, depth: int = 0) -> Any:
    """Structural identity of a PDF value: references compared by id, not content."""
    if depth > 8:
        return "<deep>"
    if isinstance(value, generic.IndirectObject):
        return ("ref", value.idnum, value.generation)
    if isinstance(value, generic.StreamObject):
        return ("stream", id(value))
    if isinstance(value, generic.DictionaryObject):
        return tuple(sorted((str(k), _fingerprint(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, generic.ArrayObject):
        return tuple(_fingerprint(v, depth + 1) for v in value)
    return repr(value)


def _overwritten_after(reader: PdfFileReader, revision: int) -> set[generic.Reference]:
    """References that existed at ``revision`` and were redefined in a later revision."""
    xrefs = reader.xrefs
    out: set[generic.Reference] = set()
    for rev in range(revision + 1, xrefs.total_revisions):
        for ref in xrefs.explicit_refs_in_revision(rev):
            try:
                if xrefs.get_introducing_revision(ref) <= revision:
                    out.add(ref)
            except Exception:  # noqa: BLE001 - unknown history: treat as overwritten
                out.add(ref)
    return out


def _content_refs(page: generic.DictionaryObject) -> Iterator[generic.Reference]:
    contents = page.raw_get("/Contents") if "/Contents" in page else None
    ref = _ref(contents)
    if ref is not None:
        yield ref
    resolved = _deref(contents)
    if isinstance(resolved, generic.ArrayObject):
        for item in resolved:
            r = _ref(item)
            if r is not None:
                yield r
    try:
        xobjects = _deref(_deref(page.get("/Resources", {})).raw_get("/XObject"))
        for value in xobjects.values():
            r = _ref(value)
            if r is not None:
                yield r
    except (KeyError, AttributeError, TypeError):
        return


def _rect(annot: Any) -> tuple[float, float, float, float] | None:
    try:
        x1, y1, x2, y2 = (float(v) for v in _deref(annot)["/Rect"])
    except Exception:  # noqa: BLE001
        return None
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _annots(page: generic.DictionaryObject) -> list[Any]:
    try:
        value = _deref(page.raw_get("/Annots"))
    except KeyError:
        return []
    return list(value) if isinstance(value, generic.ArrayObject) else []


def _annot_key(raw: Any) -> Any:
    ref = _ref(raw)
    return ref if ref is not None else _fingerprint(raw)


def _is_signed_signature_widget(annot: Any) -> bool:
    """A widget of a signature field whose value is a signature dictionary."""
    field_type = value = None
    node = annot
    for _ in range(32):
        if not isinstance(node, generic.DictionaryObject):
            break
        if field_type is None and "/FT" in node:
            field_type = node.get("/FT")
        if value is None and "/V" in node:
            value = _deref(node.raw_get("/V"))
        parent = node.raw_get("/Parent") if "/Parent" in node else None
        node = _deref(parent) if parent is not None else None
    return (field_type == "/Sig" and isinstance(value, generic.DictionaryObject)
            and "/Contents" in value and "/ByteRange" in value)


def _review_pages(old_root: Any, new_root: Any, overwritten: set[Any]) -> list[Finding]:
    findings: list[Finding] = []
    old_pages, new_pages = _pages(old_root), _pages(new_root)
    if [r for r, _ in old_pages] != [r for r, _ in new_pages]:
        findings.append(
            Finding(
                "PAGES_CHANGED",
                f"page tree changed after signing ({len(old_pages)} -> {len(new_pages)} pages)",
            )
        )
        return findings
    for index, ((_, old), (_, new)) in enumerate(zip(old_pages, new_pages, strict=True)):
        page_no = index + 1
        keys = (set(old.keys()) | set(new.keys())) - {"/Annots"}
        changed = [
            k for k in keys if _fingerprint(old.raw_get(k) if k in old else None)
            != _fingerprint(new.raw_get(k) if k in new else None)
        ]
        if changed:
            findings.append(
                Finding("PAGE_CHANGED", f"page {page_no}: {', '.join(sorted(changed))} changed")
            )
        touched = [r for r in _content_refs(new) if r in overwritten]
        if touched:
            findings.append(
                Finding("PAGE_CONTENT_CHANGED", f"page {page_no}: content stream overwritten")
            )
        old_annots = _annots(old)
        old_keys = {_annot_key(a) for a in old_annots}
        old_rects = [r for r in (_rect(a) for a in old_annots) if r is not None]
        for raw in _annots(new):
            if _annot_key(raw) in old_keys:
                continue
            annot = _deref(raw)
            subtype = annot.get("/Subtype") if isinstance(annot, dict) else None
            if subtype != "/Widget":
                findings.append(
                    Finding("ANNOTATION_ADDED", f"page {page_no}: {subtype} annotation added")
                )
                continue
            rect = _rect(raw)
            # Decree 30 lays the organisation's seal over the leader's signature image: a later
            # signature that covers itself is a signing step (the signature is verified in its
            # own right), not an annotation hiding signed content.
            if rect is not None and any(_overlap(rect, o) for o in old_rects) \
                    and not _is_signed_signature_widget(annot):
                findings.append(
                    Finding(
                        "ANNOTATION_OVERLAP",
                        f"page {page_no}: new widget overlaps a signed annotation",
                    )
                )
    return findings


def _appearance_refs(field: generic.DictionaryObject) -> set[Any]:
    refs: set[Any] = set()
    widgets = [field] + [_deref(k) for k in field.get("/Kids", ())]
    for widget in widgets:
        try:
            ap = widget.raw_get("/AP")
            refs.add(_ref(ap))
            n = _deref(ap).raw_get("/N")
            refs.add(_ref(n))
            n_res = _deref(n)
            if isinstance(n_res, generic.DictionaryObject) and not isinstance(
                n_res, generic.StreamObject
            ):
                refs.update(_ref(v) for v in n_res.values())
        except (KeyError, AttributeError, TypeError):
            continue
    refs.discard(None)
    return refs


def _review_fields(old_root: Any, new_root: Any, overwritten: set[Any]) -> list[Finding]:
    findings: list[Finding] = []
    old_fields, new_fields = _fields(old_root), _fields(new_root)
    for name, (_, old, old_ft) in old_fields.items():  # type: ignore[misc]
        if name not in new_fields:
            findings.append(Finding("FIELD_REMOVED", f"field {name!r} removed"))
            continue
        _, new, _ = new_fields[name]  # type: ignore[misc]
        old_v = old.raw_get("/V") if "/V" in old else None
        new_v = new.raw_get("/V") if "/V" in new else None
        if old_ft == "/Sig":
            if old_v is not None and _fingerprint(old_v) != _fingerprint(new_v):
                findings.append(Finding("SIGNATURE_REPLACED", f"signature field {name!r}"))
            continue
        if _fingerprint(old_v) != _fingerprint(new_v):
            if old_v is not None:
                # Filling an empty field is form filling; overwriting signed content is not.
                findings.append(
                    Finding("FORM_VALUE_REPLACED", f"value of field {name!r} changed after signing")
                )
            continue
        old_ap, new_ap = _appearance_refs(old), _appearance_refs(new)
        if old_ap != new_ap or new_ap & overwritten:
            # Same value, new picture: the "shadow" attacks show what was never signed.
            findings.append(
                Finding("APPEARANCE_REPLACED", f"field {name!r} redrawn without a value change")
            )
    return findings


def review(
    reader: PdfFileReader, emb: EmbeddedPdfSignature, entry: dict[str, Any]
) -> list[Finding]:
    """Classify changes after ``emb``'s revision; only suspicious ones are returned."""
    findings: list[Finding] = []
    xrefs = reader.xrefs
    sig_ref = _ref(emb.sig_field.raw_get("/V"))
    if sig_ref is not None:
        introduced = xrefs.get_introducing_revision(sig_ref)
        if xrefs.get_last_change(sig_ref) != introduced:
            findings.append(
                Finding(
                    "SIGNATURE_DICTIONARY_CHANGED",
                    "the signature dictionary was rewritten after signing",
                )
            )
    revision = emb.signed_revision
    if revision >= xrefs.total_revisions - 1 or entry.get("coverage") != "ENTIRE_REVISION":
        return findings
    old_root = reader.get_historical_resolver(revision).root
    new_root = reader.root
    overwritten = _overwritten_after(reader, revision)
    findings.extend(_review_pages(old_root, new_root, overwritten))
    findings.extend(_review_fields(old_root, new_root, overwritten))
    return findings


def verdicts_for(findings: list[Finding], entry: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Map findings to verdicts and raise the entry's modification level to OTHER."""
    out: list[tuple[str, str | None]] = []
    for f in findings:
        entry["modification_level"] = "OTHER"
        entry["errors"].append(f"{f.kind}: {f.detail}")
        if f.kind in _FAILING_KINDS:
            out.append((TOTAL_FAILED, "FORMAT_FAILURE"))
        else:
            out.append((INDETERMINATE, "SIG_CONSTRAINTS_FAILURE"))
    return out
