"""The HubEE intake protocol on the laptop runtime against the HubEE sandbox.

hubee_poll and reconcile are the real handlers, run by the runtime's triggers; HubEE is the sandbox
over real HTTP; the published events are read from an SQS queue that an EventBridge rule of the
test feeds. The plain happy path (a new dossier, end to end) is
``tests/e2e/test_intake_pipeline.py::test_a_new_dossier_is_linked_by_identity_and_acknowledged``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qfbridge.domain.errors import DossierError
from qfbridge.hubee import PROCESS_TOKEN_CACHE, Download, HubeeClient, HubeeConfig, HubeeCredentials
from qfbridge.services.editor import TenantConfig
from qfbridge.services.reconcile import verify_download
from qfbridge.store.audit import read_records
from qfbridge.store.dossiers import DossierRecord, DossierRepository
from qfbridge.store.families import FamilyRepository
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import Tenant, TenantRepository
from qfbridge_local.population import Collectivite, Household, collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import DepositedCase, HubeeSandbox
from tests.support.journal_faults import AUDIT_WRITTEN, CRASH_POINTS, AuditFaults, JournalFaults
from tests.support.world import World

LIST_NOTIFICATIONS = ("GET", "/notifications")
DELETE_NOTIFICATION = ("DELETE", "/notifications/{notificationId}")
GET_ATTACHMENT = ("GET", "/cases/{caseId}/attachments/{attachmentId}")
TOWN_A, TOWN_B, TOWN_X = collectivites(3)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def hubee() -> Iterator[HubeeSandbox]:
    PROCESS_TOKEN_CACHE.clear()  # token counts must not depend on an earlier test's sandbox
    with HubeeSandbox(seed=5) as sandbox:
        yield sandbox
    PROCESS_TOKEN_CACHE.clear()


@pytest.fixture
def runtime(hubee: HubeeSandbox) -> Iterator[LocalRuntime]:
    # The template's processing lease is kept: two deliveries of one case never run at once.
    options = RuntimeOptions(
        serve_api=False, env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url}
    )
    with LocalRuntime.start(options) as rt:
        yield rt


@dataclass
class PublishedEvents:
    """Everything put on the qfbridge bus, read from an SQS queue that a catch-all rule targets."""

    sqs: Any
    queue_url: str
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def all(self) -> list[tuple[str, dict[str, Any]]]:
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return list(self.seen)
            for message in messages:
                envelope = json.loads(message["Body"])
                self.seen.append((envelope["detail-type"], envelope["detail"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [detail for kind, detail in self.all() if kind == detail_type]

    def kinds_for_case(self, case_id: str) -> Counter[str]:
        return Counter(kind for kind, detail in self.all() if detail.get("case_id") == case_id)


@pytest.fixture
def published(runtime: LocalRuntime) -> PublishedEvents:
    sqs, events = runtime.client("sqs"), runtime.client("events")
    bus = runtime.environment["EVENT_BUS_NAME"]
    queue_url = sqs.create_queue(QueueName="test-published-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="test-every-event", EventBusName=bus, EventPattern=json.dumps({"source": ["qfbridge"]})
    )
    events.put_targets(Rule="test-every-event", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return PublishedEvents(sqs, queue_url)


# ---------------------------------------------------------------------------- arranging


@pytest.fixture
def world(runtime: LocalRuntime, hubee: HubeeSandbox) -> World:
    return World(runtime, hubee=hubee)


def deposit(hubee: HubeeSandbox, town: Collectivite, household: Household) -> DepositedCase:
    return hubee.deposit_formulaire_qf(town.siret, town.cog, household.formulaire())


def record_of(rt: LocalRuntime, case_id: str) -> DossierRecord | None:
    return DossierRepository(rt.environment["DOSSIERS_TABLE"]).get(case_id)


def qf_of(rt: LocalRuntime, town: Collectivite, household: Household) -> int | None:
    family = FamilyRepository(rt.environment["FAMILIES_TABLE"]).get(town.siret, household.family.user_id)
    return family.qf.quotient_familial.valeur if family is not None and family.qf is not None else None


def tenant(rt: LocalRuntime, town: Collectivite) -> Tenant:
    return TenantRepository(rt.environment["TENANTS_TABLE"]).require(town.siret)


def intake_calls(hubee: HubeeSandbox) -> int:
    """HubEE calls made to handle notifications: everything but listing them (tokens aren't counted)."""
    calls = hubee.calls
    return sum(calls.values()) - calls[LIST_NOTIFICATIONS]


class SimulatedCrash(Exception):
    """The Lambda dies between two steps of the journal."""


# ---------------------------------------------------------------------------- the protocol


def test_every_dossier_costs_at_most_five_calls_and_its_closed_event_three(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given two tenants with their own credentials, and a family of each filling the form
    world.onboard(TOWN_A, "client-a")
    world.onboard(TOWN_B, "client-b")
    people = households(2, seed=21)
    towns = [TOWN_A, TOWN_B]
    for town, household in zip(towns, people, strict=True):
        world.directory(town, [household.family])
    cases = [deposit(hubee, town, h) for town, h in zip(towns, people, strict=True)]
    # When the poll runs and reconcile handles the dossiers
    runtime.poll()
    runtime.drain()
    # Then each dossier has exactly one outcome, reached with at most 5 HubEE calls each
    assert intake_calls(hubee) <= 5 * len(cases)
    assert hubee.calls[DELETE_NOTIFICATION] == len(cases)
    for case, town, household in zip(cases, towns, people, strict=True):
        record = record_of(runtime, case.case_id)
        assert record is not None and record.outcome == "linked" and record.tenant_siret == town.siret
        assert qf_of(runtime, town, household) == household.qf.valeur
        assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
        assert published.kinds_for_case(case.case_id) == Counter({"dossier.linked": 1})
    # When the form closes the cases and the next cycle acknowledges the CLOSED events
    hubee.reset_counters()
    runtime.poll()
    runtime.drain()
    # Then each CLOSED costs at most 3 calls and nothing is left pending
    assert 0 < intake_calls(hubee) <= 3 * len(cases)
    assert hubee.pending_notification_ids() == []
    for case in cases:
        closed = [e for e in hubee.case_snapshot(case.case_id)["events"] if e["caseNewStatus"] == "CLOSED"]
        assert [e["status"] for e in closed] == ["RECEIVED"]


def test_a_notification_delivered_twice_gives_one_outcome_and_one_status_of_each(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a dossier whose notification HubEE serves twice in a page, then again at the next poll
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=22)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    hubee.inject("duplicate_notification", route="GET /notifications", times=2)
    # When two polls run before reconcile catches up
    runtime.poll()
    runtime.poll()
    assert hubee.faults_injected["duplicate_notification"] == 2
    # Then it is queued once: the second poll sees it in flight
    assert runtime.queue_depth("DossiersQueue") == 1
    runtime.drain()
    # Then one outcome, one SI_RECEIVED, one DONE, one event, and the notification is acknowledged
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked"
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
    assert published.kinds_for_case(case.case_id) == Counter({"dossier.linked": 1})
    assert len(published.of("qf.updated")) == 1
    assert case.notification_id not in hubee.pending_notification_ids()


def test_the_crash_points_fire_once_each_after_the_write_that_makes_their_step_durable(
    runtime: LocalRuntime, hubee: HubeeSandbox, world: World
) -> None:
    # Given a dossier of a family of the directory (an automatic link, audited), and reconcile's
    # dossier store and audit trail wrapped as the crash tests wrap them, recording instead of crashing
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=28)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    runtime.functions["ReconcileFunction"].load()
    service = sys.modules["qfbridge_fn_reconcile_app"].service()
    store, trail = service.dossiers, service.audit
    fired: list[tuple[str, str, bool]] = []

    def record_step(case_id: str, step: str) -> None:
        durable = (
            trail.contains(request_id=case_id, action="dossier.auto_link.identity")
            if step == AUDIT_WRITTEN
            else (record := store.get(case_id)) is not None and record.done(step)
        )
        fired.append((case_id, step, durable))

    service.dossiers = JournalFaults(store, record_step)
    service.audit = AuditFaults(trail, record_step)
    # When the poll runs and reconcile handles the dossier
    runtime.poll()
    runtime.drain()
    # Then every crash point fired, once, for that case, with its step already durable
    assert record_of(runtime, case.case_id) is not None
    points = [(case_id, step, durable) for case_id, step, durable in fired if step in CRASH_POINTS]
    assert sorted(points) == sorted((case.case_id, step, True) for step in CRASH_POINTS)


CRASH_STEPS = ("persisted", "si_received", "final_status")


def test_a_crash_between_persisting_and_deleting_resumes_without_posting_a_status_twice(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given three dossiers, and reconcile dying once right after each step between persisting and deleting
    world.onboard(TOWN_A, "client-a")
    people = households(3, seed=23)
    for household in people:
        world.directory(TOWN_A, [household.family])
    cases = [deposit(hubee, TOWN_A, household) for household in people]
    runtime.functions["ReconcileFunction"].load()
    crashes: list[str] = []

    def crash_once_per_step(case_id: str, step: str) -> None:
        if step in CRASH_STEPS and step not in crashes:
            crashes.append(step)
            raise SimulatedCrash(step)

    service = sys.modules["qfbridge_fn_reconcile_app"].service()
    service.dossiers = JournalFaults(service.dossiers, crash_once_per_step)
    # A crash right after a first delivery's first write leaves the lease it took, as a real one
    # would: the redelivery stands for one that comes once that lease expired.
    service.lease_seconds = 0
    # When the poll runs and the SQS retries re-run the failed messages
    runtime.poll()
    runtime.drain()
    # Then every re-run resumed from the journal: downloaded once, each status posted once, acknowledged
    assert sorted(crashes) == sorted(CRASH_STEPS)
    for case, household in zip(cases, people, strict=True):
        record = record_of(runtime, case.case_id)
        assert record is not None and record.outcome == "linked"
        assert {"persisted", "si_received", "final_status", "notification_deleted", "published"} <= set(
            record.steps
        )
        assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
        assert hubee.calls_by_case(case.case_id)[GET_ATTACHMENT] == 1
        assert qf_of(runtime, TOWN_A, household) == household.qf.valeur
        assert published.kinds_for_case(case.case_id) == Counter({"dossier.linked": 1})
        assert case.notification_id not in hubee.pending_notification_ids()


class FailingFirstWrite:
    """The audit trail, unavailable for its first write (CloudWatch Logs throttling, a network error)."""

    def __init__(self, trail: Any) -> None:
        self.trail = trail
        self.failed = False

    def write(self, record: Any) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("audit trail unavailable")
        self.trail.write(record)

    def contains(self, **kwargs: Any) -> bool:
        return bool(self.trail.contains(**kwargs))


def test_an_automatic_link_leaves_exactly_one_audit_record_when_its_write_fails_or_the_lambda_dies_after_it(
    runtime: LocalRuntime, hubee: HubeeSandbox, world: World
) -> None:
    # Given two dossiers of families of the directory; the first audit write fails, and reconcile dies
    # right after the first one that succeeds (before its journal records it)
    world.onboard(TOWN_A, "client-a")
    people = households(2, seed=27)
    for household in people:
        world.directory(TOWN_A, [household.family])
    cases = [deposit(hubee, TOWN_A, household) for household in people]
    runtime.functions["ReconcileFunction"].load()
    service = sys.modules["qfbridge_fn_reconcile_app"].service()
    crashes: list[str] = []

    def crash_once(case_id: str, step: str) -> None:
        if not crashes:
            crashes.append(step)
            raise SimulatedCrash(step)

    failing = FailingFirstWrite(service.audit)
    service.audit = AuditFaults(failing, crash_once)
    # When the poll runs and SQS redelivers the failed messages
    runtime.poll()
    runtime.drain()
    # Then both are linked and each automatic link is in the audit trail exactly once
    assert failing.failed and crashes == [AUDIT_WRITTEN]
    records = [
        r for r in read_records(runtime.environment["AUDIT_LOG_GROUP"]) if r["route"] == "pipeline:reconcile"
    ]
    for case in cases:
        record = record_of(runtime, case.case_id)
        assert record is not None and record.outcome == "linked" and record.done("audited")
        mine = [r for r in records if r["request_id"] == case.case_id]
        assert [r["action"] for r in mine] == ["dossier.auto_link.identity"]


def test_a_notification_of_another_process_code_is_left_untouched(
    runtime: LocalRuntime, hubee: HubeeSandbox, world: World
) -> None:
    # Given a credential that also receives another démarche's notifications
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=24)[0]
    world.directory(TOWN_A, [household.family])
    foreign_id = hubee.add_foreign_notification("AutreDemarche", TOWN_A.siret)
    ours = deposit(hubee, TOWN_A, household)
    # When the poll runs and reconcile handles what it queued
    report = runtime.poll()["poll"]
    runtime.drain()
    # Then only our dossier was queued and handled; the foreign notification is still pending
    assert report["notifications"] == 1
    assert record_of(runtime, ours.case_id) is not None
    assert ours.notification_id not in hubee.pending_notification_ids()
    assert foreign_id in hubee.pending_notification_ids()
    # And even if it reached reconcile (as a misrouted message), it would not be touched
    config = HubeeConfig(api_url=hubee.api_url, token_url=hubee.token_url)
    with HubeeClient(
        config, HubeeCredentials(client_id="client-a", client_secret="secret-client-a")
    ) as client:
        (foreign,) = [n for n in client.list_notifications(process_code=None) if n.id == foreign_id]
    hubee.reset_counters()
    runtime.client("sqs").send_message(
        QueueUrl=runtime.queue_url("DossiersQueue"),
        MessageBody=json.dumps(
            {
                "kind": "dossier",
                "notification": foreign.model_dump(mode="json", by_alias=True),
                "credential_holder": TOWN_A.siret,
                "credential_tenants": [TOWN_A.siret],
            }
        ),
    )
    runtime.drain()
    assert foreign_id in hubee.pending_notification_ids()
    assert sum(hubee.calls.values()) == 0
    assert record_of(runtime, str(foreign.case_id)) is None


def unusable_formulaire(kind: str, household: Household) -> dict[str, Any]:
    formulaire = household.formulaire()
    if kind == "missing_identity":
        formulaire.pop("pivot_identity")
    elif kind == "missing_quotient_familial":
        formulaire.pop("quotient_familial_v3")
        formulaire.pop("quotient_familial")
    elif kind == "too_many_children":
        child = formulaire["quotient_familial_v3"]["enfants"][0]
        formulaire["quotient_familial_v3"]["enfants"] = [child] * 31
    return formulaire


UNUSABLE = {
    # kind: the reason recorded
    "corrupted_json_and_xml": "digest_mismatch",
    "bad_json_xml_not_received": "malformed_json",
    "attachments_not_received": "attachment_unavailable",
    "missing_identity": "missing_identity",
    "missing_quotient_familial": "missing_quotient_familial",
    "too_many_children": "invalid_field",
}


@pytest.mark.parametrize("kind", sorted(UNUSABLE))
def test_an_unusable_dossier_is_refused_to_the_usager_through_allowed_statuses(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, kind: str, world: World
) -> None:
    # Given a dossier that cannot be used, HubEE enforcing its documented status table
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=25)[0]
    world.directory(TOWN_A, [household.family])
    json_bytes = b'{"pivot_identity": ' if kind == "bad_json_xml_not_received" else None
    case = hubee.deposit_formulaire_qf(
        TOWN_A.siret, TOWN_A.cog, unusable_formulaire(kind, household), json_bytes=json_bytes
    )
    if kind == "corrupted_json_and_xml":
        hubee.inject("corrupt_bytes", case_id=case.case_id, times=10)  # every download damaged
    if kind == "bad_json_xml_not_received":
        hubee.set_attachment_status(case.case_id, case.xml_attachment_id, "CORRUPTED")
    if kind == "attachments_not_received":
        hubee.set_attachment_status(case.case_id, case.json_attachment_id, "PENDING")
        hubee.set_attachment_status(case.case_id, case.xml_attachment_id, "PENDING")
    # When the poll runs and reconcile handles it, and the next polls run too
    for _ in range(3):
        runtime.poll()
        runtime.drain()
    # Then it is recorded rejected with its reason, and the usager sees REFUSED (through SI_RECEIVED:
    # the form mirrors no SI_INTG_ERROR), each status posted once and accepted
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "rejected" and record.reason == UNUSABLE[kind]
    posts = hubee.status_posts(case.case_id)
    assert [(p["current"], p["new"], p["http_status"]) for p in posts] == [
        ("HUBEE_NOTIFIED", "SI_RECEIVED", 201),
        ("SI_RECEIVED", "REFUSED", 201),
    ]
    refused = next(e for e in hubee.case_snapshot(case.case_id)["events"] if e["caseNewStatus"] == "REFUSED")
    assert "déposer à nouveau" in refused["message"]
    # And its notification is deleted, with at most 8 HubEE calls for it in all
    assert case.notification_id not in hubee.pending_notification_ids()
    case_calls = sum(hubee.calls_by_case(case.case_id).values())
    closed_event_calls = 3  # the form closed the REFUSED case: GET event, PATCH it, DELETE its notification
    assert intake_calls(hubee) - closed_event_calls <= 8
    assert case_calls + 1 <= 8 + 2  # + DELETE of its notification; the CLOSED event's GET and PATCH
    (rejected,) = published.of("dossier.rejected")
    assert rejected["case_id"] == case.case_id and rejected["reason"] == UNUSABLE[kind]
    assert qf_of(runtime, TOWN_A, household) is None


def test_a_json_whose_digest_mismatches_is_read_from_its_intact_xml_twin(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a dossier whose JSON bytes arrive corrupted at every download, while the XML is intact
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=25)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    hubee.inject("corrupt_bytes", case_id=case.case_id, times=2)  # both downloads of the JSON
    # When reconcile handles it
    runtime.poll()
    runtime.drain()
    # Then, as for a malformed JSON, the XML twin carries the dossier: linked, nothing lost
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked"
    assert hubee.calls_by_case(case.case_id)[GET_ATTACHMENT] == 3
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
    assert qf_of(runtime, TOWN_A, household) == household.qf.valeur


def metrics_emitted(out: str, name: str) -> float:
    """Sum of a metric's values in the EMF lines Powertools printed."""
    total = 0.0
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            values = json.loads(line).get(name)
            if values is not None:
                total += sum(values) if isinstance(values, list) else values
    return total


def test_a_status_hubee_refuses_is_recorded_alarmed_and_posted_again_only_on_an_operators_retry(
    runtime: LocalRuntime,
    hubee: HubeeSandbox,
    published: PublishedEvents,
    capsys: pytest.CaptureFixture[str],
    world: World,
) -> None:
    # Given a case whose event cap HubEE already reached: every status post gets a 400
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=31)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    hubee.max_events_per_case = 0
    # When three poll cycles run
    for _ in range(3):
        runtime.poll()
        runtime.drain()
    # Then one post was tried and refused, never again; the dossier is recorded with the refusal
    posts = hubee.status_posts(case.case_id)
    assert [(p["new"], p["http_status"]) for p in posts] == [("SI_RECEIVED", 400)]
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked"
    assert record.status_refused is not None
    assert record.status_refused["status"] == "SI_RECEIVED" and record.status_refused["http_status"] == 400
    assert qf_of(runtime, TOWN_A, household) == household.qf.valeur  # nothing lost
    assert case.notification_id not in hubee.pending_notification_ids()
    assert runtime.queue_depth("DossiersDeadLetterQueue") == 0
    # And the alarm's metric was emitted, and the template alarms on it
    assert metrics_emitted(capsys.readouterr().out, "HubeeStatusRefused") == 1
    from qfbridge_local.template import load_template

    template = load_template()
    alarm = template["Resources"]["HubeeStatusRefusedAlarm"]["Properties"]
    assert alarm["MetricName"] == "HubeeStatusRefused"
    # When the operator follows the runbook: HubEE's cap lifted, the status retried
    from pathlib import Path

    runbook = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert "HubeeStatusRefused" in runbook and "qfbridge dossiers retry-status" in runbook
    hubee.max_events_per_case = 50
    from qfbridge.services.status_retry import retry_refused_status
    from qfbridge.store.queues import SqsDossierQueue

    retry_refused_status(
        DossierRepository(runtime.environment["DOSSIERS_TABLE"]),
        SqsDossierQueue(runtime.queue_url("DossiersQueue"), client=runtime.client("sqs")),
        TOWN_A.siret,
        str(record.reference),
        actor="ops@editor",
    )
    runtime.drain()
    # Then the statuses reach the usager, once each
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
    record = record_of(runtime, case.case_id)
    assert record is not None and record.status_refused is None and record.done("final_status")


def test_a_dossier_failing_for_no_dossier_reason_ends_after_bounded_attempts(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given reconcile failing on a case with an unexpected error at every attempt
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=32)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    runtime.functions["ReconcileFunction"].load()
    service = sys.modules["qfbridge_fn_reconcile_app"].service()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unexpected")

    service._reconcile_and_persist = broken
    # When the poll cycles run
    for _ in range(3):
        runtime.poll()
        runtime.drain()
    # Then it was tried a bounded number of times, then rejected, the usager told, acknowledged
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "rejected" and record.reason == "unprocessable"
    # (the 1st attempt parsed and recorded the dossier before failing: progress, not counted)
    assert record.failures == 3 and record.attempts == 4
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "REFUSED"]
    assert case.notification_id not in hubee.pending_notification_ids()
    assert runtime.queue_depth("DossiersDeadLetterQueue") == 0
    assert [e["case_id"] for e in published.of("dossier.rejected")] == [case.case_id]
    # 4 attempts reading the case + 1 reading it before the statuses, 1 download, 2 statuses, the CLOSED event's 2
    assert sum(hubee.calls_by_case(case.case_id).values()) <= 5 + 1 + 2 + 2


def test_bytes_damaged_once_in_transit_are_downloaded_again(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a dossier whose JSON bytes arrive corrupted once
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=26)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    hubee.inject("corrupt_bytes", case_id=case.case_id, times=1)
    # When reconcile handles it
    runtime.poll()
    runtime.drain()
    # Then the second download is intact and the dossier is linked
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked"
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]


def test_an_expired_token_is_renewed_transparently(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a tenant whose token the poll fetched, and a dossier queued for reconcile
    world.onboard(TOWN_A, "client-a")
    household = households(1, seed=26)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_A, household)
    runtime.poll()
    # When HubEE's clock passes the token's hour before reconcile runs, and again before the next poll
    hubee.advance_clock(3601)
    runtime.drain()
    hubee.advance_clock(3601)
    report = runtime.poll()["poll"]
    runtime.drain()
    # Then reconcile and the poll each renewed the token on HubEE's 401, and nothing failed
    assert hubee.token_calls["client-a"] == 3
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked"
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
    assert len(published.of("dossier.linked")) == 1
    assert report["failed_credentials"] == 0 and report["events"] == 1
    assert hubee.pending_notification_ids() == []  # the CLOSED event, acknowledged after the renewal
    assert tenant(runtime, TOWN_A).hubee_status == "ok"


def test_a_tenant_with_failing_credentials_does_not_stop_the_others(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given tenant A's stored secret is wrong while tenant B's is right, each with a dossier waiting
    world.onboard(TOWN_A, "client-a", stored_secret="not-the-secret")
    world.onboard(TOWN_B, "client-b")
    people = households(2, seed=27)
    world.directory(TOWN_A, [people[0].family])
    world.directory(TOWN_B, [people[1].family])
    case_a = deposit(hubee, TOWN_A, people[0])
    case_b = deposit(hubee, TOWN_B, people[1])
    # When two cycles run
    reports = []
    for _ in range(2):
        reports.append(runtime.poll()["poll"])
        runtime.drain()
    # Then B's dossier went through, A's waits in HubEE, and A is reported once
    assert [r["failed_credentials"] for r in reports] == [1, 1]
    record_b = record_of(runtime, case_b.case_id)
    assert record_b is not None and record_b.outcome == "linked"
    assert record_of(runtime, case_a.case_id) is None
    assert case_a.notification_id in hubee.pending_notification_ids()
    assert tenant(runtime, TOWN_A).hubee_status == "auth_failed"
    assert tenant(runtime, TOWN_B).hubee_status == "ok"
    alerts = published.of("tenant.hubee_auth_failed")
    assert [a["tenant_siret"] for a in alerts] == [TOWN_A.siret]


def test_a_dossier_for_a_collectivite_not_onboarded_is_kept_then_processed_once_it_is(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a credential whose HubEE subscription also serves town X, which is not a tenant yet,
    # and a household depositing its dossier for X (HubEE notifies a case once: deleting it unread
    # would lose it for good)
    world.onboard(TOWN_A, "client-a", also_serves=(TOWN_X,))
    household = households(1, seed=28)[0]
    world.directory(TOWN_A, [household.family])
    case = deposit(hubee, TOWN_X, household)
    # When two polls run and reconcile handles what they queue
    for _ in range(2):
        runtime.poll()
        runtime.drain()
    # Then the dossier is kept under X, awaiting its onboarding: nothing downloaded, no status, no
    # family touched, and its notification no longer takes a place in the listing
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "awaiting_onboarding"
    assert record.tenant_siret == TOWN_X.siret and record.awaiting_holder == TOWN_A.siret
    assert record.user_id is None and record.parsed is None
    assert qf_of(runtime, TOWN_A, household) is None
    assert hubee.status_events(case.case_id) == []
    assert hubee.calls_by_case(case.case_id)[GET_ATTACHMENT] == 0
    assert case.notification_id not in hubee.pending_notification_ids()
    assert published.kinds_for_case(case.case_id) == Counter()
    # ... and A's own dossiers still flow meanwhile
    own = deposit(hubee, TOWN_A, households(1, seed=29)[0])
    runtime.poll()
    runtime.drain()
    assert record_of(runtime, own.case_id) is not None

    # When X is onboarded through the editor API, under the same delegated credential, with the
    # family in its directory
    editor = runtime.editor_service()
    editor.put_tenant(TOWN_X.siret, TenantConfig(name="Commune X", cog=TOWN_X.cog))
    world.directory(TOWN_X, [household.family])
    editor.store_credentials(
        TOWN_X.siret,
        TenantCredentials(hubee_client_id="client-a", hubee_client_secret="secret-client-a"),
    )
    runtime.drain()
    # Then the kept dossier is processed like any new one: linked, DONE posted once, event published
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked" and record.tenant_siret == TOWN_X.siret
    assert hubee.status_events(case.case_id) == ["SI_RECEIVED", "DONE"]
    assert qf_of(runtime, TOWN_X, household) is not None
    assert published.kinds_for_case(case.case_id)["dossier.linked"] == 1
    # ... and a second onboarding call queues nothing more
    assert editor.release_awaiting_dossiers(TOWN_X.siret) == 0


def test_two_tenants_sharing_a_credential_are_polled_once_and_each_gets_its_dossiers(
    runtime: LocalRuntime, hubee: HubeeSandbox, world: World
) -> None:
    # Given an editor's delegated credential shared by tenants A and B, with dossiers for both
    world.collectivite(TOWN_A)
    world.collectivite(TOWN_B)
    world.hubee_credential("client-shared", [TOWN_A, TOWN_B])
    people = households(3, seed=29)
    towns = [TOWN_A, TOWN_B, TOWN_A]
    for town, household in zip(towns, people, strict=True):
        world.directory(town, [household.family])
    cases = [deposit(hubee, town, h) for town, h in zip(towns, people, strict=True)]
    # When one poll cycle runs
    report = runtime.poll()["poll"]
    # Then the credential was polled once (one token, one page) and every dossier reached its tenant
    assert report["credentials"] == 1 and report["new_dossiers"] == 3
    assert hubee.calls[LIST_NOTIFICATIONS] == 1
    assert hubee.token_calls == Counter({"client-shared": 1})
    runtime.drain()
    for case, town, household in zip(cases, towns, people, strict=True):
        record = record_of(runtime, case.case_id)
        assert record is not None and record.outcome == "linked" and record.tenant_siret == town.siret
        assert qf_of(runtime, town, household) == household.qf.valeur
    other = {TOWN_A.siret: TOWN_B, TOWN_B.siret: TOWN_A}
    for town, household in zip(towns, people, strict=True):
        assert qf_of(runtime, other[town.siret], household) is None


def test_a_digest_of_the_gzipped_bytes_is_accepted_but_corrupted_bytes_are_not() -> None:
    # Given a JSON attachment HubEE served gzipped without saying so, its digest taken on the gzip
    content = b'{"pivot_identity": {}}'
    served = gzip.compress(content, mtime=0)
    digest = base64.b64encode(hashlib.sha256(served).digest()).decode()
    # When the client gunzipped it, then intake checks it
    verify_download(Download(content, digest, undecoded_sha256=hashlib.sha256(served).digest()), len(content))
    # Then it passes; but other bytes under that digest are still refused
    with pytest.raises(DossierError) as refused:
        verify_download(Download(content[:-1] + b"]", digest, undecoded_sha256=None), len(content))
    assert refused.value.code == "digest_mismatch"


def test_corrected_credentials_are_used_at_the_next_poll_despite_the_pollers_cache(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given a tenant whose stored HubEE secret is wrong: the poll fails and the poller caches secrets
    world.onboard(TOWN_A, "client-a", stored_secret="not-the-secret")
    case = deposit(hubee, TOWN_A, households(1, seed=61)[0])
    runtime.poll()
    tenants = TenantRepository(runtime.environment["TENANTS_TABLE"])
    assert tenants.require(TOWN_A.siret).hubee_status == "auth_failed"
    # When the editor stores the right secret and the next poll runs (well within the cache's lifetime)
    SecretStore(runtime.environment["TENANT_SECRETS_PREFIX"]).write_tenant(
        TOWN_A.siret,
        TenantCredentials(hubee_client_id="client-a", hubee_client_secret="secret-client-a"),
    )
    runtime.poll()
    runtime.drain()
    # Then the refused cached secret was read again: the tenant is back and its dossier arrived
    assert tenants.require(TOWN_A.siret).hubee_status == "ok"
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome in ("linked", "needs_review")


def test_thirty_stuck_notifications_neither_hide_a_new_dossier_nor_go_unnoticed(
    runtime: LocalRuntime, hubee: HubeeSandbox, published: PublishedEvents, world: World
) -> None:
    # Given an editor credential that also sees town B's dossiers, B being polled with its own credential,
    # which fails (a wrong stored secret): 30 dossiers for B stay pending, listed first through A's credential
    world.onboard(TOWN_A, "client-a", also_serves=(TOWN_B,))
    world.onboard(TOWN_B, "client-b", stored_secret="not-the-secret")
    stuck = [deposit(hubee, TOWN_B, h) for h in households(30, seed=33)]
    # When several polls run
    reports = []
    for _ in range(4):
        reports.append(runtime.poll()["poll"])
        runtime.drain()
    # Then A's poll queued each of them once (reconcile leaves them to B's own credential)
    assert [r["notifications"] for r in reports] == [30, 0, 0, 0]
    # When a new dossier for A arrives, and the next poll runs
    household = households(1, seed=34)[0]
    world.directory(TOWN_A, [household.family])
    new = deposit(hubee, TOWN_A, household)
    report = runtime.poll()["poll"]
    runtime.drain()
    # Then the new dossier is processed in that poll
    record = record_of(runtime, new.case_id)
    assert record is not None and record.outcome == "linked"
    assert report["notifications"] == 1 and report["in_flight"] == 30 and report["stuck"] == 30
    # And the stuck ones show in A's status (B's shows its authentication failure)
    shown = tenant(runtime, TOWN_A)
    assert shown.hubee_stuck_notifications == 30 and shown.status == "hubee_notifications_stuck"
    assert tenant(runtime, TOWN_B).status == "hubee_auth_failed"
    assert all(c.notification_id in hubee.pending_notification_ids() for c in stuck)


def test_a_dossier_left_to_its_tenants_own_credential_is_taken_in_by_it_at_its_next_poll(
    runtime: LocalRuntime, hubee: HubeeSandbox, world: World
) -> None:
    # Given an editor credential that also sees town B's dossiers, B being polled with its own
    # credential, which fails at first (a wrong stored secret): B's dossier is listed through A's
    world.onboard(TOWN_A, "client-a", also_serves=(TOWN_B,))
    world.onboard(TOWN_B, "client-b", stored_secret="not-the-secret")
    household = households(1, seed=35)[0]
    world.directory(TOWN_B, [household.family])
    case = deposit(hubee, TOWN_B, household)
    assert runtime.poll()["poll"]["notifications"] == 1
    runtime.drain()
    assert record_of(runtime, case.case_id) is None  # left to B's own credential, nothing recorded
    # When B's credential is corrected and the next poll runs (A's marker still holds it in flight)
    world.hubee_credential("client-b", [TOWN_B])
    report = runtime.poll()["poll"]
    runtime.drain()
    # Then B's own credential queued it at once, and it is B's dossier; A's poll still holds it
    record = record_of(runtime, case.case_id)
    assert record is not None and record.outcome == "linked" and record.tenant_siret == TOWN_B.siret
    assert report["notifications"] == 1 and report["in_flight"] == 1
    assert case.notification_id not in hubee.pending_notification_ids()
