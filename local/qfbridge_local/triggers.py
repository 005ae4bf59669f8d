"""Emulation of Lambda's triggers: SQS event source mappings and EventBridge Scheduler schedules.

The SQS emulation behaves as Lambda's poller does:
* it receives up to ``BatchSize`` messages and builds the real SQS event shape;
* with ``ReportBatchItemFailures`` only the records named in ``batchItemFailures`` stay on the queue;
  a raised exception (or a malformed response) fails the whole batch;
* failed messages become visible again and SQS itself (moto) moves them to the DLQ once their
  receive count passes ``maxReceiveCount``;
* ``MaximumConcurrency`` bounds the concurrent invocations of a mapping.

One liberty is taken for speed: a failed record becomes visible again after ``retry_delay_seconds``
(default 0) instead of the queue's full visibility timeout, unless the handler itself pushed its
visibility further (as qf_refresh does to honour ``Retry-After``) — the handler's delay wins.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .aws import client
from .lambdas import LocalFunction
from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, SqsMapping, Stack


@dataclass
class MappingStats:
    batches: int = 0
    records: int = 0
    failed_records: int = 0
    crashed_batches: int = 0
    deleted: int = 0


@dataclass
class SqsEventSource:
    """One SQS → Lambda mapping of the template."""

    mapping: SqsMapping
    function: LocalFunction
    queue_url: str
    queue_arn: str
    endpoint: str
    retry_delay_seconds: int = 0
    stats: MappingStats = field(default_factory=MappingStats)

    def __post_init__(self) -> None:
        self._sqs = client("sqs", self.endpoint)
        self._lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        return self.mapping.maximum_concurrency or 2

    def _event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        records = []
        for message in messages:
            attributes = dict(message.get("Attributes", {}))
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {
                        "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                        "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                        "SenderId": attributes.get("SenderId", LOCAL_ACCOUNT_ID),
                        "ApproximateFirstReceiveTimestamp": attributes.get(
                            "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
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

    def receive(self) -> list[dict[str, Any]]:
        from moto.core.utils import unix_time_millis

        received_at = unix_time_millis()
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.mapping.batch_size),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        messages = list(response.get("Messages", []))
        for message in messages:
            message["_received_at_ms"] = received_at
        return messages

    def process(self, messages: list[dict[str, Any]]) -> int:
        """Invoke the function with one batch; return the number of failed records."""
        event = self._event(messages)
        by_id = {m["MessageId"]: m for m in messages}
        failed_ids: set[str]
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
        except Exception:
            failed_ids = set(by_id)
            with self._lock:
                self.stats.crashed_batches += 1
        succeeded = [m for mid, m in by_id.items() if mid not in failed_ids]
        for start in range(0, len(succeeded), 10):
            chunk = succeeded[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        for mid in failed_ids:
            self._retime_failed(by_id[mid]["ReceiptHandle"], by_id[mid]["_received_at_ms"])
        with self._lock:
            self.stats.batches += 1
            self.stats.records += len(messages)
            self.stats.failed_records += len(failed_ids)
            self.stats.deleted += len(succeeded)
        return len(failed_ids)

    def _retime_failed(self, receipt_handle: str, received_at_ms: float) -> None:
        """Make a failed record visible again soon, unless the handler re-timed it on purpose.

        A record the handler left alone is due back at ``received_at + VisibilityTimeout``; one whose
        visibility the handler changed (``ChangeMessageVisibility``) is due at another time: keep it.
        """
        from moto.core.utils import unix_time_millis
        from moto.sqs.models import sqs_backends

        queue_name = self.queue_url.rsplit("/", 1)[1]
        queue = sqs_backends[LOCAL_ACCOUNT_ID][LOCAL_REGION].queues.get(queue_name)
        if queue is None:
            return
        untouched_due = received_at_ms + int(queue.visibility_timeout) * 1000  # type: ignore[attr-defined]
        for message in list(queue._messages):
            if message.had_receipt_handle(receipt_handle):
                if abs(message.visible_at - untouched_due) < 2000:
                    message.visible_at = unix_time_millis() + self.retry_delay_seconds * 1000
                return

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


class TriggerEmulator:
    """All the SQS mappings and schedules of a stack."""

    def __init__(
        self,
        stack: Stack,
        functions: dict[str, LocalFunction],
        endpoint: str,
        queue_urls: dict[str, str],
        *,
        retry_delay_seconds: int = 0,
    ) -> None:
        self.stack = stack
        self.functions = functions
        self.sources: list[SqsEventSource] = []
        self.schedule_fires: Counter[str] = Counter()
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
                        retry_delay_seconds=retry_delay_seconds,
                    )
                )

    def source_for(self, queue_logical_id: str) -> SqsEventSource:
        for source in self.sources:
            if source.mapping.queue_logical_id == queue_logical_id:
                return source
        raise KeyError(queue_logical_id)

    def fire_schedule(self, function_logical_id: str, name: str | None = None) -> Any:
        """Invoke a function as EventBridge Scheduler does: with the schedule's Input as the event."""
        fn = self.functions[function_logical_id]
        schedules = [s for s in fn.spec.schedules if name is None or s.name == name]
        if not schedules:
            raise KeyError(f"{function_logical_id} has no schedule {name or ''}")
        self.schedule_fires[f"{function_logical_id}.{schedules[0].name}"] += 1
        return fn.invoke(dict(schedules[0].input))

    def drain(self, *, timeout: float = 60.0, idle_grace: float = 0.0) -> int:
        """Run the SQS mappings until every queue is empty (delayed and in-flight included)."""
        deadline = time.monotonic() + timeout
        handled = 0
        while time.monotonic() < deadline:
            progressed = sum(source.poll_once() for source in self.sources)
            handled += progressed
            if progressed:
                continue
            if all(source.pending() == 0 for source in self.sources):
                if idle_grace <= 0:
                    return handled
                time.sleep(idle_grace)
                if all(source.pending() == 0 for source in self.sources):
                    return handled
            else:
                time.sleep(0.05)
        raise TimeoutError(f"queues not drained after {timeout}s")
