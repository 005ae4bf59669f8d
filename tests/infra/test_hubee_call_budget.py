"""The HubEE client's patience fits the functions that use it, as the template configures them.

A HubEE call at worst: every attempt hangs to its connect and read timeouts, every backoff waits
its cap. reconcile starts a record only with two such calls' time left (a record it cannot finish
goes back to the queue untouched), so two must fit in its timeout; hubee_poll must fit one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qfbridge.batch import BatchProcessingError
from qfbridge.hubee import HubeeConfig
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(DEFAULT_TEMPLATE)
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
REQUIRED = {
    "tenants_table": "t",
    "families_table": "f",
    "dossiers_table": "d",
    "form_links_table": "l",
    "event_bus_name": "b",
    "audit_log_group": "a",
    "tenant_secrets_prefix": "p/",
    "link_signing_secret_id": "k",
    "hubee_api_url": "https://api.example",
    "hubee_token_url": "https://auth.example/token",
}


def _handler_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"budget_{name}_app", REPO / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _function(logical_id: str) -> tuple[int, dict[str, str]]:
    properties = RESOURCES[logical_id]["Properties"]
    timeout = int(properties.get("Timeout", TEMPLATE["Globals"]["Function"]["Timeout"]))
    variables = properties.get("Environment", {}).get("Variables", {})
    return timeout, {k.lower(): v for k, v in variables.items() if isinstance(v, str)}


def test_reconcile_leaves_room_for_two_worst_case_hubee_calls_per_record() -> None:
    timeout, variables = _function("ReconcileFunction")
    app = _handler_module("reconcile")
    settings = app.Settings(**REQUIRED, **{k: v for k, v in variables.items() if k.startswith("hubee_")})
    config = settings.hubee_config()
    assert config.connect_timeout_s == float(variables["hubee_connect_timeout_s"])
    assert app.record_budget_s(config) == 2 * config.worst_case_call_s
    assert app.record_budget_s(config) <= timeout


def test_hubee_poll_fits_a_worst_case_hubee_call() -> None:
    timeout, _ = _function("HubeePollFunction")
    assert (
        HubeeConfig(api_url="https://a.example", token_url="https://a.example/t").worst_case_call_s <= timeout
    )


def test_worst_case_counts_every_attempt_and_backoff() -> None:
    config = HubeeConfig(
        api_url="https://a.example",
        token_url="https://a.example/t",
        connect_timeout_s=3,
        read_timeout_s=10,
        retry_attempts=3,
        backoff_base_s=0.5,
        backoff_max_s=8,
    )
    assert config.worst_case_call_s == 3 * 13 + 0.5 + 1.0


class _Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_a_record_is_not_started_without_the_time_to_finish_it(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _handler_module("reconcile")
    config = HubeeConfig(api_url="https://a.example", token_url="https://a.example/t", retry_attempts=2)
    handled: list[Any] = []

    class Service:
        hubee = config

        def handle(self, message: Any) -> Any:
            handled.append(message)
            raise AssertionError("must not start")

    monkeypatch.setattr(app, "service", lambda: Service())
    record = type("Record", (), {"body": "{}", "message_id": "m-1"})()
    budget_ms = int(app.record_budget_s(config) * 1000)
    with pytest.raises(app.NotStarted):
        app.record_handler(record, _Context(budget_ms - 1))
    assert handled == []


def test_the_batch_processor_hands_the_invocation_context_to_the_record_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the batch processor the handler uses: a record with too little time left fails untouched."""
    app = _handler_module("reconcile")
    config = HubeeConfig(api_url="https://a.example", token_url="https://a.example/t", retry_attempts=2)
    handled: list[Any] = []

    class Service:
        hubee = config

        def handle(self, message: Any) -> Any:
            handled.append(message)
            raise AssertionError("must not start")

    monkeypatch.setattr(app, "service", lambda: Service())
    event = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": "{}",
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-3:000000000000:dossiers",
            }
        ]
    }
    budget_ms = int(app.record_budget_s(config) * 1000)
    told: list[tuple[str, str]] = []
    with pytest.raises(BatchProcessingError) as failed:  # every record of the batch failed
        app.process_partial_response(
            event=event,
            record_handler=app.record_handler,
            context=_Context(budget_ms - 1),
            on_failure=lambda record, exc: told.append((record.message_id, type(exc).__name__)),
        )
    assert [type(error).__name__ for error in failed.value.exceptions] == ["NotStarted"]
    assert told == [("m-1", "NotStarted")]
    assert handled == []


def test_the_in_flight_markers_follow_the_dossiers_queue() -> None:
    queue = RESOURCES["DossiersQueue"]["Properties"]
    for function in ("HubeePollFunction", "ReconcileFunction"):
        _, variables = _function(function)
        assert int(variables["dossiers_visibility_timeout_seconds"]) == int(queue["VisibilityTimeout"])
    _, variables = _function("ReconcileFunction")
    assert int(variables["dossiers_max_receive_count"]) == int(queue["RedrivePolicy"]["maxReceiveCount"])
