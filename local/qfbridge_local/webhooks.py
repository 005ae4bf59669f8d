"""Webhooks on the laptop runtime: the template's webhook rules, delivered as EventBridge delivers them.

With a webhook URL (``[webhook] url`` in the local configuration) the runtime sets the template's
``WebhookUrl`` parameter, so the template's webhook resources exist locally, and this module plays
EventBridge's part for them:

* each webhook rule of the template gets, on moto's bus, the same event pattern, with a local
  outbox queue as its target (moto routes the events, as the rule would);
* each event becomes the envelope through the rule's own ``InputTransformer`` (the template's
  paths and input template, evaluated here as EventBridge evaluates them);
* it is POSTed with the connection's key header (the ``WebhookConnection`` of the template, its key
  read from the Secrets Manager secret its dynamic reference names), and a 5-second timeout, the
  limit of API destinations;
* 401, 407, 409, 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter, within the target's ``RetryPolicy`` (attempts and event age); any other answer, or the
  retries exhausted, sends the original event to the webhook DLQ of the template, with the message
  attributes EventBridge adds (``RULE_ARN``, ``TARGET_ARN``, ``ERROR_CODE``, ``ERROR_MESSAGE``,
  ``EXHAUSTED_RETRY_CONDITION``, ``RETRY_ATTEMPTS``; the codes are this runtime's own).

One liberty is taken for speed, as in ``triggers.py``: the backoff starts at ``retry_base_seconds``
and is capped at ``retry_cap_seconds`` instead of EventBridge's longer delays; the number of
attempts and the event age allowed are the template's.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .template import Stack

SOURCE = "qfbridge"
REQUEST_TIMEOUT_SECONDS = 5.0  # EventBridge times an API destination request out after 5 seconds
RETRYABLE_STATUSES = frozenset({401, 407, 409, 429})  # and every 5xx, timeouts, connection errors
LOCAL_SECRET_NAME = "qfbridge/{stage}/webhook-credentials"  # noqa: S105 - a secret name, not a secret
_DYNAMIC_SECRET = re.compile(r"^\{\{resolve:secretsmanager:(?P<secret>.+):SecretString:(?P<key>[^:}]+)\}\}$")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9.\-_]+)>")

Outcome = Literal["delivered", "retry", "dead_letter"]


# ---------------------------------------------------------------------- the template's rules
@dataclass(frozen=True)
class RetryPolicy:
    maximum_retry_attempts: int = 185
    maximum_event_age_seconds: int = 86400


@dataclass(frozen=True)
class WebhookRule:
    """One rule of the template whose target is the webhook API destination."""

    logical_id: str
    arn: str
    event_pattern: dict[str, Any]
    target_arn: str
    input_paths: dict[str, str]
    input_template: str
    retry: RetryPolicy
    dead_letter_logical_id: str | None

    def matches(self, event: Mapping[str, Any]) -> bool:
        """The subset of EventBridge patterns the webhook rules use: exact values on top-level keys."""
        return all(event.get(key) in allowed for key, allowed in self.event_pattern.items())

    def envelope_body(self, event: Mapping[str, Any]) -> str:
        return transform_input(self.input_paths, self.input_template, event)


def webhook_rules(stack: Stack) -> list[WebhookRule]:
    """The stack's rules that target an API destination (none when the webhook is not configured)."""
    raw_resources = stack.template["Resources"]
    destinations = {lid for lid, r in stack.resources.items() if r["Type"] == "AWS::Events::ApiDestination"}
    rules = []
    for lid, resource in stack.resources.items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        raw_targets = raw_resources[lid]["Properties"]["Targets"]
        for raw, target in zip(raw_targets, resource["Properties"]["Targets"], strict=True):
            if raw["Arn"].get("Fn::GetAtt", [None])[0] not in destinations:
                continue
            transformer = target["InputTransformer"]
            retry = target.get("RetryPolicy") or {}
            dlq = (raw.get("DeadLetterConfig") or {}).get("Arn", {}).get("Fn::GetAtt", [None])[0]
            rules.append(
                WebhookRule(
                    logical_id=lid,
                    arn=_rule_arn(stack, lid),
                    event_pattern=resource["Properties"]["EventPattern"],
                    target_arn=str(target["Arn"]),
                    input_paths=dict(transformer["InputPathsMap"]),
                    input_template=str(transformer["InputTemplate"]),
                    retry=RetryPolicy(
                        int(retry.get("MaximumRetryAttempts", 185)),
                        int(retry.get("MaximumEventAgeInSeconds", 86400)),
                    ),
                    dead_letter_logical_id=dlq,
                )
            )
    return rules


def _rule_arn(stack: Stack, logical_id: str) -> str:
    from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION

    return f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:rule/{rule_name(stack, logical_id)}"


def rule_name(stack: Stack, logical_id: str) -> str:
    return f"qfbridge-{stack.stage}-{logical_id}"


# ---------------------------------------------------------------------- the input transformer
def _json_path(event: Mapping[str, Any], path: str) -> Any:
    """EventBridge's JSON paths in dot notation (``$.detail.tenant_siret``, ``$.detail-type``)."""
    if path == "$":
        return event
    if not path.startswith("$."):
        raise ValueError(f"unsupported JSON path {path!r}")
    value: Any = event
    for part in path[2:].split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def transform_input(paths: Mapping[str, str], template: str, event: Mapping[str, Any]) -> str:
    """The body EventBridge sends for ``event`` through an input transformer whose template is JSON.

    A placeholder used as a JSON value is replaced by the JSON of what its path selects (a string
    gets its quotes, an object is inserted as is). Placeholders inside string literals are not used
    by the template and are refused rather than guessed.
    """
    values = {name: _json_path(event, path) for name, path in paths.items()}
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(template):
        char = template[i]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(template[i + 1])
                i += 1
            elif char == '"':
                in_string = False
            elif char == "<" and _PLACEHOLDER.match(template, i):
                raise ValueError("placeholders inside JSON strings are not emulated")
        elif char == '"':
            in_string = True
            out.append(char)
        elif (match := _PLACEHOLDER.match(template, i)) is not None:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"input template names an unknown variable <{name}>")
            out.append(json.dumps(values[name], ensure_ascii=False, separators=(",", ":")))
            i = match.end()
            continue
        else:
            out.append(char)
        i += 1
    body = "".join(out)
    json.loads(body)  # EventBridge refuses a template that does not produce JSON
    return body


# ---------------------------------------------------------------------- retry decisions
def decide(status: int | None, attempts: int, age_seconds: float, retry: RetryPolicy) -> tuple[Outcome, str]:
    """What EventBridge does after an attempt: ``status`` None is a timeout or a connection error.

    Returns the outcome and, for a dead letter, why (the ``EXHAUSTED_RETRY_CONDITION``, or
    ``NotRetryable``). ``attempts`` counts the attempts made so far (the first included).
    """
    if status is not None and 200 <= status < 300:
        return "delivered", ""
    retryable = status is None or status in RETRYABLE_STATUSES or 500 <= status < 600
    if not retryable:
        return "dead_letter", "NotRetryable"
    if attempts - 1 >= retry.maximum_retry_attempts:
        return "dead_letter", "MaximumRetryAttempts"
    if age_seconds >= retry.maximum_event_age_seconds:
        return "dead_letter", "MaximumEventAgeInSeconds"
    return "retry", ""


def backoff_seconds(retries_done: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: half the exponential delay, plus up to as much again at random."""
    delay = min(cap, base * (2 ** min(retries_done, 30)))
    return delay / 2 + rng.uniform(0, delay / 2)


# ---------------------------------------------------------------------- sending
@dataclass(frozen=True)
class Attempt:
    status: int | None
    error: str = ""


def post_envelope(client: httpx.Client, url: str, body: str, headers: Mapping[str, str]) -> Attempt:
    try:
        response = client.post(
            url,
            content=body.encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8", **headers},
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
    except httpx.TimeoutException:
        return Attempt(None, "the endpoint did not answer within 5 seconds")
    except httpx.TransportError as exc:
        return Attempt(None, f"connection failed: {type(exc).__name__}")
    return Attempt(response.status_code, f"HTTP {response.status_code}")


@dataclass(frozen=True)
class WebhookSettings:
    """The local webhook: the ``[webhook]`` section of the local configuration."""

    url: str
    api_key: str = "local-webhook-key"
    retry_base_seconds: float = 0.2
    retry_cap_seconds: float = 5.0

    def parameter_overrides(self, stage: str) -> dict[str, str]:
        """The template parameters that create the webhook resources in the local stack."""
        return {
            "WebhookUrl": self.url,
            "WebhookAuthorization": "API_KEY",
            "WebhookCredentialsSecretArn": LOCAL_SECRET_NAME.format(stage=stage),
        }


def connection_headers(stack: Stack, read_secret: Callable[[str], str]) -> dict[str, str]:
    """The header the template's connection makes EventBridge send (API key authorization)."""
    connections = [r for r in stack.resources.values() if r["Type"] == "AWS::Events::Connection"]
    if len(connections) != 1:
        raise ValueError(f"expected one webhook connection in the stack, found {len(connections)}")
    props = connections[0]["Properties"]
    if props["AuthorizationType"] != "API_KEY":
        raise ValueError("the laptop runtime delivers webhooks with API_KEY authorization only")
    api_key = props["AuthParameters"]["ApiKeyAuthParameters"]
    return {str(api_key["ApiKeyName"]): _resolve_secret(str(api_key["ApiKeyValue"]), read_secret)}


def _resolve_secret(value: str, read_secret: Callable[[str], str]) -> str:
    match = _DYNAMIC_SECRET.match(value)
    if match is None:
        return value
    document = json.loads(read_secret(match.group("secret")))
    return str(document[match.group("key")])


# ---------------------------------------------------------------------- the local delivery loop
@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    rule: WebhookRule = field(compare=False)
    event: dict[str, Any] = field(compare=False)
    outbox_url: str = field(compare=False)
    receipt: str = field(compare=False)
    first_seen: float = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class DeliveryStats:
    attempts: int = 0
    delivered: int = 0
    retries: int = 0
    dead_lettered: int = 0


class WebhookDelivery:
    """Delivers the stack's webhook rules to the local URL, in a background thread."""

    def __init__(
        self,
        stack: Stack,
        endpoint: str,
        queue_urls: Mapping[str, str],
        settings: WebhookSettings,
        *,
        seed: int = 0,
    ) -> None:
        from .aws import client

        self.stack = stack
        self.settings = settings
        self.queue_urls = dict(queue_urls)
        self.rules = webhook_rules(stack)
        if not self.rules:
            raise ValueError("the stack has no webhook rule: is the WebhookUrl parameter set?")
        self._sqs = client("sqs", endpoint)
        self._events = client("events", endpoint)
        self._secrets = client("secretsmanager", endpoint)
        self._http = httpx.Client()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.outboxes: dict[str, str] = {}
        self.stats = DeliveryStats()

    @classmethod
    def start(
        cls, stack: Stack, endpoint: str, queue_urls: Mapping[str, str], settings: WebhookSettings
    ) -> WebhookDelivery:
        delivery = cls(stack, endpoint, queue_urls, settings)
        delivery._provision()
        delivery._thread = threading.Thread(target=delivery._run, name="webhooks", daemon=True)
        delivery._thread.start()
        return delivery

    def _provision(self) -> None:
        secret_name = LOCAL_SECRET_NAME.format(stage=self.stack.stage)
        self._secrets.create_secret(
            Name=secret_name, SecretString=json.dumps({"api_key_value": self.settings.api_key})
        )
        self.headers = connection_headers(
            self.stack, lambda sid: str(self._secrets.get_secret_value(SecretId=sid)["SecretString"])
        )
        self.url = str(
            next(
                r["Properties"]["InvocationEndpoint"]
                for r in self.stack.resources.values()
                if r["Type"] == "AWS::Events::ApiDestination"
            )
        )
        bus = next(iter(self.stack.buses.values()))
        for rule in self.rules:
            name = rule_name(self.stack, rule.logical_id)
            url = self._sqs.create_queue(QueueName=f"{name}-outbox")["QueueUrl"]
            arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            self._events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(rule.event_pattern))
            self._events.put_targets(
                Rule=name, EventBusName=bus, Targets=[{"Id": "webhook-outbox", "Arn": arn}]
            )
            self.outboxes[rule.logical_id] = url

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    # -------------------------------------------------------------- the loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fetched = self._fetch()
                worked = self._deliver_due()
            except Exception as exc:  # moto gone during shutdown, or a bug: wait_idle reports it
                if not self._stop.is_set():
                    self._error = exc
                return
            if not fetched and not worked:
                self._stop.wait(0.02)

    def _fetch(self) -> int:
        fetched = 0
        for rule in self.rules:
            url = self.outboxes[rule.logical_id]
            messages = self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=43200, WaitTimeSeconds=0
            ).get("Messages", [])
            now = time.monotonic()
            with self._lock:
                for message in messages:
                    self._seq += 1
                    self._pending.append(
                        _Pending(
                            now,
                            self._seq,
                            rule,
                            json.loads(message["Body"]),
                            url,
                            message["ReceiptHandle"],
                            now,
                        )
                    )
                    fetched += 1
        return fetched

    def _deliver_due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            due = [p for p in self._pending if p.due <= now]
            if not due:
                return False
            item = min(due)
            self._pending.remove(item)
        item.attempts += 1
        body = item.rule.envelope_body(item.event)
        attempt = post_envelope(self._http, self.url, body, self.headers)
        outcome, condition = decide(
            attempt.status, item.attempts, time.monotonic() - item.first_seen, item.rule.retry
        )
        with self._lock:
            self.stats.attempts += 1
        if outcome == "retry":
            delay = backoff_seconds(
                item.attempts - 1,
                self.settings.retry_base_seconds,
                self.settings.retry_cap_seconds,
                self._rng,
            )
            item.due = time.monotonic() + delay
            with self._lock:
                self.stats.retries += 1
                self._pending.append(item)
            return True
        if outcome == "dead_letter":
            self._dead_letter(item, attempt, condition)
        self._sqs.delete_message(QueueUrl=item.outbox_url, ReceiptHandle=item.receipt)
        with self._lock:
            if outcome == "delivered":
                self.stats.delivered += 1
            else:
                self.stats.dead_lettered += 1
        return True

    def _dead_letter(self, item: _Pending, attempt: Attempt, condition: str) -> None:
        if item.rule.dead_letter_logical_id is None:
            return  # EventBridge drops it; the template always names a DLQ (tests/infra checks it)
        code = "NOT_RETRYABLE_RESPONSE" if condition == "NotRetryable" else "RETRIES_EXHAUSTED"
        attributes = {
            "RULE_ARN": item.rule.arn,
            "TARGET_ARN": item.rule.target_arn,
            "ERROR_CODE": code,
            "ERROR_MESSAGE": attempt.error,
            "EXHAUSTED_RETRY_CONDITION": condition,
            "RETRY_ATTEMPTS": str(item.attempts - 1),
        }
        self._sqs.send_message(
            QueueUrl=self.queue_urls[item.rule.dead_letter_logical_id],
            MessageBody=json.dumps(item.event),
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )

    # -------------------------------------------------------------- waiting
    def idle(self) -> bool:
        with self._lock:
            if self._pending:
                return False
        for url in self.outboxes.values():
            attrs = self._sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if any(int(v) for v in attrs.values()):
                return False
        return True

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Return once every event published so far is delivered or dead-lettered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._error is not None:
                raise RuntimeError("the webhook delivery loop stopped") from self._error
            if self.idle():
                return
            time.sleep(0.05)
        raise TimeoutError(f"webhook deliveries still pending after {timeout}s")


# ---------------------------------------------------------------------- samples (`qfbridge webhook test`)
SAMPLE_TENANT = "21040107100019"

SAMPLE_CASE = {"tenant_siret": SAMPLE_TENANT, "case_id": "5e0d6c8a-sample-case", "reference": "0A1B2C3D4E5F6"}


def _samples() -> dict[str, dict[str, Any]]:
    """One detail of each event type, built by its model (so a sample is always a valid event)."""
    from qfbridge import messages as m

    events: list[m.BusEvent] = [
        m.DossierLinked(**SAMPLE_CASE, user_id="famille-0001", link_method="external_id"),
        m.DossierNeedsReview(**SAMPLE_CASE, candidates=2, external_id_status="absent"),
        m.DossierRejected(**SAMPLE_CASE, reason="missing_quotient_familial"),
        m.QfUpdated(
            tenant_siret=SAMPLE_TENANT,
            user_id="famille-0001",
            quotient_familial=812,
            fournisseur="CNAF",
            annee=2026,
            mois=6,
            source="refresh",
            received_at="2026-06-08T06:00:00+00:00",
            previous_quotient_familial=650,
        ),
        m.RefreshFailed(tenant_siret=SAMPLE_TENANT, user_id="famille-0001", outcome="not_found", attempts=3),
        m.TenantTokenExpiring(
            tenant_siret=SAMPLE_TENANT, expires_on="2026-09-01", days_left=29, threshold=30
        ),
        m.TenantTokenExpired(tenant_siret=SAMPLE_TENANT, expires_on="2026-09-01", detected_by="token_watch"),
        m.TenantHubeeAuthFailed(
            tenant_siret=SAMPLE_TENANT, error_code="hubee_auth", detected_at="2026-06-01T09:00:00+00:00"
        ),
    ]
    return {event.detail_type: event.detail() for event in events}


SAMPLE_DETAILS: dict[str, dict[str, Any]] = _samples()


def sample_event(detail_type: str, detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An EventBridge event as the bus carries it (the shape of the rules' input)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": SOURCE,
        "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "eu-west-3",
        "resources": [],
        "detail": dict(detail if detail is not None else SAMPLE_DETAILS[detail_type]),
    }


@dataclass(frozen=True)
class SampleResult:
    detail_type: str
    envelope_id: str
    outcome: Outcome
    attempts: int
    last: str


def send_samples(
    rules: list[WebhookRule],
    url: str,
    headers: Mapping[str, str],
    *,
    max_seconds: float = 30.0,
    retry_base_seconds: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[SampleResult]:
    """Send one sample event of each type through its rule's transformer, with the rule's retries
    (bounded by ``max_seconds`` per event: a command must end)."""
    from qfbridge.store.events import EVENT_TYPES

    rng = random.Random()
    with httpx.Client() as client:
        for detail_type in EVENT_TYPES:
            event = sample_event(detail_type)
            rule = next((r for r in rules if r.matches(event)), None)
            if rule is None:
                raise ValueError(f"no webhook rule of the template matches {detail_type}")
            body = rule.envelope_body(event)
            started = time.monotonic()
            attempts = 0
            while True:
                attempts += 1
                attempt = post_envelope(client, url, body, headers)
                outcome, _ = decide(attempt.status, attempts, time.monotonic() - started, rule.retry)
                if outcome == "retry" and time.monotonic() - started < max_seconds:
                    sleep(backoff_seconds(attempts - 1, retry_base_seconds, 5.0, rng))
                    continue
                if outcome == "retry":
                    outcome = "dead_letter"
                yield SampleResult(detail_type, event["id"], outcome, attempts, attempt.error)
                break


# ---------------------------------------------------------------------- commands
def local_rules(url: str, api_key: str, stage: str = "dev") -> tuple[list[WebhookRule], dict[str, str]]:
    """The template's webhook rules and connection header, resolved for a local webhook URL."""
    from .template import resolve_stack

    settings = WebhookSettings(url=url, api_key=api_key)
    stack = resolve_stack(
        endpoint="http://127.0.0.1:1", parameter_overrides=settings.parameter_overrides(stage)
    )
    headers = connection_headers(stack, lambda _secret: json.dumps({"api_key_value": api_key}))
    return webhook_rules(stack), headers


def deployed_rules(parameters: Mapping[str, str]) -> tuple[list[WebhookRule], str]:
    """The template's webhook rules for a deployed stack's parameters, and its webhook URL."""
    from .template import resolve_stack

    known = {k: v for k, v in parameters.items() if k.startswith("Webhook") or k == "Stage"}
    if not known.get("WebhookUrl"):
        raise ValueError("the stack has no webhook (its WebhookUrl parameter is empty)")
    stack = resolve_stack(endpoint="http://127.0.0.1:1", parameter_overrides=known)
    return webhook_rules(stack), known["WebhookUrl"]


def deployed_headers(parameters: Mapping[str, str], read_secret: Callable[[str], str]) -> dict[str, str]:
    """The authorization EventBridge sends for a deployed stack's connection (the key, or a token)."""
    secret = json.loads(read_secret(parameters["WebhookCredentialsSecretArn"]))
    if parameters.get("WebhookAuthorization", "API_KEY") == "API_KEY":
        header = parameters.get("WebhookApiKeyHeader") or "X-Qfbridge-Webhook-Key"
        return {header: str(secret["api_key_value"])}
    form = {"grant_type": "client_credentials"}
    if parameters.get("WebhookOAuthScope"):
        form["scope"] = parameters["WebhookOAuthScope"]
    response = httpx.post(
        parameters["WebhookOAuthTokenUrl"],
        data=form,
        auth=(str(secret["client_id"]), str(secret["client_secret"])),
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@dataclass
class ReplayReport:
    replayed: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)  # event id and the answer, never the event's data


def replay_dead_letters(
    sqs: Any,
    dlq_url: str,
    rules: list[WebhookRule],
    url: str,
    headers: Mapping[str, str],
    *,
    limit: int = 100,
) -> ReplayReport:
    """POST each dead-lettered event's envelope again (same id: receivers deduplicate), deleting it
    from the DLQ only once the endpoint accepted it (2xx)."""
    report = ReplayReport()
    seen: set[str] = set()
    kept: list[str] = []
    try:
        with httpx.Client() as client:
            _replay(sqs, dlq_url, rules, url, headers, limit, client, report, seen, kept)
    finally:
        for receipt in kept:  # visible again at once: still counted by the DLQ alarm
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=receipt, VisibilityTimeout=0)
    return report


def _replay(
    sqs: Any,
    dlq_url: str,
    rules: list[WebhookRule],
    url: str,
    headers: Mapping[str, str],
    limit: int,
    client: httpx.Client,
    report: ReplayReport,
    seen: set[str],
    kept: list[str],
) -> None:
    while report.replayed + report.kept < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - report.replayed - report.kept),
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            event = json.loads(message["Body"])
            rule = next((r for r in rules if r.matches(event)), None)
            if rule is None:
                kept.append(message["ReceiptHandle"])
                report.kept += 1
                report.errors.append(f"{event.get('id')}: no webhook rule matches {event.get('detail-type')}")
                continue
            attempt = post_envelope(client, url, rule.envelope_body(event), headers)
            if attempt.status is not None and 200 <= attempt.status < 300:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                report.replayed += 1
            else:
                kept.append(message["ReceiptHandle"])
                report.kept += 1
                report.errors.append(f"{event.get('id')}: {attempt.error}")
