"""The AWS cost of 10,000 dossiers and of 10,000 refreshes, from the benchmarks' counts and durations.

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
