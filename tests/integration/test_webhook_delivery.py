"""The laptop runtime's webhook delivery: retries as EventBridge's, the DLQ, the replay, the samples."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qfbridge.store.events import EVENT_TYPES, EventPublisher
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.webhooks import (
    SAMPLE_DETAILS,
    RetryPolicy,
    WebhookSettings,
    backoff_seconds,
    decide,
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
    EventPublisher(rt.environment["EVENT_BUS_NAME"]).publish_many([(t, SAMPLE_DETAILS[t]) for t in types])


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


def test_webhook_test_sends_one_valid_sample_of_each_type() -> None:
    validator = jsonschema.Draft202012Validator(ENVELOPE, format_checker=jsonschema.FormatChecker())
    with receiver(lambda _e, h: 204 if h.get("X-Qfbridge-Webhook-Key") == KEY else 401) as (url, received):
        done = subprocess.run(
            [sys.executable, "-m", "qfbridge_local.cli", "webhook", "test", "--url", url, "--api-key", KEY],
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
