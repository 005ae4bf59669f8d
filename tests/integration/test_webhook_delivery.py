"""The laptop runtime's webhook delivery: retries as EventBridge's, the DLQ, the replay, the samples."""

from __future__ import annotations

import base64
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qfbridge.messages import parse_event
from qfbridge.store.events import EVENT_TYPES, EventPublisher
from qfbridge_local.cli import main
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.serve import ServeConfig, Server
from qfbridge_local.webhooks import (
    SAMPLE_DETAILS,
    RetryPolicy,
    WebhookSettings,
    backoff_seconds,
    decide,
    deployed_headers,
    replay_dead_letters,
)

REPO = Path(__file__).resolve().parents[2]
ENVELOPE = json.loads((REPO / "docs/events/webhook/envelope.schema.json").read_text(encoding="utf-8"))
KEY = "integration-key"


@contextmanager
def receiver(respond: Callable[[dict[str, Any], Any], int]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint: ``respond(envelope, headers)`` gives the status; every body is recorded."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            envelope = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            received.append(envelope)
            self.send_response(respond(envelope, self.headers))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def _runtime(url: str) -> LocalRuntime:
    settings = WebhookSettings(url=url, api_key=KEY, retry_base_seconds=0.02, retry_cap_seconds=0.2)
    return LocalRuntime.start(RuntimeOptions(serve_api=False, webhook=settings))


def _publish(rt: LocalRuntime, *types: str) -> None:
    EventPublisher(rt.environment["EVENT_BUS_NAME"]).publish_many(
        [parse_event(t, SAMPLE_DETAILS[t]) for t in types]
    )


def _dlq(rt: LocalRuntime) -> list[dict[str, Any]]:
    return (
        rt.client("sqs")
        .receive_message(
            QueueUrl=rt.queue_url("WebhookDeadLetterQueue"),
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        .get("Messages", [])
    )


def test_the_key_header_is_sent_and_retryable_answers_are_retried_until_accepted() -> None:
    answers = iter([429, 500, 401, 409])  # all retried by EventBridge; then the endpoint accepts
    keys: list[str] = []

    def respond(_envelope: dict[str, Any], headers: Any) -> int:
        keys.append(headers.get("X-Qfbridge-Webhook-Key"))
        return next(answers, 200)

    with receiver(respond) as (url, received), _runtime(url) as rt:
        _publish(rt, "qf.updated")
        assert rt.webhooks is not None
        rt.webhooks.wait_idle(timeout=30)
        assert rt.webhooks.stats.delivered == 1 and rt.webhooks.stats.retries == 4
        assert _dlq(rt) == []
    assert keys == [KEY] * 5
    assert len({e["id"] for e in received}) == 1 and len(received) == 5


def test_a_refused_event_goes_to_the_dlq_with_eventbridges_attributes_and_replays_with_its_id() -> None:
    refusing = {"on": True}

    def respond(envelope: dict[str, Any], _headers: Any) -> int:
        return 400 if refusing["on"] and envelope["type"] == "dossier.rejected" else 204

    with receiver(respond) as (url, received), _runtime(url) as rt:
        _publish(rt, "dossier.rejected", "qf.updated")
        assert rt.webhooks is not None
        rt.webhooks.wait_idle(timeout=30)
        (dead,) = _dlq(rt)
        event = json.loads(dead["Body"])  # the original event, as EventBridge keeps it
        assert event["detail-type"] == "dossier.rejected" and event["source"] == "qfbridge"
        attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
        assert attributes["EXHAUSTED_RETRY_CONDITION"] == "NotRetryable"
        assert attributes["RETRY_ATTEMPTS"] == "0" and attributes["ERROR_MESSAGE"] == "HTTP 400"
        assert attributes["RULE_ARN"].endswith("WebhookDossierEventsRule")
        assert {"TARGET_ARN", "ERROR_CODE"} <= set(attributes)

        refusing["on"] = False
        report = replay_dead_letters(
            rt.client("sqs"),
            rt.queue_url("WebhookDeadLetterQueue"),
            rt.webhooks.rules,
            url,
            rt.webhooks.headers,
        )
        assert (report.replayed, report.kept) == (1, 0)
        assert _dlq(rt) == []
    refused, replayed = (e for e in received if e["type"] == "dossier.rejected")
    assert refused == replayed and replayed["id"] == event["id"]  # the receiver can deduplicate


def test_a_replay_the_endpoint_refuses_again_stays_in_the_dlq() -> None:
    with receiver(lambda _e, _h: 400) as (url, _received), _runtime(url) as rt:
        _publish(rt, "refresh.failed")
        assert rt.webhooks is not None
        rt.webhooks.wait_idle(timeout=30)
        dlq = rt.queue_url("WebhookDeadLetterQueue")
        report = replay_dead_letters(rt.client("sqs"), dlq, rt.webhooks.rules, url, rt.webhooks.headers)
        assert (report.replayed, report.kept) == (0, 1) and "HTTP 400" in report.errors[0]
        assert len(_dlq(rt)) == 1


@pytest.mark.parametrize(
    ("status", "attempts", "age", "expected"),
    [
        (200, 1, 0, ("delivered", "")),
        (204, 3, 0, ("delivered", "")),
        (400, 1, 0, ("dead_letter", "NotRetryable")),
        (403, 1, 0, ("dead_letter", "NotRetryable")),
        (404, 1, 0, ("dead_letter", "NotRetryable")),
        (302, 1, 0, ("dead_letter", "NotRetryable")),
        (401, 1, 0, ("retry", "")),
        (407, 1, 0, ("retry", "")),
        (409, 1, 0, ("retry", "")),
        (429, 1, 0, ("retry", "")),
        (503, 1, 0, ("retry", "")),
        (None, 1, 0, ("retry", "")),  # timeout or connection error
        (503, 186, 0, ("dead_letter", "MaximumRetryAttempts")),  # 185 retries after the first attempt
        (503, 185, 0, ("retry", "")),
        (503, 2, 86400, ("dead_letter", "MaximumEventAgeInSeconds")),
    ],
)
def test_retry_decisions_follow_eventbridges_api_destination_rules(
    status: int | None, attempts: int, age: float, expected: tuple[str, str]
) -> None:
    assert decide(status, attempts, age, RetryPolicy(185, 86400)) == expected


def test_the_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(n, 0.1, 2.0, rng) for n in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(1.0 <= d <= 2.0 for d in delays[6:])


def test_webhook_test_sends_one_valid_sample_of_each_type_to_the_configured_url(tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(ENVELOPE, format_checker=jsonschema.FormatChecker())
    with receiver(lambda _e, h: 204 if h.get("X-Qfbridge-Webhook-Key") == KEY else 401) as (url, received):
        config = tmp_path / "local.toml"
        config.write_text(f'[webhook]\nurl = "{url}"\napi_key = "{KEY}"\n', encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "qfbridge_local.cli", "webhook", "test", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(e["type"] for e in received) == sorted(EVENT_TYPES)
    for envelope in received:
        validator.validate(envelope)


def test_webhook_test_fails_when_the_endpoint_refuses() -> None:
    with receiver(lambda _e, _h: 403) as (url, received):
        done = subprocess.run(
            [sys.executable, "-m", "qfbridge_local.cli", "webhook", "test", "--url", url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert len(received) == len(EVENT_TYPES)  # 403 is not retried


def test_webhook_replay_command_uses_the_stacks_parameters_outputs_and_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    accepting = {"on": False}

    def respond(_envelope: dict[str, Any], headers: Any) -> int:
        if not accepting["on"]:
            return 404  # not retried: straight to the DLQ
        return 204 if headers.get("X-Editor-Key") == "key-from-the-stack-secret" else 401

    with receiver(respond) as (url, received), _runtime(url) as rt:
        _publish(rt, "tenant.token_expired", "qf.updated")
        assert rt.webhooks is not None
        rt.webhooks.wait_idle(timeout=30)
        dlq = rt.queue_url("WebhookDeadLetterQueue")
        # a deployed stack as the command finds it: its parameters, its outputs, its secret
        secret = rt.client("secretsmanager").create_secret(
            Name="editor/webhook", SecretString=json.dumps({"api_key_value": "key-from-the-stack-secret"})
        )["ARN"]
        parameters = {
            "Stage": "prod",
            "WebhookUrl": url,
            "WebhookCredentialsSecretArn": secret,
            "WebhookApiKeyHeader": "X-Editor-Key",
        }
        rt.client("cloudformation").create_stack(
            StackName="qfbridge-replay",
            TemplateBody=json.dumps(
                {
                    "Parameters": {name: {"Type": "String"} for name in parameters},
                    "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
                    "Outputs": {"WebhookDeadLetterQueueUrl": {"Value": dlq}},
                }
            ),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        failed_ids = {json.loads(m["Body"])["id"] for m in _dlq(rt)}
        assert len(failed_ids) == 2

        accepting["on"] = True
        assert main(["webhook", "replay", "--stack-name", "qfbridge-replay"]) == 0
        assert "2 event(s) delivered again, 0 kept" in capsys.readouterr().out
        assert _dlq(rt) == []
    replayed = received[2:]
    assert {e["id"] for e in replayed} == failed_ids
    assert {e["type"] for e in replayed} == {"tenant.token_expired", "qf.updated"}


def test_replay_with_oauth_client_credentials_asks_the_token_endpoint_for_a_bearer_token() -> None:
    requests: list[tuple[str | None, str]] = []

    class TokenHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            requests.append((self.headers.get("Authorization"), form))
            body = json.dumps({"access_token": "tok-123", "token_type": "Bearer", "expires_in": 300})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        headers = deployed_headers(
            {
                "WebhookAuthorization": "OAUTH_CLIENT_CREDENTIALS",
                "WebhookCredentialsSecretArn": "arn:secret",
                "WebhookOAuthTokenUrl": f"http://127.0.0.1:{server.server_address[1]}/token",
                "WebhookOAuthScope": "qfbridge.events",
            },
            lambda sid: (
                json.dumps({"client_id": "qfb", "client_secret": "s3cret"}) if sid == "arn:secret" else ""
            ),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert headers == {"Authorization": "Bearer tok-123"}
    ((authorization, form),) = requests
    assert authorization == "Basic " + base64.b64encode(b"qfb:s3cret").decode()
    assert form == "grant_type=client_credentials&scope=qfbridge.events"


def test_local_serve_delivers_webhooks_when_its_configuration_names_a_url(tmp_path: Path) -> None:
    config = tmp_path / "local.toml"
    config.write_text('[webhook]\nurl = "http://127.0.0.1:9000/hook"\napi_key = "k"\n', encoding="utf-8")
    assert Server(ServeConfig.load(config))._webhook() == WebhookSettings(
        url="http://127.0.0.1:9000/hook", api_key="k", retry_base_seconds=1.0
    )
    assert Server(ServeConfig())._webhook() is None


def test_an_endpoint_down_for_a_while_gets_the_events_once_it_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}/hook"
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0")))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with _runtime(url) as rt:
        _publish(rt, *EVENT_TYPES)
        assert rt.webhooks is not None
        deadline = time.monotonic() + 10
        while rt.webhooks.stats.retries < 2 * len(EVENT_TYPES):  # connection refused, retried
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            rt.webhooks.wait_idle(timeout=30)
        finally:
            server.shutdown()
            server.server_close()
        assert _dlq(rt) == [] and rt.webhooks.stats.dead_lettered == 0
    assert sorted(e["type"] for e in received) == sorted(EVENT_TYPES)
