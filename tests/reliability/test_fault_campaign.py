"""The intake fault campaign: dossiers through the laptop runtime while everything fails.

Given at least 10 collectivités (two of them share one HubEE credential, as an editor's
delegation does) and dossiers of every kind — families of the directory, families holding a
signed form link, strangers, unreadable dossiers, a second form from the same family — plus
notifications of another démarche, the HubEE sandbox answers 5xx, times out, duplicates and
reorders the notification pages, corrupts attachment bytes in transit and truncates JSON
attachments, while reconcile crashes after each step of its journal (once per case and step).
The poll and the queues run in rounds until nothing is left to do (a bounded number of rounds).

Then every guarantee of docs/reliability.md is checked: one outcome per dossier (the expected
one), no duplicate QF history entry, no status posted twice, every FormulaireQF notification
acknowledged and the others untouched, every DLQ message explained, the retention of the
records. The figures (faults by kind, crashes, retries, outcomes, duration) are printed and
written to ``bench/results/reliability-full.json`` (full) or ``artifacts/reliability-quick.json``.

Two sizes (``QFBRIDGE_CAMPAIGN``): ``quick`` (default, in ``make test``: 10 collectivités, 70
dossiers) and ``full`` (12 collectivités, 540 dossiers). Everything is seeded (population,
sandbox faults, crashes): a failing run replays, up to the interleaving of concurrent batches.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

from qfbridge.domain.errors import QfbridgeError
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.hubee import HubeeClient, HubeeConfig
from qfbridge.messages import DossierMessage, NotificationMessage
from qfbridge.services.reconcile import INTEGRITY_ATTEMPTS
from qfbridge.store.dossiers import RETENTION_DAYS, DossierRecord, DossierRepository
from qfbridge.store.families import FamilyRecord, FamilyRepository
from qfbridge_local.population import Collectivite, Household, collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.world import World

SEED = 20260
FOREIGN_PROCESS_CODE = "DemandeActeEtatCivil"
RECONCILE_MODULE = "qfbridge_fn_reconcile_app"
POLL_MODULE = "qfbridge_fn_hubee_poll_app"
REPO = Path(__file__).resolve().parents[2]
MAX_ROUNDS = 25
TIME_BUDGET_S = 900.0


@dataclass(frozen=True)
class Mix:
    """What each collectivité receives."""

    tenants: int
    known: int  # families of the directory, matched on identity
    by_link: int  # families of the directory whose parent used a signed form link
    strangers: int  # households the directory does not know: review
    unreadable: int  # JSON truncated and the XML refused by HubEE: rejected, malformed_json
    corrupted: int  # every download of its attachments corrupted: rejected, digest_mismatch
    second_forms: int  # a second dossier from a family already in this campaign
    foreign: int  # notifications of another démarche for the same recipient

    @property
    def per_tenant(self) -> int:
        return (
            self.known + self.by_link + self.strangers + self.unreadable + self.corrupted + self.second_forms
        )


MIXES = {
    # `make test`: every fault and every crash point, on a population small enough for the suite.
    "quick": Mix(
        tenants=10, known=2, by_link=1, strangers=1, unreadable=1, corrupted=1, second_forms=1, foreign=1
    ),
    # `QFBRIDGE_CAMPAIGN=full` (make reliability): 540 dossiers over 12 collectivités.
    "full": Mix(
        tenants=12, known=30, by_link=4, strangers=6, unreadable=2, corrupted=1, second_forms=2, foreign=2
    ),
}
MODE = os.environ.get("QFBRIDGE_CAMPAIGN", "quick")
MIX = MIXES[MODE]
# The full campaign's figures are committed; the quick one's (every `make test`) are not.
RESULTS = REPO / ("bench/results" if MODE == "full" else "artifacts") / f"reliability-{MODE}.json"

# Random faults of the HubEE sandbox, per call (or per notification page, download, deposit) ...
CALL_FAULT_RATES = {
    "http_500": 0.02,
    "http_503": 0.02,
    "timeout": 0.005,
    "duplicate_notification": 0.5,
    "reorder": 0.5,
}
DEPOSIT_MALFORMED_RATE = 0.04  # JSON truncated at deposit: the XML copy must rescue the dossier
# ... and one-shot ones, so that every kind happens in every run whatever the draws.
ARMED_FAULTS: tuple[tuple[str, str, int], ...] = (
    ("http_500", "GET /cases/{caseId}", 2),
    ("http_503", "DELETE /notifications/{notificationId}", 2),
    ("http_500", "POST /cases/{caseId}/events", 1),
    ("timeout", "POST /cases/{caseId}/events", 1),
    ("timeout", "GET /cases/{caseId}/attachments/{attachmentId}", 1),
    ("duplicate_notification", "GET /notifications", 3),
    ("reorder", "GET /notifications", 3),
)
# Bytes damaged in transit, per readable dossier: once or twice, never as often as reconcile
# downloads again (INTEGRITY_ATTEMPTS), so the outcome stays the expected one whatever the order.
TRANSIENT_CORRUPTION_RATE = 0.1
CRASH_RATE = 0.07  # per (case, journal step), after the first crash at each step
CLIENT_READ_TIMEOUT_S = 0.5
SANDBOX_HANG_S = 0.7  # a "timeout" fault answers after the client gave up
MAX_RECEIVE_COUNT = 5  # DossiersQueue's redrive policy (asserted below against the template)
CRASH_STEPS = (
    "verified",
    "parsed",
    "persisted",
    "audit_written",
    "si_received",
    "final_status",
    "notification_deleted",
)


@dataclass(frozen=True)
class Expected:
    """What a deposited dossier must end as."""

    tenant: str
    outcome: str
    reason: str | None = None
    user_id: str | None = None
    link_method: str | None = None


@dataclass
class CrashInjector:
    """reconcile's ``crash_after`` hook: a seeded crash, at most once per (case, step)."""

    rate: float
    seed: int
    current_case: threading.local = field(default_factory=threading.local)
    crashed: set[tuple[str, str]] = field(default_factory=set)
    by_step: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, step: str) -> None:
        case_id = getattr(self.current_case, "value", None)
        if case_id is None:
            return
        # A draw per (case, step), independent of thread interleaving: the run replays.
        draw = random.Random(f"{self.seed}:{case_id}:{step}").random()
        with self._lock:
            first_at_step = step not in self.by_step
            if (case_id, step) in self.crashed or not (first_at_step or draw < self.rate):
                return
            self.crashed.add((case_id, step))
            self.by_step[step] += 1
        raise RuntimeError("injected crash")


@dataclass
class DeliveryLog:
    """Every failed delivery of a notification, by notification id: what explains a DLQ message."""

    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def record(self, notification_id: str, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, QfbridgeError) else type(exc).__name__
        with self._lock:
            self.failures[notification_id].append(code)


@dataclass
class Campaign:
    """The world after the campaign, and its figures."""

    rt: LocalRuntime
    hubee: HubeeSandbox
    expected: dict[str, Expected]
    foreign_notifications: set[str]
    crashes: CrashInjector
    deliveries: DeliveryLog
    http_retries: Counter[str]
    rounds: int
    duration_s: float
    dlq: list[dict[str, Any]]
    dossiers: dict[str, DossierRecord | None]
    families: dict[tuple[str, str], FamilyRecord]
    figures: dict[str, Any]


# ---------------------------------------------------------------------------------- arranging


def issue_link(rt: LocalRuntime, siret: str, user_id: str) -> str:
    """A signed form link for one family of the directory, issued by the editor API's own service."""
    return str(rt.editor_service().issue_form_link(siret, user_id, None).external_id)


def deposit_everything(
    rt: LocalRuntime, hubee: HubeeSandbox, towns: list[Collectivite]
) -> tuple[dict[str, Expected], set[str]]:
    """Every tenant's dossiers, in a shuffled order; returns what each must end as, and the foreign ones."""
    families = FamilyRepository(rt.environment["FAMILIES_TABLE"])
    expected: dict[str, Expected] = {}
    foreign: set[str] = set()
    rng = random.Random(f"deposits:{SEED}")
    hubee.fault_rates(malformed_json=DEPOSIT_MALFORMED_RATE)  # drawn at each deposit below
    hubee.inject("malformed_json", route="POST /folders", times=2)
    m = MIX
    for index, town in enumerate(towns):
        directory = households(m.known + m.by_link, seed=SEED + index, id_prefix=f"t{index:02d}")
        outsiders = households(
            m.strangers + m.unreadable + m.corrupted, seed=SEED + 1000 + index, id_prefix=f"x{index:02d}"
        )
        families.upsert_many(town.siret, [h.family for h in directory])
        plans: list[tuple[dict[str, Any], Expected, str | None]] = []
        for household in directory[: m.known]:
            plans.append((household.formulaire(), linked(town, household, "identity"), None))
        for household in directory[m.known :]:
            external_id = issue_link(rt, town.siret, household.family.user_id)
            plans.append(
                (household.formulaire(external_id=external_id), linked(town, household, "external_id"), None)
            )
        for household in outsiders[: m.strangers]:
            plans.append((household.formulaire(), Expected(town.siret, "needs_review"), None))
        for household in outsiders[m.strangers : m.strangers + m.unreadable]:
            plans.append(
                (household.formulaire(), Expected(town.siret, "rejected", "malformed_json"), "unreadable")
            )
        for household in outsiders[m.strangers + m.unreadable :]:
            plans.append(
                (household.formulaire(), Expected(town.siret, "rejected", "digest_mismatch"), "corrupted")
            )
        for household in rng.sample(directory[: m.known], m.second_forms):
            newer = QuotientFamilial.model_validate(
                household.qf.model_dump() | {"valeur": household.qf.valeur + 10}
            )
            plans.append((household.formulaire(qf=newer), linked(town, household, "identity"), None))
        rng.shuffle(plans)
        for formulaire, outcome, damage in plans:
            if damage == "unreadable":
                case = hubee.deposit_formulaire_qf(
                    town.siret, town.cog, formulaire, json_bytes=b'{"pivot_identity": {'
                )
                hubee.set_attachment_status(case.case_id, case.xml_attachment_id, "REJECTED")
            else:
                case = hubee.deposit_formulaire_qf(town.siret, town.cog, formulaire)
            if damage == "corrupted":
                hubee.inject("corrupt_bytes", case_id=case.case_id, times=1000)
            elif damage is None and rng.random() < TRANSIENT_CORRUPTION_RATE:
                hubee.inject(
                    "corrupt_bytes", case_id=case.case_id, times=rng.choice((1, INTEGRITY_ATTEMPTS - 1))
                )
            expected[case.case_id] = outcome
        for _ in range(m.foreign):
            foreign.add(hubee.add_foreign_notification(FOREIGN_PROCESS_CODE, town.siret, town.cog))
    return expected, foreign


def linked(town: Collectivite, household: Household, method: str) -> Expected:
    return Expected(town.siret, "linked", user_id=household.family.user_id, link_method=method)


def instrument_reconcile(
    rt: LocalRuntime, crashes: CrashInjector, deliveries: DeliveryLog, http_retries: Counter[str]
) -> None:
    """Crash hook, failure log and short client backoffs on the warm reconcile 'container'."""
    rt.functions["ReconcileFunction"].load()
    module: Any = sys.modules[RECONCILE_MODULE]  # the handler module, loaded from its code directory
    if isinstance(getattr(module, "processor", None), BatchProcessor):
        module.processor = PerThreadProcessor()
    service = module.service()
    service.crash_after = crashes
    service.hubee = fast_hubee(service.hubee)
    lock = threading.Lock()

    def counted_sleep(seconds: float) -> None:
        with lock:
            http_retries["reconcile"] += 1
        time.sleep(min(seconds, 0.02))

    service.client_factory = partial(HubeeClient, sleep=counted_sleep)
    handle = service.handle

    def handle_and_log(message: DossierMessage) -> Any:
        notification = message.notification if isinstance(message, NotificationMessage) else None
        crashes.current_case.value = notification.case_id if notification else None
        try:
            return handle(message)
        except Exception as exc:
            deliveries.record(str(notification.id if notification else None), exc)
            raise
        finally:
            crashes.current_case.value = None

    service.handle = handle_and_log


class PerThreadProcessor:
    """One Powertools BatchProcessor per thread, standing for the module-level one.

    Lambda runs one invocation at a time per execution environment, so a module-level processor
    (it holds the batch's state) is never shared there. The laptop runtime runs a mapping's
    concurrent batches in threads of one module, where it is: batches then report each other's
    failures. One per thread gives back Lambda's semantics (see docs/reliability.md, findings).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _processor(self) -> BatchProcessor:
        if not hasattr(self._local, "processor"):
            self._local.processor = BatchProcessor(event_type=EventType.SQS)
        return self._local.processor

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._processor()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor(), name)


def instrument_poll(rt: LocalRuntime) -> None:
    rt.functions["HubeePollFunction"].load()
    poll = sys.modules[POLL_MODULE].services()
    poll.hubee = fast_hubee(poll.hubee)


def fast_hubee(config: HubeeConfig) -> HubeeConfig:
    """Same retry policy, shorter waits: the campaign must fit in the test suite's time."""
    return config.model_copy(
        update={"backoff_base_s": 0.01, "backoff_max_s": 0.05, "read_timeout_s": CLIENT_READ_TIMEOUT_S}
    )


# ---------------------------------------------------------------------------------- running


def formulaire_notifications_pending(hubee: HubeeSandbox, foreign: set[str]) -> list[str]:
    return [n for n in hubee.pending_notification_ids() if n not in foreign]


def read_dlq(rt: LocalRuntime) -> list[dict[str, Any]]:
    sqs = rt.client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=rt.queue_url("DossiersDeadLetterQueue"), MaxNumberOfMessages=10, VisibilityTimeout=600
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(json.loads(m["Body"]) for m in batch)


def run_campaign() -> Iterator[Campaign]:
    with HubeeSandbox(seed=SEED, fault_timeout_s=SANDBOX_HANG_S) as hubee:
        options = RuntimeOptions(
            serve_api=False,
            retry_delay_seconds=0,
            env_overrides={
                "HUBEE_API_URL": hubee.api_url,
                "HUBEE_TOKEN_URL": hubee.token_url,
                "DOSSIER_LEASE_SECONDS": "30",
                "POWERTOOLS_METRICS_DISABLED": "true",
            },
        )
        with LocalRuntime.start(options) as rt:
            towns = collectivites(MIX.tenants, seed=SEED)
            world = World(rt, hubee=hubee)
            for town in towns:
                world.collectivite(town)
            world.hubee_credential("client-delegation", towns[:2])  # two collectivités, one credential
            for index, town in enumerate(towns[2:], start=2):
                world.hubee_credential(f"client-{index:02d}", [town])
            expected, foreign = deposit_everything(rt, hubee, towns)
            deposit_faults = hubee.faults_injected

            crashes = CrashInjector(CRASH_RATE, SEED)
            deliveries = DeliveryLog()
            http_retries: Counter[str] = Counter()
            instrument_reconcile(rt, crashes, deliveries, http_retries)
            instrument_poll(rt)
            hubee.reset_counters()
            hubee.fault_rates(CALL_FAULT_RATES, timeout_s=SANDBOX_HANG_S)
            for kind, route, times in ARMED_FAULTS:
                hubee.inject(kind, route=route, times=times)  # type: ignore[arg-type]

            started = time.monotonic()
            rounds = 0
            while rounds < MAX_ROUNDS and time.monotonic() - started < TIME_BUDGET_S:
                rounds += 1
                poll = rt.poll()
                handled = rt.drain(timeout=TIME_BUDGET_S)
                pending = formulaire_notifications_pending(hubee, foreign)
                print(
                    f"round {rounds}: queued {poll['poll']['notifications']}, handled {handled}, "
                    f"{len(pending)} notification(s) pending, {time.monotonic() - started:.0f} s",
                    flush=True,
                )
                if not pending:
                    break
            duration = time.monotonic() - started
            hubee.clear_faults()

            dossiers_table = DossierRepository(rt.environment["DOSSIERS_TABLE"])
            families_table = FamilyRepository(rt.environment["FAMILIES_TABLE"])
            dossiers = {case_id: dossiers_table.get(case_id) for case_id in expected}
            families = {}
            for exp in expected.values():
                if exp.user_id is not None and (exp.tenant, exp.user_id) not in families:
                    record = families_table.get(exp.tenant, exp.user_id)
                    if record is not None:
                        families[(exp.tenant, exp.user_id)] = record
            stats = rt.triggers.source_for("DossiersQueue").stats if rt.triggers else None
            dlq = read_dlq(rt)
            outcomes = Counter(
                (r.outcome if r.outcome != "rejected" else f"rejected:{r.reason}") if r else "missing"
                for r in dossiers.values()
            )
            figures = {
                "mode": MODE,
                "seed": SEED,
                "tenants": MIX.tenants,
                "credentials": MIX.tenants - 1,
                "dossiers": len(expected),
                "foreign_notifications": len(foreign),
                "rounds": rounds,
                "duration_s": round(duration, 1),
                "faults_injected": dict(sorted((hubee.faults_injected + deposit_faults).items())),
                "reconcile_crashes": dict(sorted(crashes.by_step.items())),
                "sqs": {
                    "records": stats.records if stats else 0,
                    "failed_records": stats.failed_records if stats else 0,
                    "crashed_batches": stats.crashed_batches if stats else 0,
                },
                "http_retries": dict(http_retries),
                "failures_by_code": dict(
                    Counter(c for codes in deliveries.failures.values() for c in codes).most_common()
                ),
                "dlq_messages": len(dlq),
                "outcomes": dict(sorted(outcomes.items())),
                "hubee_calls": {f"{m} {p}": n for (m, p), n in sorted(hubee.calls.items())},
            }
            yield Campaign(
                rt,
                hubee,
                expected,
                foreign,
                crashes,
                deliveries,
                http_retries,
                rounds,
                duration,
                dlq,
                dossiers,
                families,
                figures,
            )


def test_the_intake_keeps_its_guarantees_under_faults() -> None:
    """One campaign, every guarantee checked on it; all the broken ones are reported together.

    One test rather than one per guarantee: pytest-xdist may send a module's tests to several
    workers, and each would run the whole campaign again.
    """
    for campaign in run_campaign():
        print(
            "\nreliability campaign figures:\n" + json.dumps(campaign.figures, indent=2, ensure_ascii=False)
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(campaign.figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        broken: dict[str, str] = {}
        for check in GUARANTEES:
            try:
                check(campaign)
            except AssertionError as failure:
                broken[check.__name__] = str(failure)
        assert broken == {}


# ---------------------------------------------------------------------------------- asserting


def check_the_campaign_really_injected_every_kind_of_fault(campaign: Campaign) -> None:
    faults = campaign.figures["faults_injected"]
    for kind in (
        "http_500",
        "http_503",
        "timeout",
        "duplicate_notification",
        "reorder",
        "corrupt_bytes",
        "malformed_json",
    ):
        assert faults.get(kind, 0) > 0, kind
    assert set(campaign.crashes.by_step) == set(CRASH_STEPS)
    assert campaign.figures["sqs"]["failed_records"] > 0
    assert len(campaign.expected) == MIX.tenants * MIX.per_tenant
    assert len({e.tenant for e in campaign.expected.values()}) >= 10
    if MODE == "full":
        assert len(campaign.expected) >= 500


def check_the_campaign_reached_quiescence_within_its_bounds(campaign: Campaign) -> None:
    assert campaign.rt.stack is not None
    assert campaign.rt.stack.queues["DossiersQueue"].max_receive_count == MAX_RECEIVE_COUNT
    assert campaign.rounds < MAX_ROUNDS
    assert campaign.rt.queue_depth("DossiersQueue") == 0


def check_every_dossier_has_exactly_one_outcome_the_expected_one(campaign: Campaign) -> None:
    wrong = {}
    for case_id, expected in campaign.expected.items():
        record = campaign.dossiers[case_id]
        got = (
            None
            if record is None
            else Expected(
                record.tenant_siret,
                record.outcome,
                record.reason if record.outcome == "rejected" else None,
                record.user_id if record.outcome == "linked" else None,
                record.link_method if record.outcome == "linked" else None,
            )
        )
        if got != expected:
            wrong[case_id] = (expected, got)
    assert wrong == {}
    # One record per case (the table is keyed by case id) and no record for anything else
    # (the table also holds the poll's per-notification markers, keyed "N#<notification id>").
    assert count_items(campaign.rt, campaign.rt.environment["DOSSIERS_TABLE"], skip_prefix="N#") == len(
        campaign.expected
    )


def count_items(rt: LocalRuntime, table_name: str, skip_prefix: str | None = None) -> int:
    dynamodb = rt.client("dynamodb")
    kwargs: dict[str, Any] = {"TableName": table_name, "Select": "COUNT"}
    if skip_prefix is not None:
        kwargs["FilterExpression"] = "NOT begins_with(case_id, :skip)"
        kwargs["ExpressionAttributeValues"] = {":skip": {"S": skip_prefix}}
    total = 0
    while True:
        page = dynamodb.scan(**kwargs)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def check_no_family_has_a_duplicate_qf_history_entry(campaign: Campaign) -> None:
    cases_by_family: Counter[tuple[str, str]] = Counter(
        (e.tenant, e.user_id) for e in campaign.expected.values() if e.user_id is not None
    )
    for key, family in campaign.families.items():
        sources = [(entry.source, entry.source_id) for entry in family.qf_history]
        assert len(sources) == len(set(sources)), key
        assert len(sources) == cases_by_family[key], key
    assert set(campaign.families) == set(cases_by_family)


def check_no_case_received_the_same_status_twice(campaign: Campaign) -> None:
    allowed = {
        "linked": ["SI_RECEIVED", "DONE"],
        "needs_review": ["SI_RECEIVED"],
        "rejected": ["SI_RECEIVED", "REFUSED"],
    }
    wrong = {}
    for case_id, expected in campaign.expected.items():
        events = campaign.hubee.status_events(case_id)
        if events != allowed[expected.outcome]:
            wrong[case_id] = events
    assert wrong == {}


def check_every_formulaire_notification_is_deleted_and_the_foreign_ones_untouched(campaign: Campaign) -> None:
    assert formulaire_notifications_pending(campaign.hubee, campaign.foreign_notifications) == []
    assert set(campaign.hubee.pending_notification_ids()) == campaign.foreign_notifications


def check_every_dlq_message_is_explained(campaign: Campaign) -> None:
    for message in campaign.dlq:
        notification = message["notification"]
        failures = campaign.deliveries.failures.get(notification["id"], [])
        # It failed at least maxReceiveCount times, each time for an injected fault ...
        assert len(failures) >= MAX_RECEIVE_COUNT, failures
        assert set(failures) <= EXPLAINED_FAILURES, failures
        # ... and HubEE redelivered the notification, which a later poll handled.
        record = campaign.dossiers.get(notification["caseId"])
        if notification.get("eventId") is None:
            assert record is not None and record.done("published"), notification["caseId"]


EXPLAINED_FAILURES = {
    "RuntimeError",  # an injected crash
    "dossier_busy",  # a duplicate delivered while the first one held the lease
    "hubee_server_error",
    "hubee_transport",
    "hubee_outcome_unknown",  # injected 5xx and timeouts
}


def check_every_dossier_record_expires_ninety_days_after_its_reception(campaign: Campaign) -> None:
    # Retention (the 90-day support window the form promises the usager): the TTL attribute DynamoDB deletes the record by.
    for case_id, record in campaign.dossiers.items():
        assert record is not None and record.expires_at is not None, case_id
        received = dt.datetime.fromisoformat(record.received_at)
        assert record.expires_at == int((received + dt.timedelta(days=RETENTION_DAYS)).timestamp()), case_id
    assert RETENTION_DAYS == 90


GUARANTEES = (
    check_the_campaign_really_injected_every_kind_of_fault,
    check_the_campaign_reached_quiescence_within_its_bounds,
    check_every_dossier_has_exactly_one_outcome_the_expected_one,
    check_no_family_has_a_duplicate_qf_history_entry,
    check_no_case_received_the_same_status_twice,
    check_every_formulaire_notification_is_deleted_and_the_foreign_ones_untouched,
    check_every_dlq_message_is_explained,
    check_every_dossier_record_expires_ninety_days_after_its_reception,
)
