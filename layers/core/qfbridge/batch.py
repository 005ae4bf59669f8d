"""SQS partial batch responses, as Lambda's ``ReportBatchItemFailures`` expects them.

What the SQS handlers used from Powertools' batch utility, without its import: that utility loads
every Powertools event class (ALB, API Gateway, Kinesis…) on a cold request, more than a tenth of
the request before any network (docs/performance.md, cold request).

Each record is handled on its own; a record whose handler raises is named in
``batchItemFailures`` and stays on the queue (retried, then dead-lettered), the others are
acknowledged. When every record failed, :class:`BatchProcessingError` is raised instead, as
Powertools does: the invocation fails and the whole batch is retried.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SqsAttributes:
    approximate_receive_count: str | None


@dataclass(frozen=True)
class SqsRecord:
    """The fields of an SQS record the handlers read (the event's camelCase keys)."""

    raw: Mapping[str, Any]

    @property
    def message_id(self) -> str:
        return str(self.raw["messageId"])

    @property
    def body(self) -> str:
        return str(self.raw.get("body") or "")

    @property
    def receipt_handle(self) -> str:
        return str(self.raw.get("receiptHandle") or "")

    @property
    def attributes(self) -> SqsAttributes:
        attributes = self.raw.get("attributes") or {}
        return SqsAttributes(approximate_receive_count=attributes.get("ApproximateReceiveCount"))


class BatchProcessingError(ExceptionGroup):
    """Every record of the batch failed: the invocation fails and the batch is retried whole."""


def process_partial_response(
    event: Mapping[str, Any], record_handler: Callable[..., Any], context: Any = None
) -> dict[str, Any]:
    """Handle each record of an SQS event; the partial batch response naming the failed ones."""
    records = [SqsRecord(raw) for raw in event.get("Records") or []]
    with_context = "lambda_context" in inspect.signature(record_handler).parameters
    failures: list[dict[str, str]] = []
    errors: list[Exception] = []
    for record in records:
        try:
            if with_context:
                record_handler(record, lambda_context=context)
            else:
                record_handler(record)
        except Exception as exc:  # a record's failure must not fail the batch's other records
            failures.append({"itemIdentifier": record.message_id})
            errors.append(exc)
    if records and len(failures) == len(records):
        raise BatchProcessingError(f"All {len(records)} records of the batch failed", errors)
    return {"batchItemFailures": failures}
