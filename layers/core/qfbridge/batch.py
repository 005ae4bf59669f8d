"""SQS partial batch responses, as Lambda's ``ReportBatchItemFailures`` expects them.

What the SQS handlers used from Powertools' batch utility, without its import: that utility loads
every Powertools event class (ALB, API Gateway, Kinesis…) on a cold request, more than a tenth of
the request before any network (docs/performance.md, cold request).

Each record is handled on its own; a record whose handler raises is named in
``batchItemFailures`` and stays on the queue (retried, then dead-lettered), the others are
acknowledged. When every record failed, :class:`BatchProcessingError` is raised instead, as
Powertools does: the invocation fails and the whole batch is retried.

A record handler with a ``may_defer`` parameter may put its record after the batch's others: told
``may_defer=True`` (other records are still to run), it raises :class:`Later` with the instant its
work can start, and runs again, earliest first, once that instant is near or nothing else is left
(qf_refresh: a record whose tenant's next permit is a second away does not hold up the records of
other tenants behind it). A deferred record is not a failure.
"""

from __future__ import annotations

import heapq
import inspect
from collections import deque
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


class Later(Exception):
    """Raised by a record handler told ``may_defer``: its record's work cannot start before ``at``
    (seconds, on the clock given to :func:`process_partial_response`); the batch's other records go first."""

    def __init__(self, at: float) -> None:
        super().__init__(f"record deferred until {at:.3f}")
        self.at = at


MAX_DEFERRALS = 3
"""How many times one record may be put after the others (each costs its handler a look)."""


def process_partial_response(
    event: Mapping[str, Any],
    record_handler: Callable[..., Any],
    context: Any = None,
    *,
    now: Callable[[], float] | None = None,
    later_lead_seconds: float = 0.0,
    on_failure: Callable[[SqsRecord, Exception], None] | None = None,
) -> dict[str, Any]:
    """Handle each record of an SQS event; the partial batch response naming the failed ones.
    ``on_failure`` is told of each failed record (to log it, count it, release what it held).

    Records run in the event's order, but a deferred one (:class:`Later`) runs again as soon as its
    instant is less than ``later_lead_seconds`` away on ``now``, or when no undeferred record is left.
    """
    records = [SqsRecord(raw) for raw in event.get("Records") or []]
    parameters = inspect.signature(record_handler).parameters
    with_context = "lambda_context" in parameters
    deferrable = "may_defer" in parameters and now is not None
    failures: list[dict[str, str]] = []
    errors: list[Exception] = []
    pending = deque(enumerate(records))
    deferred: list[tuple[float, int, SqsRecord]] = []  # (at, position, record): a heap
    deferrals = [0] * len(records)
    while pending or deferred:
        if deferred and (not pending or (now is not None and deferred[0][0] - now() <= later_lead_seconds)):
            _, position, record = heapq.heappop(deferred)
        else:
            position, record = pending.popleft()
        kwargs: dict[str, Any] = {"lambda_context": context} if with_context else {}
        if deferrable:
            kwargs["may_defer"] = bool(pending) and deferrals[position] < MAX_DEFERRALS
        try:
            record_handler(record, **kwargs)
        except Later as later:
            if not kwargs.get("may_defer"):
                _failed(record, later, failures, errors, on_failure)
                continue
            deferrals[position] += 1
            heapq.heappush(deferred, (later.at, position, record))
        except Exception as exc:  # a record's failure must not fail the batch's other records
            _failed(record, exc, failures, errors, on_failure)
    if records and len(failures) == len(records):
        raise BatchProcessingError(f"All {len(records)} records of the batch failed", errors)
    return {"batchItemFailures": failures}


def _failed(
    record: SqsRecord,
    exc: Exception,
    failures: list[dict[str, str]],
    errors: list[Exception],
    on_failure: Callable[[SqsRecord, Exception], None] | None,
) -> None:
    failures.append({"itemIdentifier": record.message_id})
    errors.append(exc)
    if on_failure is not None:
        on_failure(record, exc)
