"""Each API Particulier outcome of the monthly refresh, end to end on the laptop runtime.

hubee_poll's dispatcher enqueues the due families, the SQS emulator runs the real qf_refresh handler,
which calls the API Particulier sandbox over HTTP; events are read from a test queue subscribed to
the bus with an EventBridge rule, as an editor would subscribe.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qfbridge.api_particulier import ApiParticulierClient, ApiParticulierConfig
from qfbridge.domain.identity import DirectoryParent, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.domain.schedule import in_maintenance, next_maintenance_starts_at
from qfbridge.messages import RefreshMessage
from qfbridge.services.editor import TenantConfig
from qfbridge.services.refresh import NotYet, RefreshService, RetryLater
from qfbridge.store.audit import read_records
from qfbridge.store.events import EventPublisher
from qfbridge.store.families import FamilyRecord, FamilyRepository, QfEntry, family_pk, family_sk
from qfbridge.store.leases import FamilyRefreshLease
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tables import dynamodb
from qfbridge.store.tenants import TenantRepository
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from tests.support.world import World

REPO = Path(__file__).resolve().parents[2]
MAX_ATTEMPTS = 4
PAST = "2000-01-01T00:00:00+00:00"


def _maintenance_near() -> bool:
    now = dt.datetime.now(dt.UTC)
    return in_maintenance(now) or next_maintenance_starts_at(now) - now < dt.timedelta(minutes=5)


pytestmark = pytest.mark.skipif(
    _maintenance_near(), reason="API Particulier's Sunday maintenance window: the runtime's clock is real"
)


# --- Fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[ApiParticulierSandbox]:
    with ApiParticulierSandbox(seed=5, load_fixtures=False) as box:
        yield box


@pytest.fixture
def runtime(sandbox: ApiParticulierSandbox) -> Iterator[LocalRuntime]:
    options = RuntimeOptions(
        serve_api=False,
        parameter_overrides={"RefreshMaxReceiveCount": str(MAX_ATTEMPTS)},
        env_overrides={"API_PARTICULIER_URL": sandbox.url, "REFRESH_RETRY_BASE_SECONDS": "0"},
    )
    with LocalRuntime.start(options) as rt:
        yield rt


@dataclass
class EventTap:
    """A queue subscribed to every qfbridge event of the bus (what an editor's consumer would see)."""

    runtime: LocalRuntime
    url: str
    seen: list[tuple[str, dict[str, Any]]]

    def read(self, detail_type: str | None = None) -> list[dict[str, Any]]:
        sqs = self.runtime.client("sqs")
        while True:
            messages = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                event = json.loads(message["Body"])
                self.seen.append((event["detail-type"], event["detail"]))
                sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return [detail for kind, detail in self.seen if detail_type is None or kind == detail_type]


@pytest.fixture
def events(runtime: LocalRuntime) -> EventTap:
    sqs, bus = runtime.client("sqs"), runtime.environment["EVENT_BUS_NAME"]
    url = sqs.create_queue(QueueName="test-event-tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    eventbridge = runtime.client("events")
    eventbridge.put_rule(Name="test-tap", EventBusName=bus, EventPattern=json.dumps({"source": ["qfbridge"]}))
    eventbridge.put_targets(Rule="test-tap", EventBusName=bus, Targets=[{"Id": "tap", "Arn": arn}])
    return EventTap(runtime, url, [])


def assert_valid_event(detail_type: str, detail: dict[str, Any]) -> None:
    schema = json.loads((REPO / "docs" / "events" / f"{detail_type}.schema.json").read_text())
    jsonschema.validate(detail, schema)


def pivot_of(parent: DirectoryParent) -> PivotIdentity:
    return PivotIdentity(
        family_name=parent.nom_naissance,
        given_name=parent.prenoms,
        gender="female" if parent.sexe == "F" else "male",
        birthdate=parent.date_naissance,
        birthplace=parent.code_cog_naissance,
        birthcountry=parent.code_pays_naissance or "99100",
    )


@dataclass
class Town:
    siret: str
    token: str


@dataclass
class Seeded:
    user_id: str
    pivot: PivotIdentity
    qf: QuotientFamilial
    household_id: str | None


def onboard(rt: LocalRuntime, sandbox: ApiParticulierSandbox, index: int, *, budget: float = 20.0) -> Town:
    """The ``index``-th collectivité, refreshing at ``budget`` with its token ``token-<index>``."""
    town = collectivites(index + 1)[index]
    token = f"token-{index}"
    world = World(rt, api_particulier=sandbox)
    world.collectivite(
        town, refresh_budget_rps=budget, token_expires_on=dt.date.today() + dt.timedelta(days=200)
    )
    world.refresh_token(town, token)
    return Town(town.siret, token)


def seed_families(
    rt: LocalRuntime,
    sandbox: ApiParticulierSandbox,
    town: Town,
    count: int,
    *,
    seed: int,
    known: bool = True,
    pivot: PivotIdentity | None = None,
) -> list[Seeded]:
    """Families linked by a past dossier (pivot identity + QF), due now; known to CNAF when ``known``."""
    repository = FamilyRepository(rt.environment["FAMILIES_TABLE"])
    seeded = []
    for household in households(count, seed=seed, id_prefix=f"f{seed}"):
        identity = pivot or pivot_of(household.family.parents[0])
        repository.upsert(town.siret, household.family)
        entry = QfEntry(
            quotient_familial=household.qf,
            source="dossier",
            source_id=f"case-{household.family.user_id}",
            received_at="2026-10-15T10:00:00+00:00",
        )
        update = repository.link_update(
            town.siret,
            household.family.user_id,
            pivot=identity,
            entry=entry,
            members={},
            case_id=entry.source_id,
            next_refresh_at=PAST,
        )
        dynamodb().transact_write_items(TransactItems=[update])
        household_id = sandbox.add_person(identity, household.qf) if known else None
        seeded.append(Seeded(household.family.user_id, identity, household.qf, household_id))
    return seeded


def make_due(rt: LocalRuntime, town: Town, families: list[Seeded]) -> None:
    repository = FamilyRepository(rt.environment["FAMILIES_TABLE"])
    for family in families:
        repository.defer(town.siret, family.user_id, PAST)


def family(rt: LocalRuntime, town: Town, user_id: str) -> FamilyRecord:
    record = FamilyRepository(rt.environment["FAMILIES_TABLE"]).get(town.siret, user_id)
    assert record is not None
    return record


def cycle(rt: LocalRuntime) -> None:
    """One schedule tick: hubee_poll dispatches what is due, then the refresh queue drains."""
    rt.poll()
    rt.drain(timeout=60)


def dlq_depth(rt: LocalRuntime) -> int:
    return rt.queue_depth("RefreshDeadLetterQueue")


def calls(sandbox: ApiParticulierSandbox, token: str) -> list[int]:
    return [request.status for request in sandbox.requests_received() if request.token == token]


# --- 200 --------------------------------------------------------------------------------------------------


def test_a_changed_qf_is_stored_and_announced_and_an_unchanged_one_is_stored_silently(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given two linked families, one of whose QF CAF changed for this month
    town = onboard(runtime, sandbox, 0)
    changed, unchanged = seed_families(runtime, sandbox, town, 2, seed=21)
    assert changed.household_id is not None
    today = dt.date.today()
    sandbox.set_qf(changed.household_id, changed.qf.valeur + 130, annee=today.year, mois=today.month)
    # When the refresh cycle runs
    cycle(runtime)
    # Then both families hold this month's QF, with one history entry for it
    for seeded, valeur in ((changed, changed.qf.valeur + 130), (unchanged, unchanged.qf.valeur)):
        record = family(runtime, town, seeded.user_id)
        assert record.qf is not None and record.qf.quotient_familial.valeur == valeur
        assert (record.qf.quotient_familial.annee, record.qf.quotient_familial.mois) == (
            today.year,
            today.month,
        )
        assert [entry.source for entry in record.qf_history] == ["dossier", "refresh"]
        assert record.refresh.status == "ok"
        assert (
            record.next_refresh_at is not None
            and record.next_refresh_at > dt.datetime.now(dt.UTC).isoformat()
        )
    # And only the changed one is announced, with its previous value
    updated = events.read("qf.updated")
    assert [(e["user_id"], e["quotient_familial"], e.get("previous_quotient_familial")) for e in updated] == [
        (changed.user_id, changed.qf.valeur + 130, changed.qf.valeur)
    ]
    assert_valid_event("qf.updated", updated[0])
    # And every call bypassed API Particulier's 24 h cache
    assert all(request.cache_control == "no-cache" for request in sandbox.requests_received())


def test_a_second_refresh_in_the_same_month_adds_no_history_entry_and_no_event(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a family refreshed once this month
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=22)
    cycle(runtime)
    first = family(runtime, town, seeded[0].user_id)
    # When an agent refreshes it again in the same month (POST …/refresh)
    runtime.editor_service().refresh_now(town.siret, seeded[0].user_id)
    runtime.drain(timeout=60)
    # Then the API was asked twice, but the history holds one entry for the month and nothing is announced
    assert calls(sandbox, town.token) == [200, 200]
    second = family(runtime, town, seeded[0].user_id)
    assert len(second.qf_history) == len(first.qf_history) == 2
    assert second.qf == first.qf
    assert events.read("qf.updated") == []


def test_a_monthly_message_for_a_family_just_refreshed_makes_no_second_call(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a family refreshed by this month's cycle
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=27)
    cycle(runtime)
    first = family(runtime, town, seeded[0].user_id)
    # When a monthly message for it arrives again within hours (SQS delivering twice, a manual refresh
    # answered while the monthly one waited in the queue)
    make_due(runtime, town, seeded)
    cycle(runtime)
    # Then API Particulier is not called again, and the family is as it was, due next month
    assert calls(sandbox, town.token) == [200]
    second = family(runtime, town, seeded[0].user_id)
    assert second.qf_history == first.qf_history and second.refresh == first.refresh
    assert second.next_refresh_at == first.next_refresh_at
    assert dlq_depth(runtime) == 0


# --- 404 --------------------------------------------------------------------------------------------------


def test_a_family_not_found_stays_in_the_cycle_and_is_reported_after_three_misses_in_a_row(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a linked family CAF/MSA does not know (any more)
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=23, known=False)
    user_id = seeded[0].user_id
    counts = []
    # When three monthly cycles miss it
    for cycle_number in range(3):
        if cycle_number:
            make_due(runtime, town, seeded)
        cycle(runtime)
        record = family(runtime, town, user_id)
        counts.append(
            (record.refresh.status, record.refresh.not_found_count, len(events.read("refresh.failed")))
        )
    # Then the misses are counted, it stays due next month, and refresh.failed comes with the third
    assert counts == [("not_found", 1, 0), ("not_found", 2, 0), ("not_found", 3, 1)]
    assert calls(sandbox, town.token) == [404, 404, 404]
    failed = events.read("refresh.failed")[0]
    assert failed == {
        "tenant_siret": town.siret,
        "user_id": user_id,
        "outcome": "not_found",
        "attempts": 1,
        "detail_code": "3_in_a_row",
    }
    assert_valid_event("refresh.failed", failed)
    record = family(runtime, town, user_id)
    assert record.next_refresh_at is not None and record.next_refresh_at > dt.datetime.now(dt.UTC).isoformat()
    assert record.qf is not None and record.qf.source == "dossier"  # the last known QF is kept


def test_each_call_reading_a_familys_identity_leaves_one_audit_record(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given two linked families due for their monthly refresh
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 2, seed=29)
    # When the cycle runs
    cycle(runtime)
    # Then each call to API Particulier (it sends the pivot identity) is in the audit trail, once
    records = [
        r
        for r in read_records(runtime.environment["AUDIT_LOG_GROUP"], tenant_siret=town.siret)
        if r["route"] == "pipeline:qf_refresh"
    ]
    assert sorted(r["user_id"] for r in records) == sorted(s.user_id for s in seeded)
    assert {(r["action"], r["actor"], r["principal"]) for r in records} == {
        ("family.identity_read.monthly", "service", "qfbridge:service")
    }
    assert len(records) == len([r for r in sandbox.requests_received() if r.status == 200])


# --- 422 --------------------------------------------------------------------------------------------------


def test_a_rejected_identity_takes_the_family_out_of_the_refresh_cycle(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a family whose stored pivot identity API Particulier refuses (digits in the name: 422 00366)
    town = onboard(runtime, sandbox, 0)
    malformed = PivotIdentity(
        family_name="DUPONT2",
        given_name="MARIE",
        gender="female",
        birthdate=dt.date(1985, 3, 4),
        birthplace="75056",
    )
    seeded = seed_families(runtime, sandbox, town, 1, seed=24, known=False, pivot=malformed)
    # When the cycle runs
    cycle(runtime)
    # Then the family is marked with the reason, reported, and no longer due: later cycles leave it alone
    record = family(runtime, town, seeded[0].user_id)
    assert record.refresh.status == "identity_rejected" and record.next_refresh_at is None
    assert record.pivot_identity is None  # of no further use: not kept
    assert record.refresh.reason == "name_not_accepted"  # a digit has no form the API accepts: no call
    families = FamilyRepository(runtime.environment["FAMILIES_TABLE"])
    assert families.due(town.siret, "9999-12-31", 10) == []
    failed = events.read("refresh.failed")
    assert [(e["user_id"], e["outcome"], e["detail_code"]) for e in failed] == [
        (seeded[0].user_id, "identity_rejected", "name_not_accepted")
    ]
    assert_valid_event("refresh.failed", failed[0])
    before = len(sandbox.requests_received())
    cycle(runtime)
    assert len(sandbox.requests_received()) == before


def test_names_the_api_refuses_as_written_are_sent_in_the_form_it_accepts(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a family whose FranceConnect identity holds a typographic apostrophe, a ligature and a
    # letter beyond Latin-1 (API Particulier refuses all three with a 422), known to CNAF
    town = onboard(runtime, sandbox, 0)
    stored = PivotIdentity(
        family_name="D’ALMEIDA-CŒURDEROI",
        given_name="Łukasz Zoë",
        gender="male",
        birthdate=dt.date(1984, 5, 6),
        birthplace="75056",
    )
    seeded = seed_families(runtime, sandbox, town, 1, seed=25, known=False, pivot=stored)
    sandbox.add_person(
        stored.model_copy(update={"family_name": "D'ALMEIDA-COEURDEROI", "given_name": "Lukasz Zoë"}),
        seeded[0].qf,
    )
    # When the cycle runs
    cycle(runtime)
    # Then the QF is refreshed, with the names in the form the API accepts
    record = family(runtime, town, seeded[0].user_id)
    assert record.refresh.status == "ok" and calls(sandbox, town.token) == [200]
    query = sandbox.requests_received()[-1].query
    assert ("nomNaissance", "D'ALMEIDA-COEURDEROI") in query
    assert [value for key, value in query if key == "prenoms[]"] == ["Lukasz", "Zoë"]
    # And the stored identity is the one received
    assert record.pivot_identity == stored
    assert events.read("refresh.failed") == []


# --- one refresh of a family at a time ---------------------------------------------------------------------


def refresh_service(runtime: LocalRuntime, sandbox: ApiParticulierSandbox) -> RefreshService:
    """qf_refresh's use case wired as the function wires it, to run two refreshes side by side."""
    env = runtime.environment
    return RefreshService(
        tenants=TenantRepository(env["TENANTS_TABLE"]),
        families=FamilyRepository(env["FAMILIES_TABLE"]),
        pacer=TenantPacer(env["TENANTS_TABLE"]),
        leases=FamilyRefreshLease(env["FAMILIES_TABLE"]),
        secrets=SecretStore(env["TENANT_SECRETS_PREFIX"]),
        events=EventPublisher(env["EVENT_BUS_NAME"]),
        client=ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url)),
    )


def test_a_second_refresh_of_a_family_in_flight_waits_for_the_first_instead_of_earning_a_409(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a family, and CNAF taking a while to answer (API Particulier answers 409 to the same
    # request of the same token meanwhile)
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=33)
    sandbox.set_provider_latency(0.6)
    service = refresh_service(runtime, sandbox)
    message = RefreshMessage(siret=town.siret, user_id=seeded[0].user_id, reason="manual")
    outcomes: list[str] = []
    # When a second refresh of the family is handled while the first one's call is in flight
    first = threading.Thread(target=lambda: outcomes.append(service.refresh(message).outcome))
    first.start()
    deadline = time.monotonic() + 10
    while not sandbox.requests_received() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RetryLater) as second:
        service.refresh(message, attempt=1)
    first.join()
    # Then the second made no call and waits for the first, without spending an attempt
    assert outcomes == ["qf_found"] and calls(sandbox, town.token) == [200]
    assert second.value.kind == "family_busy" and not second.value.counts
    # And once the first is done, the second goes through: never a 409
    assert service.refresh(message, attempt=1).outcome == "qf_found"
    assert calls(sandbox, town.token) == [200, 200]


def lease_of(rt: LocalRuntime, town: Town, user_id: str) -> Any:
    item = dynamodb().get_item(
        TableName=rt.environment["FAMILIES_TABLE"],
        Key={"pk": family_pk(town.siret), "sk": family_sk(user_id)},
        ConsistentRead=True,
    )["Item"]
    return item.get("refresh_lease")


def test_the_write_storing_the_outcome_gives_the_lease_back(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a family due for its refresh
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=34)
    service = refresh_service(runtime, sandbox)
    # When it is refreshed
    message = RefreshMessage(siret=town.siret, user_id=seeded[0].user_id, reason="manual")
    assert service.refresh(message).outcome == "qf_found"
    # Then its QF is stored and no lease is left on it
    record = family(runtime, town, seeded[0].user_id)
    assert record.refresh.status == "ok" and [e.source for e in record.qf_history] == ["dossier", "refresh"]
    assert lease_of(runtime, town, seeded[0].user_id) is None


def test_an_outcome_is_stored_on_a_stale_read_and_leaves_another_refreshs_lease_alone(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a family read by a refresh holding its lease, whose QF a dossier then changed, and whose
    # lease another refresh then took (the first one's had expired)
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=35)
    user_id = seeded[0].user_id
    families = FamilyRepository(runtime.environment["FAMILIES_TABLE"])
    leases = FamilyRefreshLease(runtime.environment["FAMILIES_TABLE"])
    now = time.time()
    read = leases.acquire_family(town.siret, user_id, "first", now=now, seconds=60)
    assert isinstance(read, FamilyRecord)
    newer = QfEntry(
        quotient_familial=seeded[0].qf.model_copy(update={"valeur": 999, "mois": 11}),
        source="dossier",
        source_id="case-newer",
        received_at="2026-11-20T10:00:00+00:00",
    )
    assert families.record_refresh(town.siret, user_id, entry=newer, state=read.refresh, next_refresh_at=PAST)
    assert leases.acquire(town.siret, user_id, "second", now=now + 61, seconds=60) == "acquired"
    # When the first refresh stores its outcome on what it read, giving its lease back
    entry = QfEntry(
        quotient_familial=seeded[0].qf.model_copy(update={"valeur": 700, "mois": 12}),
        source="refresh",
        source_id="2026-12",
        received_at="2026-12-07T10:00:00+00:00",
    )
    state = read.refresh.model_copy(update={"status": "ok"})
    stored = families.record_refresh(
        town.siret, user_id, entry=entry, state=state, next_refresh_at=PAST, known=read, lease_holder="first"
    )
    # Then the outcome is stored on the family as it is now (the dossier's entry kept)
    record = family(runtime, town, user_id)
    assert stored and record.refresh.status == "ok"
    assert [e.source_id for e in record.qf_history][-2:] == ["case-newer", "2026-12"]
    # And the second refresh's lease is left to it
    assert lease_of(runtime, town, user_id)["holder"] == "second"


def test_a_refresh_takes_its_permit_before_waiting_for_it(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a tenant at 1 req/s (one permit per 1.08 s) whose permit was used a tenth of a second ago
    town = onboard(runtime, sandbox, 0, budget=1.0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=36)
    pacer = TenantPacer(runtime.environment["TENANTS_TABLE"])
    rule = lambda tenant: (1, 1.08)  # noqa: E731 - pace_rule(1.0)
    looked = pacer.look(town.siret, rule=rule, now=time.time)
    assert looked is not None and pacer.take(town.siret, looked[1], at=time.time() - 0.1)
    seen: list[float] = []

    def sleep(seconds: float) -> None:
        # What another refresh of the tenant looking now would see: the permit free a window later
        other = pacer.look(town.siret, rule=rule, now=time.time)
        assert other is not None
        seen.append(other[1].free_at - time.time())
        time.sleep(seconds)

    service = refresh_service(runtime, sandbox)
    service.sleep = sleep
    # When a refresh of the tenant waits for the permit
    message = RefreshMessage(siret=town.siret, user_id=seeded[0].user_id, reason="manual")
    assert service.refresh(message).outcome == "qf_found"
    # Then, while it waited, the permit was already recorded at the instant of its call: another
    # refresh would have waited for the next window, not for the same instant
    assert seen and seen[0] > 1.0
    assert calls(sandbox, town.token) == [200]


def use_the_permit(runtime: LocalRuntime, town: Any, *, window: float) -> Any:
    """Take ``town``'s one permit of ``window`` seconds now, as a refresh just did; returns the look."""
    pacer = TenantPacer(runtime.environment["TENANTS_TABLE"])
    looked = pacer.look(town.siret, rule=lambda tenant: (1, window), now=time.time)
    assert looked is not None and pacer.take(town.siret, looked[1], at=time.time())
    return looked


def test_a_refresh_allowed_to_defer_says_when_its_permit_frees_and_writes_nothing(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a tenant at 1 req/s whose permit was just used
    town = onboard(runtime, sandbox, 0, budget=1.0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=37)
    looked = use_the_permit(runtime, town, window=1.08)
    before = family(runtime, town, seeded[0].user_id)
    # When a refresh of it may let other records go first
    message = RefreshMessage(siret=town.siret, user_id=seeded[0].user_id, reason="monthly", admitted=True)
    with pytest.raises(NotYet) as deferred:
        refresh_service(runtime, sandbox).refresh(message, may_defer=True)
    # Then it says when the permit frees, and neither called nor wrote anything
    assert deferred.value.at == pytest.approx(float(looked[1].free_at) + 1.08, abs=0.2)
    assert calls(sandbox, town.token) == []
    assert family(runtime, town, seeded[0].user_id) == before
    assert lease_of(runtime, town, seeded[0].user_id) is None


def test_a_refresh_whose_permit_is_seconds_away_goes_back_to_the_queue_without_taking_the_lease(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox
) -> None:
    # Given a tenant at 0.25 req/s (one permit per 4 s) whose permit was just used
    town = onboard(runtime, sandbox, 0, budget=0.25)
    seeded = seed_families(runtime, sandbox, town, 1, seed=38)
    use_the_permit(runtime, town, window=4.0)
    # When a monthly refresh of it is handled
    message = RefreshMessage(siret=town.siret, user_id=seeded[0].user_id, reason="monthly", admitted=True)
    with pytest.raises(RetryLater) as retry:
        refresh_service(runtime, sandbox).refresh(message)
    # Then it goes back to the queue until shortly before the permit frees, spending no attempt
    assert retry.value.kind == "paced" and not retry.value.counts and 1 <= retry.value.delay_seconds <= 3
    assert calls(sandbox, town.token) == []
    assert lease_of(runtime, town, seeded[0].user_id) is None


# --- 401 --------------------------------------------------------------------------------------------------


def test_an_expired_token_stops_its_tenant_once_and_a_later_expiry_date_resumes_it(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a tenant (4 req/s) whose token has just expired, with six due families, and another tenant
    expired = onboard(runtime, sandbox, 0, budget=4)
    other = onboard(runtime, sandbox, 1)
    stopped_families = seed_families(runtime, sandbox, expired, 6, seed=25)
    other_families = seed_families(runtime, sandbox, other, 2, seed=26)
    sandbox.expire_token(expired.token)
    tenants = TenantRepository(runtime.environment["TENANTS_TABLE"])
    # When the cycle runs
    cycle(runtime)
    # Then the tenant is stopped after its first 401: its other families are not called
    tenant = tenants.get(expired.siret)
    assert tenant is not None and tenant.refresh_status == "token_expired"
    assert calls(sandbox, expired.token) == [401]
    # And the editor hears it once
    expired_events = events.read("tenant.token_expired")
    assert tenant.token_expires_on is not None
    assert expired_events == [
        {
            "tenant_siret": expired.siret,
            "expires_on": tenant.token_expires_on.isoformat(),
            "detected_by": "api_particulier_401",
        }
    ]
    assert_valid_event("tenant.token_expired", expired_events[0])
    # And the other tenant is refreshed as usual
    assert calls(sandbox, other.token) == [200, 200]
    # And every family of the stopped tenant stays due, nothing refreshed, nothing dead-lettered
    families = FamilyRepository(runtime.environment["FAMILIES_TABLE"])
    now = dt.datetime.now(dt.UTC).isoformat()
    assert sorted(families.due(expired.siret, now, 100)) == sorted(f.user_id for f in stopped_families)
    assert all(family(runtime, expired, f.user_id).refresh.status != "ok" for f in stopped_families)
    assert dlq_depth(runtime) == 0
    # And later cycles leave the stopped tenant alone
    cycle(runtime)
    assert calls(sandbox, expired.token) == [401]

    # When the collectivité prolongs its token and the editor sets the new expiry date (PUT /v1/tenants)
    sandbox.prolong_token(expired.token)
    assert tenant.token_expires_on is not None
    runtime.editor_service().put_tenant(
        expired.siret,
        TenantConfig(
            name=tenant.name,
            cog=tenant.cog,
            refresh_budget_rps=4,
            token_expires_on=tenant.token_expires_on + dt.timedelta(days=540),
        ),
    )
    resumed = tenants.get(expired.siret)
    assert resumed is not None and resumed.refresh_status == "active" and resumed.token_alerts_sent == []
    cycle(runtime)
    # Then every family of the tenant is refreshed at the next cycle, and no new alert is raised
    assert sorted(calls(sandbox, expired.token)) == [200] * 6 + [401]
    assert all(family(runtime, expired, f.user_id).refresh.status == "ok" for f in stopped_families)
    assert len(events.read("tenant.token_expired")) == 1
    assert all(family(runtime, other, f.user_id).refresh.status == "ok" for f in other_families)


def test_a_token_replaced_through_the_api_is_used_at_once_not_after_the_cache_expires(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a tenant whose refreshes ran with its token (qf_refresh has it cached)
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 2, seed=31)
    cycle(runtime)
    assert calls(sandbox, town.token) == [200, 200]
    # When the collectivité gets a new token, the old one stops working, and the editor PUTs it
    sandbox.add_token("renewed-token", {town.siret})
    sandbox.expire_token(town.token)
    runtime.editor_service().store_credentials(
        town.siret,
        TenantCredentials(
            hubee_client_id="client-id",
            hubee_client_secret="client-secret",
            api_particulier_token="renewed-token",
        ),
    )
    for seeded_family in seeded:  # the agent asks for a refresh now
        runtime.editor_service().refresh_now(town.siret, seeded_family.user_id)
    runtime.drain(timeout=60)
    # Then the new token is used at once: no 401, the tenant is not stopped, no alert
    assert calls(sandbox, town.token) == [200, 200]
    assert calls(sandbox, "renewed-token") == [200, 200]
    tenant = TenantRepository(runtime.environment["TENANTS_TABLE"]).get(town.siret)
    assert tenant is not None and tenant.refresh_status == "active"
    assert events.read("tenant.token_expired") == []


def test_a_401_reads_the_secret_again_before_declaring_the_token_expired(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a tenant whose token qf_refresh has cached, replaced in Secrets Manager by an operator
    # (not through the API: the tenant records no new version)
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=32)
    cycle(runtime)
    sandbox.add_token("operator-token", {town.siret})
    sandbox.expire_token(town.token)
    SecretStore(runtime.environment["TENANT_SECRETS_PREFIX"]).write_tenant(
        town.siret,
        TenantCredentials(api_particulier_token="operator-token"),
    )
    # When the next refresh (asked by an agent) meets a 401 with the cached token
    runtime.editor_service().refresh_now(town.siret, seeded[0].user_id)
    runtime.drain(timeout=60)
    # Then it reads the secret again, and the new token's call succeeds: the tenant is not stopped
    assert calls(sandbox, town.token) == [200, 401]
    assert calls(sandbox, "operator-token") == [200]
    assert family(runtime, town, seeded[0].user_id).refresh.status == "ok"
    tenant = TenantRepository(runtime.environment["TENANTS_TABLE"]).get(town.siret)
    assert tenant is not None and tenant.refresh_status == "active"
    assert events.read("tenant.token_expired") == []


# --- 429 and 503 ------------------------------------------------------------------------------------------


def test_throttled_refreshes_wait_for_retry_after_and_then_succeed(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given a tenant whose budget (20 req/s) is above what API Particulier grants its token (1 req/s)
    town = onboard(runtime, sandbox, 0, budget=20)
    seeded = seed_families(runtime, sandbox, town, 3, seed=27)
    sandbox.set_rate_limit(town.token, 1)
    # When the cycle runs
    cycle(runtime)
    # Then the 429s were answered by waiting (the messages came back after Retry-After), and all succeed
    statuses = calls(sandbox, town.token)
    assert statuses.count(200) == 3 and 429 in statuses
    assert runtime.triggers is not None
    assert runtime.triggers.source_for("RefreshQueue").stats.failed_records >= 1
    assert all(family(runtime, town, f.user_id).refresh.status == "ok" for f in seeded)
    # And the token's hold made the other refreshes wait rather than pile up 429s
    assert statuses.count(429) <= 2
    assert dlq_depth(runtime) == 0 and events.read("refresh.failed") == []


def test_a_maintenance_503_delays_the_refresh_by_retry_in_and_then_it_succeeds(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given API Particulier in maintenance, announcing it is back in one second
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=28)
    sandbox.set_maintenance(True, retry_in_seconds=1)
    # When the family's refresh is handled once
    runtime.poll()
    assert runtime.triggers is not None
    source = runtime.triggers.source_for("RefreshQueue")
    assert source.poll_once() == 1
    # Then it got a 503 and its message waits on the queue (not dead-lettered, not deleted)
    assert calls(sandbox, town.token) == [503]
    assert source.stats.failed_records == 1 and runtime.queue_depth("RefreshQueue") == 1
    assert family(runtime, town, seeded[0].user_id).refresh.status == "pending"
    # When the maintenance ends and the queue is drained
    sandbox.set_maintenance(False)
    runtime.drain(timeout=30)
    # Then the refresh succeeds at its second attempt
    assert calls(sandbox, town.token) == [503, 200]
    assert family(runtime, town, seeded[0].user_id).refresh.status == "ok"
    assert dlq_depth(runtime) == 0 and events.read("refresh.failed") == []


# --- 502 --------------------------------------------------------------------------------------------------


def test_a_provider_error_is_retried_and_succeeds_when_the_provider_recovers(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=29)
    sandbox.inject("502", times=MAX_ATTEMPTS - 1)
    cycle(runtime)
    assert calls(sandbox, town.token) == [502] * (MAX_ATTEMPTS - 1) + [200]
    assert family(runtime, town, seeded[0].user_id).refresh.status == "ok"
    assert dlq_depth(runtime) == 0 and events.read("refresh.failed") == []


def test_a_provider_error_on_every_attempt_ends_in_the_dlq_with_a_refresh_failed_event(
    runtime: LocalRuntime, sandbox: ApiParticulierSandbox, events: EventTap
) -> None:
    # Given CAF failing (502) for longer than the queue's attempts
    town = onboard(runtime, sandbox, 0)
    seeded = seed_families(runtime, sandbox, town, 1, seed=30)
    sandbox.inject("502", times=MAX_ATTEMPTS + 5)
    # When the cycle runs
    cycle(runtime)
    # Then the refresh was tried REFRESH_MAX_ATTEMPTS times, then dead-lettered, and reported once
    assert calls(sandbox, town.token) == [502] * MAX_ATTEMPTS
    assert dlq_depth(runtime) == 1
    failed = events.read("refresh.failed")
    assert failed == [
        {
            "tenant_siret": town.siret,
            "user_id": seeded[0].user_id,
            "outcome": "provider_error",
            "attempts": MAX_ATTEMPTS,
        }
    ]
    assert_valid_event("refresh.failed", failed[0])
    # And the family is due again next month, with its last known QF kept
    record = family(runtime, town, seeded[0].user_id)
    assert record.refresh.status == "failed" and record.refresh.last_outcome == "provider_error"
    assert record.next_refresh_at is not None and record.next_refresh_at > dt.datetime.now(dt.UTC).isoformat()
    assert record.qf is not None and record.qf.source == "dossier"
