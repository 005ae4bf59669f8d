"""The refresh use case and its rate governance at the service level, with an injected clock:
the Sunday maintenance window, the dispatcher's release schedule, and the pacer's rule."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from qfbridge.api_particulier.outcomes import IdentityRejected
from qfbridge.domain.identity import PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.messages import RefreshMessage
from qfbridge.services.dispatch import (
    PACE_MARGIN_SECONDS,
    RefreshDispatcher,
    pace_rule,
    release_delays,
    tenant_slots,
)
from qfbridge.services.refresh import LATE_TOLERANCE_SECONDS, RefreshService, RetryLater, late_tolerance
from qfbridge.store.families import RefreshState
from qfbridge.store.pacing import earliest_permit
from qfbridge.store.queues import SqsRefreshQueue
from qfbridge.store.tenants import Tenant
from tests.support.fakes import (
    AnsweringQfSource,
    FakeFamilies,
    FakeSecrets,
    FakeTenants,
    RecordingEvents,
)

PARIS = dt.timezone(dt.timedelta(hours=1))  # winter time: Paris is UTC+1 in December
SIRET = "21690123000012"
SUNDAY_23_10 = dt.datetime(2026, 12, 6, 23, 10, tzinfo=PARIS)
SUNDAY_22_58 = dt.datetime(2026, 12, 6, 22, 58, tzinfo=PARIS)
MONDAY_10_00 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=PARIS)
PIVOT = PivotIdentity(
    family_name="MARTIN",
    given_name="JULIE",
    gender="female",
    birthdate=dt.date(1985, 3, 4),
    birthplace="69123",
)
QF = QuotientFamilial(fournisseur="CNAF", valeur=650, annee=2026, mois=12, annee_calcul=2026, mois_calcul=11)


# --- Fakes (tests/support/fakes.py), and the queue ---------------------------------------------------


@dataclass
class Sqs:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.extend(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def active_tenant(budget: float = 4.0) -> Tenant:
    return Tenant(
        siret=SIRET, name="Commune", cog="69123", refresh_status="active", refresh_budget_rps=budget
    )


def refresh_service(
    now: dt.datetime, client: AnsweringQfSource, events: RecordingEvents, families: FakeFamilies
) -> RefreshService:
    return RefreshService(
        tenants=FakeTenants.of(active_tenant()),
        families=families,
        secrets=FakeSecrets(),
        events=events,
        client=client,
        clock=lambda: now,
        sleep=lambda seconds: None,
    )


# --- Maintenance --------------------------------------------------------------------------------------


def test_a_refresh_during_the_sunday_maintenance_waits_for_its_end_without_calling() -> None:
    # Given Sunday 23:10 Paris, in API Particulier's maintenance window (23:00–23:45)
    client, events, families = AnsweringQfSource.found(QF), RecordingEvents(), FakeFamilies(pivot=PIVOT)
    service = refresh_service(SUNDAY_23_10, client, events, families)
    # When a refresh message arrives
    with pytest.raises(RetryLater) as retry:
        service.refresh(
            RefreshMessage.model_validate({"siret": SIRET, "user_id": "f-1", "reason": "manual"}), attempt=1
        )
    # Then API Particulier is not called and the message comes back when the window closes (35 min)
    assert client.calls == 0
    assert retry.value.kind == "maintenance_window" and retry.value.delay_seconds == 35 * 60
    assert families.recorded == [] and events.published == []


def test_the_same_refresh_outside_the_window_calls_and_stores() -> None:
    client, events, families = AnsweringQfSource.found(QF), RecordingEvents(), FakeFamilies(pivot=PIVOT)
    result = refresh_service(MONDAY_10_00, client, events, families).refresh(
        RefreshMessage.model_validate({"siret": SIRET, "user_id": "f-1", "reason": "manual"})
    )
    assert client.calls == 1 and result.outcome == "qf_found" and result.changed
    assert families.recorded[0]["state"].status == "ok"
    assert (
        families.recorded[0]["next_refresh_at"] == "2027-01-04T06:00:00+00:00"
    )  # first working day after Jan 2–3
    assert [kind for kind, _ in events.published] == ["qf.updated"]


def refreshed(status: str, hours_before_monday_10: float) -> RefreshState:
    at = MONDAY_10_00 - dt.timedelta(hours=hours_before_monday_10)
    return RefreshState(status=status, last_attempt_at=at.isoformat(), last_outcome="qf_found")


def test_a_monthly_message_for_a_family_refreshed_an_hour_ago_makes_no_call() -> None:
    # Given a family an agent refreshed manually an hour ago (or a monthly message SQS delivers again)
    client, events, families = (
        AnsweringQfSource.found(QF),
        RecordingEvents(),
        FakeFamilies(pivot=PIVOT, state=refreshed("ok", 1)),
    )
    # When the monthly message arrives
    result = refresh_service(MONDAY_10_00, client, events, families).refresh(
        RefreshMessage.model_validate({"siret": SIRET, "user_id": "f-1", "reason": "monthly"})
    )
    # Then API Particulier is not called again, nothing is recorded, and the family is due next month
    assert result.outcome == "skipped_recent" and client.calls == 0
    assert families.recorded == [] and events.published == []
    assert families.deferred == {"f-1": "2027-01-04T06:00:00+00:00"}


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("manual", refreshed("ok", 1)),  # an agent's explicit request always calls
        ("monthly", refreshed("ok", 7)),  # older than the in-flight hold
        ("monthly", refreshed("not_found", 1)),  # the last refresh did not succeed
    ],
)
def test_a_refresh_still_calls_when_the_last_success_is_not_recent_or_the_agent_asked(
    reason: str, state: RefreshState
) -> None:
    client, events, families = (
        AnsweringQfSource.found(QF),
        RecordingEvents(),
        FakeFamilies(pivot=PIVOT, state=state),
    )
    result = refresh_service(MONDAY_10_00, client, events, families).refresh(
        RefreshMessage.model_validate({"siret": SIRET, "user_id": "f-1", "reason": reason})
    )
    assert result.outcome == "qf_found" and client.calls == 1


def test_a_maintenance_wait_spends_no_attempt_even_on_the_last_one() -> None:
    # Given a refresh handled during the Sunday maintenance, on what would be its last attempt
    client, events, families = AnsweringQfSource.found(QF), RecordingEvents(), FakeFamilies(pivot=PIVOT)
    service = refresh_service(SUNDAY_23_10, client, events, families)
    # When it is handled
    with pytest.raises(RetryLater) as retry:
        service.refresh(
            RefreshMessage.model_validate({"siret": SIRET, "user_id": "f-1", "reason": "manual"}),
            attempt=service.max_attempts,
        )
    # Then it waits for the end of the window without spending the attempt: nothing failed, no call
    assert not retry.value.counts and not retry.value.dead_letter
    assert retry.value.delay_seconds == 35 * 60
    assert events.published == [] and families.recorded == [] and client.calls == 0


def test_the_dispatcher_enqueues_nothing_during_the_maintenance() -> None:
    sqs, families = Sqs(), FakeFamilies(pivot=PIVOT, due_ids=["f-1", "f-2"])
    dispatcher = RefreshDispatcher(
        FakeTenants.of(active_tenant()),
        families,
        SqsRefreshQueue("queue-url", client=sqs),
        clock=lambda: SUNDAY_23_10,
    )
    report = dispatcher.run()
    assert report.skipped_maintenance and report.enqueued == 0 and sqs.sent == []


def test_the_dispatcher_releases_nothing_into_the_coming_maintenance() -> None:
    # Given 2 minutes before the window opens, and a tenant with far more due families than that fits
    sqs, families = Sqs(), FakeFamilies(pivot=PIVOT, due_ids=[f"f-{i}" for i in range(1000)])
    dispatcher = RefreshDispatcher(
        FakeTenants.of(active_tenant(budget=4)),
        families,
        SqsRefreshQueue("queue-url", client=sqs),
        clock=lambda: SUNDAY_22_58,
    )
    # When it dispatches
    report = dispatcher.run()
    # Then only what can be released before 23:00 is enqueued, the last one under two minutes ahead
    assert 0 < report.enqueued == len(sqs.sent) < 4 * 120
    assert max(entry["DelaySeconds"] for entry in sqs.sent) < 120
    assert set(families.deferred) == {entry_user(entry) for entry in sqs.sent}


def entry_user(entry: dict[str, Any]) -> str:
    import json

    return str(json.loads(entry["MessageBody"])["user_id"])


# --- Release schedule and pacing rule -----------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.5, 1.0, 1.5, 2.5, 4.0, 20.0])
def test_the_pacer_never_allows_more_than_ceil_budget_calls_in_a_second_nor_more_than_the_budget(
    budget: float,
) -> None:
    permits, window = pace_rule(budget)
    assert permits == math.ceil(budget)
    assert window >= 1.0 + PACE_MARGIN_SECONDS  # so no sliding second ever holds more than `permits`
    assert permits / window <= budget + 1e-9


@pytest.mark.parametrize("budget", [0.5, 1.0, 2.0, 4.0, 7.5])
def test_the_release_schedule_stays_under_the_pacer_in_every_window(budget: float) -> None:
    tenant = active_tenant(budget)
    rate, slots = tenant_slots(tenant, 300)
    permits, window = pace_rule(budget)
    assert rate < permits / window and rate * 300 <= slots < rate * 300 + 1
    delays = release_delays(slots, rate)
    assert delays == sorted(delays) and delays[0] == 0 and delays[-1] < 300
    # Message i is released within the second before i / rate: no second releases more than ceil(rate)
    assert all(i / rate - 1 < delay <= i / rate + 1e-9 for i, delay in enumerate(delays))
    per_second: dict[int, int] = {}
    for delay in delays:
        per_second[delay] = per_second.get(delay, 0) + 1
    assert max(per_second.values()) <= math.ceil(rate)


def test_the_dispatcher_interleaves_tenants_in_release_order() -> None:
    other = Tenant(
        siret="21750056000019", name="Autre", cog="75056", refresh_status="active", refresh_budget_rps=2
    )

    sqs, families = Sqs(), FakeFamilies(pivot=PIVOT, due_ids=[f"f-{i}" for i in range(6)])
    RefreshDispatcher(
        FakeTenants.of(active_tenant(4), other),
        families,
        SqsRefreshQueue("queue-url", client=sqs),
        clock=lambda: MONDAY_10_00,
    ).run()
    delays = [entry["DelaySeconds"] for entry in sqs.sent]
    assert delays == sorted(delays) and len(sqs.sent) == 12
    first_second = [json_body(e)["siret"] for e in sqs.sent if e["DelaySeconds"] == 0]
    assert set(first_second) == {SIRET, other.siret}


def json_body(entry: dict[str, Any]) -> dict[str, Any]:
    import json

    body: dict[str, Any] = json.loads(entry["MessageBody"])
    return body


def test_the_earliest_permit_is_the_one_used_longest_ago_and_respects_a_hold() -> None:
    rng = random.Random(1)
    uses: list[Decimal | None] = [Decimal("100.0"), Decimal("100.5"), None]
    assert earliest_permit(uses, window=1.08, now=100.6, hold=0, rng=rng).index == 2  # never used: free now
    busy: list[Decimal | None] = [Decimal("100.0"), Decimal("100.5")]
    permit = earliest_permit(busy, window=1.08, now=100.6, hold=0, rng=rng)
    assert permit.index == 0 and permit.free_at == pytest.approx(101.08)
    held = earliest_permit(busy, window=1.08, now=100.6, hold=103.0, rng=rng)
    assert held.free_at == 103.0


@pytest.mark.parametrize("budget", [0.75, 1.25, 1.75, 2.5, 4.0])
def test_a_tenants_calls_are_spread_over_the_window_and_never_more_than_its_permits_in_a_second(
    budget: float,
) -> None:
    # Given a tenant whose refreshes all wait for a permit, each taking the one free soonest
    permits, window = pace_rule(budget)
    rng = random.Random(3)
    uses: list[Decimal | None] = [None] * permits
    calls: list[float] = []
    for _ in range(40):
        permit = earliest_permit(uses, window=window, now=1000.0, hold=0, rng=rng)
        uses[permit.index] = Decimal(f"{permit.free_at:.4f}")
        calls.append(permit.free_at)
    # Then consecutive calls are a window / permits apart (the budget, evenly), not bunched
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= window / permits - 1e-3
    # And no second holds more than the permits, with the pacer's margin to spare
    assert all(
        calls[i + permits] - calls[i] >= 1.0 + PACE_MARGIN_SECONDS - 1e-3 for i in range(len(calls) - permits)
    )
    # And the rate is the budget's (integer budgets: b / 1.08)
    assert (len(calls) - 1) / (calls[-1] - calls[0]) == pytest.approx(permits / window, rel=1e-3)


# --- The in-flight hold and the consumer ------------------------------------------------------------------


def test_a_refresh_consumed_the_instant_it_is_sent_keeps_the_date_qf_refresh_wrote() -> None:
    # Given an SQS whose consumer takes each message as soon as it is sent (delay 0 on AWS can be ms)
    # and writes the family's real next date, as qf_refresh does
    families = FakeFamilies(pivot=PIVOT, due_ids=["f-1", "f-2", "f-3"])
    written_by_consumer = "2027-01-04T06:00:00+00:00"

    @dataclass
    class InstantConsumer(Sqs):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            for entry in Entries:
                families.defer(SIRET, entry_user(entry), written_by_consumer)
            return super().send_message_batch(QueueUrl, Entries)

    # When the dispatcher enqueues them
    RefreshDispatcher(
        FakeTenants.of(active_tenant(4)),
        families,
        SqsRefreshQueue("queue-url", client=InstantConsumer()),
        clock=lambda: MONDAY_10_00,
    ).run()
    # Then the in-flight hold does not overwrite what the consumer wrote
    assert families.deferred == dict.fromkeys(["f-1", "f-2", "f-3"], written_by_consumer)


def test_a_message_sqs_refuses_leaves_its_family_due_and_is_not_counted() -> None:
    families = FakeFamilies(pivot=PIVOT, due_ids=["f-1", "f-2"])

    @dataclass
    class RefusesSecond(Sqs):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.sent.extend(Entries[:1])
            return {
                "Successful": [{"Id": Entries[0]["Id"]}],
                "Failed": [
                    {"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in Entries[1:]
                ],
            }

    report = RefreshDispatcher(
        FakeTenants.of(active_tenant(4)),
        families,
        SqsRefreshQueue("queue-url", client=RefusesSecond()),
        clock=lambda: MONDAY_10_00,
    ).run()
    assert report.enqueued == 1 and report.per_tenant == {SIRET: 1}
    assert families.deferred["f-1"] > MONDAY_10_00.isoformat()  # held while in flight
    assert families.deferred["f-2"] == MONDAY_10_00.isoformat()  # due again for the next dispatch


def test_a_send_that_raises_gives_every_hold_of_its_batch_back() -> None:
    families = FakeFamilies(pivot=PIVOT, due_ids=["f-1", "f-2"])

    @dataclass
    class Down(Sqs):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            raise ConnectionError("sqs unreachable")

    with pytest.raises(ConnectionError):
        RefreshDispatcher(
            FakeTenants.of(active_tenant(4)),
            families,
            SqsRefreshQueue("queue-url", client=Down()),
            clock=lambda: MONDAY_10_00,
        ).run()
    assert families.deferred == dict.fromkeys(["f-1", "f-2"], MONDAY_10_00.isoformat())


def test_a_dispatch_told_to_stop_sends_what_it_held_and_leaves_the_rest_due() -> None:
    # Given 25 due families (three batches of ten at most) and a deadline reached after the first batch
    families = FakeFamilies(pivot=PIVOT, due_ids=[f"f-{i}" for i in range(25)])
    sqs = Sqs()
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(len(sqs.sent))
        return len(sqs.sent) >= 10

    report = RefreshDispatcher(
        FakeTenants.of(active_tenant(4)),
        families,
        SqsRefreshQueue("queue-url", client=sqs),
        clock=lambda: MONDAY_10_00,
    ).run(should_stop=should_stop)
    # Then only the first batch was held and sent; the others were neither held nor sent
    assert report.stopped_early and report.enqueued == 10 and len(sqs.sent) == 10
    assert set(families.deferred) == {entry_user(e) for e in sqs.sent}
    assert report.as_dict()["stopped_early"] is True


def test_a_dispatch_past_its_deadline_before_any_tenant_sends_nothing() -> None:
    families, sqs = FakeFamilies(pivot=PIVOT, due_ids=["f-1"]), Sqs()
    report = RefreshDispatcher(
        FakeTenants.of(active_tenant(4)),
        families,
        SqsRefreshQueue("queue-url", client=sqs),
        clock=lambda: MONDAY_10_00,
    ).run(should_stop=lambda: True)
    assert report.stopped_early and sqs.sent == [] and families.deferred == {}


def test_a_422_on_the_identity_is_recorded_with_its_codes_for_the_agent_and_announced() -> None:
    # Given API Particulier refusing the family's identity (a name it does not accept)
    families, events = FakeFamilies(pivot=PIVOT), RecordingEvents()
    service = RefreshService(
        tenants=FakeTenants.of(active_tenant()),
        families=families,
        secrets=FakeSecrets(),
        events=events,
        client=AnsweringQfSource(IdentityRejected(status=422, error_codes=("00420",))),
        clock=lambda: MONDAY_10_00,
    )
    # When the family is refreshed
    result = service.refresh(
        RefreshMessage.model_validate({"siret": SIRET, "user_id": "u1", "reason": "monthly"})
    )
    # Then its state says why (the API's code), and the event carries the same reason
    assert result.outcome == "identity_rejected"
    state = families.recorded[-1]["state"]
    assert (state.status, state.reason) == ("identity_rejected", "00420")
    assert events.published == [
        (
            "refresh.failed",
            {
                "tenant_siret": SIRET,
                "user_id": "u1",
                "outcome": "identity_rejected",
                "attempts": 1,
                "detail_code": "00420",
            },
        )
    ]


@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0, 20.0])
def test_a_late_call_never_comes_within_a_second_of_its_permits_next_one(budget: float) -> None:
    # A call may start up to late_tolerance after taking its permit; the permit's next call is taken
    # a window later: the two calls stay more than a second (and the margin) apart
    _permits, window = pace_rule(budget)
    tolerance = late_tolerance(window)
    assert tolerance == LATE_TOLERANCE_SECONDS or window - tolerance >= 1.0 + PACE_MARGIN_SECONDS - 1e-9
    # And a small budget does not waste a whole window for a slow write: 0.25 req/s tolerates ~3 s
    if budget <= 0.25:
        assert tolerance > 2.5
