"""Each point the laptop runtime emulates can fail, as it fails on AWS.

Timeouts, visibility timeouts, batching, concurrency bounds, one invocation per execution
environment, real kills, API Gateway's rules, schedules: every test below would pass on a runtime
that ignores the rule it checks only if the rule held by accident — each asserts the failure mode.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from qfbridge.domain.siret import complete_siret
from qfbridge.store.tenants import TenantRepository
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.template import DEFAULT_TEMPLATE
from qfbridge_local.triggers import ScheduleExpression

HOOKS = Path(__file__).with_name("environment_hooks.py")
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260601/eu-west-3/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def _handler_module(name: str) -> Any:
    """A function's handler module as the runtime loaded it (a warm container's, to patch)."""
    return sys.modules[name]


def _send(rt: LocalRuntime, queue: str, bodies: list[dict[str, Any]]) -> None:
    sqs = rt.client("sqs")
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=rt.queue_url(queue),
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies[start : start + 10])
            ],
        )


def _log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------- timeouts


def test_a_handler_sleeping_past_its_timeout_has_its_batch_redelivered_only_after_the_visibility_timeout() -> (
    None
):
    # A fast clock (x100): reconcile's 60 s timeout lasts 0.6 s, the queue's 360 s visibility 3.6 s.
    options = RuntimeOptions(serve_api=False, clock_speed=100, skip_idle=False)
    with LocalRuntime.start(options) as rt:
        fn = rt.functions["ReconcileFunction"]
        fn.load()
        module: Any = sys.modules["qfbridge_fn_reconcile_app"]
        remaining: list[int] = []

        def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
            remaining.append(context.get_remaining_time_in_millis())
            if len(remaining) == 1:
                time.sleep(fn.timeout_real_seconds * 3)
            return {"batchItemFailures": []}

        module.lambda_handler = slow
        _send(rt, "DossiersQueue", [{"kind": "review_resolved", "case_id": "c-1"}])
        source = rt.triggers.source_for("DossiersQueue")  # type: ignore[union-attr]
        received_at = rt.clock.time()
        batch = source.receive()
        started = time.monotonic()
        failed = source.process(batch)
        took = time.monotonic() - started
        # The invocation was abandoned at its timeout, not when the handler returned ...
        assert failed == 1 and source.stats.timed_out_batches == 1
        assert took < fn.timeout_real_seconds * 2
        assert 0 < remaining[0] <= 60_000
        # ... and its record stays invisible until the queue's visibility timeout, not sooner.
        visibility = int(rt.stack.queues["DossiersQueue"].attributes["VisibilityTimeout"])  # type: ignore[union-attr]
        assert visibility == 360
        deadline = time.monotonic() + 30
        again: list[dict[str, Any]] = []
        while not again and time.monotonic() < deadline:
            again = source._receive(10)
            if not again:
                time.sleep(0.02)
        came_back_after = rt.clock.time() - received_at
        assert again, "the record never came back"
        assert visibility <= came_back_after < visibility + 30
        assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_skip_idle_jumps_over_the_visibility_timeout_without_shortening_it() -> None:
    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        fn = rt.functions["ReconcileFunction"]
        fn.load()
        calls: list[float] = []

        def failing_once(event: dict[str, Any], context: Any) -> dict[str, Any]:
            calls.append(rt.clock.time())
            if len(calls) == 1:
                raise RuntimeError("first delivery fails")
            return {"batchItemFailures": []}

        _handler_module("qfbridge_fn_reconcile_app").lambda_handler = failing_once
        _send(rt, "DossiersQueue", [{"kind": "review_resolved", "case_id": "c-2"}])
        started = time.monotonic()
        rt.drain(timeout=30)
        assert len(calls) == 2
        assert calls[1] - calls[0] >= 360 - 5  # the visibility timeout, minus the batching window
        assert time.monotonic() - started < 20 and rt.clock.skipped >= 300


# ---------------------------------------------------------------------------------- batching


def test_the_batching_window_holds_a_partial_batch_and_a_full_batch_leaves_at_once() -> None:
    with LocalRuntime.start(RuntimeOptions(serve_api=False, clock_speed=10, skip_idle=False)) as rt:
        source = rt.triggers.source_for("DossiersQueue")  # type: ignore[union-attr]
        assert source.mapping.batch_size == 10 and source.mapping.batching_window_seconds == 5
        _send(rt, "DossiersQueue", [{"kind": "review_resolved", "case_id": f"p-{i}"} for i in range(3)])
        before = rt.clock.time()
        partial = source.receive()
        assert len(partial) == 3 and rt.clock.time() - before >= 5  # waited the whole window
        _send(rt, "DossiersQueue", [{"kind": "review_resolved", "case_id": f"f-{i}"} for i in range(12)])
        before = rt.clock.time()
        full = source.receive()
        assert len(full) == 10 and rt.clock.time() - before < 5  # BatchSize reached: no wait


# ---------------------------------------------------------------------------------- environments


def _overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_maximum_concurrency_bounds_the_environments_and_each_runs_one_invocation_at_a_time(
    tmp_path: Path,
) -> None:
    log = tmp_path / "invocations.jsonl"
    options = RuntimeOptions(
        serve_api=False,
        isolation="process",
        parameter_overrides={"RefreshMaximumConcurrency": "2"},
        env_overrides={"PROBE_LOG": str(log), "PROBE_SLEEP_S": "1.5"},
        environment_hooks={"QfRefreshFunction": [f"{HOOKS}:record_and_sleep"]},
    )
    with LocalRuntime.start(options) as rt:
        _send(rt, "RefreshQueue", [{"n": i} for i in range(20)])  # four batches, each held 1.5 s
        rt.drain(timeout=120)
        invocations = _log(log)
    assert sorted(r for i in invocations for r in i["records"]) == sorted(
        {r for i in invocations for r in i["records"]}
    )
    assert sum(len(i["records"]) for i in invocations) == 20
    assert max(len(i["records"]) for i in invocations) <= 5  # BatchSize
    assert _overlap([(i["start"], i["end"]) for i in invocations]) == 2  # MaximumConcurrency, reached
    for pid in {i["pid"] for i in invocations}:
        own = [(i["start"], i["end"]) for i in invocations if i["pid"] == pid]
        assert _overlap(own) == 1  # one invocation at a time per environment


def test_a_killed_environment_runs_no_finally_and_its_batch_is_retried_in_a_new_one(tmp_path: Path) -> None:
    log = tmp_path / "probe.jsonl"
    options = RuntimeOptions(
        serve_api=False,
        isolation="process",
        env_overrides={"PROBE_LOG": str(log), "PROBE_MARKER": str(tmp_path / "killed")},
        environment_hooks={"ReconcileFunction": [f"{HOOKS}:killed_once_mid_step"]},
    )
    with LocalRuntime.start(options) as rt:
        _send(rt, "DossiersQueue", [{"kind": "review_resolved", "case_id": "k-1"}])
        rt.drain(timeout=60)
        source = rt.triggers.source_for("DossiersQueue")  # type: ignore[union-attr]
        assert source.stats.crashed_batches == 1 and source.stats.deleted == 1
        assert rt.functions["ReconcileFunction"].environments_started >= 2
    outcomes = [r["outcome"] for r in _log(log)]
    assert outcomes == ["killing", "handled"]  # no "finally ran": the kill is real
    pids = [r["pid"] for r in _log(log)]
    assert pids[0] != pids[1]


# ---------------------------------------------------------------------------------- the API


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_concurrent_editor_requests_each_get_their_own_invocation(isolation: str) -> None:
    options = RuntimeOptions(isolation=isolation, max_environments=4)  # type: ignore[arg-type]
    with LocalRuntime.start(options) as rt:
        sirets = [complete_siret(f"2105{i:09d}") for i in range(8)]
        statuses: list[int] = []
        barrier = threading.Barrier(len(sirets))

        def put(siret: str) -> None:
            with httpx.Client(base_url=rt.api_url, headers={"Authorization": AUTHORIZATION}, timeout=60) as c:
                barrier.wait()
                response = c.put(
                    f"/v1/tenants/{siret}",
                    json={"name": f"Commune {siret}", "cog": "04107", "redirect_hosts": ["www.example.fr"]},
                )
                statuses.append(response.status_code)

        threads = [threading.Thread(target=put, args=(s,)) for s in sirets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = {t.siret for t in TenantRepository(rt.environment["TENANTS_TABLE"]).all()}
    assert statuses == [201] * 8
    assert stored == set(sirets)


def _api_runtime(
    tmp_path: Path, *, speed: float = 1.0, binary_media_types: list[str] | None = None
) -> LocalRuntime:
    """The runtime from the template, or from a copy whose API declares other binary media types."""
    template = DEFAULT_TEMPLATE
    if binary_media_types is not None:
        infra = tmp_path / "infra"
        infra.mkdir()
        text = DEFAULT_TEMPLATE.read_text()
        start = text.index("      BinaryMediaTypes:\n")
        end = text.index("      Auth:\n", start)
        listed = "".join(f'        - "{t}"\n' for t in binary_media_types)
        text = text[:start] + "      BinaryMediaTypes:\n" + listed + text[end:]
        (infra / "template.yaml").write_text(text)
        for folder in ("functions", "layers"):
            (tmp_path / folder).symlink_to(DEFAULT_TEMPLATE.parent.parent / folder)
        template = infra / "template.yaml"
    return LocalRuntime.start(RuntimeOptions(template=template, clock_speed=speed, skip_idle=False))


def test_a_base64_response_is_decoded_only_for_an_accept_of_a_binary_media_type(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    with _api_runtime(tmp_path, binary_media_types=["image~1png"]) as rt:
        assert rt.stack is not None and rt.stack.api.binary_media_types == ("image/png",)
        rt.functions["ApiFunction"].load()
        seen: list[dict[str, Any]] = []

        def binary(event: dict[str, Any], context: Any) -> dict[str, Any]:
            seen.append(event)
            return {
                "statusCode": 200,
                "headers": {"Content-Type": "image/png"},
                "body": base64.b64encode(png).decode(),
                "isBase64Encoded": True,
            }

        _handler_module("qfbridge_fn_api_app").lambda_handler = binary
        with httpx.Client(base_url=rt.api_url, headers={"Authorization": AUTHORIZATION}) as http:
            as_png = http.get("/v1/x", headers={"Accept": "image/png"})
            as_json = http.get("/v1/x", headers={"Accept": "application/json"})
            http.post("/v1/x", content=png, headers={"Content-Type": "image/png"})
            http.post("/v1/x", content=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert as_png.content == png
    assert as_json.content == base64.b64encode(png)  # API Gateway hands the base64 text back
    assert seen[2]["isBase64Encoded"] is True and base64.b64decode(seen[2]["body"]) == png
    assert seen[3]["isBase64Encoded"] is False and seen[3]["body"] == '{"a": 1}'


def test_the_templates_binary_media_types_are_those_the_runtime_applies() -> None:
    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        assert rt.stack is not None
        api = rt.stack.api
    declared = [t.replace("~1", "/") for t in _template_api()["BinaryMediaTypes"]]
    assert list(api.binary_media_types) == declared
    assert api.is_binary("image/png") and (api.is_binary("application/json") == ("*/*" in declared))


def _template_api() -> dict[str, Any]:
    from qfbridge_local.template import load_template

    resources = load_template(DEFAULT_TEMPLATE)["Resources"]
    (props,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Serverless::Api"]
    return props


def test_payloads_over_lambdas_six_megabytes_are_refused(tmp_path: Path) -> None:
    with _api_runtime(tmp_path) as rt:
        rt.functions["ApiFunction"].load()
        calls: list[int] = []

        def big(event: dict[str, Any], context: Any) -> dict[str, Any]:
            calls.append(1)
            return {"statusCode": 200, "headers": {}, "body": "x" * (6 * 1024 * 1024 + 1)}

        _handler_module("qfbridge_fn_api_app").lambda_handler = big
        with httpx.Client(base_url=rt.api_url, headers={"Authorization": AUTHORIZATION}, timeout=60) as http:
            request = http.post(
                "/v1/x", content=b"a" * (7 * 1024 * 1024), headers={"Content-Type": "text/plain"}
            )
            response = http.get("/v1/x")
    assert request.status_code == 413 and calls == [1]  # the 7 MB request never reached the function
    assert response.status_code == 502  # the 6 MB response did not come back through the gateway


def test_the_integration_times_out_after_29_seconds_with_a_504(tmp_path: Path) -> None:
    with _api_runtime(tmp_path, speed=100) as rt:  # 29 s last 0.29 s
        rt.functions["ApiFunction"].load()

        def stuck(event: dict[str, Any], context: Any) -> dict[str, Any]:
            time.sleep(2)
            return {"statusCode": 200, "body": "late"}

        _handler_module("qfbridge_fn_api_app").lambda_handler = stuck
        started = time.monotonic()
        with httpx.Client(base_url=rt.api_url, headers={"Authorization": AUTHORIZATION}, timeout=60) as http:
            response = http.get("/v1/x")
        took = time.monotonic() - started
    assert response.status_code == 504 and "Endpoint request timed out" in response.text
    assert took < 1.5


def test_gateway_responses_come_from_the_template(tmp_path: Path) -> None:
    responses = _template_api()["GatewayResponses"]
    assert "MISSING_AUTHENTICATION_TOKEN" in responses and "INTEGRATION_TIMEOUT" in responses
    with _api_runtime(tmp_path, speed=100) as rt, httpx.Client(base_url=rt.api_url) as http:
        unsigned = http.get("/v1/tenants")
        rt.functions["ApiFunction"].load()
        _handler_module("qfbridge_fn_api_app").lambda_handler = lambda event, context: time.sleep(2)
        late = http.get("/v1/tenants", headers={"Authorization": AUTHORIZATION})
    # The template's problem+json documents, not API Gateway's default {"message": ...}
    assert unsigned.status_code == 403
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert unsigned.json()["code"] == "forbidden"
    assert unsigned.json()["detail"] == "Missing Authentication Token"
    assert late.status_code == 504 and late.json()["code"] == "gateway_timeout"


# ---------------------------------------------------------------------------------- schedules


def test_schedule_expressions_follow_the_template_and_its_time_zone() -> None:
    daily = ScheduleExpression("cron(0 6 * * ? *)", "Europe/Paris")
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    winter = daily.next_after(dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC), created=created)
    summer = daily.next_after(dt.datetime(2026, 7, 7, 10, 0, tzinfo=dt.UTC), created=created)
    assert winter is not None and winter.astimezone(dt.UTC) == dt.datetime(2026, 12, 8, 5, 0, tzinfo=dt.UTC)
    assert summer is not None and summer.astimezone(dt.UTC) == dt.datetime(2026, 7, 8, 4, 0, tzinfo=dt.UTC)
    every_five = ScheduleExpression("rate(5 minutes)")
    assert every_five.next_after(
        created + dt.timedelta(minutes=7), created=created
    ) == created + dt.timedelta(minutes=10)
    weekdays = ScheduleExpression("cron(30 8 ? * MON-FRI *)")
    saturday = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    assert weekdays.next_after(saturday, created=created) == dt.datetime(2026, 12, 7, 8, 30, tzinfo=dt.UTC)


def _wait_for(predicate: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _token_watch_retrying(tmp_path: Path, retries: int) -> Path:
    """A copy of the template whose token_watch is retried ``retries`` times (EventInvokeConfig)."""
    infra = tmp_path / "infra"
    infra.mkdir()
    text = DEFAULT_TEMPLATE.read_text()
    at = text.index("  TokenWatchFunction:\n")
    config = text.index("      EventInvokeConfig:\n        MaximumRetryAttempts: ", at)
    end = text.index("\n", config + len("      EventInvokeConfig:\n"))
    text = text[:config] + f"      EventInvokeConfig:\n        MaximumRetryAttempts: {retries}" + text[end:]
    (infra / "template.yaml").write_text(text)
    for folder in ("functions", "layers"):
        (tmp_path / folder).symlink_to(DEFAULT_TEMPLATE.parent.parent / folder)
    return infra / "template.yaml"


@pytest.mark.parametrize("retries", [None, 2])
def test_schedules_fire_on_the_clock_and_a_failed_invocation_is_retried_as_lambda_retries_events(
    tmp_path: Path, retries: int | None
) -> None:
    template = DEFAULT_TEMPLATE if retries is None else _token_watch_retrying(tmp_path, retries)
    with LocalRuntime.start(RuntimeOptions(template=template, serve_api=False)) as rt:
        triggers = rt.triggers
        assert triggers is not None and rt.stack is not None
        allowed = rt.stack.functions["TokenWatchFunction"].async_maximum_retry_attempts
        assert allowed == (retries if retries is not None else 0)  # the template's EventInvokeConfig
        poll_due = triggers.next_fire("HubeePollFunction")
        assert poll_due is not None
        # rate(${PollIntervalMinutes} minutes): five minutes after the schedule's creation
        assert poll_due == triggers.created + dt.timedelta(minutes=5)
        assert triggers.tick() == 0
        rt.functions["TokenWatchFunction"].load()
        attempts: list[float] = []

        def failing(event: dict[str, Any], context: Any) -> None:
            attempts.append(rt.clock.time())
            raise RuntimeError("token watch fails")

        _handler_module("qfbridge_fn_token_watch_app").lambda_handler = failing
        watch_due = triggers.next_fire("TokenWatchFunction")
        assert watch_due is not None
        rt.clock.advance(watch_due.timestamp() - rt.clock.time())
        assert triggers.tick() >= 1  # token watch (and the polls, due long before)
        _wait_for(lambda: len(attempts) == 1)
        time.sleep(0.1)
        assert triggers.pending_retries() == min(allowed, 1)
        for delay in (60, 120)[:allowed]:
            rt.clock.advance(delay - 1)
            triggers.tick()
            time.sleep(0.1)
            before = len(attempts)
            rt.clock.advance(1)  # a retry waits its whole delay, not less
            triggers.tick()
            _wait_for(lambda before=before: len(attempts) == before + 1)
        rt.clock.advance(3600)
        triggers.tick()
        time.sleep(0.2)
        assert len([a for a in attempts if a < watch_due.timestamp() + 3600]) == allowed + 1
        assert triggers.pending_retries() == 0
        gaps = [b - a for a, b in itertools.pairwise(attempts[: allowed + 1])]
        assert all(gap >= expected for gap, expected in zip(gaps, (60, 120), strict=False))
