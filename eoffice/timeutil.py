"""Vietnam calendar time and working days (weekends and configured public holidays)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
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


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def day_start_utc(day: date, zone: tzinfo = VIETNAM) -> datetime:
    """The UTC instant at which `day` starts in `zone`.

    A filter from 0001-01-01 starts before the first UTC instant a datetime can hold in
    Vietnam time: it means no lower bound, not an OverflowError (a 500 that Schemathesis
    found in the inbox's date filter).
    """
    try:
        return datetime.combine(day, time.min, zone).astimezone(UTC)
    except OverflowError:
        return _EARLIEST if day.year == date.min.year else _LATEST


def day_end_utc(day: date, zone: tzinfo = VIETNAM) -> datetime:
    """The UTC instant at which the day after `day` starts in `zone`: the exclusive end of
    a filter to `day` inclusive (to 9999-12-31 means no upper bound)."""
    if day == date.max:
        return _LATEST
    return day_start_utc(day + timedelta(days=1), zone)
