"""Count the AWS requests the handlers make, by function, service and operation.

Why patch ``BaseClient._make_api_call`` rather than register an event on the default session:
Powertools' parameters utility builds its own boto3 session, and clients copy the session's event
hooks when they are created, so a session hook misses some clients or depends on import order.
Every botocore client, whichever session built it, goes through ``_make_api_call`` (X-Ray's
patch relies on the same fact).

Requests are attributed to the Lambda function whose invocation made them (a context variable set
around ``LocalFunction.invoke``; ``asyncio.to_thread`` copies it into worker threads). Requests
made by the harness itself (the SQS poller of the trigger emulator, seeding) are counted apart.

Capacity units are estimated from the request and response payloads (JSON size ≈ item size):
writes at 1 WRU per KB per item (×2 in a transaction), reads at 1 RRU per 4 KB strongly
consistent, half that eventually consistent. Good enough to price, not an AWS bill.
"""

from __future__ import annotations

import contextvars
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient

HARNESS = "harness"
_current: contextvars.ContextVar[str] = contextvars.ContextVar("bench_function", default=HARNESS)


@dataclass
class Tally:
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (function, service, op)
    read_units: dict[str, float] = field(default_factory=dict)  # by function
    write_units: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by "service:operation"
    event_entries: Counter[str] = field(default_factory=Counter)  # EventBridge entries, by function
    invocations: dict[str, list[float]] = field(default_factory=dict)  # durations (ms) by function

    def count(
        self, function: str | None = None, service: str | None = None, operation: str | None = None
    ) -> int:
        return sum(
            n
            for (fn, svc, op), n in self.requests.items()
            if (function is None or fn == function)
            and (service is None or svc == service)
            and (operation is None or op == operation)
        )

    def by_operation(self, function: str | None = None, service: str | None = None) -> dict[str, int]:
        result: Counter[str] = Counter()
        for (fn, svc, op), n in self.requests.items():
            if (function is None or fn == function) and (service is None or svc == service):
                result[f"{svc}:{op}"] += n
        return dict(sorted(result.items()))

    def handler_count(self, service: str) -> int:
        """Requests of ``service`` made by the functions (the harness excluded)."""
        return sum(n for (fn, svc, _), n in self.requests.items() if fn != HARNESS and svc == service)


class RequestCounter:
    """Installs the counting wrapper for the duration of a ``with`` block."""

    def __init__(self) -> None:
        self.tally = Tally()
        self._lock = threading.Lock()
        self._original: Any = None

    def __enter__(self) -> RequestCounter:
        original = getattr(BaseClient, "_make_api_call")  # noqa: B009
        self._original = original
        counter = self

        def counting(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            started = time.perf_counter()
            response = original(client, operation_name, api_params)
            elapsed = time.perf_counter() - started
            counter._record(
                client.meta.service_model.service_name, operation_name, api_params, response, elapsed
            )
            return response

        setattr(BaseClient, "_make_api_call", counting)  # noqa: B010 - private in the stubs
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(BaseClient, "_make_api_call", self._original)  # noqa: B010

    def reset(self) -> None:
        with self._lock:
            self.tally = Tally()

    def _record(
        self, service: str, operation: str, params: dict[str, Any], response: Any, elapsed: float
    ) -> None:
        function = _current.get()
        reads, writes = 0.0, 0.0
        if service == "dynamodb":
            reads, writes = capacity_units(operation, params, response)
        with self._lock:
            self.tally.requests[(function, service, operation)] += 1
            self.tally.read_units[function] = self.tally.read_units.get(function, 0.0) + reads
            self.tally.write_units[function] = self.tally.write_units.get(function, 0.0) + writes
            key = f"{service}:{operation}"
            self.tally.seconds[key] = self.tally.seconds.get(key, 0.0) + elapsed
            if service == "events" and operation == "PutEvents":
                self.tally.event_entries[function] += len(params.get("Entries", []))

    def record_invocation(self, function: str, duration_ms: float) -> None:
        with self._lock:
            self.tally.invocations.setdefault(function, []).append(duration_ms)


@contextmanager
def attributed_to(function: str) -> Iterator[None]:
    token = _current.set(function)
    try:
        yield
    finally:
        _current.reset(token)


def attribute_invocations(counter: RequestCounter) -> None:
    """Make every ``LocalFunction.invoke`` of this process carry its function's name and report its
    duration to ``counter`` (every runtime, including those a benchmark module starts itself)."""
    from qfbridge_local.lambdas import LocalFunction

    original = getattr(LocalFunction.invoke, "_bench_original", LocalFunction.invoke)

    def invoke(self: Any, event: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            with attributed_to(self.name):
                return original(self, event)
        finally:
            counter.record_invocation(self.name, (time.perf_counter() - started) * 1000)

    invoke._bench_original = original  # type: ignore[attr-defined]
    LocalFunction.invoke = invoke  # type: ignore[method-assign]


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str, separators=(",", ":")))


def _write_units(item: Any) -> float:
    return float(max(1, math.ceil(_size(item) / 1024)))


def _read_units(items: list[Any], consistent: bool) -> float:
    size = sum(_size(item) for item in items)
    units = max(1, math.ceil(size / 4096))
    return float(units if consistent else units / 2)


def capacity_units(operation: str, params: dict[str, Any], response: Any) -> tuple[float, float]:
    """(read units, write units) of one DynamoDB request, estimated from its payloads."""
    response = response or {}
    consistent = bool(params.get("ConsistentRead"))
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return 0.0, _write_units(
            params.get("Item") or params.get("ExpressionAttributeValues") or params.get("Key")
        )
    if operation == "BatchWriteItem":
        units = 0.0
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                body = request.get("PutRequest", {}).get("Item") or request.get("DeleteRequest", {}).get(
                    "Key"
                )
                units += _write_units(body)
        return 0.0, units
    if operation == "TransactWriteItems":
        units = 0.0
        for item in params.get("TransactItems", []):
            ((kind, body),) = item.items()
            payload = body.get("Item") or body.get("ExpressionAttributeValues") or body.get("Key")
            units += 2 * _write_units(payload) if kind != "ConditionCheck" else 0.0
        reads = sum(2.0 for item in params.get("TransactItems", []) if "ConditionCheck" in item)
        return reads, units
    if operation == "GetItem":
        item = response.get("Item")
        return _read_units([item] if item else [], consistent), 0.0
    if operation in ("Query", "Scan"):
        return _read_units(list(response.get("Items", [])), consistent), 0.0
    if operation == "BatchGetItem":
        items = [i for table_items in response.get("Responses", {}).values() for i in table_items]
        return _read_units(items, consistent), 0.0
    return 0.0, 0.0
