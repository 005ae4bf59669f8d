"""Emulation of Lambda's triggers: SQS event source mappings and EventBridge Scheduler schedules.

The SQS emulation behaves as Lambda's poller does, on the runtime's clock (``clock.py``):
* it gathers up to ``BatchSize`` messages, waiting up to ``MaximumBatchingWindowInSeconds`` for a
  batch to fill, and builds the real SQS event shape;
* at most ``MaximumConcurrency`` batches of a mapping are in flight (five when the template sets no
  bound: Lambda's poller starts with five concurrent batches), each in its own execution environment;
* with ``ReportBatchItemFailures`` only the records named in ``batchItemFailures`` stay on the
  queue; a raised exception, a malformed response, a timed-out or crashed invocation fails the
  whole batch;
* a failed record is left alone: it becomes visible again when its visibility timeout (the queue's,
  or the one the handler set with ``ChangeMessageVisibility``) expires, and SQS itself (moto) moves
  it to the DLQ once its receive count passes ``maxReceiveCount``.

``drain`` runs the mappings until every queue is empty. With ``skip_idle`` (tests), when nothing
runs and every message left is invisible or delayed, the clock jumps to the first one due: a
failed batch comes back "after the visibility timeout" without the wait.

Schedules (EventBridge Scheduler → Lambda) fire from the template's expressions — ``rate(...)``,
``cron(...)`` in ``ScheduleExpressionTimezone``, ``at(...)`` — and invoke the function
asynchronously: a failed invocation is retried as Lambda retries an asynchronous event (the
function's ``EventInvokeConfig``: two retries by default, one then two minutes later, within the
maximum event age). The schedule's own ``RetryPolicy`` governs only the delivery to Lambda, which
cannot fail locally.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import heapq
import itertools
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from .aws import client
from .clock import RuntimeClock, next_sqs_due, sqs_messages
from .lambdas import FunctionCrashed, FunctionTimeout, LocalFunction
from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, ScheduleSpec, SqsMapping, Stack

DEFAULT_SQS_CONCURRENCY = 5  # Lambda's poller starts with five concurrent batches on a standard queue
MAX_RECEIVE = 10  # SQS returns at most ten messages per ReceiveMessage
ASYNC_RETRY_DELAYS_S = (60, 120)  # Lambda's asynchronous retries: one minute, then two
EMPTY_POLL_MIN_S = 0.005
EMPTY_POLL_MAX_S = 0.1
"""How long drain() leaves an empty queue before asking it again: from 5 ms, doubling, to 100 ms."""


@dataclass
class MappingStats:
    batches: int = 0
    records: int = 0
    failed_records: int = 0
    crashed_batches: int = 0
    timed_out_batches: int = 0
    deleted: int = 0


@dataclass
class SqsEventSource:
    """One SQS → Lambda mapping of the template."""

    mapping: SqsMapping
    function: LocalFunction
    queue_url: str
    queue_arn: str
    endpoint: str
    clock: RuntimeClock = field(default_factory=RuntimeClock)
    may_skip: Any = None  # () -> bool: may the clock jump now (nothing else runs)?
    stats: MappingStats = field(default_factory=MappingStats)
    # Every batch failed as a whole (timeout, crash, error): (reason, bodies). An independent record
    # of why a message was received again, for the fault campaign.
    failed_batches: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sqs = client("sqs", self.endpoint)
        self._lock = threading.Lock()
        self.in_flight = 0
        # Failed records whose return is the runtime's own timer (the visibility timeout the
        # receive set), not a wait the handler chose (ChangeMessageVisibility): skip_idle may jump
        # over the former only — the handler's wait is measured on its own clock.
        self.runtime_timed: set[str] = set()

    @property
    def queue_name(self) -> str:
        return self.queue_url.rsplit("/", 1)[1]

    @property
    def concurrency(self) -> int:
        wanted = self.mapping.maximum_concurrency or DEFAULT_SQS_CONCURRENCY
        return min(wanted, self.function.max_environments)

    def _event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        records = []
        now_ms = str(int(self.clock.millis()))
        for message in messages:
            attributes = dict(message.get("Attributes", {}))
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {
                        "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                        "SentTimestamp": attributes.get("SentTimestamp", now_ms),
                        "SenderId": attributes.get("SenderId", LOCAL_ACCOUNT_ID),
                        "ApproximateFirstReceiveTimestamp": attributes.get(
                            "ApproximateFirstReceiveTimestamp", now_ms
                        ),
                    },
                    "messageAttributes": {
                        name: {
                            "stringValue": value.get("StringValue"),
                            "binaryValue": value.get("BinaryValue"),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": value["DataType"],
                        }
                        for name, value in (message.get("MessageAttributes") or {}).items()
                    },
                    "md5OfBody": message.get("MD5OfBody")
                    or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": LOCAL_REGION,
                }
            )
        return {"Records": records}

    def _receive(self, limit: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(MAX_RECEIVE, limit)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        return list(response.get("Messages", []))

    def _visible_at(self, message_ids: set[str]) -> dict[str, float]:
        return {m.id: m.visible_at for m in sqs_messages(self.queue_name) if m.id in message_ids}

    def receive(self) -> list[dict[str, Any]]:
        """One batch: up to BatchSize messages, gathered for up to the batching window."""
        messages = self._gather()
        if messages:
            received = self._visible_at({m["MessageId"] for m in messages})
            for message in messages:
                message["_visible_at"] = received.get(message["MessageId"])
        return messages

    def _gather(self) -> list[dict[str, Any]]:
        messages = self._receive(self.mapping.batch_size)
        if not messages:
            return []
        window_ends = self.clock.time() + self.mapping.batching_window_seconds
        while len(messages) < self.mapping.batch_size:
            more = self._receive(self.mapping.batch_size - len(messages))
            if more:
                messages.extend(more)
                continue
            remaining = window_ends - self.clock.time()
            if remaining <= 0:
                break
            if self.may_skip is not None and self.may_skip():
                self.clock.advance(remaining)  # nothing runs that could send more: the window ends
            else:
                time.sleep(min(0.02, self.clock.real_seconds(remaining)))
        return messages

    def process(self, messages: list[dict[str, Any]]) -> int:
        """Invoke the function with one batch; return the number of failed records."""
        event = self._event(messages)
        by_id = {m["MessageId"]: m for m in messages}
        failed_ids: set[str]
        crashed = timed_out = False
        try:
            response = self.function.invoke(event)
            if self.mapping.report_batch_item_failures:
                failures = (
                    (response or {}).get("batchItemFailures", []) if isinstance(response, dict) else None
                )
                if failures is None:
                    failed_ids = set(by_id)
                else:
                    failed_ids = {f["itemIdentifier"] for f in failures}
                    if not failed_ids <= set(by_id):  # Lambda fails the batch on unknown identifiers
                        failed_ids = set(by_id)
            else:
                failed_ids = set()
        except FunctionTimeout:
            failed_ids, timed_out = set(by_id), True
            reason = "timeout"
        except FunctionCrashed:
            failed_ids, crashed, reason = set(by_id), True, "crashed"
        except Exception as exc:
            failed_ids, crashed = set(by_id), True
            reason = getattr(exc, "error_type", type(exc).__name__)
        if crashed or timed_out:
            with self._lock:
                self.failed_batches.append((reason, [m["Body"] for m in messages]))
        succeeded = [m for mid, m in by_id.items() if mid not in failed_ids]
        for start in range(0, len(succeeded), 10):
            chunk = succeeded[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        # Failed records are left alone: they come back when their visibility timeout expires.
        now_visible_at = self._visible_at(failed_ids)
        with self._lock:
            for mid in failed_ids:
                if mid in now_visible_at and now_visible_at[mid] == by_id[mid].get("_visible_at"):
                    self.runtime_timed.add(mid)
                else:
                    self.runtime_timed.discard(mid)
            self.stats.batches += 1
            self.stats.records += len(messages)
            self.stats.failed_records += len(failed_ids)
            self.stats.deleted += len(succeeded)
            self.stats.crashed_batches += int(crashed or timed_out)
            self.stats.timed_out_batches += int(timed_out)
        return len(failed_ids)

    def poll_once(self) -> int:
        """Receive and process batches (up to the mapping's concurrency); return records handled."""
        batches = []
        for _ in range(self.concurrency):
            messages = self.receive()
            if not messages:
                break
            batches.append(messages)
        if not batches:
            return 0
        if len(batches) == 1:
            self.process(batches[0])
        else:
            with ThreadPoolExecutor(max_workers=len(batches)) as pool:
                list(pool.map(self.process, batches))
        return sum(len(b) for b in batches)

    def pending(self) -> int:
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


# ---------------------------------------------------------------------------------- schedules

_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
_DAYS = {
    d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)
}  # cron: 1 = Sunday


def _cron_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values of one cron field; None for ``*`` and ``?`` (any)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _cron_value(a, names), _cron_value(b, names)
        else:
            start = _cron_value(part, names)
            end = high if step > 1 else start
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"cron field {text!r} is out of [{low}, {high}]")
        values.update(range(start, end + 1, step))
    return values


def _cron_value(text: str, names: dict[str, int] | None) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValueError(f"cron value {text!r} is not supported locally")
    return int(text)


@dataclass(frozen=True)
class ScheduleExpression:
    """``rate(...)``, ``cron(...)`` (EventBridge's six fields, in a time zone) or ``at(...)``."""

    expression: str
    timezone: str = "UTC"

    def next_after(self, moment: dt.datetime, *, created: dt.datetime) -> dt.datetime | None:
        """The first firing strictly after ``moment`` (aware datetimes); None when none is left."""
        text = self.expression.strip()
        rate = _RATE.match(text)
        if rate:
            period = int(rate.group(1)) * _UNITS[rate.group(2)]
            elapsed = (moment - created).total_seconds()
            periods = int(elapsed // period) + 1 if elapsed >= 0 else 1
            return created + dt.timedelta(seconds=periods * period)
        zone = ZoneInfo(self.timezone)
        if text.startswith("at(") and text.endswith(")"):
            at = dt.datetime.fromisoformat(text[3:-1]).replace(tzinfo=zone)
            return at if at > moment else None
        if text.startswith("cron(") and text.endswith(")"):
            return self._next_cron(text[5:-1].split(), moment.astimezone(zone))
        raise ValueError(f"schedule expression {text!r} is not supported")

    @staticmethod
    def _next_cron(fields: list[str], moment: dt.datetime) -> dt.datetime | None:
        if len(fields) != 6:
            raise ValueError("an EventBridge cron expression has six fields")
        minutes = _cron_field(fields[0], 0, 59)
        hours = _cron_field(fields[1], 0, 23)
        days = _cron_field(fields[2], 1, 31)
        months = _cron_field(fields[3], 1, 12, _MONTHS)
        weekdays = _cron_field(fields[4], 1, 7, _DAYS)
        years = _cron_field(fields[5], 1970, 2199)
        candidate = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = candidate + dt.timedelta(days=366 * 5)
        while candidate < limit:
            # Wall-clock fields, in the schedule's zone (a nonexistent local time is skipped).
            if (
                (years is None or candidate.year in years)
                and (months is None or candidate.month in months)
                and (days is None or candidate.day in days)
                and (weekdays is None or (candidate.isoweekday() % 7) + 1 in weekdays)
            ):
                if (hours is None or candidate.hour in hours) and (
                    minutes is None or candidate.minute in minutes
                ):
                    return candidate
                candidate += dt.timedelta(minutes=1)
            else:
                candidate = (candidate + dt.timedelta(days=1)).replace(hour=0, minute=0)
        return None


@dataclass(order=True)
class _Pending:
    due: float
    order: int
    schedule: ScheduleSpec = field(compare=False)
    attempt: int = field(compare=False, default=0)
    first_at: float = field(compare=False, default=0.0)


class TriggerEmulator:
    """All the SQS mappings and schedules of a stack."""

    def __init__(
        self,
        stack: Stack,
        functions: dict[str, LocalFunction],
        endpoint: str,
        queue_urls: dict[str, str],
        *,
        clock: RuntimeClock | None = None,
        skip_idle: bool = False,
    ) -> None:
        self.stack = stack
        self.functions = functions
        self.clock = clock or RuntimeClock()
        self.skip_idle = skip_idle
        self.sources: list[SqsEventSource] = []
        self.schedule_fires: Counter[str] = Counter()
        self.schedule_failures: Counter[str] = Counter()
        self.created = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        self._next_fire: dict[str, float] = {}
        self._retries: list[_Pending] = []
        self._order = itertools.count()
        self._schedule_lock = threading.Lock()
        self._async: list[Future[Any]] = []
        self._async_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="async-invoke")
        for fn in functions.values():
            for mapping in fn.spec.sqs_mappings:
                queue_name = stack.queues[mapping.queue_logical_id].name
                self.sources.append(
                    SqsEventSource(
                        mapping=mapping,
                        function=fn,
                        queue_url=queue_urls[mapping.queue_logical_id],
                        queue_arn=f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{queue_name}",
                        endpoint=endpoint,
                        clock=self.clock,
                        may_skip=self.may_skip,
                    )
                )
        for schedule in self.schedules():
            self._arm(schedule, self.created)

    def source_for(self, queue_logical_id: str) -> SqsEventSource:
        for source in self.sources:
            if source.mapping.queue_logical_id == queue_logical_id:
                return source
        raise KeyError(queue_logical_id)

    def may_skip(self) -> bool:
        """The clock may jump only in tests (skip_idle) and while no invocation runs anywhere."""
        return self.skip_idle and all(fn.in_flight == 0 for fn in self.functions.values())

    def close(self) -> None:
        self._async_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ schedules
    def schedules(self) -> list[ScheduleSpec]:
        return [s for fn in self.functions.values() for s in fn.spec.schedules if s.enabled]

    def _key(self, schedule: ScheduleSpec) -> str:
        return f"{schedule.function_logical_id}.{schedule.name}"

    def _arm(self, schedule: ScheduleSpec, after: dt.datetime) -> None:
        expression = ScheduleExpression(schedule.expression, schedule.timezone)
        following = expression.next_after(after, created=self.created)
        if following is None:
            self._next_fire.pop(self._key(schedule), None)
        else:
            self._next_fire[self._key(schedule)] = following.timestamp()

    def next_fire(self, function_logical_id: str, name: str | None = None) -> dt.datetime | None:
        for schedule in self.schedules():
            if schedule.function_logical_id == function_logical_id and name in (None, schedule.name):
                due = self._next_fire.get(self._key(schedule))
                return None if due is None else dt.datetime.fromtimestamp(due, dt.UTC)
        raise KeyError(function_logical_id)

    def _schedule_of(self, function_logical_id: str, name: str | None) -> ScheduleSpec:
        fn = self.functions[function_logical_id]
        schedules = [s for s in fn.spec.schedules if name is None or s.name == name]
        if not schedules:
            raise KeyError(f"{function_logical_id} has no schedule {name or ''}")
        return schedules[0]

    def fire_schedule(self, function_logical_id: str, name: str | None = None) -> Any:
        """Fire a schedule now and wait for its first attempt (tests, the demo): the result, or the
        error — a failed attempt is also retried asynchronously, as Lambda does (``tick``)."""
        schedule = self._schedule_of(function_logical_id, name)
        self.schedule_fires[self._key(schedule)] += 1
        return self._attempt(_Pending(self.clock.time(), next(self._order), schedule, 0, self.clock.time()))

    def _attempt(self, pending: _Pending) -> Any:
        fn = self.functions[pending.schedule.function_logical_id]
        try:
            return fn.invoke(dict(pending.schedule.input))
        except Exception:
            self.schedule_failures[self._key(pending.schedule)] += 1
            retries = fn.spec.async_maximum_retry_attempts
            if pending.attempt < min(retries, len(ASYNC_RETRY_DELAYS_S)):
                due = self.clock.time() + ASYNC_RETRY_DELAYS_S[pending.attempt]
                if due - pending.first_at <= fn.spec.async_maximum_event_age_seconds:
                    with self._schedule_lock:
                        heapq.heappush(
                            self._retries,
                            _Pending(
                                due,
                                next(self._order),
                                pending.schedule,
                                pending.attempt + 1,
                                pending.first_at,
                            ),
                        )
            raise

    def _attempt_quietly(self, pending: _Pending) -> None:
        with contextlib.suppress(Exception):  # counted in schedule_failures, retried by _attempt
            self._attempt(pending)

    def tick(self) -> int:
        """Fire the schedules and retries that are due on the clock (asynchronously); how many."""
        now = self.clock.time()
        fired = 0
        for schedule in self.schedules():
            key = self._key(schedule)
            due = self._next_fire.get(key)
            if due is not None and due <= now:
                self._arm(schedule, dt.datetime.fromtimestamp(now, dt.UTC))
                self.schedule_fires[key] += 1
                pending = _Pending(now, next(self._order), schedule, 0, now)
                self._async.append(self._async_pool.submit(self._attempt_quietly, pending))
                fired += 1
        with self._schedule_lock:
            while self._retries and self._retries[0].due <= now:
                pending = heapq.heappop(self._retries)
                self._async.append(self._async_pool.submit(self._attempt_quietly, pending))
                fired += 1
        self._async = [f for f in self._async if not f.done()]
        return fired

    def pending_retries(self) -> int:
        with self._schedule_lock:
            return len(self._retries)

    # ------------------------------------------------------------------ queues
    def drain(self, *, timeout: float = 60.0, idle_grace: float = 0.0) -> int:
        """Run the SQS mappings until every queue is empty (delayed and in-flight included).

        ``timeout`` is in real seconds. Batches run concurrently, up to each mapping's concurrency.
        """
        deadline = time.monotonic() + timeout
        handled = 0
        running: dict[Future[int], tuple[SqsEventSource, int]] = {}
        workers = sum(max(1, s.concurrency) for s in self.sources) or 1
        # An empty queue is asked again after a growing pause (up to EMPTY_POLL_MAX_S), as Lambda's
        # pollers wait on an empty queue instead of asking it every few milliseconds: polled every
        # 5 ms while a batch ran, the idle queues' ReceiveMessage calls took the emulator's time and
        # this process's from the functions running. A finished batch (it may have sent messages)
        # or a received one asks every queue again at once.
        quiet: dict[int, tuple[float, float]] = {}  # id(source) -> (not before, pause)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sqs-poller") as pool:
            while True:
                for source in self.sources:
                    while source.in_flight < source.concurrency:
                        not_before, pause = quiet.get(id(source), (0.0, 0.0))
                        if time.monotonic() < not_before:
                            break
                        messages = source.receive()
                        if not messages:
                            pause = min(EMPTY_POLL_MAX_S, max(EMPTY_POLL_MIN_S, pause * 2))
                            quiet[id(source)] = (time.monotonic() + pause, pause)
                            break
                        quiet.pop(id(source), None)
                        source.in_flight += 1
                        running[pool.submit(source.process, messages)] = (source, len(messages))
                for future in [f for f in running if f.done()]:
                    source, count = running.pop(future)
                    source.in_flight -= 1
                    future.result()
                    handled += count
                    quiet.clear()
                if running:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"queues not drained after {timeout}s")
                    time.sleep(0.005)
                    continue
                if all(source.pending() == 0 for source in self.sources):
                    if idle_grace <= 0:
                        return handled
                    time.sleep(idle_grace)
                    if all(source.pending() == 0 for source in self.sources):
                        return handled
                    continue
                if time.monotonic() > deadline:
                    raise TimeoutError(f"queues not drained after {timeout}s")
                if self.may_skip():
                    skippable = set().union(*(s.runtime_timed for s in self.sources))
                    due = next_sqs_due([s.queue_name for s in self.sources], only=skippable)
                    if due is not None and due > self.clock.time():
                        self.clock.advance(due - self.clock.time() + 0.001)
                        continue
                time.sleep(0.02)
