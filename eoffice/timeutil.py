"""Vietnam calendar time and working days (weekends and configured public holidays)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from eoffice.models import utcnow
from eoffice.settings import get_settings

VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


def local_now() -> datetime:
    return utcnow().astimezone(VIETNAM)


def local_today() -> date:
    return local_now().date()


def local_date(moment: datetime) -> date:
    return moment.astimezone(VIETNAM).date()


def is_working_day(day: date) -> bool:
    holidays = set(get_settings().holidays)
    return day.weekday() < 5 and day.isoformat() not in holidays


def next_working_day(day: date) -> date:
    candidate = day + timedelta(days=1)
    while not is_working_day(candidate):
        candidate += timedelta(days=1)
    return candidate


def local_midnight_utc(day: date) -> datetime:
    """The UTC instant at which a Vietnam calendar day starts."""
    return datetime.combine(day, datetime.min.time(), VIETNAM).astimezone(ZoneInfo("UTC"))
