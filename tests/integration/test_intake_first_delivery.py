"""A message's first delivery writes nothing before its first durable step: what keeps it safe.

Two first deliveries of one case (HubEE serving a notification again, SQS delivering a message to
two batches at once) race here deterministically: one of them is held at a chosen step while the
other runs. The guarantees must hold as with the lease taken first: one outcome, each status
posted once, one QF history entry, one audit record, one set of events.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from qfbridge.hubee import PROCESS_TOKEN_CACHE, HubeeClient, HubeeConfig, HubeeCredentials
from qfbridge.messages import NotificationMessage, notification_message
from qfbridge.store.audit import read_records
from qfbridge.store.dossiers import DossierBusy, DossierRepository, Step
from qfbridge.store.families import FamilyRepository
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import Tenant, TenantRepository
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.journal_faults import NO_STEP, JournalFaults

TOWN = collectivites(1, seed=41)[0]
CLIENT_ID = "client-first"
RECONCILE_MODULE = "qfbridge_fn_reconcile_app"


@pytest.fixture
def hubee() -> Iterator[HubeeSandbox]:
    PROCESS_TOKEN_CACHE.clear()
    with HubeeSandbox(seed=41) as sandbox:
        yield sandbox
    PROCESS_TOKEN_CACHE.clear()


@pytest.fixture
def runtime(hubee: HubeeSandbox) -> Iterator[LocalRuntime]:
    options = RuntimeOptions(
        serve_api=False, env_overrides={"HUBEE_API_URL": hubee.api_url, "HUBEE_TOKEN_URL": hubee.token_url}
    )
    with LocalRuntime.start(options) as rt:
        yield rt


def _arrange(rt: LocalRuntime, hubee: HubeeSandbox) -> tuple[str, str, NotificationMessage]:
    """A tenant, a family of its directory, its dossier deposited; returns (case id, user id, message)."""
    env = rt.environment
    TenantRepository(env["TENANTS_TABLE"]).put(
        Tenant(
            siret=TOWN.siret, name="Commune", cog=TOWN.cog, hubee_client_id=CLIENT_ID, has_credentials=True
        )
    )
    SecretStore(env["TENANT_SECRETS_PREFIX"]).write_tenant(
        TOWN.siret,
        TenantCredentials(hubee_client_id=CLIENT_ID, hubee_client_secret=f"secret-{CLIENT_ID}"),
    )
    hubee.add_subscription(CLIENT_ID, f"secret-{CLIENT_ID}", [(TOWN.siret, TOWN.cog)])
    household = households(1, seed=41)[0]
    FamilyRepository(env["FAMILIES_TABLE"]).upsert(TOWN.siret, household.family)
    case = hubee.deposit_formulaire_qf(TOWN.siret, TOWN.cog, household.formulaire())
    config = HubeeConfig(api_url=hubee.api_url, token_url=hubee.token_url)
    credentials = HubeeCredentials(client_id=CLIENT_ID, client_secret=f"secret-{CLIENT_ID}")
    with HubeeClient(config, credentials) as client:
        (notification,) = [n for n in client.list_notifications(max_result=100) if n.case_id == case.case_id]
    return (
        case.case_id,
        household.family.user_id,
        notification_message(notification, TOWN.siret, (TOWN.siret,)),
    )


def _first_delivery(message: NotificationMessage, message_id: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": message_id,
                "body": message.body(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:dossiers",
                "awsRegion": "eu-west-3",
            }
        ]
    }


def _twin(message: NotificationMessage, notification_id: str) -> NotificationMessage:
    """The same case under another notification id (HubEE notifying the case again)."""
    return message.model_copy(
        update={"notification": message.notification.model_copy(update={"id": notification_id})}
    )


class HoldAt:
    """An ``on_step`` of ``JournalFaults`` used as a gate: the first delivery to make ``step`` durable
    waits right after that write."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.reached = threading.Event()
        self.go = threading.Event()
        self.held = False
        self._lock = threading.Lock()

    def __call__(self, case_id: str, step: str) -> None:
        if step != self.step:
            return
        with self._lock:
            if self.held:
                return
            self.held = True
        self.reached.set()
        assert self.go.wait(60), "the held delivery was never released"


class HoldBeforeFirstWrite:
    """reconcile's dossier store, the first delivery to write held right before its write: it has
    read and parsed the dossier, nothing of it is durable yet."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reached = threading.Event()
        self.go = threading.Event()
        self.held = False
        self.stored_when_held: bool | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name in NO_STEP:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                hold, self.held = not self.held, True
            if hold:
                record = args[0] if args else kwargs["record"]
                self.stored_when_held = self.store.get(record.case_id) is not None
                self.reached.set()
                assert self.go.wait(60), "the held delivery was never released"
            return attribute(*args, **kwargs)

        return call


def _run(rt: LocalRuntime, event: dict[str, Any], into: list[Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(rt.invoke("ReconcileFunction", event)))
    thread.start()
    return thread


def _in_another_environment(service: Any, message: NotificationMessage) -> Any:
    """The other delivery, run as a second execution environment would: the same use case, the same
    tables, HubEE and stores (the runtime's in-process function has one environment, and it is busy
    with the held delivery — an environment runs one invocation at a time)."""
    return service.handle(message.model_copy(update={"receive_count": 1}))


def _assert_handled_once(rt: LocalRuntime, hubee: HubeeSandbox, case_id: str, user_id: str) -> None:
    env = rt.environment
    record = DossierRepository(env["DOSSIERS_TABLE"]).get(case_id)
    assert record is not None and record.outcome == "linked" and record.user_id == user_id
    assert (
        record.done(Step.PUBLISHED)
        and record.done(Step.AUDITED)
        and "lease_until" not in record.model_fields_set
    )
    assert hubee.status_events(case_id) == ["SI_RECEIVED", "DONE"]
    family = FamilyRepository(env["FAMILIES_TABLE"]).get(TOWN.siret, user_id)
    assert family is not None and family.case_ids == [case_id]
    assert [e.source_id for e in family.qf_history] == [case_id]
    audited = [r for r in read_records(env["AUDIT_LOG_GROUP"]) if r["request_id"] == case_id]
    assert [r["action"] for r in audited] == ["dossier.auto_link.identity"]


def test_a_first_delivery_that_finds_its_case_recorded_meanwhile_takes_the_lease_and_posts_nothing_twice(
    runtime: LocalRuntime, hubee: HubeeSandbox
) -> None:
    # Given a dossier notified twice (two notification ids), both first deliveries; the first one is
    # held after reading and parsing the dossier, before its first write
    case_id, user_id, body = _arrange(runtime, hubee)
    runtime.functions["ReconcileFunction"].load()
    service = sys.modules[RECONCILE_MODULE].service()
    gate = HoldBeforeFirstWrite(service.dossiers)
    service.dossiers = gate
    first: list[Any] = []
    held = _run(runtime, _first_delivery(body, "m-1"), first)
    assert gate.reached.wait(60) and gate.stored_when_held is False
    # When the second delivery runs to the end meanwhile, then the first one goes on
    twin_id = str(uuid.uuid4())
    second = _in_another_environment(service, _twin(body, twin_id))
    gate.go.set()
    held.join(60)
    # Then both succeeded, and the dossier was handled once: the first found the record, took the
    # lease, read the case again and only acknowledged its own notification
    assert first == [{"batchItemFailures": []}] and second.outcome == "linked"
    _assert_handled_once(runtime, hubee, case_id, user_id)
    record = DossierRepository(runtime.environment["DOSSIERS_TABLE"]).get(case_id)
    assert record is not None and sorted(record.deleted_notification_ids) == sorted(
        [body.notification.id, twin_id]
    )
    assert record.attempts == 2  # the second delivery's draft, then the first one's lease


def test_a_first_delivery_never_works_on_a_case_another_delivery_holds(
    runtime: LocalRuntime, hubee: HubeeSandbox
) -> None:
    # Given one message delivered to two batches at once; the first delivery is held right after its
    # first write (the transaction that stores the link and takes the lease)
    case_id, user_id, body = _arrange(runtime, hubee)
    runtime.functions["ReconcileFunction"].load()
    gate = HoldAt("persisted")
    service = sys.modules[RECONCILE_MODULE].service()
    service.dossiers = JournalFaults(service.dossiers, gate)
    first: list[Any] = []
    held = _run(runtime, _first_delivery(body, "m-1"), first)
    assert gate.reached.wait(60)
    # When the second copy arrives while the first holds the lease
    with pytest.raises(DossierBusy):
        _in_another_environment(service, body)
    # Then it does nothing and goes back to the queue (dossier_busy), and no status was posted by it
    assert hubee.status_events(case_id) == []
    gate.go.set()
    held.join(60)
    assert first == [{"batchItemFailures": []}]
    _assert_handled_once(runtime, hubee, case_id, user_id)
