"""The handlers' own plumbing: SQS partial batch responses, settings from the environment, and
what a cold request imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, ValidationError

from qfbridge.batch import BatchProcessingError, Later, SqsRecord, process_partial_response
from qfbridge.settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]


def _event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"rh{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "3"},
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_only_failed_records_are_reported() -> None:
    seen: list[str] = []

    def handler(record: SqsRecord) -> None:
        seen.append(record.body)
        if record.body == "bad":
            raise RuntimeError("boom")

    response = process_partial_response(_event("ok", "bad", "ok2"), handler)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert seen == ["ok", "bad", "ok2"]  # a failure does not stop the batch's other records


def test_a_batch_where_every_record_failed_fails_the_invocation() -> None:
    def handler(record: SqsRecord) -> None:
        raise ValueError(record.message_id)

    with pytest.raises(BatchProcessingError) as failure:
        process_partial_response(_event("a", "b"), handler)
    assert [str(e) for e in failure.value.exceptions] == ["m0", "m1"]


def test_the_record_and_the_context_reach_the_handler() -> None:
    received: list[tuple[str, str | None, str, object]] = []
    context = object()

    def handler(record: SqsRecord, lambda_context: object) -> None:
        received.append(
            (record.receipt_handle, record.attributes.approximate_receive_count, record.body, lambda_context)
        )

    assert process_partial_response(_event("x"), handler, context) == {"batchItemFailures": []}
    assert received == [("rh0", "3", "x", context)]


def test_a_deferred_record_runs_after_the_others_earliest_first_and_is_not_a_failure() -> None:
    # Given records whose handler may put them after the batch's others: "a" can start at 10.0,
    # "b" at 5.0, the others at once; the clock reads 0 throughout
    runs: list[tuple[str, bool]] = []
    ready = {"a": 10.0, "b": 5.0}

    def handler(record: SqsRecord, may_defer: bool = False) -> None:
        runs.append((record.body, may_defer))
        if may_defer and record.body in ready:
            raise Later(ready.pop(record.body))

    # When the batch is handled
    response = process_partial_response(_event("a", "x", "b", "y"), handler, now=lambda: 0.0)
    # Then the deferred records run after the others, earliest first, told they may not defer again
    # (nothing else is left to run meanwhile), and no record failed
    assert runs == [("a", True), ("x", True), ("b", True), ("y", False), ("b", False), ("a", False)]
    assert response == {"batchItemFailures": []}


def test_a_deferred_record_runs_as_soon_as_its_instant_is_near() -> None:
    # Given "a" deferred to 1.0 and a clock that moves 0.5 per record
    clock = iter([0.5 * i for i in range(100)])
    runs: list[str] = []
    deferred: set[str] = set()

    def handler(record: SqsRecord, may_defer: bool = False) -> None:
        runs.append(record.body)
        if may_defer and record.body == "a" and "a" not in deferred:
            deferred.add("a")
            raise Later(1.0)

    process_partial_response(
        _event("a", "x", "y", "z"), handler, now=lambda: next(clock), later_lead_seconds=0.2
    )
    # Then it runs again once its instant is within the lead, ahead of the records still queued
    assert runs == ["a", "x", "y", "a", "z"]


class _Settings(BaseSettings):
    tenants_table: str
    poll_concurrency: int = Field(default=20, ge=1, le=200)
    dossiers_queue_url: str | None = None


def test_settings_read_the_environment_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTS_TABLE", "tenants")
    monkeypatch.setenv("POLL_CONCURRENCY", "7")
    monkeypatch.delenv("DOSSIERS_QUEUE_URL", raising=False)

    settings = _Settings.from_environment()

    assert (settings.tenants_table, settings.poll_concurrency, settings.dossiers_queue_url) == (
        "tenants",
        7,
        None,
    )
    assert _Settings(tenants_table="given").tenants_table == "given"  # explicit values win
    assert _Settings.from_environment(tenants_table="given").tenants_table == "given"


def test_settings_refuse_a_missing_or_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANTS_TABLE", raising=False)
    with pytest.raises(ValidationError, match="tenants_table"):
        _Settings.from_environment()
    monkeypatch.setenv("TENANTS_TABLE", "tenants")
    monkeypatch.setenv("POLL_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="poll_concurrency"):
        _Settings.from_environment()


_FIRST_REQUEST = """
import inspect, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
for name, value in sorted(vars(app).items()):
    if callable(value) and hasattr(value, "cache_info") and getattr(value, "__module__", "") == "app":
        if not inspect.signature(value).parameters:
            value()
print(json.dumps(sorted(sys.modules)))
"""

_COSTLY = {
    # pydantic-settings: the handlers read flat environment variables (qfbridge.settings)
    "all": ("pydantic_settings",),
    # boto3's DynamoDB resource (its model, the classes it builds): qfbridge.store.tables uses a client;
    # Powertools' parameters (a second boto3 session for its provider): qfbridge.store.secrets caches;
    # boto3 itself (s3transfer, multiprocessing): qfbridge.store.aws builds botocore clients
    "all_aws": ("boto3", "s3transfer", "aws_lambda_powertools.utilities.parameters"),
    # Powertools' batch utility (every Powertools event class): qfbridge.batch answers its batches
    "reconcile": ("aws_lambda_powertools.utilities.batch",),
    # HubEE's and API Particulier's clients (httpx, asyncio): the API reads their models, calls neither
    "api": ("qfbridge.hubee.client", "qfbridge.api_particulier.client", "httpx"),
    # the matcher (rapidfuzz, its models): for the functions that match or write the directory
    "hubee_poll": ("qfbridge.matching.scoring", "rapidfuzz"),
    # Powertools' batch utility (every Powertools event class): qfbridge.batch answers its batches
    # and the dossier's models (pydantic, defusedxml): a refresh reads families, never a dossier
    "qf_refresh": (
        "qfbridge.matching.scoring",
        "rapidfuzz",
        "aws_lambda_powertools.utilities.batch",
        "qfbridge.services.linking",
        "qfbridge.domain.dossier",
        # HubEE's models, for the dossiers queue's messages: qf_refresh reads the refresh queue's
        "qfbridge.hubee.models",
        "qfbridge.messages.dossiers",
    ),
    "refresh_dispatch": ("qfbridge.matching.scoring", "rapidfuzz"),
}


@pytest.mark.parametrize(
    "function", ["hubee_poll", "reconcile", "qf_refresh", "refresh_dispatch", "api", "token_watch"]
)
def test_a_cold_request_does_not_import_what_it_does_not_use(function: str) -> None:
    """Import and wiring of each handler, as its first request pays them (docs/performance.md)."""
    env = {
        **os.environ,
        "AWS_REGION": "eu-west-3",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    from qfbridge_local.template import resolve_stack

    stack = resolve_stack(endpoint="https://example.invalid")
    spec = next(s for s in stack.functions.values() if s.code_uri.name == function)
    env |= {k: v for k, v in spec.environment.items() if k != "AWS_ENDPOINT_URL"}
    completed = subprocess.run(
        [sys.executable, "-c", _FIRST_REQUEST, str(spec.code_uri), str(REPO / "layers" / "core")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    for module in _COSTLY["all"] + _COSTLY["all_aws"] + _COSTLY.get(function, ()):
        assert module not in loaded, f"{function} imports {module} on its first request"
