"""Request and response models; metadata keys are the edXML names in snake_case."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Decree 30/2020/NĐ-CP Appendix III: type name → notation abbreviation ("" = none).
DOCUMENT_TYPES: dict[str, str] = {
    "Nghị quyết": "NQ", "Quyết định": "QĐ", "Chỉ thị": "CT", "Quy chế": "QC",
    "Quy định": "QyĐ", "Thông cáo": "TC", "Thông báo": "TB", "Hướng dẫn": "HD",
    "Chương trình": "CTr", "Kế hoạch": "KH", "Phương án": "PA", "Đề án": "ĐA", "Dự án": "DA",
    "Báo cáo": "BC", "Biên bản": "BB", "Tờ trình": "TTr", "Hợp đồng": "HĐ", "Công văn": "",
    "Công điện": "CĐ", "Bản ghi nhớ": "BGN", "Bản thỏa thuận": "BTT", "Giấy ủy quyền": "GUQ",
    "Giấy mời": "GM", "Giấy giới thiệu": "GGT", "Giấy nghỉ phép": "GNP", "Phiếu gửi": "PG",
    "Phiếu chuyển": "PC", "Phiếu báo": "PB", "Thư công": "",
}
_TYPE_LOOKUP = {unicodedata.normalize("NFC", k).casefold(): k for k in DOCUMENT_TYPES}
# Older spelling with the tone mark on the other vowel.
_TYPE_LOOKUP.update({"bản thoả thuận": "Bản thỏa thuận", "giấy uỷ quyền": "Giấy ủy quyền"})

COMPETENCE_PREFIXES = ("TM.", "Q.", "KT.", "TL.", "TUQ.")
PRIORITIES = {0: "thường", 1: "khẩn", 2: "thượng khẩn", 3: "hỏa tốc", 4: "hỏa tốc hẹn giờ"}
PUBLIC_LEVELS = {"", "none", "thường", "public", "0"}


def canonical_type_name(raw: str) -> str:
    """The Decree 30 spelling of a type name, matched leniently (case, Unicode form)."""
    key = unicodedata.normalize("NFC", raw.strip()).casefold()
    if key not in _TYPE_LOOKUP:
        raise ValueError(f"'{raw}' is not one of the 29 Decree 30 document types")
    return _TYPE_LOOKUP[key]


class SignerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    competence: str = Field(default="", max_length=20)
    position: str = Field(default="", max_length=200)
    full_name: str = Field(default="", max_length=200)

    @field_validator("competence")
    @classmethod
    def _competence(cls, value: str) -> str:
        value = value.strip().upper()
        if value and not value.endswith("."):
            value += "."
        if value and value not in COMPETENCE_PREFIXES:
            raise ValueError(f"competence must be one of {', '.join(COMPETENCE_PREFIXES)}")
        return value


class DocumentMetadata(BaseModel):
    """What a sender fills in; the system assigns number and notation at issuance."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type_name: str
    subject: str = Field(min_length=1, max_length=500)
    priority: int = Field(default=0, ge=0, le=4)
    signer_info: SignerInfo | None = None
    due_date: date | None = None
    to_places: list[str] = Field(default_factory=list, max_length=200)
    response_for: int | str | None = None
    page_amount: int | None = Field(default=None, ge=1, le=100000)
    confidentiality: str | None = None
    place: str = Field(default="", max_length=100)
    paper: bool = False

    @field_validator("type_name")
    @classmethod
    def _type_name(cls, value: str) -> str:
        return canonical_type_name(value)

    @field_validator("to_places")
    @classmethod
    def _places(cls, value: list[str]) -> list[str]:
        for place in value:
            if len(place) > 500:
                raise ValueError("each place is at most 500 characters")
        return value

    @field_validator("confidentiality")
    @classmethod
    def _not_secret(cls, value: str | None) -> str | None:
        if value is not None and value.strip().casefold() not in PUBLIC_LEVELS:
            raise ValueError(
                "state-secret documents (mật, tối mật, tuyệt mật) may not be exchanged "
                "electronically (QĐ 28/2018/QĐ-TTg) / Văn bản mật không được trao đổi qua hệ "
                "thống")
        return "none"


class DeliveryOut(BaseModel):
    id: int
    recipient: str
    recipient_name: str
    addressed_to: str | None
    status_code: str | None
    transport_status: str
    pending_request: str | None
    recalled: bool
    reason: str | None
    arrival_number: int | None
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    completed_at: datetime | None
    verification_indication: str | None
    overdue: bool
    not_acknowledged_same_day: bool


class AttachmentOut(BaseModel):
    id: int
    file_name: str
    size: int
    sha256: str


class RevisionOut(BaseModel):
    number: int
    sha256: str
    reason: str
    created_at: datetime


class DocumentOut(BaseModel):
    id: int
    sender: str
    sender_name: str
    status: str
    channel: str
    paper: bool
    code_number: str | None
    code_notation: str | None
    number_notation: str | None
    issued_year: int | None
    promulgation_date: date | None
    type_name: str
    subject: str
    priority: int
    signer_info: SignerInfo
    due_date: date | None
    to_places: list[str]
    response_for: int | None
    response_for_ref: str | None
    page_amount: int | None
    confidentiality: str
    place: str
    replaces: int | None
    forwarded_from: int | None
    file_name: str | None
    file_sha256: str | None
    revision: int
    revisions: list[RevisionOut]
    attachments: list[AttachmentOut]
    deliveries: list[DeliveryOut]
    created_at: datetime
    sent_at: datetime | None


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipients: list[str] = Field(min_length=1, max_length=5000)


class SendResult(BaseModel):
    document_id: int
    code_number: str | None
    code_notation: str | None
    deliveries: list[DeliveryOut]


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^\d{2}$")
    reason: str | None = Field(default=None, max_length=2000)
    assignee: str | None = Field(default=None, max_length=100)


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class UpdateRequest(BaseModel):
    """Metadata corrections of an issued document (edXML BussinessDocType 2)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    changes: dict[str, Any]


class ForwardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipients: list[str] = Field(min_length=1, max_length=5000)
    note: str | None = Field(default=None, max_length=2000)


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int
