"""When to refresh a quotient familial, and when API Particulier is down for maintenance.

Pure rules on injected dates: nothing here reads the system clock.

Why the due date is where it is: CAF publishes the QF of month M *after the first weekend of M*.
Refreshing earlier would fetch the previous month's value again (and spend the tenant's rate
budget for nothing); refreshing on a public holiday would put the monthly burst on a day nobody
watches the alerts. So the default due date of month M is the first working day after the first
weekend of M (see ``DueRule``).

Why the maintenance window matters: API Particulier answers 503 every Sunday 23:00–23:45 Paris time;
the refresh scheduler skips that window instead of burning retries on it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from qfbridge.domain.errors import ValidationError

PARIS = ZoneInfo("Europe/Paris")

MAINTENANCE_WEEKDAY = 6  # Sunday (datetime.weekday())
MAINTENANCE_START = dt.time(23, 0)
MAINTENANCE_END = dt.time(23, 45)

_SATURDAY = 5


# --- French public holidays ------------------------------------------------------------------------


def easter_sunday(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian computus, a.k.a. Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


@lru_cache(maxsize=64)
def french_public_holidays(year: int, *, alsace_moselle: bool = False) -> frozenset[dt.date]:
    """The eleven national jours fériés of ``year`` (Code du travail L3133-1).

    With ``alsace_moselle`` (Bas-Rhin, Haut-Rhin, Moselle), Good Friday and 26 December are added.
    Whit Monday is included: it is still a public holiday even where it is the "journée de
    solidarité", and administrations commonly close.
    """
    easter = easter_sunday(year)
    days = {
        dt.date(year, 1, 1),  # Jour de l'an
        easter + dt.timedelta(days=1),  # Lundi de Pâques
        dt.date(year, 5, 1),  # Fête du travail
        dt.date(year, 5, 8),  # Victoire 1945
        easter + dt.timedelta(days=39),  # Ascension
        easter + dt.timedelta(days=50),  # Lundi de Pentecôte
        dt.date(year, 7, 14),  # Fête nationale
        dt.date(year, 8, 15),  # Assomption
        dt.date(year, 11, 1),  # Toussaint
        dt.date(year, 11, 11),  # Armistice 1918
        dt.date(year, 12, 25),  # Noël
    }
    if alsace_moselle:
        days |= {easter - dt.timedelta(days=2), dt.date(year, 12, 26)}
    return frozenset(days)


def is_working_day(day: dt.date, *, alsace_moselle: bool = False) -> bool:
    """Monday to Friday and not a French public holiday."""
    return day.weekday() < _SATURDAY and day not in french_public_holidays(
        day.year, alsace_moselle=alsace_moselle
    )


def next_working_day_on_or_after(day: dt.date, *, alsace_moselle: bool = False) -> dt.date:
    while not is_working_day(day, alsace_moselle=alsace_moselle):
        day += dt.timedelta(days=1)
    return day


# --- Due date of the monthly refresh ---------------------------------------------------------------


@dataclass(frozen=True)
class DueRule:
    """How the due date of a month is computed (tenant configuration).

    * ``mode="after_first_weekend"`` (default): the first working day on or after the Monday that
      follows the month's first weekend. The first weekend is the first Saturday+Sunday pair lying
      entirely in the month (a month starting on a Sunday has its first weekend on the 7th–8th).
    * ``mode="day_of_month"``: the first working day on or after ``day_of_month`` (1–28), for
      tenants who prefer a fixed day.
    * ``extra_working_days``: then move that many further working days (e.g. 1 = one working day
      of safety margin after CAF's publication).
    * ``alsace_moselle``: also treat Good Friday and 26 December as holidays.
    """

    mode: Literal["after_first_weekend", "day_of_month"] = "after_first_weekend"
    extra_working_days: int = 0
    day_of_month: int = 10
    alsace_moselle: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.extra_working_days <= 20:
            raise ValidationError("extra_working_days must be within 0..20", code="invalid_due_rule")
        if not 1 <= self.day_of_month <= 28:
            raise ValidationError("day_of_month must be within 1..28", code="invalid_due_rule")

    def due_date(self, year: int, month: int) -> dt.date:
        """The refresh due date of month ``month`` of ``year``."""
        if self.mode == "day_of_month":
            start = dt.date(year, month, self.day_of_month)
        else:
            first = dt.date(year, month, 1)
            first_saturday = first + dt.timedelta(days=(_SATURDAY - first.weekday()) % 7)
            start = first_saturday + dt.timedelta(days=2)  # the Monday after the first weekend
        day = next_working_day_on_or_after(start, alsace_moselle=self.alsace_moselle)
        for _ in range(self.extra_working_days):
            day = next_working_day_on_or_after(day + dt.timedelta(days=1), alsace_moselle=self.alsace_moselle)
        return day


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def next_refresh_date(after: dt.date, *, rule: DueRule | None = None) -> dt.date:
    """The first due date strictly after ``after`` (a refresh or the dossier's receipt date).

    For any ``after`` on or after the due date of its own month this is the due date of the
    *next* month: "the first working day after the first weekend of the next month". For an
    ``after`` in the first days of a month, before that month's due date (a dossier received
    before CAF published the month's QF, so it carries last month's value), it is the due date of
    the same month, so the new month's QF is fetched as soon as it exists.
    """
    rule = rule or DueRule()
    due = rule.due_date(after.year, after.month)
    if due > after:
        return due
    return rule.due_date(*_next_month(after.year, after.month))


# --- Maintenance window ----------------------------------------------------------------------------


def _paris(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValidationError("an aware datetime is required", code="naive_datetime")
    return now.astimezone(PARIS)


def in_maintenance(now: dt.datetime) -> bool:
    """Whether ``now`` (aware, any timezone) falls in Sunday 23:00–23:45 Europe/Paris."""
    local = _paris(now)
    return local.weekday() == MAINTENANCE_WEEKDAY and MAINTENANCE_START <= local.time() < MAINTENANCE_END


def maintenance_ends_at(now: dt.datetime) -> dt.datetime | None:
    """End of the maintenance window ``now`` is in (aware, Europe/Paris), or None outside it."""
    if not in_maintenance(now):
        return None
    local = _paris(now)
    return dt.datetime.combine(local.date(), MAINTENANCE_END, tzinfo=PARIS)


def next_maintenance_starts_at(now: dt.datetime) -> dt.datetime:
    """Start of the next maintenance window strictly after ``now`` (aware, Europe/Paris)."""
    local = _paris(now)
    days_ahead = (MAINTENANCE_WEEKDAY - local.weekday()) % 7
    start = dt.datetime.combine(local.date() + dt.timedelta(days=days_ahead), MAINTENANCE_START, tzinfo=PARIS)
    if start <= local:
        start = dt.datetime.combine(start.date() + dt.timedelta(days=7), MAINTENANCE_START, tzinfo=PARIS)
    return start
