"""The laptop runtime provisions exactly what the template declares and emulates Lambda's SQS poller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qfbridge_local.aws import describe_local_stack
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template


def _expected_from_template(template: dict[str, Any], stage: str) -> dict[str, Any]:
    """The tables and queues as the raw template declares them (independently of the resolver)."""
    tables = {}
    queues = {}
    resources = template["Resources"]
    for lid, res in resources.items():
        props = res.get("Properties", {})
        if "Condition" in res:
            continue  # optional resources (the webhook's): none exists with the default parameters
        if res["Type"] == "AWS::DynamoDB::Table":
            ttl = props.get("TimeToLiveSpecification", {})
            tables[f"qfbridge-{stage}-{lid}"] = {
                "key_schema": props["KeySchema"],
                "indexes": sorted(
                    (gsi["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]))
                    for gsi in props.get("GlobalSecondaryIndexes", [])
                ),
                "ttl_attribute": ttl.get("AttributeName") if ttl.get("Enabled") else None,
            }
        elif res["Type"] == "AWS::SQS::Queue":
            redrive = props.get("RedrivePolicy")
            max_receive = None
            if redrive:
                raw = redrive["maxReceiveCount"]
                max_receive = int(
                    template["Parameters"][raw["Ref"]]["Default"] if isinstance(raw, dict) else raw
                )
            queues[f"qfbridge-{stage}-{lid}"] = {
                "visibility_timeout": int(props.get("VisibilityTimeout", 30)),
                "dead_letter_queue": (
                    f"qfbridge-{stage}-{redrive['deadLetterTargetArn']['Fn::GetAtt'][0]}" if redrive else None
                ),
                "max_receive_count": max_receive,
            }
    return {"tables": tables, "queues": queues}


def _normalised(stack: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(stack, default=list))


def test_the_local_tables_indexes_and_queues_are_exactly_the_templates(local_runtime: LocalRuntime) -> None:
    expected = _expected_from_template(load_template(DEFAULT_TEMPLATE), "dev")
    actual = describe_local_stack(local_runtime.endpoint)
    assert _normalised(actual) == _normalised(expected)
    assert len(actual["tables"]) >= 4 and len(actual["queues"]) == 4


def test_changing_the_template_changes_the_local_stack(tmp_path: Path) -> None:
    # Given a copy of the template with one more index and one more queue
    infra = tmp_path / "infra"
    infra.mkdir()
    text = DEFAULT_TEMPLATE.read_text()
    text = text.replace(
        "  FormLinksTable:\n    Type: AWS::DynamoDB::Table",
        "  AuditExtraQueue:\n    Type: AWS::SQS::Queue\n    Properties:\n      VisibilityTimeout: 42\n"
        "      SqsManagedSseEnabled: true\n\n  FormLinksTable:\n    Type: AWS::DynamoDB::Table",
    )
    text = text.replace(
        "        - IndexName: by_reference\n",
        "        - IndexName: by_user\n          KeySchema:\n            - { AttributeName: tenant_siret, KeyType: HASH }\n"
        "            - { AttributeName: case_id, KeyType: RANGE }\n          Projection:\n            ProjectionType: KEYS_ONLY\n"
        "        - IndexName: by_reference\n",
    )
    (infra / "template.yaml").write_text(text)
    # Function code stays where the template's relative CodeUris expect it.
    for folder in ("functions", "layers"):
        (tmp_path / folder).symlink_to(DEFAULT_TEMPLATE.parent.parent / folder)
    # When the runtime starts from that template
    with LocalRuntime.start(RuntimeOptions(template=infra / "template.yaml", serve_api=False)) as runtime:
        stack = describe_local_stack(runtime.endpoint)
    # Then the new queue and the new index exist locally, as declared
    assert stack["queues"]["qfbridge-dev-AuditExtraQueue"]["visibility_timeout"] == 42
    indexes = dict(stack["tables"]["qfbridge-dev-DossiersTable"]["indexes"])
    assert indexes["by_user"] == (("tenant_siret", "HASH"), ("case_id", "RANGE"))


def test_a_batch_with_one_failing_record_retries_only_that_record_until_the_dlq(
    local_runtime: LocalRuntime,
) -> None:
    # Given three messages on the dossiers queue, one of which reconcile cannot handle
    sqs = local_runtime.client("sqs")
    queue = local_runtime.queue_url("DossiersQueue")
    good = [
        {"kind": "review_resolved", "case_id": f"unknown-{i}", "credential_holder": "21260079000001"}
        for i in range(2)
    ]
    bad = {
        "kind": "dossier",
        "credential_holder": "21260079000001",
        "credential_tenants": [],
        "notification": {"id": "n-bad", "processCode": "FormulaireQF", "caseId": "c-bad", "eventId": None},
    }
    sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[{"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate([*good, bad])],
    )
    assert local_runtime.triggers is not None and local_runtime.stack is not None
    source = local_runtime.triggers.source_for("DossiersQueue")
    # When the emulated event source mapping runs until the queue is empty
    local_runtime.drain(timeout=60)
    # Then the good records were handled once, the bad one maxReceiveCount times, then dead-lettered
    max_receive = local_runtime.stack.queues["DossiersQueue"].max_receive_count
    assert max_receive is not None
    assert source.stats.records == 2 + max_receive
    assert source.stats.failed_records == max_receive
    assert source.stats.deleted == 2
    dlq = local_runtime.queue_url("DossiersDeadLetterQueue")
    messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["notification"]["id"] for m in messages] == ["n-bad"]


def test_the_sqs_event_has_the_shape_lambda_delivers(local_runtime: LocalRuntime) -> None:
    assert local_runtime.triggers is not None
    source = local_runtime.triggers.source_for("RefreshQueue")
    event = source._event(
        [
            {
                "MessageId": "m1",
                "ReceiptHandle": "r1",
                "Body": "{}",
                "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
            }
        ]
    )
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":qfbridge-dev-RefreshQueue")
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    assert set(record) >= {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "awsRegion",
    }


def test_handlers_reach_moto_through_the_standard_endpoint_configuration(local_runtime: LocalRuntime) -> None:
    assert local_runtime.environment["AWS_ENDPOINT_URL"] == local_runtime.endpoint
    assert local_runtime.endpoint.startswith("http://127.0.0.1:")
    for name, value in local_runtime.environment.items():
        if name.endswith("_TABLE"):
            assert value.startswith("qfbridge-dev-")


@pytest.mark.parametrize("function", ["HubeePollFunction", "RefreshDispatchFunction", "TokenWatchFunction"])
def test_scheduled_functions_run_on_an_empty_stack(local_runtime: LocalRuntime, function: str) -> None:
    assert local_runtime.triggers is not None
    result = local_runtime.triggers.fire_schedule(function)
    assert isinstance(result, dict)


def test_the_runtime_binds_only_the_loopback_interface(local_runtime: LocalRuntime) -> None:
    assert local_runtime.api is not None
    assert local_runtime.api.bound_address[0] == "127.0.0.1"
    assert local_runtime.moto is not None and local_runtime.moto.host == "127.0.0.1"


def test_inline_functions_share_metrics_with_the_templates_namespace_whenever_they_were_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A harness imports ``qfbridge.observability`` before any runtime applies the template's
    environment; Lambda would have built its ``Metrics`` with that environment set. Without its
    namespace, the metric set (never flushed while metrics are disabled) raised on a metric's 100th
    value and failed the record or tick that added it."""
    from qfbridge.observability import metrics

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    built_without = (None, None)
    before = (metrics.namespace, metrics.service)
    metrics.namespace, metrics.service = built_without
    try:
        with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
            assert metrics.namespace == rt.environment["POWERTOOLS_METRICS_NAMESPACE"] == "qfbridge"
            assert metrics.service == rt.environment["POWERTOOLS_SERVICE_NAME"]
            for _ in range(150):  # past Powertools' 100 values per metric, when it serialises the set
                metrics.add_metric(name="InlineProbe", unit="Count", value=1)
        assert (metrics.namespace, metrics.service) == built_without  # given back at stop
    finally:
        metrics.clear_metrics()
        metrics.namespace, metrics.service = before
