"""The intake fault campaign: dossiers through the laptop runtime while everything fails.

Given at least 10 collectivités (two of them share one HubEE credential, as an editor's
delegation does) and dossiers of every kind — families of the directory, families holding a
signed form link, strangers, unreadable dossiers, a second form from the same family — plus
notifications of another démarche, the HubEE sandbox answers 5xx, times out, duplicates and
reorders the notification pages, corrupts attachment bytes in transit and truncates JSON
attachments, answers a status POST it accepted with a dropped connection, while reconcile's
execution environments (worker processes) are SIGKILLed right after each step of the journal (at
least once per step, then at a seeded rate per case and step) — no ``finally`` runs, leases expire —
and a few invocations stall past their lease while a duplicate delivery of their message takes it.
The poll and the queues run in rounds until nothing is left to do (a bounded number of rounds).
The instrumentation runs inside the environments (``campaign_hooks.py``) and writes its own records.

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
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from campaign_hooks import CRASH_STEPS, LEASE_SECONDS, STALL_SECONDS

from qfbridge.domain.errors import QfbridgeError
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.services.editor import DEFAULT_REJECT_REASON, ReviewDecision
from qfbridge.services.reconcile import INTEGRITY_ATTEMPTS
from qfbridge.store.dossiers import RETENTION_DAYS, DossierRecord, DossierRepository
from qfbridge.store.families import FamilyRecord, FamilyRepository
from qfbridge.store.secrets import TenantCredentials
from qfbridge_local.population import Collectivite, Household, collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.world import World

SEED = 20260
FOREIGN_PROCESS_CODE = "DemandeActeEtatCivil"
HOOKS = Path(__file__).with_name("campaign_hooks.py")
REPO = Path(__file__).resolve().parents[2]
MAX_ROUNDS = 25


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
TIME_BUDGET_S = {"quick": 900.0, "full": 3000.0}[MODE]
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
    ("lost_response", "POST /cases/{caseId}/events", 2),  # accepted, then the connection dropped
    ("timeout", "GET /cases/{caseId}/attachments/{attachmentId}", 1),
    ("duplicate_notification", "GET /notifications", 3),
    ("reorder", "GET /notifications", 3),
)
# Bytes damaged in transit, per readable dossier: once or twice, never as often as reconcile
# downloads again (INTEGRITY_ATTEMPTS), so the outcome stays the expected one whatever the order.
TRANSIENT_CORRUPTION_RATE = 0.1
CRASH_RATE = {"quick": 0.03, "full": 0.01}[MODE]  # per (case, step), after the first at each step: a SIGKILL
SANDBOX_HANG_S = 0.7  # a "timeout" fault answers after the client gave up
MAX_RECEIVE_COUNT = 5  # DossiersQueue's redrive policy (asserted below against the template)
REFRESHES_PER_FAMILY = 3  # the qf_refresh storm: immediate refreshes the editor asks per linked family
STALLS = {"quick": 2, "full": 4}[MODE]  # invocations that stall past their lease
# Every timer of the runtime runs faster (quick: twice, reconcile's 60 s timeout lasting 30 s; the 360 s
# visibility is jumped over when nothing runs); the handlers' real work is not sped up, so the full
# campaign keeps real time: a loaded machine must not turn its batches into timeouts.
CLOCK_SPEED = {"quick": 2.0, "full": 1.0}[MODE]


@dataclass(frozen=True)
class Expected:
    """What a deposited dossier must end as."""

    tenant: str
    outcome: str
    reason: str | None = None
    user_id: str | None = None
    link_method: str | None = None


@dataclass
class Records:
    """What the environments wrote (campaign_hooks.py) and what the runtime saw fail."""

    crashes: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    handled: list[dict[str, Any]]
    starts: list[dict[str, Any]]
    stalls: list[dict[str, Any]]
    retries: int
    failed_batches: list[tuple[str, list[str]]]

    @property
    def crashes_by_step(self) -> Counter[str]:
        return Counter(c["step"] for c in self.crashes)

    def failures(self) -> dict[str, list[str]]:
        """Every failed delivery of a notification, by notification id, with its cause."""
        by_id: dict[str, list[str]] = defaultdict(list)
        for record in self.deliveries:
            by_id[record["notification"]].append(record["code"])
        for reason, bodies in self.failed_batches:
            for body in bodies:
                notification = json.loads(body).get("notification") or {}
                by_id[str(notification.get("id"))].append(f"batch_{reason}")
        return by_id


def read_records(directory: Path, rt: LocalRuntime) -> Records:
    def lines(name: str) -> list[dict[str, Any]]:
        path = directory / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    assert rt.triggers is not None
    return Records(
        crashes=lines("crashes.jsonl"),
        deliveries=lines("deliveries.jsonl"),
        handled=lines("handled.jsonl"),
        starts=lines("starts.jsonl"),
        stalls=lines("stalls.jsonl"),
        retries=len(lines("retries.jsonl")),
        failed_batches=list(rt.triggers.source_for("DossiersQueue").failed_batches),
    )


@dataclass
class Campaign:
    """The world after the campaign, and its figures."""

    rt: LocalRuntime
    hubee: HubeeSandbox
    expected: dict[str, Expected]
    foreign_notifications: set[str]
    records: Records
    duplicates_sent: list[str]
    rounds: int
    duration_s: float
    dlq: list[dict[str, Any]]
    dossiers: dict[str, DossierRecord | None]
    families: dict[tuple[str, str], FamilyRecord]
    figures: dict[str, Any]
    editor: EditorWork


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


def deliver_duplicates_of_stalled_invocations(
    rt: LocalRuntime, directory: Path, stop: threading.Event, sent: list[str]
) -> None:
    """When an invocation stalls, deliver its message again once the stalled one's lease expired:
    the duplicate takes the lease while the first invocation still runs (HubEE's duplicates and
    SQS's at-least-once delivery both produce this). It is delivered as another SQS batch would be,
    straight to a free environment of reconcile: behind the queue's backlog it could come after the
    stalled invocation's timeout."""
    seen: set[str] = set()
    path = directory / "stalls.jsonl"
    while not stop.is_set():
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                if "message" not in record or record["case_id"] in seen:
                    continue
                seen.add(record["case_id"])
                threading.Thread(
                    target=_deliver_alone,
                    args=(rt, record["message"], record["at"] + LEASE_SECONDS + 1),
                    name="duplicate",
                    daemon=True,
                ).start()
                sent.append(record["case_id"])
        stop.wait(0.05)


def _deliver_alone(rt: LocalRuntime, message: dict[str, Any], at: float) -> None:
    """One message as a batch of its own (a second receive of it), to reconcile at ``at`` (the
    runtime clock's time), in an environment taken as soon as one is free."""
    event = {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "duplicate",
                "body": json.dumps(message),
                "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:dossiers",
                "awsRegion": "eu-west-3",
            }
        ]
    }
    try:
        rt.functions["ReconcileFunction"].invoke(event, not_before=at)
    except Exception:  # its outcome is on the environments' records (handled.jsonl)
        return


@dataclass
class EditorWork:
    """What the editor's software did while the intake ran (its own record)."""

    pushes: int = 0
    families_rewritten: int = 0
    last_pushed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)  # case id -> tenant, rejected by an agent
    erased: list[tuple[str, str]] = field(default_factory=list)
    refreshes: Counter[tuple[str, str]] = field(default_factory=Counter)  # immediate refreshes asked
    in_api_particulier: set[tuple[str, str]] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)  # the API's own refusals, by code


def erasable_families(towns: list[Collectivite]) -> dict[str, Household]:
    """One family per collectivité that no dossier names, pushed before the intake and erased during it."""
    return {
        town.siret: households(1, seed=SEED + 2000 + index, id_prefix=f"e{index:02d}")[0]
        for index, town in enumerate(towns)
    }


def api_particulier_token(client_id: str) -> str:
    return f"particulier-{client_id}"


def editor_at_work(
    rt: LocalRuntime,
    towns: list[Collectivite],
    erasable: dict[str, Household],
    particulier: ApiParticulierSandbox,
    stop: threading.Event,
    work: EditorWork,
) -> None:
    """The editor's software at work while dossiers arrive: it pushes part of each collectivité's
    directory again (the families' children listed in another order: a real write on the families
    dossiers are being linked to), asks for an immediate QF refresh of the families already linked
    (a qf_refresh storm: up to REFRESHES_PER_FAMILY each, API Particulier answering a newer QF),
    erases one family per collectivité, and an agent rejects half of the dossiers that wait for
    review as soon as they are listed."""
    editor = rt.editor_service()
    families = FamilyRepository(rt.environment["FAMILIES_TABLE"])
    rng = random.Random(f"editor:{SEED}")
    directories = {
        town.siret: households(MIX.known + MIX.by_link, seed=SEED + index, id_prefix=f"t{index:02d}")
        for index, town in enumerate(towns)
    }
    version = 0
    while not stop.is_set():
        version += 1
        for town in towns:
            chosen = rng.sample(directories[town.siret], min(5, len(directories[town.siret])))
            rows = []
            for household in chosen:
                family = household.family.model_dump(mode="json")
                if version % 2:
                    family["enfants"] = list(reversed(family["enfants"]))
                rows.append(family)
                key = (town.siret, household.family.user_id)
                if work.last_pushed.get(key, household.family.model_dump(mode="json")) != family:
                    work.families_rewritten += 1
                work.last_pushed[key] = family
            editor.batch_upsert(town.siret, rows)
            work.pushes += 1
            for household in chosen:
                key = (town.siret, household.family.user_id)
                if work.refreshes[key] >= REFRESHES_PER_FAMILY:
                    continue
                record = families.get(*key)
                if record is None or record.pivot_identity is None:
                    continue  # not linked yet
                if key not in work.in_api_particulier:
                    newer = household.qf.model_dump() | {"valeur": household.qf.valeur + 7}
                    particulier.add_person(record.pivot_identity, QuotientFamilial.model_validate(newer))
                    work.in_api_particulier.add(key)
                try:
                    editor.refresh_now(*key)
                except QfbridgeError as exc:
                    work.refused[exc.code] += 1
                    continue
                work.refreshes[key] += 1
            if version == 2:  # once the intake is under way
                editor.erase_family(town.siret, erasable[town.siret].family.user_id)
                work.erased.append((town.siret, erasable[town.siret].family.user_id))
            in_review, _ = editor.list_dossiers(town.siret, status="needs_review", limit=100, cursor=None)
            for dossier in in_review:
                if dossier.case_id in work.resolved or int(dossier.case_id.replace("-", ""), 16) % 2:
                    continue
                try:
                    editor.resolve_review(
                        town.siret,
                        str(dossier.reference),
                        ReviewDecision("reject"),
                        resolved_by="agent-campaign",
                    )
                except QfbridgeError as exc:
                    work.refused[exc.code] += 1
                    continue
                work.resolved[dossier.case_id] = town.siret
        stop.wait(0.5)


def rotate_a_credential_mid_poll(
    rt: LocalRuntime, hubee: HubeeSandbox, town: Collectivite, client_id: str, rotated: list[str]
) -> None:
    """Once the first poll is listing notifications, the editor stores a renewed HubEE secret for
    one collectivité and HubEE starts refusing the old one; the sandbox's clock then passes the
    tokens' lifetime, so that every environment has to authenticate again."""
    deadline = time.monotonic() + 120
    while hubee.calls[("GET", "/notifications")] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    new_secret = f"renewed-{client_id}"
    rt.editor_service().store_credentials(
        town.siret,
        TenantCredentials(
            hubee_client_id=client_id,
            hubee_client_secret=new_secret,
            api_particulier_token=api_particulier_token(client_id),
        ),
    )
    hubee.rotate_secret(client_id, new_secret)
    hubee.advance_clock(hubee.token_ttl_s + 1)
    rotated.append(client_id)


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
    with (
        HubeeSandbox(seed=SEED, fault_timeout_s=SANDBOX_HANG_S) as hubee,
        ApiParticulierSandbox(seed=SEED, load_fixtures=False) as particulier,
        tempfile.TemporaryDirectory(prefix="campaign-") as scratch,
    ):
        directory = Path(scratch)
        (directory / "markers").mkdir()
        options = RuntimeOptions(
            serve_api=False,
            isolation="process",
            clock_speed=CLOCK_SPEED,
            environment_hooks={
                "ReconcileFunction": [f"{HOOKS}:instrument_reconcile"],
                "HubeePollFunction": [f"{HOOKS}:instrument_poll"],
            },
            env_overrides={
                "HUBEE_API_URL": hubee.api_url,
                "HUBEE_TOKEN_URL": hubee.token_url,
                "API_PARTICULIER_URL": particulier.url,
                "DOSSIER_LEASE_SECONDS": str(LEASE_SECONDS),
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "CAMPAIGN_DIR": str(directory),
                "CAMPAIGN_SEED": str(SEED),
                "CAMPAIGN_CRASH_RATE": str(CRASH_RATE),
                "CAMPAIGN_STALLS": str(STALLS),
            },
        )
        with LocalRuntime.start(options) as rt:
            towns = collectivites(MIX.tenants, seed=SEED)
            world = World(rt, hubee=hubee, api_particulier=particulier)
            for town in towns:
                world.collectivite(town)
            world.hubee_credential(  # two collectivités, one credential
                "client-delegation",
                towns[:2],
                api_particulier_token=api_particulier_token("client-delegation"),
            )
            for index, town in enumerate(towns[2:], start=2):
                client_id = f"client-{index:02d}"
                world.hubee_credential(
                    client_id, [town], api_particulier_token=api_particulier_token(client_id)
                )
            expected, foreign = deposit_everything(rt, hubee, towns)
            erasable = erasable_families(towns)
            for siret, household in erasable.items():
                rt.editor_service().put_family(siret, household.family)
            deposit_faults = hubee.faults_injected
            linked_cases = sorted(c for c, e in expected.items() if e.outcome == "linked")
            # candidates: the first STALLS linked cases whose last write comes early enough in its invocation
            stalled = linked_cases
            (directory / "stall_cases.txt").write_text("\n".join(stalled), encoding="utf-8")
            duplicates_sent: list[str] = []
            stop = threading.Event()
            watcher = threading.Thread(
                target=deliver_duplicates_of_stalled_invocations,
                args=(rt, directory, stop, duplicates_sent),
                daemon=True,
            )
            watcher.start()
            rotated: list[str] = []
            rotation = threading.Thread(
                target=rotate_a_credential_mid_poll,
                args=(rt, hubee, towns[3], "client-03", rotated),
                daemon=True,
            )
            hubee.reset_counters()
            hubee.fault_rates(CALL_FAULT_RATES, timeout_s=SANDBOX_HANG_S)
            for kind, route, times in ARMED_FAULTS:
                hubee.inject(kind, route=route, times=times)  # type: ignore[arg-type]

            rotation.start()
            work = EditorWork()
            editor = threading.Thread(
                target=editor_at_work, args=(rt, towns, erasable, particulier, stop, work), daemon=True
            )
            editor.start()
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
            stop.set()
            watcher.join()
            rotation.join()
            editor.join()
            # The agents' last decisions: their follow-ups (statuses, events) are queued
            rt.drain(timeout=TIME_BUDGET_S)
            duration = time.monotonic() - started
            for case_id, siret in work.resolved.items():
                expected[case_id] = Expected(siret, "rejected", DEFAULT_REJECT_REASON)
            hubee.clear_faults()
            records = read_records(directory, rt)

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
                "clock_speed": CLOCK_SPEED,
                "emulated_seconds_skipped": round(rt.clock.skipped, 1),
                "reconcile_kills": dict(sorted(records.crashes_by_step.items())),
                "reconcile_environments_started": rt.functions["ReconcileFunction"].environments_started,
                "stalls_past_the_lease": len([r for r in records.stalls if "message" in r]),
                "duplicates_delivered_to_stalled_cases": len(duplicates_sent),
                "credentials_rotated_mid_poll": rotated,
                "editor_during_intake": {
                    "directory_pushes": work.pushes,
                    "families_rewritten": work.families_rewritten,
                    "reviews_rejected": len(work.resolved),
                    "families_erased": len(work.erased),
                    "immediate_refreshes_asked": sum(work.refreshes.values()),
                    "api_particulier_calls": particulier.stats().requests,
                    "api_particulier_429": particulier.stats().throttled,
                    "refused_by_the_api": dict(work.refused),
                },
                "token_calls": dict(sorted(hubee.token_calls.items())),
                "sqs": {
                    "records": stats.records if stats else 0,
                    "failed_records": stats.failed_records if stats else 0,
                    "crashed_batches": stats.crashed_batches if stats else 0,
                    "timed_out_batches": stats.timed_out_batches if stats else 0,
                },
                "http_retries": {"reconcile": records.retries},
                "failures_by_code": dict(
                    Counter(c for codes in records.failures().values() for c in codes).most_common()
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
                records,
                duplicates_sent,
                rounds,
                duration,
                dlq,
                dossiers,
                families,
                figures,
                work,
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
    assert set(campaign.records.crashes_by_step) == set(CRASH_STEPS)  # real kills, at every step
    assert campaign.figures["faults_injected"].get("lost_response", 0) > 0
    assert campaign.figures["credentials_rotated_mid_poll"] == ["client-03"]
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
        assert len(sources) == len(set(sources)), key  # a refresh period once, a dossier once
        assert len([s for s in sources if s[0] != "refresh"]) == cases_by_family[key], key
    assert set(campaign.families) == set(cases_by_family)


def check_no_case_received_the_same_status_twice(campaign: Campaign) -> None:
    allowed = {
        "linked": ["SI_RECEIVED", "DONE"],
        "needs_review": ["SI_RECEIVED"],
        "rejected": ["SI_RECEIVED", "REFUSED"],
    }
    wrong = {}
    for case_id, expected in campaign.expected.items():
        # The sandbox's raw record of every status POST: what HubEE recorded, repeats included.
        recorded = [
            p["new"]
            for p in campaign.hubee.status_posts(case_id)
            if p["action_type"] == "STATUS_UPDATE" and p["recorded"]
        ]
        if recorded != allowed[expected.outcome] or campaign.hubee.status_events(case_id) != recorded:
            wrong[case_id] = recorded
    assert wrong == {}


def check_every_formulaire_notification_is_deleted_and_the_foreign_ones_untouched(campaign: Campaign) -> None:
    assert formulaire_notifications_pending(campaign.hubee, campaign.foreign_notifications) == []
    assert set(campaign.hubee.pending_notification_ids()) == campaign.foreign_notifications


def check_every_dlq_message_is_explained(campaign: Campaign) -> None:
    for message in campaign.dlq:
        notification = message["notification"]
        failures = campaign.records.failures().get(notification["id"], [])
        # It failed at least maxReceiveCount times, each time for an injected fault ...
        assert len(failures) >= MAX_RECEIVE_COUNT, failures
        assert set(failures) <= EXPLAINED_FAILURES, failures
        # ... and HubEE redelivered the notification, which a later poll handled.
        record = campaign.dossiers.get(notification["caseId"])
        if notification.get("eventId") is None:
            assert record is not None and record.done("published"), notification["caseId"]


EXPLAINED_FAILURES = {
    "batch_crashed",  # its environment was killed during the batch (its own case's or another's)
    "batch_timeout",  # the batch's invocation ran past reconcile's timeout
    "batch_BatchProcessingError",  # every record of the batch failed (each one's cause is on record too)
    "dossier_busy",  # a duplicate delivered while the first one held the lease
    "lease_lost",  # the stalled invocation, whose lease another environment took
    "hubee_server_error",
    "hubee_transport",
    "hubee_outcome_unknown",  # injected 5xx and timeouts
    "hubee_auth",  # the rotated credential, in an environment that still holds the old secret
}


def check_a_stalled_invocation_lost_its_lease_to_a_duplicate_while_it_still_ran(campaign: Campaign) -> None:
    """Lease expiry while a handler still runs: another environment took the case over (the
    guarantees above then show that nothing was done twice)."""
    stalls = {r["case_id"]: r for r in campaign.records.stalls if "message" in r}
    resumed = {r["case_id"]: r["resumed_at"] for r in campaign.records.stalls if "resumed_at" in r}
    # (at least one: on a loaded machine few last writes come early enough in their invocation)
    assert 0 < len(stalls) <= STALLS and sorted(campaign.duplicates_sent) == sorted(stalls)
    for case_id, stall in stalls.items():
        still_running_until = resumed.get(case_id, stall["at"] + STALL_SECONDS)
        # (started by another environment: it may itself be killed later, so its end is not required)
        takeovers = [
            h
            for h in campaign.records.starts
            if h["case_id"] == case_id
            and h["pid"] != stall["pid"]
            and stall["at"] + LEASE_SECONDS <= h["at"] < still_running_until
        ]
        assert takeovers, case_id
        # ... and the stalled invocation, back, wrote nothing: its write (the last of an attempt, or
        # of one that failed meanwhile) was refused, fenced by the lease it lost
        writes = [r["write"] for r in campaign.records.stalls if r["case_id"] == case_id and "write" in r]
        assert writes == ["refused"], (case_id, writes)


def check_the_editors_work_during_the_intake_was_kept(campaign: Campaign) -> None:
    """Directory pushes, erasures and review decisions made while dossiers were linked: each push's
    last version is what the directory holds (the links' transactions did not overwrite it, and it
    did not wipe their QF: see the history check), the erased families are gone for good, and the
    rejected dossiers ended rejected (the outcome and status checks above)."""
    work = campaign.editor
    assert work.pushes > 0 and work.families_rewritten > 0 and work.resolved
    assert len(work.erased) == campaign.figures["tenants"]  # one per collectivité
    families = FamilyRepository(campaign.rt.environment["FAMILIES_TABLE"])
    stale = {}
    for (siret, user_id), pushed in work.last_pushed.items():
        record = families.get(siret, user_id)
        if record is None or record.family is None or record.family.model_dump(mode="json") != pushed:
            stale[user_id] = None if record is None or record.family is None else "older version"
    assert stale == {}
    assert [key for key in work.erased if families.get(*key) is not None] == []


def check_the_qf_refresh_storm_was_served_within_budget_and_lost_nothing(campaign: Campaign) -> None:
    """Immediate refreshes asked while dossiers were linked to the same families: each refreshed
    family holds API Particulier's QF once (its period's entry, asserted unique above), none was
    dead-lettered, and API Particulier never answered 429 (its budget per token held)."""
    work = campaign.editor
    figures = campaign.figures["editor_during_intake"]
    assert figures["immediate_refreshes_asked"] > 0 and figures["api_particulier_429"] == 0
    refreshed = {
        key
        for key, family in campaign.families.items()
        if any(entry.source == "refresh" for entry in family.qf_history)
    }
    assert set(work.refreshes) <= refreshed
    sqs = campaign.rt.client("sqs")
    for queue in ("RefreshQueue", "RefreshDeadLetterQueue"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=campaign.rt.queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert int(attributes["ApproximateNumberOfMessages"]) == 0, queue


def check_every_dossier_record_expires_ninety_days_after_its_reception(campaign: Campaign) -> None:
    # Retention: a dossier is kept 90 days after its reception (the editors' support window), by the
    # TTL attribute DynamoDB deletes the record by.
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
    check_a_stalled_invocation_lost_its_lease_to_a_duplicate_while_it_still_ran,
    check_the_editors_work_during_the_intake_was_kept,
    check_the_qf_refresh_storm_was_served_within_budget_and_lost_nothing,
    check_every_dossier_record_expires_ninety_days_after_its_reception,
)
