"""The messages between the functions: what each producer sends, its consumer reads; a message a
consumer cannot read fails loudly; the sample events of ``events/`` are what the functions receive."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventModel, SqsModel
from pydantic import BaseModel, ValidationError

from qfbridge.hubee import HubeeConfig
from qfbridge.hubee.models import Notification
from qfbridge.messages import (
    CaseEventMessage,
    DossierMessage,
    NewDossierMessage,
    OnboardedDossierMessage,
    RefreshMessage,
    RepollMessage,
    ReviewResolvedMessage,
    StatusRetryMessage,
    parse_dossier_message,
    parse_refresh_message,
)
from qfbridge.services.dispatch import DispatchReport, RefreshDispatcher
from qfbridge.services.editor import EditorService
from qfbridge.services.poll import CredentialGroup, PollReport, PollService
from qfbridge.services.refresh import RefreshResult
from qfbridge.services.status_retry import retry_refused_status
from qfbridge.store.dossiers import DossierRecord
from qfbridge.store.queues import SqsDossierQueue, SqsRefreshQueue
from qfbridge.store.tenants import Tenant
from qfbridge_local.lambdas import LambdaContext
from qfbridge_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "events"
SIRET = "21690123000012"
OTHER = "21690124000019"
NOW = dt.datetime(2027, 3, 1, 10, 0, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- the producers, as they run
@dataclass
class RecordingSqs:
    """An SQS client that keeps every body sent, per queue URL."""

    sent: list[tuple[str, str, int]] = field(default_factory=list)

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0) -> dict[str, Any]:
        self.sent.append((QueueUrl, MessageBody, DelaySeconds))
        return {"MessageId": str(len(self.sent))}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        for entry in Entries:
            self.send_message(QueueUrl, entry["MessageBody"], entry.get("DelaySeconds", 0))
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries], "Failed": []}

    def bodies(self, url: str) -> list[str]:
        return [body for queue, body, _ in self.sent if queue == url]


def notification(case_id: str, event_id: str | None = None) -> Notification:
    return Notification.model_validate(
        {
            "id": f"n-{case_id}",
            "processCode": "FormulaireQF",
            "caseId": case_id,
            "eventId": event_id,
            "recipient": {"type": "SI", "companyRegister": SIRET},
        }
    )


def record(case_id: str, **fields: Any) -> DossierRecord:
    return DossierRecord(case_id=case_id, tenant_siret=SIRET, received_at=NOW.isoformat(), **fields)


@dataclass
class Dossiers:
    """What the API's producers read of the dossiers table."""

    awaiting: list[DossierRecord]

    def list_page(self, siret: str, **_: Any) -> tuple[list[DossierRecord], None]:
        return self.awaiting, None

    def require_for_tenant(self, siret: str, reference: str) -> DossierRecord:
        return record("case-refused")

    def clear_status_refusal(self, case_id: str, now: dt.datetime, actor: str) -> DossierRecord:
        return record(case_id)


@dataclass
class Tenants:
    items: dict[str, Tenant]

    def get(self, siret: str) -> Tenant | None:
        return self.items.get(siret)

    def all(self) -> list[Tenant]:
        return list(self.items.values())


@dataclass
class Families:
    def due(self, siret: str, now: str, limit: int) -> list[str]:
        return ["fam-1", "fam-2"][:limit]

    def defer(self, siret: str, user_id: str, at: str) -> None:
        return None


def produced() -> tuple[list[DossierMessage], list[str], list[RefreshMessage], list[str]]:
    """Every kind of message, built and sent by its real producer: (models, bodies) per queue."""
    sqs = RecordingSqs()
    dossiers_queue, refresh_queue = (
        SqsDossierQueue("dossiers", client=sqs),
        SqsRefreshQueue("refresh", client=sqs),
    )
    tenant = Tenant(siret=SIRET, name="Commune", cog="69123", refresh_status="active", refresh_budget_rps=4)
    # hubee_poll: a new dossier, an event, and the repoll after a full listing
    poll = PollService(
        tenants=cast(Any, None),
        secrets=cast(Any, None),
        events=cast(Any, None),
        queue=dossiers_queue,
        hubee=cast(Any, None),
    )
    group = CredentialGroup(client_id="client", holder=SIRET, sirets=(SIRET, OTHER))
    repoll = RepollMessage(credential_holder=SIRET, credential_tenants=(SIRET, OTHER), hop=2, delay_s=4)
    poll._enqueue([notification("case-new"), notification("case-closed", "event-1")], group, repoll)
    # the API: a kept dossier released by onboarding, an agent's decision; the operator's status retry
    editor = EditorService(
        tenants=cast(Any, Tenants({SIRET: tenant})),
        families=cast(Any, None),
        dossiers=cast(Any, Dossiers([record("case-kept", notification_ids=["n-kept"])])),
        links=cast(Any, None),
        secrets=cast(Any, None),
        refresh_queue=refresh_queue,
        dossier_queue=dossiers_queue,
        link_signing_secret_id="keys",
        form_base_url="https://form.invalid",
    )
    editor.release_awaiting_dossiers(SIRET)
    dossiers_queue.send(ReviewResolvedMessage(case_id="case-reviewed", credential_holder=SIRET))
    retry_refused_status(cast(Any, Dossiers([])), dossiers_queue, SIRET, "0A1B2C3D4E5F6", actor="operator")
    # refresh_dispatch: the monthly refreshes
    RefreshDispatcher(
        tenants=cast(Any, Tenants({SIRET: tenant})),
        families=cast(Any, Families()),
        queue=refresh_queue,
        clock=lambda: NOW,
    ).run()
    dossier_bodies, refresh_bodies = sqs.bodies("dossiers"), sqs.bodies("refresh")
    return (
        [parse_dossier_message(body) for body in dossier_bodies],
        dossier_bodies,
        [parse_refresh_message(body) for body in refresh_bodies],
        refresh_bodies,
    )


def test_every_kind_of_the_dossiers_queue_has_a_producer_and_parses_back() -> None:
    messages, bodies, refreshes, _ = produced()

    assert [type(m) for m in messages] == [
        NewDossierMessage,
        CaseEventMessage,
        RepollMessage,
        OnboardedDossierMessage,
        ReviewResolvedMessage,
        StatusRetryMessage,
    ]
    assert [m.body() for m in messages] == bodies  # what was read is what was sent
    new, event, repoll, onboarded = messages[:4]
    assert isinstance(new, NewDossierMessage) and new.notification.case_id == "case-new"
    assert new.credential_tenants == (SIRET, OTHER)
    assert isinstance(event, CaseEventMessage) and event.notification.event_id == "event-1"
    assert isinstance(repoll, RepollMessage) and (repoll.hop, repoll.delay_s) == (2, 4)
    assert isinstance(onboarded, OnboardedDossierMessage) and onboarded.notification.id == "n-kept"
    assert [(r.user_id, r.reason, r.admitted) for r in refreshes] == [
        ("fam-1", "monthly", False),
        ("fam-2", "monthly", False),
    ]


# --------------------------------------------------------------------------- the consumers, as they run
def load_app(function: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{function}_app_messages", REPO / "functions" / function / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
            }
            for i, body in enumerate(bodies)
        ]
    }


@dataclass
class Received:
    """Stands in for reconcile's and qf_refresh's services: records the messages handed to them."""

    messages: list[BaseModel] = field(default_factory=list)
    # reconcile checks a record has two worst-case HubEE calls' time left before it starts it
    hubee: HubeeConfig = field(
        default_factory=lambda: HubeeConfig(
            api_url="https://hubee.example", token_url="https://hubee.example/t"
        )
    )

    def handle(self, message: DossierMessage) -> Any:
        self.messages.append(message)
        return type(
            "Result", (), {"kind": message.kind, "outcome": "ok", "case_id": None, "resumed": False}
        )()

    def repoll(self, message: RepollMessage) -> PollReport:
        self.messages.append(message)
        return PollReport()

    def refresh(
        self,
        message: RefreshMessage,
        *,
        attempt: int,
        request_id: str | None = None,
        may_defer: bool = False,
    ) -> RefreshResult:
        self.messages.append(message)
        return RefreshResult("qf_found")

    def run(self, **_: Any) -> DispatchReport:
        return DispatchReport()


def reconcile(monkeypatch: pytest.MonkeyPatch, *bodies: str) -> tuple[Received, list[str]]:
    app = load_app("reconcile")
    received = Received()
    monkeypatch.setattr(app, "service", lambda: received)
    monkeypatch.setattr(app, "poller", lambda: received)
    monkeypatch.setattr(app, "_release_if_leaving", lambda record: None)
    try:
        response = app.lambda_handler(sqs_event(*bodies), LambdaContext("reconcile", 512, 900))
    except Exception:  # every record failed
        return received, [f"m{i}" for i in range(len(bodies))]
    return received, [f["itemIdentifier"] for f in response["batchItemFailures"]]


def qf_refresh(monkeypatch: pytest.MonkeyPatch, *bodies: str) -> tuple[Received, list[str]]:
    app = load_app("qf_refresh")
    received = Received()
    monkeypatch.setattr(app, "service", lambda: received)
    try:
        response = app.lambda_handler(sqs_event(*bodies), LambdaContext("qf_refresh", 512, 30))
    except Exception:  # every record failed
        return received, [f"m{i}" for i in range(len(bodies))]
    return received, [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_reconcile_and_qf_refresh_read_exactly_what_their_producers_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages, bodies, refreshes, refresh_bodies = produced()

    received, failed = reconcile(monkeypatch, *bodies)
    # the handler adds what the SQS record says of the delivery (never sent by a producer)
    assert [m.receive_count for m in received.messages if isinstance(m, NewDossierMessage)] == [1]
    unsent = [
        m.model_copy(update={"receive_count": None}) if isinstance(m, NewDossierMessage) else m
        for m in received.messages
    ]
    assert failed == [] and unsent == messages
    received, failed = qf_refresh(monkeypatch, *refresh_bodies)
    assert failed == [] and received.messages == refreshes


def renamed(body: str, field_name: str) -> str:
    document = json.loads(body)
    document[f"{field_name}_renamed"] = document.pop(field_name)
    return json.dumps(document)


def test_a_field_renamed_by_a_producer_fails_the_consumer_instead_of_passing_as_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given every message as its producer sends it, with one of its fields renamed on the producer side
    _, bodies, _, refresh_bodies = produced()
    dossier_variants = [renamed(body, name) for body in bodies for name in json.loads(body) if name != "kind"]
    refresh_variants = [renamed(body, name) for body in refresh_bodies for name in json.loads(body)]
    # When the consumers receive them
    reconciled, reconcile_failed = reconcile(monkeypatch, *dossier_variants)
    refreshed, refresh_failed = qf_refresh(monkeypatch, *refresh_variants)
    # Then none reaches a service: each record fails (and is retried, then dead-lettered), loudly
    assert reconciled.messages == [] and len(reconcile_failed) == len(dossier_variants) == 17
    assert refreshed.messages == [] and len(refresh_failed) == len(refresh_variants) >= 6
    with pytest.raises(ValidationError):
        parse_dossier_message(renamed(bodies[0], "credential_tenants"))


def test_a_renamed_kind_is_no_kind_at_all() -> None:
    _, bodies, _, _ = produced()
    for body in bodies:
        with pytest.raises(ValidationError):
            parse_dossier_message(renamed(body, "kind"))


def test_a_message_body_never_appears_in_its_parse_error() -> None:
    body = json.dumps({"kind": "review_resolved", "case_id": "case-secret-42", "credential_holder": 7})
    with pytest.raises(ValidationError) as error:
        parse_dossier_message(body)
    assert "case-secret-42" not in str(error.value)


# --------------------------------------------------------------------------- the sample events
def functions() -> dict[str, dict[str, Any]]:
    """Each function of the template by its directory under functions/: its properties."""
    resources = load_template()["Resources"]
    return {
        Path(str(r["Properties"]["CodeUri"])).name: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Serverless::Function"
    }


def sample(function: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((SAMPLES / f"{function}.json").read_text(encoding="utf-8")))


def test_every_function_has_one_sample_event() -> None:
    assert sorted(p.stem for p in SAMPLES.glob("*.json")) == sorted(functions())


@pytest.mark.parametrize("function", ["hubee_poll", "refresh_dispatch", "token_watch"])
def test_a_scheduled_sample_is_what_the_function_schedule_sends(function: str) -> None:
    (schedule,) = [e for e in functions()[function]["Events"].values() if e["Type"] == "ScheduleV2"]
    assert sample(function) == json.loads(schedule["Properties"]["Input"])


@pytest.mark.parametrize(
    ("function", "queue", "parse"),
    [
        ("reconcile", "DossiersQueue", parse_dossier_message),
        ("qf_refresh", "RefreshQueue", parse_refresh_message),
    ],
)
def test_a_queue_sample_carries_messages_its_function_reads(function: str, queue: str, parse: Any) -> None:
    # The samples are messages as deployed producers send them: a model that could not read them
    # would fail the messages in flight during a deploy.
    (source,) = [e for e in functions()[function]["Events"].values() if e["Type"] == "SQS"]
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": [queue, "Arn"]}
    event = SqsModel.model_validate(sample(function))
    for record_ in event.Records:
        message = parse(record_.body)
        assert parse(message.body()) == message


def test_the_api_sample_is_an_api_gateway_proxy_event() -> None:
    event = APIGatewayProxyEventModel.model_validate(sample("api"))
    assert event.path.startswith("/v1/tenants/")
