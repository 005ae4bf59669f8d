"""The AWS cost of 10,000 dossiers and of 10,000 refreshes, from the benchmarks' counts and durations,
and what a stage costs every month whatever its traffic (``fixed_monthly``, from the template).

Unit prices: AWS public **list** prices for eu-west-3 (Paris), as of 2025, without free tier,
savings plans or taxes. They are inputs, not measurements: check them against the AWS pricing
pages before quoting a figure to an editor. Durations are those measured on the laptop runtime
(moto answers more slowly than DynamoDB, so they overstate Lambda time).
"""

from __future__ import annotations

from typing import Any

PRICES = {
    "lambda_gb_second_arm64": 0.0000133334,  # USD per GB-s, arm64
    "lambda_request": 0.20 / 1_000_000,
    "dynamodb_write_request_unit": 0.7625 / 1_000_000,  # on-demand, after the Nov. 2024 price cut
    "dynamodb_read_request_unit": 0.1525 / 1_000_000,
    "sqs_request": 0.40 / 1_000_000,  # standard queue, per 64 KB chunk
    "secretsmanager_api_call": 0.05 / 10_000,
    "eventbridge_event": 1.00 / 1_000_000,  # custom events published (PutEvents entry)
    "cloudwatch_logs_gb": 0.53,  # ingestion (audit trail), standard class
    "xray_trace": 5.00 / 1_000_000,  # traces recorded (tracing is active on every function)
}
FIXED_PRICES = {
    "kms_key_month": 1.00,  # customer-managed key (rotation on: the first rotations are billed too)
    "cloudwatch_alarm_month": 0.10,  # standard-resolution metric alarm
    "secretsmanager_secret_month": 0.40,
    "apigateway_rest_request": 3.50 / 1_000_000,  # REST API, first 333 million a month
    "scheduler_invocation": 1.00 / 1_000_000,  # EventBridge Scheduler, beyond its free tier
    "cloudwatch_logs_storage_gb_month": 0.03,
}
MEMORY_GB = 512 / 1024
AUDIT_RECORD_BYTES = 600  # one JSON audit line per automatic link


def _lambda(invocations: float, total_ms: float) -> dict[str, float]:
    gb_seconds = total_ms / 1000 * MEMORY_GB
    return {
        "invocations": round(invocations, 1),
        "gb_seconds": round(gb_seconds, 2),
        "usd": gb_seconds * PRICES["lambda_gb_second_arm64"]
        + invocations * PRICES["lambda_request"]
        + invocations * PRICES["xray_trace"],
    }


def dossiers(intake: dict[str, Any], count: int = 10_000) -> dict[str, Any]:
    """Per ``count`` new dossiers: reconcile (dossier + the form's CLOSED event), DynamoDB, SQS…"""
    n = intake["dossiers"]
    scale = count / n
    aws = intake["aws"]
    lam = intake["lambda"]
    # reconcile: the measured invocations (batches) of the intake and of the CLOSED-event acks.
    reconcile = _lambda(
        lam["reconcile_invocations"] * scale + lam.get("event_ack_invocations", 0) * scale,
        (lam["reconcile_total_ms"] + lam.get("event_ack_total_ms", 0.0)) * scale,
    )
    sqs_sent = aws["sqs_requests_per_dossier"] * n  # the functions' own requests (SendMessageBatch)
    # The event source mapping receives and deletes each batch (billed to the account too).
    sqs_mapping = 2 * (lam["reconcile_invocations"] + lam.get("event_ack_invocations", 0))
    sqs_requests = (sqs_sent + sqs_mapping) * scale
    wru = aws["write_units_per_dossier"] * count
    rru = aws["read_units_per_dossier"] * count
    secrets = aws["secretsmanager_requests_per_dossier"] * count
    events = aws["event_entries_per_dossier"] * count
    audit_gb = aws["logs_requests_per_dossier"] * count * AUDIT_RECORD_BYTES / 1024**3
    lines = {
        "lambda_reconcile": reconcile["usd"],
        "dynamodb": wru * PRICES["dynamodb_write_request_unit"] + rru * PRICES["dynamodb_read_request_unit"],
        "sqs": sqs_requests * PRICES["sqs_request"],
        "secrets_manager": secrets * PRICES["secretsmanager_api_call"],
        "eventbridge": events * PRICES["eventbridge_event"],
        "cloudwatch_logs_audit": audit_gb * PRICES["cloudwatch_logs_gb"],
    }
    return {
        "count": count,
        "quantities": {
            "reconcile": reconcile,
            "dynamodb_wru": round(wru),
            "dynamodb_rru": round(rru),
            "sqs_requests": round(sqs_requests),
            "secretsmanager_calls": round(secrets),
            "eventbridge_events": round(events),
        },
        "usd": {k: round(v, 4) for k, v in lines.items()},
        "total_usd": round(sum(lines.values()), 4),
    }


def polling(poll: dict[str, Any], ticks_per_month: int = 288 * 30) -> dict[str, Any]:
    """The fixed monthly cost of hubee_poll for the benchmark's tenants (steady-state tick)."""
    steady = poll["steady_run"]
    invocation = _lambda(ticks_per_month, steady["poll_ms"] * ticks_per_month)
    requests = steady["aws_requests_by_function"]
    # One BatchGetSecretValue call is counted as one API call (see docs/performance.md on this).
    secrets = sum(v for k, v in requests.items() if k.startswith("secretsmanager:")) * ticks_per_month
    rru = steady["read_units"] * ticks_per_month
    lines = {
        "lambda_hubee_poll": invocation["usd"],
        "secrets_manager": secrets * PRICES["secretsmanager_api_call"],
        "dynamodb": rru * PRICES["dynamodb_read_request_unit"],
    }
    return {
        "tenants": poll["tenants"],
        "ticks_per_month": ticks_per_month,
        "quantities": {"hubee_poll": invocation, "secretsmanager_calls": secrets, "dynamodb_rru": round(rru)},
        "usd": {k: round(v, 4) for k, v in lines.items()},
        "total_usd": round(sum(lines.values()), 4),
    }


def refreshes(refresh: dict[str, Any], count: int = 10_000) -> dict[str, Any] | None:
    aws = refresh.get("aws")
    calls = (aws or {}).get("api_particulier_calls") or 0
    if not aws or not calls:
        return None
    scale = count / calls
    invocations = aws["invocations"].get("QfRefreshFunction", {"count": 0, "total_ms": 0.0})
    lam = _lambda(invocations["count"] * scale, invocations["total_ms"] * scale)
    by_function = aws["requests_by_function"]
    sqs = sum(v for ops in by_function.values() for k, v in ops.items() if k.startswith("sqs:"))
    sqs += 2 * invocations["count"]  # the event source mapping's receive + delete
    secrets = sum(
        v for ops in by_function.values() for k, v in ops.items() if k.startswith("secretsmanager:")
    )
    wru = sum(aws["write_units"].values())
    rru = sum(aws["read_units"].values())
    events = sum(aws["event_entries"].values())
    lines = {
        "lambda_qf_refresh": lam["usd"],
        "dynamodb": (wru * PRICES["dynamodb_write_request_unit"] + rru * PRICES["dynamodb_read_request_unit"])
        * scale,
        "sqs": sqs * scale * PRICES["sqs_request"],
        "secrets_manager": secrets * scale * PRICES["secretsmanager_api_call"],
        "eventbridge": events * scale * PRICES["eventbridge_event"],
    }
    return {
        "count": count,
        "quantities": {
            "qf_refresh": lam,
            "dynamodb_wru": round(wru * scale),
            "dynamodb_rru": round(rru * scale),
            "sqs_requests": round(sqs * scale),
            "secretsmanager_calls": round(secrets * scale),
            "eventbridge_events": round(events * scale),
        },
        "usd": {k: round(v, 4) for k, v in lines.items()},
        "total_usd": round(sum(lines.values()), 4),
    }


def _unconditional(resources: dict[str, Any], kind: str) -> list[str]:
    """Logical ids of ``kind`` the stack always creates (conditional ones, e.g. the webhook's, apart)."""
    return sorted(lid for lid, r in resources.items() if r["Type"] == kind and "Condition" not in r)


def _schedule_runs_per_month(expression: Any, poll_interval_minutes: int) -> float:
    text = expression if isinstance(expression, str) else str(expression.get("Fn::Sub", ""))
    if text.startswith("rate("):
        return 30 * 24 * 60 / poll_interval_minutes
    return 30.0  # the daily cron


def fixed_monthly(
    template: dict[str, Any],
    *,
    tenants: int = 1_000,
    api_requests: int = 100_000,
    log_gb: float = 1.0,
    retained_log_gb: float = 5.0,
) -> dict[str, Any]:
    """What a stage costs every month whatever its traffic, counted from the template.

    ``tenants``: one Secrets Manager secret each (their HubEE and API Particulier credentials).
    ``api_requests``: the editor's calls to the API a month (an input: it depends on the editor).
    ``log_gb``: logs ingested a month (functions, API access logs, audit trail); ``retained_log_gb``:
    what the log groups hold at steady state (the audit trail keeps 1,096 days). Lambda time of the
    scheduled functions is in ``polling`` (hubee_poll); refresh_dispatch's is of the same order.
    """
    resources = template["Resources"]
    interval = int(template["Parameters"]["PollIntervalMinutes"]["Default"])
    keys = _unconditional(resources, "AWS::KMS::Key")
    alarms = _unconditional(resources, "AWS::CloudWatch::Alarm")
    stack_secrets = _unconditional(resources, "AWS::SecretsManager::Secret")
    schedule_runs = sum(
        _schedule_runs_per_month(event["Properties"]["ScheduleExpression"], interval)
        for r in resources.values()
        if r["Type"] == "AWS::Serverless::Function"
        for event in (r["Properties"].get("Events") or {}).values()
        if event["Type"] in ("Schedule", "ScheduleV2")
    )
    lines = {
        "kms_keys": len(keys) * FIXED_PRICES["kms_key_month"],
        "cloudwatch_alarms": len(alarms) * FIXED_PRICES["cloudwatch_alarm_month"],
        "secrets": (len(stack_secrets) + tenants) * FIXED_PRICES["secretsmanager_secret_month"],
        "api_gateway_requests": api_requests * FIXED_PRICES["apigateway_rest_request"],
        "scheduler": schedule_runs * FIXED_PRICES["scheduler_invocation"],
        "cloudwatch_logs": log_gb * PRICES["cloudwatch_logs_gb"]
        + retained_log_gb * FIXED_PRICES["cloudwatch_logs_storage_gb_month"],
    }
    return {
        "tenants": tenants,
        "quantities": {
            "kms_keys": keys,
            "cloudwatch_alarms": len(alarms),
            "secrets": len(stack_secrets) + tenants,
            "api_requests": api_requests,
            "schedule_runs": round(schedule_runs),
            "log_gb_ingested": log_gb,
            "log_gb_stored": retained_log_gb,
        },
        "usd": {k: round(v, 4) for k, v in lines.items()},
        "total_usd": round(sum(lines.values()), 4),
    }
