"""A small budget loses nothing: 0.25 req/s, a burst of 50 manual refreshes and the monthly dispatch
of 100 families, on a virtual clock.

At 0.25 req/s those 150 calls take ten minutes; the clock here is virtual, so the test takes seconds.
Everything but time is real: qf_refresh's handler (``functions/qf_refresh/app.py``) and its service,
the dispatcher, the editor service's manual refresh, the pacer and the leases on DynamoDB (moto), the
API Particulier sandbox over HTTP (its rate limiter on the same virtual clock, granting the token one
call per second). SQS is emulated on the virtual clock as Lambda's poller sees it (``VirtualSqs``):
``DelaySeconds`` at most 900, visibility timeouts, receive counts, and the redrive policy moving a
message to the DLQ when it is received more than ``maxReceiveCount`` times.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from qfbridge.api_particulier import ApiParticulierClient, ApiParticulierConfig
from qfbridge.batch import BatchProcessingError
from qfbridge.domain.identity import DirectoryParent, PivotIdentity
from qfbridge.messages import RefreshMessage
from qfbridge.services.dispatch import RefreshDispatcher
from qfbridge.services.editor import EditorService
from qfbridge.services.refresh import RefreshService, RetryLater
from qfbridge.store.dossiers import DossierRepository
from qfbridge.store.events import EventPublisher
from qfbridge.store.families import FamilyRepository, QfEntry
from qfbridge.store.leases import FamilyRefreshLease
from qfbridge.store.links import LinkRepository
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.queues import SqsDossierQueue, SqsRefreshQueue
from qfbridge.store.secrets import SecretStore
from qfbridge.store.tables import dynamodb
from qfbridge.store.tenants import TenantRepository
from qfbridge_local.lambdas import LambdaContext
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from tests.support.world import World

REPO = Path(__file__).resolve().parents[2]
BUDGET = 0.25
MANUAL, MONTHLY = 50, 100
MAX_RECEIVE_COUNT = 10  # RefreshMaxReceiveCount's default
BATCH_SIZE = 5  # the template's SQS batch size for qf_refresh
VISIBILITY_TIMEOUT = 180
DISPATCH_INTERVAL = 300
MONDAY_09_00 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
PAST = "2000-01-01T00:00:00+00:00"
NEXT_MONTH = "2027-01-11T06:00:00+00:00"
TOKEN = "small-budget-token"


class VirtualClock:
    def __init__(self, start: dt.datetime) -> None:
        self.epoch = start.timestamp()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.epoch, dt.UTC)

    def monotonic(self) -> float:
        return self.epoch

    def sleep(self, seconds: float) -> None:
        self.epoch += max(0.0, seconds)


@dataclass
class _Message:
    id: str
    body: str
    visible_at: float
    receives: int = 0
    receipt: str = ""


@dataclass
class VirtualSqs:
    """The refresh queue and its DLQ on the virtual clock (what qf_refresh, the dispatcher and the API use)."""

    clock: VirtualClock
    queue_url: str
    dlq_url: str
    messages: dict[str, _Message] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)
    sent: int = 0
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0) -> dict[str, Any]:
        if not 0 <= DelaySeconds <= 900:
            raise ValueError("InvalidParameterValue: DelaySeconds must be within 0..900")
        if QueueUrl == self.dlq_url:
            self.dead_letters.append(MessageBody)
            return {"MessageId": "dlq"}
        assert QueueUrl == self.queue_url
        message_id = f"m{next(self._ids)}"
        self.messages[message_id] = _Message(message_id, MessageBody, self.clock.epoch + DelaySeconds)
        self.sent += 1
        return {"MessageId": message_id}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        for entry in Entries:
            self.send_message(QueueUrl, entry["MessageBody"], entry.get("DelaySeconds", 0))
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        if not 0 <= VisibilityTimeout <= 43_200:
            raise ValueError("InvalidParameterValue: VisibilityTimeout must be within 0..43200")
        message = self._by_receipt(ReceiptHandle)
        message.visible_at = self.clock.epoch + VisibilityTimeout

    def delete_message(self, ReceiptHandle: str) -> None:
        self.messages.pop(self._by_receipt(ReceiptHandle).id)

    def receive(self, limit: int) -> list[_Message]:
        """Up to ``limit`` visible messages; one received more than maxReceiveCount times goes to the DLQ."""
        batch: list[_Message] = []
        for message in sorted(self.messages.values(), key=lambda m: m.visible_at):
            if len(batch) == limit or message.visible_at > self.clock.epoch:
                break
            if message.receives >= MAX_RECEIVE_COUNT:
                del self.messages[message.id]
                self.dead_letters.append(message.body)
                continue
            message.receives += 1
            message.receipt = f"{message.id}-{message.receives}"
            message.visible_at = self.clock.epoch + VISIBILITY_TIMEOUT
            batch.append(message)
        return batch

    def next_visible_at(self) -> float | None:
        return min((m.visible_at for m in self.messages.values()), default=None)

    def _by_receipt(self, receipt: str) -> _Message:
        return next(m for m in self.messages.values() if m.receipt == receipt)


def load_handler_module() -> ModuleType:
    """qf_refresh's handler module, loaded from its file as Lambda does (a copy of its own)."""
    name = "qfbridge_fn_qf_refresh_small_budget"
    spec = importlib.util.spec_from_file_location(name, REPO / "functions" / "qf_refresh" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def invoke(handler: ModuleType, messages: list[_Message]) -> set[str]:
    """Invoke qf_refresh with one batch as Lambda does; the ids of the records that failed."""
    context = LambdaContext("QfRefreshFunction", 512, 30)
    try:
        response = handler.lambda_handler(sqs_event(messages), context)
    except BatchProcessingError:  # every record failed: Lambda fails the invocation, all stay queued
        return {message.id for message in messages}
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


def sqs_event(messages: list[_Message]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m.id,
                "receiptHandle": m.receipt,
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": str(m.receives),
                    "SentTimestamp": "0",
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:refresh",
                "awsRegion": "eu-west-3",
            }
            for m in messages
        ]
    }


def pivot_of(parent: DirectoryParent) -> PivotIdentity:
    return PivotIdentity(
        family_name=parent.nom_naissance,
        given_name=parent.prenoms,
        gender="female" if parent.sexe == "F" else "male",
        birthdate=parent.date_naissance,
        birthplace=parent.code_cog_naissance,
        birthcountry=parent.code_pays_naissance or "99100",
    )


@pytest.fixture
def runtime() -> Iterator[LocalRuntime]:
    options = RuntimeOptions(serve_api=False, env_overrides={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    with LocalRuntime.start(options) as rt:
        yield rt


@pytest.mark.parametrize(
    "admission",
    [
        pytest.param(True, id="as-deployed"),
        # Senders that book nothing (an older dispatcher, messages redriven from the DLQ): the queue
        # holds far more than the budget serves, and the waits must still spend no attempt.
        pytest.param(False, id="queue-beyond-the-budget", marks=pytest.mark.slow),
    ],
)
def test_a_quarter_request_per_second_serves_a_manual_burst_and_the_monthly_dispatch_losing_nothing(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch, admission: bool
) -> None:
    clock = VirtualClock(MONDAY_09_00)
    env = runtime.environment
    sqs = VirtualSqs(clock, env["REFRESH_QUEUE_URL"], env["REFRESH_DEAD_LETTER_QUEUE_URL"])
    with ApiParticulierSandbox(
        seed=3, load_fixtures=False, clock=clock.now, monotonic=clock.monotonic
    ) as sandbox:
        # Given a collectivité at 0.25 req/s, whose token API Particulier grants one call per second
        town = collectivites(1, seed=5)[0]
        tenants = TenantRepository(env["TENANTS_TABLE"])
        world = World(runtime, api_particulier=sandbox)
        world.collectivite(town, refresh_budget_rps=BUDGET)
        world.refresh_token(town, TOKEN, rate_limit_per_second=1)
        # And 150 linked families known to CNAF: 100 due for the monthly refresh, 50 not due
        families = FamilyRepository(env["FAMILIES_TABLE"])
        seeded = households(MANUAL + MONTHLY, seed=41, id_prefix="small")
        families.upsert_many(town.siret, [household.family for household in seeded])
        for index, household in enumerate(seeded):
            identity = pivot_of(household.family.parents[0])
            entry = QfEntry(
                quotient_familial=household.qf,
                source="dossier",
                source_id=f"case-{index}",
                received_at="2026-11-15T10:00:00+00:00",
            )
            update = families.link_update(
                town.siret,
                household.family.user_id,
                pivot=identity,
                entry=entry,
                members={},
                case_id=entry.source_id,
                next_refresh_at=NEXT_MONTH if index < MANUAL else PAST,
            )
            dynamodb().transact_write_items(TransactItems=[update])
            sandbox.add_person(identity, household.qf)
        manual_ids = [household.family.user_id for household in seeded[:MANUAL]]

        pacer = TenantPacer(env["TENANTS_TABLE"])
        service = RefreshService(
            tenants=tenants,
            families=families,
            pacer=pacer,
            leases=FamilyRefreshLease(env["FAMILIES_TABLE"]),
            secrets=SecretStore(env["TENANT_SECRETS_PREFIX"]),
            events=EventPublisher(env["EVENT_BUS_NAME"]),
            client=ApiParticulierClient(ApiParticulierConfig(base_url=sandbox.url)),
            max_attempts=MAX_RECEIVE_COUNT,
            clock=clock.now,
            sleep=clock.sleep,
        )
        handler = load_handler_module()
        monkeypatch.setattr(handler, "service", lambda: service)
        refresh_queue = SqsRefreshQueue(
            env["REFRESH_QUEUE_URL"], dead_letter_url=env["REFRESH_DEAD_LETTER_QUEUE_URL"], client=sqs
        )
        monkeypatch.setattr(handler, "queue", lambda: refresh_queue)
        editor = EditorService(
            tenants=tenants,
            families=families,
            dossiers=DossierRepository(env["DOSSIERS_TABLE"]),
            links=LinkRepository(env["FORM_LINKS_TABLE"]),
            secrets=SecretStore(env["TENANT_SECRETS_PREFIX"]),
            refresh_queue=refresh_queue,
            dossier_queue=SqsDossierQueue(env["DOSSIERS_QUEUE_URL"], client=sqs),
            link_signing_secret_id=env["LINK_SIGNING_SECRET_ID"],
            form_base_url=env["FORM_BASE_URL"],
            clock=clock.now,
            pacer=pacer if admission else None,
        )
        dispatcher = RefreshDispatcher(
            tenants=tenants,
            families=families,
            queue=refresh_queue,
            interval_seconds=DISPATCH_INTERVAL,
            clock=clock.now,
            pacer=pacer if admission else None,
        )

        # When agents ask for 50 refreshes at once, and the schedule dispatches every 5 minutes
        for user_id in manual_ids:
            editor.refresh_now(town.siret, user_id)
        next_dispatch = clock.epoch
        ticks = 0
        while True:
            if clock.epoch >= next_dispatch:
                dispatcher.run()
                ticks += 1
                next_dispatch += DISPATCH_INTERVAL
            batch = sqs.receive(BATCH_SIZE)
            if batch:
                failed = invoke(handler, batch)
                for message in batch:
                    if message.id not in failed:
                        sqs.delete_message(message.receipt)
                continue
            if not sqs.messages and not families.due(town.siret, clock.now().isoformat(), 1):
                break
            upcoming = sqs.next_visible_at()
            clock.epoch = min(upcoming, next_dispatch) if upcoming is not None else next_dispatch
            assert ticks < 20, "the campaign did not end"

    # Then every family reached API Particulier exactly once, with no 429
    received = sandbox.requests_received()
    per_identity = Counter(
        tuple(value for key, value in request.query if key != "recipient") for request in received
    )
    assert len(received) == MANUAL + MONTHLY and set(per_identity.values()) == {1}
    assert {request.status for request in received} == {200}
    assert sandbox.stats().throttled == 0
    # And nothing was dead-lettered, nothing recorded failed: every family holds its refreshed QF
    assert sqs.dead_letters == []
    records = [families.get(town.siret, household.family.user_id) for household in seeded]
    assert all(record is not None and record.refresh.status == "ok" for record in records)
    # And the tenant's calls never came closer than its budget allows (one per 4 s)
    arrivals = sandbox.arrival_times(TOKEN)
    assert min(later - earlier for earlier, later in itertools.pairwise(arrivals)) >= 1 / BUDGET - 1e-6
    # And the campaign took about the time the budget needs, not more (150 calls at 0.25 req/s)
    span = arrivals[-1] - arrivals[0]
    assert (len(arrivals) - 1) / span >= 0.9 * BUDGET
    if admission:  # every message was released at its turn: none had to go back to the queue
        assert sqs.sent == MANUAL + MONTHLY


# --- The attempts a message spends ---------------------------------------------------------------------


@dataclass
class Raising:
    retry: RetryLater

    def refresh(
        self, message: RefreshMessage, *, attempt: int, request_id: str | None = None, may_defer: bool = False
    ) -> Any:
        self.attempts.append(attempt)
        raise self.retry

    attempts: list[int] = field(default_factory=list)


def handle_once(
    monkeypatch: pytest.MonkeyPatch, retry: RetryLater, body: dict[str, Any], receives: int
) -> tuple[VirtualSqs, Raising, set[str]]:
    handler = load_handler_module()
    sqs = VirtualSqs(VirtualClock(MONDAY_09_00), "queue-url", "dlq-url")
    service = Raising(retry)
    settings = SimpleNamespace(refresh_queue_url="queue-url", refresh_dead_letter_queue_url="dlq-url")
    monkeypatch.setattr(handler, "service", lambda: service)
    monkeypatch.setattr(handler, "settings", lambda: settings)
    monkeypatch.setattr(
        handler, "queue", lambda: SqsRefreshQueue("queue-url", dead_letter_url="dlq-url", client=sqs)
    )
    message = _Message("m", json.dumps(body), 0.0, receives, "m-r")
    sqs.messages["m"] = message
    return sqs, service, invoke(handler, [message])


def test_a_wait_on_the_tenth_reception_goes_back_as_a_fresh_copy_spending_no_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a message received for the tenth time (SQS would dead-letter it at the next reception)
    body = {"siret": "21690123000012", "user_id": "u1", "reason": "manual"}
    # When its refresh has to wait for the tenant's pacer (no call made)
    sqs, service, failed = handle_once(monkeypatch, RetryLater("paced", 40, counts=False), body, 10)
    # Then the record succeeds and a fresh copy waits 40 s, carrying the 9 attempts really spent
    assert failed == set() and sqs.dead_letters == []
    (copy,) = [m for m in sqs.messages.values() if m.id != "m"]
    assert json.loads(copy.body) == {**body, "attempts_before": 9}
    assert copy.visible_at == MONDAY_09_00.timestamp() + 40 and copy.receives == 0
    assert service.attempts == [10]


def test_the_attempts_of_earlier_copies_count_and_the_last_one_dead_letters_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a copy that carries 9 attempts spent by earlier copies, received once
    body = {"siret": "21690123000012", "user_id": "u1", "reason": "monthly", "attempts_before": 9}
    # When its call fails for the last time (the service recorded the failure and asks for the DLQ)
    sqs, service, failed = handle_once(
        monkeypatch, RetryLater("provider_error", 0, dead_letter=True), body, 1
    )
    # Then it was the tenth attempt, and the message, as first sent, is in the DLQ
    assert service.attempts == [10]
    assert failed == set()
    assert [json.loads(message) for message in sqs.dead_letters] == [
        {"siret": "21690123000012", "user_id": "u1", "reason": "monthly"}
    ]


def test_a_real_failure_spends_the_reception_and_keeps_the_message_for_its_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {"siret": "21690123000012", "user_id": "u1", "reason": "monthly", "attempts_before": 2}
    sqs, service, failed = handle_once(monkeypatch, RetryLater("throttled", 30), body, 3)
    assert service.attempts == [5]
    assert failed == {"m"}
    assert sqs.messages["m"].visible_at == MONDAY_09_00.timestamp() + 30 and sqs.dead_letters == []
