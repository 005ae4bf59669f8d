"""Security properties of the intake, proven end to end on the laptop runtime, and of the template.

One intake run (module fixture) serves the log, isolation and tampering tests. Given three
collectivités — A and B each polled with their own HubEE credential, C onboarded without one —
while A's HubEE subscription also covers B and C (a delegation wider at HubEE than in qfbridge),
and dossiers of every kind, with HubEE faults and reconcile crashes so that the warning and error
paths log too:

* the logs of the whole run (the Powertools JSON lines as Lambda would ship them, every other
  logger of the process, stdout, stderr and the audit log group) hold no identity value, no QF
  value, no secret, no HubEE token and no signed link;
* a dossier of C (no credential yet) read with A's credential is kept ``awaiting_onboarding``
  under C, unread and attached to no family; a dossier of B seen through A's credential first is still B's; a link issued by A used
  in a dossier of B never links; a tampered link never links;
* each function's IAM policy is exactly its allowlist, and covers every AWS call it made;
* the servers of the local runtime listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
import secrets
import socket
import sys
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.client
import pytest

from qfbridge.hubee import HubeeClient, HubeeConfig, HubeeCredentials
from qfbridge.hubee.models import Notification
from qfbridge.messages import DossierMessage, NotificationMessage, notification_message
from qfbridge.observability import logger as powertools_logger
from qfbridge.store.dossiers import DossierRecord, DossierRepository
from qfbridge.store.families import FamilyRepository
from qfbridge.store.secrets import SecretStore
from qfbridge_local.population import Collectivite, Household, collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template
from tests.support.journal_faults import CRASH_POINTS, AuditFaults, JournalFaults
from tests.support.world import World

SEED = 4242
RECONCILE_MODULE = "qfbridge_fn_reconcile_app"
DOSSIERS_PER_KIND = 3


# ---------------------------------------------------------------------------------- the run


@dataclass
class Deposit:
    case_id: str
    household: Household
    tenant: str


@dataclass
class IntakeRun:
    rt: LocalRuntime
    hubee: HubeeSandbox
    a: Collectivite
    b: Collectivite
    c: Collectivite
    deposits: dict[str, list[Deposit]]
    log_text: str
    secret_values: dict[str, str]
    aws_calls: dict[str, set[tuple[str, str, str]]]

    def record(self, deposit: Deposit) -> DossierRecord:
        record = DossierRepository(self.rt.environment["DOSSIERS_TABLE"]).get(deposit.case_id)
        assert record is not None, deposit.case_id
        return record

    def qf_sources(self, siret: str, user_id: str) -> set[str]:
        family = FamilyRepository(self.rt.environment["FAMILIES_TABLE"]).get(siret, user_id)
        return set() if family is None else {entry.source_id for entry in family.qf_history}


class _Lines(logging.Handler):
    """Keeps every formatted record (tracebacks included)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_FUNCTION: contextvars.ContextVar[str | None] = contextvars.ContextVar("qfbridge_function", default=None)


def _resource_names(service: str, params: dict[str, Any]) -> list[str]:
    if service == "dynamodb":
        if "TransactItems" in params:
            return [next(iter(item.values()))["TableName"] for item in params["TransactItems"]]
        if "RequestItems" in params:
            return list(params["RequestItems"])
        if "IndexName" in params:  # IAM authorises a query on an index by the index's ARN
            return [f"{params.get('TableName')}/index/{params['IndexName']}"]
        return [str(params.get("TableName"))]
    if service == "sqs":
        return [str(params.get("QueueUrl")).rsplit("/", 1)[-1]]
    if service == "secretsmanager":
        if "SecretIdList" in params:
            return [str(name) for name in params["SecretIdList"]]
        return [str(params.get("SecretId") or params.get("Name"))]
    if service == "events":
        return sorted({str(entry.get("EventBusName", "default")) for entry in params.get("Entries", [])})
    if service == "logs":
        return [str(params.get("logGroupName"))]
    return ["?"]


SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _transact_actions(params: dict[str, Any]) -> list[str]:
    """The IAM actions a TransactWriteItems needs: one per item kind (Update → UpdateItem…)."""
    kinds = {
        "Update": "UpdateItem",
        "Put": "PutItem",
        "Delete": "DeleteItem",
        "ConditionCheck": "ConditionCheckItem",
    }
    return [kinds[next(iter(item))] for item in params["TransactItems"]]


def record_aws_calls(
    stack: ExitStack, rt: LocalRuntime, tracebacks: list[str]
) -> dict[str, set[tuple[str, str, str]]]:
    """(service, action, resource name) by function, for every AWS call of the handlers.

    Also keeps, in ``tracebacks``, the traceback of every failed invocation.
    """
    calls: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    original_call = vars(botocore.client.BaseClient)["_make_api_call"]

    def recording_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        function = _FUNCTION.get()
        if function is not None:
            service = client.meta.service_model.service_name
            names = _resource_names(service, params)
            if operation == "TransactWriteItems":
                actions = _transact_actions(params)
            else:  # SQS authorises its batch calls with the single-message action
                actions = [SQS_BATCH_ACTIONS.get(operation, operation) if service == "sqs" else operation]
            for action, name in zip(
                actions, names * len(actions) if len(names) == 1 else names, strict=False
            ):
                calls[function].add((service, action, name))
        return original_call(client, operation, params)

    stack.enter_context(mock.patch.object(botocore.client.BaseClient, "_make_api_call", recording_call))
    for logical_id, function in rt.functions.items():
        invoke = function.invoke

        def invoke_as(
            event: dict[str, Any], _invoke: Callable[..., Any] = invoke, _lid: str = logical_id
        ) -> Any:
            token = _FUNCTION.set(_lid)
            try:
                return _invoke(event)
            except Exception as exc:  # what the Lambda runtime would log for a failed invocation
                tracebacks.append("".join(traceback.format_exception(exc)))
                raise
            finally:
                _FUNCTION.reset(token)

        stack.enter_context(mock.patch.object(function, "invoke", invoke_as))
    return calls


def issue_link(rt: LocalRuntime, siret: str, user_id: str) -> str:
    """A signed form link for one family of the directory, issued by the editor API's own service."""
    return str(rt.editor_service().issue_form_link(siret, user_id, None).external_id)


def tamper(external_id: str) -> str:
    """One character of the MAC changed: the shape is still that of a link."""
    last = external_id[-1]
    return external_id[:-1] + ("A" if last != "A" else "B")


def list_notifications(hubee: HubeeSandbox, client_id: str, secret: str) -> list[Notification]:
    config = HubeeConfig(api_url=hubee.api_url, token_url=hubee.token_url)
    with HubeeClient(config, HubeeCredentials(client_id=client_id, client_secret=secret)) as client:
        return client.list_notifications(max_result=100)


def reconcile_event(message: NotificationMessage) -> dict[str, Any]:
    """The SQS event reconcile receives for one message (as the event source mapping builds it)."""
    return {
        "Records": [
            {
                "messageId": f"m-{message.notification.id}",
                "receiptHandle": "r",
                "body": message.body(),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "0",
                    "SenderId": "local",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:123456789012:dossiers",
                "awsRegion": "eu-west-3",
            }
        ]
    }


@pytest.fixture(scope="module")
def run() -> Iterator[IntakeRun]:
    client_secrets = {cid: f"hubee-{cid}-{secrets.token_urlsafe(24)}" for cid in ("client-a", "client-b")}
    with ExitStack() as stack:
        hubee = stack.enter_context(HubeeSandbox(seed=SEED, fault_timeout_s=0.3))
        rt = stack.enter_context(
            LocalRuntime.start(
                RuntimeOptions(
                    serve_api=False,
                    # Timeouts are enforced: a quarter-speed clock gives the handlers four times
                    # their Lambda time on a loaded laptop (moto is far slower than DynamoDB).
                    clock_speed=0.25,
                    env_overrides={
                        "HUBEE_API_URL": hubee.api_url,
                        "HUBEE_TOKEN_URL": hubee.token_url,
                        "DOSSIER_LEASE_SECONDS": "30",
                    },
                )
            )
        )
        a, b, c = collectivites(3, seed=SEED)
        world = World(rt, hubee=hubee)
        for town in (a, b, c):  # c: a tenant of qfbridge, not polled: no credential of its own
            world.collectivite(town)
        world.hubee_credential("client-a", [a], also_serves=(b, c), secret=client_secrets["client-a"])
        world.hubee_credential("client-b", [b], secret=client_secrets["client-b"])

        families = FamilyRepository(rt.environment["FAMILIES_TABLE"])
        known_a = households(2 * DOSSIERS_PER_KIND, seed=SEED, id_prefix="a")
        known_b = households(DOSSIERS_PER_KIND, seed=SEED + 1, id_prefix="b")
        shared = households(
            DOSSIERS_PER_KIND, seed=SEED + 2, id_prefix="shared"
        )  # in A's, B's and C's directories
        strangers = households(3 * DOSSIERS_PER_KIND, seed=SEED + 3, id_prefix="x")
        families.upsert_many(a.siret, [h.family for h in known_a + shared])
        families.upsert_many(b.siret, [h.family for h in known_b + shared])
        families.upsert_many(c.siret, [h.family for h in shared])

        deposits: dict[str, list[Deposit]] = defaultdict(list)

        def deposit(kind: str, town: Collectivite, household: Household, **formulaire: Any) -> None:
            case = hubee.deposit_formulaire_qf(town.siret, town.cog, household.formulaire(**formulaire))
            deposits[kind].append(Deposit(case.case_id, household, town.siret))

        n = DOSSIERS_PER_KIND
        for household in known_a[:n]:
            deposit("linked_by_identity", a, household)
        for household in known_a[n:]:
            deposit(
                "linked_by_link", a, household, external_id=issue_link(rt, a.siret, household.family.user_id)
            )
        for household in known_b:
            deposit("b_own", b, household)
        for household in strangers[:n]:
            deposit("stranger", a, household)
        for household in strangers[n : 2 * n]:
            # A link issued by A, for one of A's families, in a dossier of B by an unknown household
            deposit(
                "a_link_at_b", b, household, external_id=issue_link(rt, a.siret, known_a[0].family.user_id)
            )
        for household in strangers[2 * n :]:
            deposit(
                "tampered_link",
                a,
                household,
                external_id=tamper(issue_link(rt, a.siret, known_a[1].family.user_id)),
            )
        for household in shared:
            deposit("foreign_recipient", c, household)
        json_broken = hubee.deposit_formulaire_qf(a.siret, a.cog, strangers[0].formulaire(), json_bytes=b"{")
        hubee.set_attachment_status(json_broken.case_id, json_broken.xml_attachment_id, "REJECTED")
        deposits["unreadable"].append(Deposit(json_broken.case_id, strangers[0], a.siret))

        # Capture everything the run writes, from here on.
        pt_handler = _Lines(powertools_logger.registered_formatter)
        other_handler = _Lines(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        pt_std = logging.getLogger(powertools_logger.name)
        pt_std.addHandler(pt_handler)
        stack.callback(pt_std.removeHandler, pt_handler)
        logging.getLogger().addHandler(other_handler)
        stack.callback(logging.getLogger().removeHandler, other_handler)
        out, err = io.StringIO(), io.StringIO()
        stack.enter_context(redirect_stdout(out))
        stack.enter_context(redirect_stderr(err))
        tracebacks: list[str] = []
        aws_calls = record_aws_calls(stack, rt, tracebacks)

        # A dossier of B reaches reconcile first through A's credential (a delegation wider at HubEE)
        seen_by_a = {n.case_id: n for n in list_notifications(hubee, "client-a", client_secrets["client-a"])}
        b_first = seen_by_a[deposits["b_own"][0].case_id]
        rt.invoke("ReconcileFunction", reconcile_event(notification_message(b_first, a.siret, (a.siret,))))

        rt.functions["ReconcileFunction"].load()
        crashed: set[str] = set()

        def crash_once_per_step(case_id: str, step: str) -> None:
            if step in CRASH_POINTS and step not in crashed:
                crashed.add(step)
                raise RuntimeError("injected crash")

        service = sys.modules[RECONCILE_MODULE].service()
        journal, trail = service.dossiers, service.audit
        service.dossiers = JournalFaults(journal, crash_once_per_step)
        service.audit = AuditFaults(trail, crash_once_per_step)
        # A crash right after a first delivery's first write leaves the lease it took, as a real one
        # would: the redeliveries stand for ones that come once that lease expired.
        lease_seconds, service.lease_seconds = service.lease_seconds, 0
        handle = service.handle

        def handle_keeping_tracebacks(message: DossierMessage) -> Any:
            # A failed record's exception is what Powertools reports for it (BatchProcessingError).
            try:
                return handle(message)
            except Exception as exc:
                tracebacks.append("".join(traceback.format_exception(exc)))
                raise

        service.handle = handle_keeping_tracebacks
        stack.callback(delattr, service, "handle")
        hubee.fault_rates(http_500=0.05, timeout=0.02, timeout_s=0.3)
        for kind in ("linked_by_identity", "stranger", "a_link_at_b"):
            hubee.inject("corrupt_bytes", case_id=deposits[kind][0].case_id)  # damaged once in transit
        hubee.inject("timeout", route="POST /cases/{caseId}/events", delay_s=0.3, drop=True)
        for _round in range(16):  # until nothing is pending: a loaded machine may need more rounds
            rt.poll()
            rt.drain(timeout=300)
            if not hubee.pending_notification_ids():
                break
        hubee.clear_faults()
        service.dossiers, service.audit, service.lease_seconds = journal, trail, lease_seconds

        env = rt.environment
        keys, _active = SecretStore(env["TENANT_SECRETS_PREFIX"]).read_link_keys(
            env["LINK_SIGNING_SECRET_ID"]
        )
        secret_values = {
            **{f"hubee secret {k}": v for k, v in client_secrets.items()},
            **{f"link key {k}": v.decode() for k, v in keys.items()},
            **{f"hubee token {i}": t for i, t in enumerate(hubee._tokens)},
        }  # tokens the sandbox issued
        audit = audit_log_text(rt)
        log_text = "\n".join(
            [*pt_handler.lines, *other_handler.lines, out.getvalue(), err.getvalue(), audit, *tracebacks]
        )
        yield IntakeRun(rt, hubee, a, b, c, dict(deposits), log_text, secret_values, dict(aws_calls))


def audit_log_text(rt: LocalRuntime) -> str:
    """Every event of the audit log group (CloudWatch Logs in moto)."""
    logs = rt.client("logs")
    group = rt.environment["AUDIT_LOG_GROUP"]
    lines: list[str] = []
    for stream in logs.describe_log_streams(logGroupName=group).get("logStreams", []):
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])["events"]
        lines.extend(event["message"] for event in events)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- logs


def personal_values(run: IntakeRun) -> dict[str, str]:
    """Each identity field value of every deposited household, named for the failure message."""
    values: dict[str, str] = {}
    for deposits in run.deposits.values():
        for deposit in deposits:
            family = deposit.household.family
            for i, parent in enumerate(family.parents):
                uid = f"{family.user_id}.parent{i}"
                values[f"{uid}.nom_naissance"] = parent.nom_naissance
                if parent.nom_usage:
                    values[f"{uid}.nom_usage"] = parent.nom_usage
                values[f"{uid}.prenoms"] = parent.prenoms
                born = parent.date_naissance
                values[f"{uid}.date_naissance"] = born.isoformat()
                values[f"{uid}.date_naissance_fr"] = born.strftime("%d/%m/%Y")
            for i, child in enumerate(family.enfants):
                values[f"{family.user_id}.enfant{i}.prenoms"] = child.prenoms
                values[f"{family.user_id}.enfant{i}.date_naissance"] = child.date_naissance.isoformat()
    return values


def test_the_run_logged_its_warning_and_error_paths(run: IntakeRun) -> None:
    # The capture is not vacuous: the run logged, including failures and rejections.
    assert '"message":"notification handled"' in run.log_text
    assert "dossier rejected" in run.log_text
    assert "injected crash" in run.log_text


def test_no_identity_value_appears_in_any_log_line(run: IntakeRun) -> None:
    leaked = {
        name: value
        for name, value in personal_values(run).items()
        if re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", run.log_text, re.IGNORECASE)
    }
    assert leaked == {}


def test_no_qf_value_appears_as_a_json_value_in_the_logs(run: IntakeRun) -> None:
    qf_values = {d.household.qf.valeur for deposits in run.deposits.values() for d in deposits}
    found: list[tuple[str, Any]] = []
    for line in run.log_text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        for key, value in _leaves(document):
            if isinstance(value, int | float) and not isinstance(value, bool) and value in qf_values:
                found.append((key, value))
            if isinstance(value, str) and value.strip().isdigit() and int(value) in qf_values:
                found.append((key, value))
    assert found == []


def _leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v, key)
    else:
        yield key, node


def test_no_secret_token_or_signed_link_appears_in_the_logs(run: IntakeRun) -> None:
    assert len([k for k in run.secret_values if k.startswith("hubee token")]) >= 2
    leaked = [name for name, value in run.secret_values.items() if value in run.log_text]
    assert leaked == []
    links = re.findall(r"qfb1\.[a-z0-9]{1,8}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", run.log_text)
    assert links == []


# ---------------------------------------------------------------------------------- isolation


def test_a_dossier_of_a_tenant_not_served_by_the_credential_waits_unread_and_attached_to_no_family(
    run: IntakeRun,
) -> None:
    for deposit in run.deposits["foreign_recipient"]:
        record = run.record(deposit)
        assert (record.outcome, record.tenant_siret) == ("awaiting_onboarding", run.c.siret)
        assert record.user_id is None and record.parsed is None
        # The household is in A's and C's directories: neither family received the dossier's QF
        for siret in (run.a.siret, run.c.siret):
            assert deposit.case_id not in run.qf_sources(siret, deposit.household.family.user_id)
        assert run.hubee.status_events(deposit.case_id) == []  # nothing said to HubEE on it


def test_a_dossier_of_b_seen_through_a_credential_first_is_still_linked_for_b_alone(run: IntakeRun) -> None:
    for deposit in run.deposits["b_own"]:
        record = run.record(deposit)
        assert record.tenant_siret == run.b.siret
        assert (record.outcome, record.user_id) == ("linked", deposit.household.family.user_id)
        assert deposit.case_id in run.qf_sources(run.b.siret, deposit.household.family.user_id)
        assert run.hubee.status_events(deposit.case_id) == ["SI_RECEIVED", "DONE"]


def test_a_link_issued_by_a_used_in_a_dossier_of_b_never_links(run: IntakeRun) -> None:
    target = run.deposits["linked_by_link"][0].household.family.user_id  # unused: A's links below
    del target
    for deposit in run.deposits["a_link_at_b"]:
        record = run.record(deposit)
        assert record.tenant_siret == run.b.siret
        assert record.outcome == "needs_review" and record.user_id is None
        assert record.external_id_status not in (None, "valid", "absent")
    a_family = run.deposits["linked_by_identity"][0].household.family.user_id
    b_cases = {d.case_id for d in run.deposits["a_link_at_b"]}
    assert not b_cases & run.qf_sources(run.a.siret, a_family)


def test_a_tampered_link_never_links(run: IntakeRun) -> None:
    for deposit in run.deposits["tampered_link"]:
        record = run.record(deposit)
        assert record.outcome == "needs_review" and record.user_id is None
        assert record.external_id_status not in (None, "valid", "absent")


def test_genuine_links_and_identities_still_link_in_the_same_run(run: IntakeRun) -> None:
    # The isolation above is not a pipeline that links nothing.
    for kind, method in (("linked_by_identity", "identity"), ("linked_by_link", "external_id")):
        for deposit in run.deposits[kind]:
            record = run.record(deposit)
            assert (record.outcome, record.link_method) == ("linked", method), kind
    unreadable = run.record(run.deposits["unreadable"][0])
    assert (unreadable.outcome, unreadable.reason) == ("rejected", "malformed_json")
    assert run.hubee.pending_notification_ids() == []


# ---------------------------------------------------------------------------------- IAM

TEMPLATE = load_template(DEFAULT_TEMPLATE)
TENANT_SECRETS = "secret:qfbridge/${Stage}/tenants/*"


# Each function's grants, as (action, resource): the least each one needs, written out by hand.
# A grant added to the template without being added here fails; so does one removed.
def own_logs(log_group: str) -> set[tuple[str, str]]:
    """What every function's role holds: its own log group, and X-Ray's put actions."""
    return {
        ("logs:CreateLogStream", f"log-group:${{{log_group}}}:*"),
        ("logs:PutLogEvents", f"log-group:${{{log_group}}}:*"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
    }


def consumes(queue: str) -> set[tuple[str, str]]:
    return {(a, queue) for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")}


EXPECTED_GRANTS: dict[str, set[tuple[str, str]]] = {
    "HubeePollFunction": {
        *own_logs("HubeePollLogGroup"),
        # tenants listed (index by_kind), hubee_status updated
        ("dynamodb:Query", "TenantsTable/index/*"),
        ("dynamodb:UpdateItem", "TenantsTable"),
        # per-notification markers (queued once, stuck ones counted), outside every index
        ("dynamodb:BatchGetItem", "DossiersTable"),
        ("dynamodb:BatchWriteItem", "DossiersTable"),
        ("sqs:SendMessage", "DossiersQueue"),
        ("secretsmanager:GetSecretValue", TENANT_SECRETS),
        ("secretsmanager:BatchGetSecretValue", "*"),
        ("events:PutEvents", "EventBus"),
    },
    "RefreshDispatchFunction": {
        *own_logs("RefreshDispatchLogGroup"),
        # tenants listed; due families found on the index, held, and queued; releases booked on the tenant
        ("dynamodb:Query", "TenantsTable/index/*"),
        ("dynamodb:Query", "FamiliesTable/index/*"),
        ("dynamodb:UpdateItem", "FamiliesTable"),
        ("sqs:SendMessage", "RefreshQueue"),
        ("dynamodb:GetItem", "TenantsTable"),
        ("dynamodb:UpdateItem", "TenantsTable"),
    },
    "ReconcileFunction": {
        *own_logs("ReconcileLogGroup"),
        *consumes("DossiersQueue"),
        ("dynamodb:GetItem", "TenantsTable"),
        ("dynamodb:UpdateItem", "TenantsTable"),  # a repoll updates the credential's tenants' status
        ("dynamodb:GetItem", "DossiersTable"),
        ("dynamodb:UpdateItem", "DossiersTable"),
        ("dynamodb:BatchGetItem", "DossiersTable"),  # a repoll reads and writes the markers
        ("dynamodb:BatchWriteItem", "DossiersTable"),
        ("sqs:SendMessage", "DossiersQueue"),  # a repoll queues what it found
        *{
            (a, "FamiliesTable")
            # matching reads the blocking index with BatchGetItem
            for a in ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        },
        ("dynamodb:GetItem", "FormLinksTable"),
        ("dynamodb:UpdateItem", "FormLinksTable"),  # a link binds to the first identity that used it
        ("secretsmanager:GetSecretValue", TENANT_SECRETS),
        ("secretsmanager:GetSecretValue", "LinkSigningKeySecret"),
        ("events:PutEvents", "EventBus"),
        ("logs:CreateLogStream", "AuditLogGroup:*"),
        ("logs:PutLogEvents", "AuditLogGroup:*"),
        ("logs:FilterLogEvents", "AuditLogGroup:*"),  # a retried link audit looks its record up first
    },
    "QfRefreshFunction": {
        *own_logs("QfRefreshLogGroup"),
        *consumes("RefreshQueue"),
        ("dynamodb:GetItem", "TenantsTable"),
        ("dynamodb:UpdateItem", "TenantsTable"),
        ("dynamodb:GetItem", "FamiliesTable"),
        ("dynamodb:UpdateItem", "FamiliesTable"),
        ("sqs:ChangeMessageVisibility", "RefreshQueue"),
        # a wait goes back as a fresh copy; the last failed attempt goes to the DLQ
        ("sqs:SendMessage", "RefreshQueue"),
        ("sqs:SendMessage", "RefreshDeadLetterQueue"),
        ("secretsmanager:GetSecretValue", TENANT_SECRETS),
        ("events:PutEvents", "EventBus"),
        ("logs:CreateLogStream", "AuditLogGroup:*"),  # each call reading a family's identity
        ("logs:PutLogEvents", "AuditLogGroup:*"),
    },
    "ApiFunction": {
        *own_logs("ApiLogGroup"),
        *{
            (a, r)
            for a in (
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "dynamodb:BatchWriteItem",
            )
            for r in (
                "TenantsTable",
                "TenantsTable/index/*",
                "FamiliesTable",
                "FamiliesTable/index/*",
                "DossiersTable",
                "DossiersTable/index/*",
                "FormLinksTable",
            )
        },
        ("dynamodb:DeleteItem", "FormLinksTable"),  # a form link is consumed once
        *{
            (a, TENANT_SECRETS)
            for a in (
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:TagResource",
            )
        },
        ("secretsmanager:GetSecretValue", "LinkSigningKeySecret"),
        ("dynamodb:BatchGetItem", "FamiliesTable"),
        ("sqs:SendMessage", "RefreshQueue"),
        ("sqs:SendMessage", "DossiersQueue"),
        ("logs:CreateLogStream", "AuditLogGroup:*"),
        ("logs:PutLogEvents", "AuditLogGroup:*"),
    },
    "TokenWatchFunction": {
        *own_logs("TokenWatchLogGroup"),
        *{
            (a, r)
            for a in ("dynamodb:Query", "dynamodb:UpdateItem")
            for r in ("TenantsTable", "TenantsTable/index/*")
        },
        ("events:PutEvents", "EventBus"),
        # pivot identities no longer refreshed: found on the due index, expired one by one
        ("dynamodb:Query", "FamiliesTable/index/by_refresh_due"),
        ("dynamodb:UpdateItem", "FamiliesTable"),
    },
}


def _resource_label(resource: Any) -> str:
    """A template resource expression as a short, stable label (logical id, with any suffix)."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return str(resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and "Ref" in resource:
        return str(resource["Ref"])
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"] if isinstance(resource["Fn::Sub"], str) else resource["Fn::Sub"][0]
        text = re.sub(r"^arn:\$\{AWS::Partition\}:[a-z]+:\$\{AWS::Region\}:\$\{AWS::AccountId\}:", "", text)
        return re.sub(r"\$\{(\w+)\.Arn\}", r"\1", text)
    return str(resource)


def granted(logical_id: str) -> set[tuple[str, str]]:
    """The grants of the function's own role (declared in the template, no managed policy)."""
    pairs: set[tuple[str, str]] = set()
    role = TEMPLATE["Resources"][TEMPLATE["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]]
    assert not role["Properties"].get("ManagedPolicyArns")
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert (
                statement["Effect"] == "Allow"
                and "Condition" not in statement
                and "NotAction" not in statement
            )
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            pairs |= {(action, _resource_label(resource)) for action in actions for resource in resources}
    return pairs


FUNCTIONS = sorted(
    lid for lid, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
)


def test_every_function_has_an_allowlist() -> None:
    assert set(EXPECTED_GRANTS) == set(FUNCTIONS)


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_each_function_is_granted_exactly_its_allowlist(logical_id: str) -> None:
    assert granted(logical_id) == EXPECTED_GRANTS[logical_id]


def test_the_api_function_may_batch_get_the_families_it_upserts() -> None:
    assert ("dynamodb:BatchGetItem", "FamiliesTable") in granted("ApiFunction")


def _grant_covers(grants: set[tuple[str, str]], action: str, label: str) -> bool:
    for granted_action, resource in grants:
        if granted_action != action:
            continue
        if resource == label or (resource.endswith("*") and label.startswith(resource[:-1])):
            return True
    return False


def _label_of(rt: LocalRuntime, service: str, name: str) -> str:
    """The template label of a local physical resource name."""
    assert rt.stack is not None
    if service == "dynamodb":
        table, _, index = name.partition("/index/")
        lid = next(lid for lid, spec in rt.stack.tables.items() if spec.name == table)
        return f"{lid}/index/{index}" if index else lid
    if service == "sqs":
        return next(lid for lid, spec in rt.stack.queues.items() if spec.name == name)
    if service == "events":
        return next(lid for lid, bus in rt.stack.buses.items() if bus == name)
    if service == "logs":
        return next(lid for lid, group in rt.stack.log_groups.items() if group["name"] == name) + ":*"
    if service == "secretsmanager":
        for lid, spec in rt.stack.secrets.items():
            if spec["name"] == name:
                return lid
        prefix = rt.environment["TENANT_SECRETS_PREFIX"]
        assert name.startswith(prefix), name
        return "secret:qfbridge/${Stage}/tenants/" + name[len(prefix) :]
    raise AssertionError(service)


def test_every_aws_call_of_the_intake_run_is_covered_by_its_function_policy(run: IntakeRun) -> None:
    assert {"HubeePollFunction", "ReconcileFunction"} <= set(run.aws_calls)
    uncovered = []
    for function, calls in run.aws_calls.items():
        grants = granted(function)
        for service, operation, name in calls:
            action = f"{service}:{operation}"
            label = _label_of(run.rt, service, name)
            if not _grant_covers(grants, action, label) and (function, action) not in TOLERATED_REFUSALS:
                uncovered.append((function, action, label))
    assert uncovered == []


# Calls made knowing they may be refused: the code falls back to a granted path when they are.
TOLERATED_REFUSALS: set[tuple[str, str]] = set()


# ---------------------------------------------------------------------------------- loopback only


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                if width == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def test_every_server_of_the_local_runtime_listens_on_loopback_only() -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc to list listening sockets")
    with (
        HubeeSandbox(seed=1) as hubee,
        ApiParticulierSandbox(seed=1) as particulier,
        LocalRuntime.start(RuntimeOptions(serve_api=True)) as rt,
    ):
        servers = {
            "moto": _port(rt.endpoint),
            "editor api": _port(rt.api_url),
            "hubee sandbox": _port(hubee.api_url),
            "api particulier sandbox": _port(particulier.url),
        }
        listening = {name: _listening_addresses(port) for name, port in servers.items()}
    assert listening == {name: {"127.0.0.1"} for name in servers}


def test_the_audit_trail_is_kept_1096_days_and_the_dossier_links_expire(run: IntakeRun) -> None:
    groups = run.rt.client("logs").describe_log_groups(
        logGroupNamePrefix=run.rt.environment["AUDIT_LOG_GROUP"]
    )
    assert [g.get("retentionInDays") for g in groups["logGroups"]] == [1096]
    ttl = run.rt.client("dynamodb").describe_time_to_live(TableName=run.rt.environment["FORM_LINKS_TABLE"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
