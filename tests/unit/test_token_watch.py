"""token_watch with a controlled clock: one event 90, 60, 30 and 15 days before the configured expiry
and one on expiry, each once; a later expiry date (the token prolonged) starts the alerts over."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from qfbridge.services.token_watch import THRESHOLDS_DAYS, TokenWatchService, due_alert
from qfbridge.store.tenants import Tenant, TenantPatch
from tests.support.fakes import FakeTenants, RecordingEvents

EXPIRY = dt.date(2027, 6, 30)
SIRET = "21690123000012"


@dataclass
class Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now

    def on(self, day: dt.date) -> None:
        self.now = dt.datetime.combine(day, dt.time(7, 0), tzinfo=dt.UTC)


def tenant(expires_on: dt.date | None = EXPIRY, **fields: Any) -> Tenant:
    return Tenant(siret=SIRET, name="Commune", cog="69123", token_expires_on=expires_on, **fields)


def run_daily(service: TokenWatchService, clock: Clock, first: dt.date, last: dt.date) -> None:
    day = first
    while day <= last:
        clock.on(day)
        service.run()
        day += dt.timedelta(days=1)


def test_every_threshold_and_the_expiry_are_announced_once_each_when_run_daily() -> None:
    # Given a tenant whose token expires on 30 June 2027, and token_watch running every day from 120 days before
    clock, tenants, events = Clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), FakeTenants(), RecordingEvents()
    tenants.items[SIRET] = tenant()
    service = TokenWatchService(tenants, events, clock)
    # When it runs daily until 10 days after the expiry
    run_daily(service, clock, EXPIRY - dt.timedelta(days=120), EXPIRY + dt.timedelta(days=10))
    # Then there was one event on each threshold's day, and one on the expiry day — nothing more
    announced = [
        (kind, detail.get("days_left"), detail.get("threshold")) for kind, detail in events.published
    ]
    assert announced == [
        ("tenant.token_expiring", 90, 90),
        ("tenant.token_expiring", 60, 60),
        ("tenant.token_expiring", 30, 30),
        ("tenant.token_expiring", 15, 15),
        ("tenant.token_expired", None, None),
    ]
    assert all(
        detail["expires_on"] == "2027-06-30" and detail["tenant_siret"] == SIRET
        for _, detail in events.published
    )
    assert events.published[-1][1]["detected_by"] == "token_watch"


def test_each_event_comes_on_the_exact_day() -> None:
    clock, tenants, events = Clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), FakeTenants(), RecordingEvents()
    tenants.items[SIRET] = tenant()
    service = TokenWatchService(tenants, events, clock)
    days: list[dt.date] = []
    day = EXPIRY - dt.timedelta(days=100)
    while day <= EXPIRY + dt.timedelta(days=2):
        clock.on(day)
        before = len(events.published)
        service.run()
        if len(events.published) > before:
            days.append(day)
        day += dt.timedelta(days=1)
    assert days == [EXPIRY - dt.timedelta(days=d) for d in THRESHOLDS_DAYS] + [EXPIRY]


def test_a_tenant_configured_late_gets_only_the_most_urgent_alert_not_a_burst() -> None:
    # Given a tenant registered 20 days before its token expires (the 90/60/30-day marks already past)
    clock, tenants, events = Clock(dt.datetime(2027, 6, 10, tzinfo=dt.UTC)), FakeTenants(), RecordingEvents()
    tenants.items[SIRET] = tenant()
    service = TokenWatchService(tenants, events, clock)
    # When token_watch runs that day, and again the next day
    service.run()
    clock.on(dt.date(2027, 6, 11))
    service.run()
    # Then a single "30 days" alert says 20 days are left, and the passed thresholds are not replayed
    assert [(k, d["days_left"], d["threshold"]) for k, d in events.published] == [
        ("tenant.token_expiring", 20, 30)
    ]
    assert sorted(tenants.items[SIRET].token_alerts_sent) == ["30", "60", "90"]


def test_prolonging_the_token_resets_the_alerts() -> None:
    # Given a tenant that received every alert, then whose token was prolonged 18 months (PUT /v1/tenants:
    # a later expiry date empties token_alerts_sent)
    clock, tenants, events = Clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), FakeTenants(), RecordingEvents()
    tenants.items[SIRET] = tenant()
    service = TokenWatchService(tenants, events, clock)
    run_daily(service, clock, EXPIRY - dt.timedelta(days=95), EXPIRY + dt.timedelta(days=1))
    assert len(events.published) == 5
    prolonged = dt.date(2028, 12, 31)
    tenants.update(
        SIRET, TenantPatch(token_expires_on=prolonged, token_alerts_sent=[], refresh_status="active")
    )
    events.published.clear()
    # When token_watch keeps running daily up to the new expiry
    run_daily(service, clock, EXPIRY + dt.timedelta(days=2), prolonged)
    # Then nothing is said until 90 days before the new date, then the whole sequence again
    assert [(k, d["expires_on"], d.get("threshold")) for k, d in events.published] == [
        ("tenant.token_expiring", "2028-12-31", 90),
        ("tenant.token_expiring", "2028-12-31", 60),
        ("tenant.token_expiring", "2028-12-31", 30),
        ("tenant.token_expiring", "2028-12-31", 15),
        ("tenant.token_expired", "2028-12-31", None),
    ]


def test_a_tenant_without_an_expiry_date_is_never_alerted() -> None:
    assert due_alert(tenant(expires_on=None), dt.date(2027, 6, 30)) is None
    clock, tenants, events = Clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), FakeTenants(), RecordingEvents()
    tenants.items[SIRET] = tenant(expires_on=None)
    report = TokenWatchService(tenants, events, clock).run()
    assert report.checked == 1 and events.published == []


def test_due_alert_is_a_pure_rule_on_the_days_left() -> None:
    assert due_alert(tenant(), EXPIRY - dt.timedelta(days=91)) is None
    assert due_alert(tenant(), EXPIRY - dt.timedelta(days=90)) == ("expiring", 90)
    assert due_alert(tenant(), EXPIRY - dt.timedelta(days=45)) == ("expiring", 60)
    assert due_alert(tenant(token_alerts_sent=["90", "60"]), EXPIRY - dt.timedelta(days=45)) is None
    assert due_alert(tenant(), EXPIRY - dt.timedelta(days=1)) == ("expiring", 15)
    assert due_alert(tenant(), EXPIRY) == ("expired", 0)
    assert due_alert(tenant(token_alerts_sent=["expired"]), EXPIRY + dt.timedelta(days=3)) is None
