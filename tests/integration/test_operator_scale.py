"""Operations that scale: DLQ redrive by SQS's message move task (or its stated fallback), audit
queries filtered by CloudWatch Logs and sorted before they are truncated."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest

from qfbridge.domain.siret import complete_siret
from qfbridge.store.audit import AuditRecord, AuditTrail
from qfbridge_local import operator as ops
from qfbridge_local.cli import build_parser, main
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime.start(RuntimeOptions()) as rt:
        yield rt


def test_redrive_without_a_move_task_keeps_the_message_attributes_and_says_so(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = runtime.client("sqs")
    dlq, queue = runtime.queue_url("DossiersDeadLetterQueue"), runtime.queue_url("DossiersQueue")
    for n in range(3):
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=json.dumps({"kind": "notification", "case_id": f"case-{n}"}),
            MessageAttributes={"attempt": {"DataType": "Number", "StringValue": str(n)}},
        )

    group = runtime.environment["AUDIT_LOG_GROUP"]
    urls = ["--dlq-url", dlq, "--queue-url", queue, "--log-group", group]
    code = main(["dlq", "redrive", "dossiers", *urls, "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result == {"queue": "dossiers", "moved": 3, "method": "receive_send_delete"}
    moved = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])[
        "Messages"
    ]
    assert sorted(m["MessageAttributes"]["attempt"]["StringValue"] for m in moved) == ["0", "1", "2"]
    for message in moved:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


class _SqsWithMoveTasks:
    """An SQS that has StartMessageMoveTask (as AWS does): the command must use it, not copy."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []
        self.listed = 0
        self.audited: list[str] = []

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        if AttributeNames == ["QueueArn"]:
            return {
                "Attributes": {"QueueArn": f"arn:aws:sqs:eu-west-3:123456789012:{QueueUrl.rsplit('/', 1)[1]}"}
            }
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": "25000",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }
        }

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.started.append(kwargs)
        return {"TaskHandle": "task-1"}

    def list_message_move_tasks(self, SourceArn: str, MaxResults: int) -> dict[str, Any]:
        self.listed += 1
        status = "RUNNING" if self.listed < 2 else "COMPLETED"
        moved = 12000 if self.listed < 2 else 25000
        return {
            "Results": [{"TaskHandle": "task-1", "Status": status, "ApproximateNumberOfMessagesMoved": moved}]
        }

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("a move task is available: messages must not be copied one by one")

    # The command's audit record (STS for the caller, CloudWatch Logs for the trail).
    def get_caller_identity(self) -> dict[str, Any]:
        return {"Arn": "arn:aws:iam::123456789012:user/operator"}

    def create_log_stream(self, **kwargs: Any) -> None:
        return None

    def put_log_events(self, logEvents: list[dict[str, Any]], **kwargs: Any) -> None:
        self.audited += [json.loads(event["message"])["action"] for event in logEvents]


def test_redrive_uses_the_message_move_task_when_sqs_has_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = _SqsWithMoveTasks()
    monkeypatch.setattr(ops, "aws_client", lambda args, service: sqs)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    args = build_parser().parse_args(
        [
            "dlq",
            "redrive",
            "refresh",
            "--dlq-url",
            "https://sqs/1/dlq",
            "--queue-url",
            "https://sqs/1/q",
            "--log-group",
            "/qfbridge/dev/audit",
            "--rate",
            "50",
            "--json",
        ]
    )

    assert ops.dlq_redrive(args) == 0
    assert sqs.audited == ["dlq.redrive"]

    assert sqs.started == [
        {
            "SourceArn": "arn:aws:sqs:eu-west-3:123456789012:dlq",
            "DestinationArn": "arn:aws:sqs:eu-west-3:123456789012:q",
            "MaxNumberOfMessagesPerSecond": 50,
        }
    ]
    assert json.loads(capsys.readouterr().out) == {
        "queue": "refresh",
        "moved": 25000,
        "method": "message_move_task",
    }


def test_audit_query_filters_in_cloudwatch_and_sorts_before_truncating(
    runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    siret, other = complete_siret("2104033000001"), complete_siret("2104033000002")
    group = runtime.environment["AUDIT_LOG_GROUP"]
    trail = AuditTrail(group)
    times = [
        "2026-11-03T10:00:00.000+00:00",
        "2026-11-01T10:00:00.000+00:00",
        "2026-11-02T10:00:00.000+00:00",
    ]
    for n, time in enumerate(times):  # written out of order, as several streams interleave
        trail.write(
            AuditRecord(
                time=time,
                request_id=f"r{n}",
                actor="editor",
                principal="p",
                tenant_siret=siret,
                route="GET /v1/tenants/{siret}/families/{user_id}",
                action="family.read",
                user_id="famille-9",
                outcome="success",
            )
        )
    trail.write(
        AuditRecord(
            request_id="x", actor="editor", principal="p", tenant_siret=other, route="r", action="family.read",
            user_id="famille-9", outcome="success",
        )
    )  # fmt: skip
    logs = runtime.client("logs")
    patterns: list[str] = []
    logs.meta.events.register(
        "provide-client-params.logs.FilterLogEvents",
        lambda params, **_: patterns.append(params.get("filterPattern")),
    )
    monkeypatch.setattr(ops, "aws_client", lambda args, service: logs)

    code = main(
        ["audit", "query", siret, "--user-id", "famille-9", "--log-group", group, "--limit", "2", "--json"]
    )

    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["total"] == 3
    assert [r["time"] for r in result["records"]] == sorted(times)[1:]  # the two most recent, in order
    assert patterns and all(p == ops.audit_filter_pattern(siret, "famille-9", None) for p in patterns)
    assert f'$.tenant_siret = "{siret}"' in patterns[0] and '$.user_ids[*] = "famille-9"' in patterns[0]


def test_audit_query_refuses_a_user_id_that_would_break_the_pattern(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["audit", "query", "21040107100019", "--user-id", 'x" || $.a = "', "--log-group", "g"])

    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --user-id") and "Traceback" not in err


def test_dlq_commands_read_their_queues_from_the_stack_outputs() -> None:
    args = argparse.Namespace(queue="refresh", dlq_url=None, queue_url=None, stack_name="s")
    args._outputs = {"RefreshQueueUrl": "https://q", "RefreshDeadLetterQueueUrl": "https://dlq"}

    assert ops._queue_urls(args) == ("https://q", "https://dlq")
