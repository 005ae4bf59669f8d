"""Refresh due dates (first working day after the first weekend of the month) and the Sunday
maintenance window of API Particulier, on fixed dates."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from qfbridge.domain.errors import ValidationError
from qfbridge.domain.schedule import (
    DueRule,
    easter_sunday,
    french_public_holidays,
    in_maintenance,
    is_working_day,
    maintenance_ends_at,
    next_maintenance_starts_at,
    next_refresh_date,
)

D = dt.date
PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC


# --- Holidays --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2024, D(2024, 3, 31)),
        (2025, D(2025, 4, 20)),
        (2026, D(2026, 4, 5)),
        (2038, D(2038, 4, 25)),
        (2285, D(2285, 3, 22)),
    ],
)
def test_easter_sunday_follows_the_gregorian_computus(year: int, easter: dt.date) -> None:
    assert easter_sunday(year) == easter


def test_2025_has_the_eleven_national_public_holidays_with_the_moveable_ones() -> None:
    holidays = french_public_holidays(2025)
    assert len(holidays) == 11
    assert {
        D(2025, 4, 21),
        D(2025, 5, 29),
        D(2025, 6, 9),
    } <= holidays  # Easter Monday, Ascension, Whit Monday
    assert {D(2025, 1, 1), D(2025, 5, 8), D(2025, 7, 14), D(2025, 11, 11), D(2025, 12, 25)} <= holidays


def test_alsace_moselle_adds_good_friday_and_saint_stephen() -> None:
    assert french_public_holidays(2025, alsace_moselle=True) - french_public_holidays(2025) == {
        D(2025, 4, 18),
        D(2025, 12, 26),
    }


def test_weekends_and_holidays_are_not_working_days() -> None:
    assert is_working_day(D(2025, 6, 10))
    assert not is_working_day(D(2025, 6, 9))  # Whit Monday
    assert not is_working_day(D(2025, 6, 7))  # Saturday


# --- Due dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "due", "why"),
    [
        (D(2025, 8, 20), D(2025, 9, 8), "1 Sep is a Monday: first weekend 6-7, due Monday 8"),
        (D(2025, 10, 20), D(2025, 11, 3), "1 Nov is a Saturday (and a holiday): weekend 1-2, due Monday 3"),
        (D(2026, 1, 20), D(2026, 2, 9), "1 Feb is a Sunday, not a weekend: weekend 7-8, due Monday 9"),
        (D(2025, 5, 20), D(2025, 6, 10), "1 Jun is a Sunday; Monday 9 is Whit Monday: due Tuesday 10"),
        (D(2026, 3, 20), D(2026, 4, 7), "Monday 6 April 2026 is Easter Monday: due Tuesday 7"),
        (D(2028, 4, 20), D(2028, 5, 9), "Monday 8 May 2028 is Victoire 1945: due Tuesday 9"),
        (D(2025, 12, 20), D(2026, 1, 5), "year boundary: 1 Jan 2026 is a Thursday, weekend 3-4"),
        (D(2026, 12, 31), D(2027, 1, 4), "year boundary: 1 Jan 2027 is a Friday, weekend 2-3"),
    ],
)
def test_next_refresh_is_the_first_working_day_after_the_first_weekend_of_next_month(
    after: dt.date, due: dt.date, why: str
) -> None:
    assert next_refresh_date(after) == due, why


def test_a_refresh_on_the_due_date_moves_to_next_month() -> None:
    assert next_refresh_date(D(2025, 9, 8)) == D(2025, 10, 6)


def test_a_dossier_received_before_this_months_publication_is_refreshed_this_month() -> None:
    # Given a dossier received on 3 June 2025, before CAF published June's QF (due 10 June)
    # When its next refresh is planned
    # Then it is this month's due date, not July's
    assert next_refresh_date(D(2025, 6, 3)) == D(2025, 6, 10)


def test_extra_working_days_skip_weekends_and_holidays() -> None:
    # Friday 6 June 2025 + Whit Monday: the first working day after the weekend is Tuesday 10;
    # two more working days land on Thursday 12.
    assert next_refresh_date(D(2025, 5, 20), rule=DueRule(extra_working_days=2)) == D(2025, 6, 12)


def test_the_day_of_month_rule_rolls_to_the_next_working_day() -> None:
    rule = DueRule(mode="day_of_month", day_of_month=11)
    assert next_refresh_date(D(2025, 10, 20), rule=rule) == D(2025, 11, 12)  # 11 Nov is Armistice
    assert next_refresh_date(D(2025, 9, 20), rule=rule) == D(2025, 10, 13)  # 11 Oct is a Saturday


def test_alsace_moselle_due_date_skips_saint_stephen() -> None:
    rule = DueRule(mode="day_of_month", day_of_month=26, alsace_moselle=True)
    assert rule.due_date(2025, 12) == D(2025, 12, 29)
    assert DueRule(mode="day_of_month", day_of_month=26).due_date(2025, 12) == D(2025, 12, 26)


def test_an_impossible_rule_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        DueRule(day_of_month=31)
    assert raised.value.code == "invalid_due_rule"


# --- Maintenance window ----------------------------------------------------------------------------


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (paris(2025, 6, 15, 22, 59, 59), False),
        (paris(2025, 6, 15, 23, 0), True),
        (paris(2025, 6, 15, 23, 44, 59), True),
        (paris(2025, 6, 15, 23, 45), False),
        (paris(2025, 6, 14, 23, 10), False),  # a Saturday
        (dt.datetime(2025, 6, 15, 21, 10, tzinfo=UTC), True),  # 23:10 CEST
    ],
)
def test_maintenance_is_sunday_from_23_00_to_23_45_paris_time(now: dt.datetime, expected: bool) -> None:
    assert in_maintenance(now) is expected


def test_maintenance_follows_paris_time_on_the_sunday_summer_time_starts() -> None:
    # 30 March 2025: clocks jump to CEST (UTC+2) at 02:00, so 23:00 Paris is 21:00 UTC
    assert in_maintenance(dt.datetime(2025, 3, 30, 21, 30, tzinfo=UTC))
    assert not in_maintenance(dt.datetime(2025, 3, 30, 22, 30, tzinfo=UTC))  # 00:30 Monday in Paris


def test_maintenance_follows_paris_time_on_the_sunday_summer_time_ends() -> None:
    # 26 October 2025: back to CET (UTC+1), so 23:00 Paris is 22:00 UTC
    assert in_maintenance(dt.datetime(2025, 10, 26, 22, 30, tzinfo=UTC))
    assert not in_maintenance(dt.datetime(2025, 10, 26, 21, 30, tzinfo=UTC))  # 22:30 in Paris


def test_maintenance_ends_at_23_45_paris_or_is_none_outside_the_window() -> None:
    ends = maintenance_ends_at(dt.datetime(2025, 10, 26, 22, 30, tzinfo=UTC))
    assert ends == paris(2025, 10, 26, 23, 45)
    assert ends is not None and ends.astimezone(UTC) == dt.datetime(2025, 10, 26, 22, 45, tzinfo=UTC)
    assert maintenance_ends_at(paris(2025, 10, 27, 23, 30)) is None


def test_next_maintenance_starts_on_the_coming_sunday_or_the_one_after() -> None:
    assert next_maintenance_starts_at(paris(2025, 6, 12, 9, 0)) == paris(2025, 6, 15, 23, 0)
    assert next_maintenance_starts_at(paris(2025, 6, 15, 23, 10)) == paris(2025, 6, 22, 23, 0)


def test_a_naive_datetime_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValidationError) as raised:
        in_maintenance(dt.datetime(2025, 6, 15, 23, 10))
    assert raised.value.code == "naive_datetime"
