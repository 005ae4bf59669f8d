"""Webhooks on the laptop runtime: the demo's events reach an HTTP receiver as envelopes, none lost.

The receiver is a plain local HTTP server, as an editor's would be: it checks the key header,
validates each body against the committed envelope schema, and can fail for a while.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qfbridge_local.demo import run_demo
from qfbridge_local.webhooks import WebhookSettings

REPO = Path(__file__).resolve().parents[2]
ENVELOPE = json.loads((REPO / "docs/events/webhook/envelope.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(ENVELOPE, format_checker=jsonschema.FormatChecker())
KEY = "receiver-test-key"


@dataclass
class Receiver:
    """Records every request; answers ``failing_status`` while ``failures_left`` > 0."""

    failures_left: int = 0
    failing_status: int = 503
    requests: list[dict[str, Any]] = field(default_factory=list)  # every delivery, accepted or not
    accepted: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: Any, body: bytes) -> int:
        if headers.get("X-Qfbridge-Webhook-Key") != KEY:
            return 401
        envelope = json.loads(body)
        with self.lock:
            self.requests.append(envelope)
            errors = [e.message for e in VALIDATOR.iter_errors(envelope)]
            if errors or envelope["tenant"] != envelope["data"]["tenant_siret"]:
                self.invalid.append(f"{envelope.get('type')}: {errors}")
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.failing_status
            self.accepted.append(envelope)
            return 204


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(state.handle(self.headers, body))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/qfbridge/events"
    finally:
        server.shutdown()
        server.server_close()


def _settings(url: str) -> WebhookSettings:
    return WebhookSettings(url=url, api_key=KEY, retry_base_seconds=0.05, retry_cap_seconds=0.5)


def test_every_event_of_the_demo_reaches_the_receiver_once_as_a_valid_envelope(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver

    summary = run_demo(quiet=True, tenants=2, families_per_tenant=6, webhook=_settings(url))

    published = summary.event_types_by_id
    assert len(published) == sum(summary.events.values()) > 0
    # every event type the scenario produces is delivered; each envelope is valid
    assert state.invalid == []
    distinct = {e["id"]: e for e in state.accepted}
    assert {i: e["type"] for i, e in distinct.items()} == published  # one envelope per event
    assert Counter(e["type"] for e in distinct.values()) == summary.events
    # at least once: a repeat (a delivery timed out on a busy machine) is the same envelope, same id
    assert all(e == distinct[e["id"]] for e in state.accepted)
    assert {"dossier.linked", "qf.updated", "tenant.token_expiring"} <= set(summary.events)


def test_a_receiver_that_fails_for_a_while_gets_every_event_after_it_recovers(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.failures_left = 25  # the first 25 deliveries fail (503), whatever event they carry

    summary = run_demo(quiet=True, tenants=2, families_per_tenant=6, webhook=_settings(url))

    published = summary.event_types_by_id
    assert state.failures_left == 0 and len(state.requests) >= len(published) + 25
    # none lost: every published event was accepted once the receiver recovered
    assert {e["id"] for e in state.accepted} == set(published)
    # the failed deliveries were repeats of the same events: same id, same envelope
    by_id: dict[str, list[dict[str, Any]]] = {}
    for envelope in state.requests:
        by_id.setdefault(envelope["id"], []).append(envelope)
    assert all(len(set(map(json.dumps, copies))) == 1 for copies in by_id.values())
    assert sum(len(c) - 1 for c in by_id.values()) >= 25
    assert set(by_id) == set(published)  # nothing but the scenario's events
    assert state.invalid == []
