"""Agencies: identifier codes, the tier tree, mergers, directory import and routing rules."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, cast

from sqlalchemy import event
from sqlmodel import Session, select

from eoffice.db import VersionedCache
from eoffice.errors import Forbidden, NotFound, ValidationFailed
from eoffice.models import Agency, DirectoryVersion
from eoffice.settings import get_settings

LEVELS = ("central", "province", "department", "district", "commune")
QCVN_102_CODE = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}$")
# QĐ 20/2020/QĐ-TTg: up to 35 characters of digits, capital letters and dots.
QCVN_102_PREFIX = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]?\d{0,2}$")
QD20_CODE = re.compile(r"^[0-9A-Z]+(\.[0-9A-Z]+)*$")

GROUPS = {
    "all-departments": "every department of the province",
    "all-districts": "every district-level committee",
    "all-communes": "every commune-level committee",
    "communes-of:<district code>": "every commune under one district",
    "children-of:<agency code>": "every body directly under one agency",
}


def normalize_code(raw: str) -> str:
    """Upper-case, trimmed code, or a 422 naming what is wrong."""
    code = (raw or "").strip().upper()
    if QCVN_102_CODE.match(code):
        return code
    if len(code) == 13 and code.count(".") == 3 or QCVN_102_PREFIX.match(code):
        raise ValidationFailed(f"'{raw}' is not a QCVN 102 code (NNN.NN.NN.ANN)", field="code",
                               detail_vi=f"Mã định danh '{raw}' sai định dạng QCVN 102")
    if 3 <= len(code) <= 35 and QD20_CODE.match(code):
        return code
    raise ValidationFailed(
        f"'{raw}' is not an agency identifier code (QCVN 102:2016 or QĐ 20/2020: up to 35 "
        "digits, capital letters and dots)", field="code",
        detail_vi=f"Mã định danh '{raw}' không hợp lệ")


def by_code(session: Session, code: str) -> Agency:
    agency = session.exec(select(Agency).where(Agency.code == code.strip().upper())).first()
    if agency is None:
        raise NotFound(f"unknown agency '{code}'", field="agency",
                       detail_vi=f"Không tìm thấy cơ quan '{code}'")
    return agency


_SESSION_TREE = "eoffice_agency_tree"


@event.listens_for(Session, "after_transaction_end")
def _forget_held_tree(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_SESSION_TREE, None)


class AgencyRow(Protocol):
    """The agency columns routing reads: a light result row from AgencyTree.load or an Agency."""

    @property
    def id(self) -> int | None: ...
    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def successor_id(self) -> int | None: ...
    @property
    def active(self) -> bool: ...
    @property
    def abbreviation(self) -> str: ...


class AgencyTree:
    """The whole directory in memory for one request: it is small (thousands of rows)."""

    def __init__(self, agencies: Sequence[AgencyRow]) -> None:
        self.by_id: dict[int | None, AgencyRow] = {a.id: a for a in agencies}
        self.by_code: dict[str, AgencyRow] = {a.code: a for a in agencies}
        self.children: dict[int | None, list[AgencyRow]] = defaultdict(list)
        for agency in agencies:
            self.children[agency.parent_id].append(agency)

    @classmethod
    def read(cls, session: Session) -> AgencyTree:
        """Every agency as light rows (the columns routing needs), not ORM objects."""
        # sqlmodel's select() overloads stop at four columns; the eight-column call is valid.
        rows = session.exec(select(Agency.id, Agency.code, Agency.name, Agency.level,  # type: ignore[call-overload]
                                   Agency.parent_id, Agency.successor_id, Agency.active,
                                   Agency.abbreviation)).all()
        # Result rows expose the selected columns as attributes, which is what AgencyRow names.
        return cls(cast("Sequence[AgencyRow]", rows))

    @classmethod
    def load(cls, session: Session) -> AgencyTree:
        """The directory as this transaction sees it, from this process's cache while the
        directory version has not moved (one small read instead of every agency row).

        The rows are immutable result rows, shared between threads; a transaction that has
        written agencies itself reads them and leaves the cache alone.
        """
        held = session.info.get(_SESSION_TREE)
        if held is not None and not _DIRECTORY.wrote(session):
            return held  # type: ignore[no-any-return]
        tree = _DIRECTORY.get(session)
        session.info[_SESSION_TREE] = tree
        return tree

    def subtree_ids(self, root_id: int) -> set[int]:
        seen = {root_id}
        stack = [root_id]
        while stack:
            for child in self.children.get(stack.pop(), []):
                if child.id is not None and child.id not in seen:
                    seen.add(child.id)
                    stack.append(child.id)
        return seen

    def root_of(self, agency: AgencyRow) -> AgencyRow:
        current = agency
        guard = 0
        while current.parent_id is not None and guard < 64:
            current = self.by_id[current.parent_id]
            guard += 1
        return current

    def successor(self, agency: AgencyRow) -> AgencyRow:
        current = agency
        guard = 0
        while current.successor_id is not None and guard < 64:
            current = self.by_id[current.successor_id]
            guard += 1
        return current

    def province_members(self, agency: AgencyRow) -> list[AgencyRow]:
        root = self.root_of(agency)
        assert root.id is not None
        return [self.by_id[i] for i in self.subtree_ids(root.id)]


@dataclass(frozen=True)
class Recipient:
    agency: AgencyRow
    addressed_to_code: str | None  # set when a merged body was named


def may_send(tree: AgencyTree, sender: AgencyRow, recipient: AgencyRow) -> bool:
    """The configured routing rule."""
    policy = get_settings().routing_policy
    if policy == "open" or recipient.level == "central":
        return True
    same_province = tree.root_of(sender).id == tree.root_of(recipient).id
    if policy == "province":
        return same_province
    # hierarchy: own parent, own children, siblings
    return same_province and (recipient.id == sender.parent_id
                              or recipient.parent_id == sender.id
                              or recipient.parent_id == sender.parent_id)


def _expand_group(tree: AgencyTree, sender: AgencyRow, token: str) -> list[AgencyRow]:
    name, _, argument = token.partition(":")
    members = tree.province_members(sender)
    if name == "all-departments":
        return [a for a in members if a.level == "department"]
    if name == "all-districts":
        return [a for a in members if a.level == "district"]
    if name == "all-communes":
        return [a for a in members if a.level == "commune"]
    if name in ("communes-of", "children-of"):
        parent = tree.by_code.get(argument.strip().upper())
        if parent is None:
            raise ValidationFailed(f"unknown agency '{argument}' in group '{token}'",
                                   field="recipients",
                                   detail_vi=f"Nhóm '{token}' chứa cơ quan không tồn tại")
        found = tree.children.get(parent.id, [])
        return [a for a in found if name == "children-of" or a.level == "commune"]
    raise ValidationFailed(f"unknown recipient group '{token}'", field="recipients",
                           detail_vi=f"Nhóm nơi nhận '{token}' không tồn tại")


def resolve_recipients(session: Session, sender: AgencyRow, tokens: list[str]
                       ) -> list[Recipient]:
    """Agency codes and groups → distinct active receivers (merged bodies → successors)."""
    if not tokens:
        raise ValidationFailed("at least one recipient is required", field="recipients",
                               detail_vi="Cần chọn ít nhất một nơi nhận")
    tree = AgencyTree.load(session)
    chosen: dict[int, Recipient] = {}
    for raw in tokens:
        if not isinstance(raw, str) or not raw.strip():
            raise ValidationFailed("recipients must be agency codes or group names",
                                   field="recipients",
                                   detail_vi="Nơi nhận phải là mã cơ quan hoặc tên nhóm")
        token = raw.strip()
        is_group = token.startswith("group:") or token.split(":")[0] in {
            g.split(":")[0] for g in GROUPS}
        targets: list[tuple[AgencyRow, str | None]]
        if is_group:
            targets = [(a, None) for a in _expand_group(tree, sender,
                                                         token.removeprefix("group:"))]
            targets = [(a, None) for a, _ in targets if a.id != sender.id]
        else:
            named = tree.by_code.get(token.upper())
            if named is None:
                raise ValidationFailed(f"unknown recipient '{token}'", field="recipients",
                                       detail_vi=f"Không tìm thấy nơi nhận '{token}'")
            final = tree.successor(named)
            targets = [(final, named.code if final.id != named.id else None)]
        for agency, addressed in targets:
            if not agency.active:
                raise ValidationFailed(f"recipient '{agency.code}' is not active",
                                       field="recipients",
                                       detail_vi=f"Nơi nhận '{agency.code}' không hoạt động")
            if agency.id == sender.id:
                raise ValidationFailed("an agency cannot send a document to itself",
                                       field="recipients",
                                       detail_vi="Không thể gửi văn bản cho chính cơ quan mình")
            if not may_send(tree, sender, agency):
                raise Forbidden(f"routing rules do not allow sending to '{agency.code}'",
                                field="recipients",
                                detail_vi=f"Quy tắc định tuyến không cho phép gửi tới "
                                          f"'{agency.code}'")
            assert agency.id is not None
            chosen.setdefault(agency.id, Recipient(agency, addressed))
    if not chosen:
        raise ValidationFailed("the recipient groups are empty", field="recipients",
                               detail_vi="Nhóm nơi nhận không có cơ quan nào")
    return list(chosen.values())


# --- directory import ----------------------------------------------------------------------

IMPORT_FIELDS = ("code", "name", "level", "abbreviation", "parent_code", "successor_code",
                 "email", "merged_at")


def parse_directory(content: bytes, filename: str) -> list[dict[str, Any]]:
    """Rows from a CSV (header line) or JSON (list of objects) directory file."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed("directory file must be UTF-8", field="file") from exc
    if filename.lower().endswith(".json") or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"invalid JSON: {exc.msg} at line {exc.lineno}",
                                   field="file") from exc
        if isinstance(data, dict):
            data = data.get("agencies", [])
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValidationFailed("JSON directory must be a list of objects", field="file")
        return data
    return list(csv.DictReader(io.StringIO(text)))


def import_directory(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Create or update agencies by code; all rows are checked before anything is written."""
    cleaned: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        try:
            code = normalize_code(str(row.get("code", "")))
        except ValidationFailed as exc:
            raise ValidationFailed(f"row {number}: {exc.detail}", field="code") from exc
        name = str(row.get("name") or "").strip()
        level = str(row.get("level") or "").strip().lower()
        if not name or len(name) > 200:
            raise ValidationFailed(f"row {number}: name is required (≤ 200 characters)",
                                   field="name")
        if level not in LEVELS:
            raise ValidationFailed(f"row {number}: level must be one of {', '.join(LEVELS)}",
                                   field="level")
        merged_raw = str(row.get("merged_at") or "").strip()
        try:
            merged_at = date.fromisoformat(merged_raw) if merged_raw else None
        except ValueError as exc:
            raise ValidationFailed(f"row {number}: merged_at must be YYYY-MM-DD",
                                   field="merged_at") from exc
        cleaned.append({
            "code": code, "name": name, "level": level,
            "abbreviation": str(row.get("abbreviation") or "UBND").strip()[:20],
            "parent_code": normalize_code(str(row["parent_code"]))
            if row.get("parent_code") else None,
            "successor_code": normalize_code(str(row["successor_code"]))
            if row.get("successor_code") else None,
            "email": (str(row.get("email")).strip() or None) if row.get("email") else None,
            "merged_at": merged_at,
        })
    existing = {a.code: a for a in session.exec(select(Agency)).all()}
    known = set(existing) | {r["code"] for r in cleaned}
    for r in cleaned:
        for ref in ("parent_code", "successor_code"):
            if r[ref] and r[ref] not in known:
                raise ValidationFailed(f"{r['code']}: {ref} '{r[ref]}' is not in the directory",
                                       field=ref)
    created = updated = 0
    for r in cleaned:
        agency = existing.get(r["code"])
        if agency is None:
            agency = Agency(code=r["code"], name=r["name"], level=r["level"])
            created += 1
        else:
            updated += 1
        agency.name, agency.level, agency.abbreviation = r["name"], r["level"], r["abbreviation"]
        agency.email = r["email"]
        session.add(agency)
        existing[r["code"]] = agency
    session.flush()
    for r in cleaned:
        agency = existing[r["code"]]
        agency.parent_id = existing[r["parent_code"]].id if r["parent_code"] else None
        if r["successor_code"]:
            successor = existing[r["successor_code"]]
            if successor.id == agency.id:
                raise ValidationFailed(f"{r['code']} cannot succeed itself",
                                       field="successor_code")
            agency.successor_id = successor.id
            agency.active = False
            agency.merged_at = r["merged_at"] or date.today()
        session.add(agency)
    session.flush()
    _check_no_cycles(session)
    return {"created": created, "updated": updated}


def _check_no_cycles(session: Session) -> None:
    tree = AgencyTree.load(session)
    for agency in tree.by_id.values():
        seen: set[int | None] = set()
        current: AgencyRow | None = agency
        while current is not None and current.parent_id is not None:
            if current.id in seen:
                raise ValidationFailed(f"parent links of {agency.code} form a cycle",
                                       field="parent_code")
            seen.add(current.id)
            current = tree.by_id.get(current.parent_id)


def merge_agency(session: Session, merged: Agency, successor: Agency, when: date) -> None:
    """The merged body keeps its identity for old documents; new ones go to the successor."""
    if merged.id == successor.id:
        raise ValidationFailed("an agency cannot be merged into itself", field="successor_code")
    merged.successor_id = successor.id
    merged.active = False
    merged.merged_at = when
    session.add(merged)
    session.flush()


# Every agency write moves the directory version (see VersionedCache).
_DIRECTORY: VersionedCache[AgencyTree] = VersionedCache(
    "directory", DirectoryVersion, Agency, AgencyTree.read)
