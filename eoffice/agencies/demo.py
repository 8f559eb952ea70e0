"""Demo province modelled on Thái Bình before the 2025 reorganisation (three tiers).

Names follow the real province; the identifier codes follow the QCVN 102:2016 pattern but are
illustrative, not the official registry values.
"""

from __future__ import annotations

import json
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROVINCE_SUFFIX = "H58"


@dataclass(frozen=True)
class DemoAgency:
    code: str
    name: str
    level: str  # province | department | district | commune
    abbreviation: str
    parent_code: str | None
    slug: str


@dataclass(frozen=True)
class DemoUser:
    username: str
    full_name: str
    role: str
    agency_code: str | None
    position: str


_DEPARTMENTS = [
    ("Sở Nội vụ", "SNV", "snv"),
    ("Sở Tài chính", "STC", "stc"),
    ("Sở Tư pháp", "STP", "stp"),
    ("Sở Giáo dục và Đào tạo", "SGDĐT", "sgddt"),
    ("Sở Y tế", "SYT", "syt"),
    ("Sở Xây dựng", "SXD", "sxd"),
    ("Sở Nông nghiệp và Môi trường", "SNNMT", "snnmt"),
]

# district-level unit -> five of its communes/wards
_DISTRICTS: list[tuple[str, str, list[str]]] = [
    ("Thành phố Thái Bình", "thaibinh", ["Phú Xuân", "Vũ Phúc", "Đông Hòa", "Tân Bình", "Đông Mỹ"]),
    ("Huyện Vũ Thư", "vuthu", ["Minh Lãng", "Tam Quang", "Song Lãng", "Việt Hùng", "Dũng Nghĩa"]),
    ("Huyện Đông Hưng", "donghung", ["Đông Hợp", "Đông Xá", "Liên Giang", "Mê Linh", "Đông La"]),
    ("Huyện Hưng Hà", "hungha", ["Tân Lễ", "Canh Tân", "Cộng Hòa", "Hòa Tiến", "Tân Tiến"]),
    ("Huyện Quỳnh Phụ", "quynhphu",
     ["An Bài", "An Thanh", "Quỳnh Hoa", "Quỳnh Giao", "Quỳnh Hội"]),
    ("Huyện Thái Thụy", "thaithuy",
     ["Thụy Hải", "Thụy Trình", "Thụy Liên", "Thái Thượng", "Thái Hà"]),
    ("Huyện Tiền Hải", "tienhai", ["Đông Trà", "Nam Trung", "Tây Giang", "Vũ Lăng", "An Ninh"]),
    ("Huyện Kiến Xương", "kienxuong",
     ["Quang Trung", "Bình Nguyên", "Vũ Quý", "Thanh Tân", "Nam Bình"]),
]

_FIRST_NAMES = ["An", "Bình", "Chi", "Dũng", "Giang", "Hà", "Hùng", "Lan", "Minh", "Nga", "Phúc",
                "Quang", "Sơn", "Thảo", "Trang", "Tuấn", "Việt", "Yến"]
_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Ngô"]


def ascii_slug(text: str) -> str:
    """Lower-case ASCII slug of a Vietnamese name (đ → d, diacritics dropped)."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def demo_agencies() -> list[DemoAgency]:
    """All demo agencies, parents before children."""
    province_code = f"000.00.00.{PROVINCE_SUFFIX}"
    agencies = [DemoAgency(province_code, "Ủy ban nhân dân tỉnh Thái Bình", "province", "UBND",
                           None, "tinh")]
    for index, (name, abbreviation, slug) in enumerate(_DEPARTMENTS, start=1):
        agencies.append(DemoAgency(f"000.00.{index:02d}.{PROVINCE_SUFFIX}", name, "department",
                                   abbreviation, province_code, slug))
    for d_index, (district_name, d_slug, communes) in enumerate(_DISTRICTS, start=11):
        district_code = f"000.00.{d_index:02d}.{PROVINCE_SUFFIX}"
        district_title = district_name[0].lower() + district_name[1:]
        agencies.append(DemoAgency(district_code, f"Ủy ban nhân dân {district_title}",
                                   "district", "UBND", province_code, d_slug))
        for c_index, commune in enumerate(communes, start=1):
            kind = "phường" if d_slug == "thaibinh" else "xã"
            agencies.append(DemoAgency(f"000.{c_index:02d}.{d_index:02d}.{PROVINCE_SUFFIX}",
                                       f"Ủy ban nhân dân {kind} {commune}", "commune", "UBND",
                                       district_code, ascii_slug(commune)))
    return agencies


def _person(seed: int) -> str:
    return (f"{_FAMILY[seed % len(_FAMILY)]} Văn {_FIRST_NAMES[(seed * 7) % len(_FIRST_NAMES)]}"
            if seed % 2 else
            f"{_FAMILY[seed % len(_FAMILY)]} Thị {_FIRST_NAMES[(seed * 5) % len(_FIRST_NAMES)]}")


_POSITIONS = {"province": "Chủ tịch", "department": "Giám đốc", "district": "Chủ tịch",
              "commune": "Chủ tịch"}


def demo_users() -> list[DemoUser]:
    """A clerk, a leader and an officer per agency, plus an auditor and an admin."""
    users: list[DemoUser] = []
    for index, agency in enumerate(demo_agencies()):
        leader_position = _POSITIONS[agency.level]
        users.append(DemoUser(f"clerk.{agency.slug}", _person(index * 3), "clerk", agency.code,
                              "Văn thư"))
        users.append(DemoUser(f"leader.{agency.slug}", _person(index * 3 + 1), "leader",
                              agency.code, leader_position))
        users.append(DemoUser(f"officer.{agency.slug}", _person(index * 3 + 2), "officer",
                              agency.code, "Chuyên viên"))
    province = demo_agencies()[0].code
    users.append(DemoUser("auditor", "Thanh tra tỉnh", "auditor", province, "Thanh tra viên"))
    users.append(DemoUser("admin", "Quản trị hệ thống", "admin", province, "Quản trị viên"))
    return users


DEMO_USERS_FILE = "demo-users.json"


def seed(session: Any, data_dir: Path) -> bool:
    """Create the demo province and accounts once; passwords go to a 0600 file in data_dir.

    Returns False when the database already holds agencies (nothing is changed).
    """
    from sqlmodel import select

    from eoffice.models import Agency, User
    from eoffice.users.service import hash_password

    if session.exec(select(Agency).limit(1)).first() is not None:
        return False
    ids: dict[str, int] = {}
    for item in demo_agencies():
        agency = Agency(code=item.code, name=item.name, level=item.level,
                        abbreviation=item.abbreviation,
                        parent_id=ids[item.parent_code] if item.parent_code else None)
        session.add(agency)
        session.flush()
        assert agency.id is not None
        ids[item.code] = agency.id
    listing = []
    for person in demo_users():
        password = secrets.token_urlsafe(9)
        agency_id = ids[person.agency_code] if person.agency_code else None
        session.add(User(username=person.username, password_hash=hash_password(password),
                         full_name=person.full_name, position=person.position,
                         role=person.role, agency_id=agency_id,
                         scope_agency_id=agency_id if person.role == "auditor" else None))
        level = next(a.level for a in demo_agencies() if a.code == person.agency_code)
        listing.append({"username": person.username, "password": password, "role": person.role,
                        "agency_code": person.agency_code, "agency_level": level,
                        "full_name": person.full_name})
    session.flush()
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / DEMO_USERS_FILE
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(listing, out, ensure_ascii=False, indent=1)
    return True


def read_demo_users(data_dir: Path) -> list[dict[str, Any]]:
    """The demo accounts of the installation in data_dir (empty if none were seeded)."""
    path = data_dir / DEMO_USERS_FILE
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")))
