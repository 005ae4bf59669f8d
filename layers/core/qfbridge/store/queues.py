"""The SQS queues: ``dossiers`` (read by reconcile) and ``refresh`` (read by qf_refresh).

The services send models of ``qfbridge.messages`` through the ``DossierQueue`` and ``RefreshQueue``
protocols (``qfbridge.services.ports``); these SQS implementations serialise them and speak to SQS.
Nothing else in the services knows a queue's URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qfbridge.messages import DossierMessage, RefreshMessage

SEND_BATCH = 10
"""SendMessageBatch's maximum entries per call."""
MAX_DELAY_SECONDS = 900
"""SQS's longest ``DelaySeconds``."""


@cache
def _client() -> Any:
    from qfbridge.store import aws

    return aws.client("sqs")


def _send(client: Any, url: str, body: str, delay_seconds: int) -> None:
    (client or _client()).send_message(QueueUrl=url, MessageBody=body, DelaySeconds=_delay(delay_seconds))


def _send_batch(client: Any, url: str, bodies: Sequence[tuple[str, int]]) -> set[int]:
    if len(bodies) > SEND_BATCH:
        raise ValueError(f"at most {SEND_BATCH} messages per batch")
    if not bodies:
        return set()
    response = (client or _client()).send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "MessageBody": body, "DelaySeconds": _delay(delay)}
            for i, (body, delay) in enumerate(bodies)
        ],
    )
    return {int(failed["Id"]) for failed in response.get("Failed", [])}


def _delay(seconds: int) -> int:
    return max(0, min(MAX_DELAY_SECONDS, int(seconds)))


@dataclass(frozen=True)
class SqsDossierQueue:
    url: str
    client: Any = None
    """An SQS client of its own (the operator's profile and region); the process's shared one otherwise."""

    def send(self, message: DossierMessage, *, delay_seconds: int = 0) -> None:
        _send(self.client, self.url, message.body(), delay_seconds)

    def send_batch(self, entries: Sequence[tuple[DossierMessage, int]]) -> set[int]:
        return _send_batch(self.client, self.url, [(message.body(), delay) for message, delay in entries])


@dataclass(frozen=True)
class SqsRefreshQueue:
    url: str
    dead_letter_url: str | None = None
    """Only qf_refresh sends to the dead-letter queue."""
    client: Any = None

    def send(self, message: RefreshMessage, *, delay_seconds: int = 0) -> None:
        _send(self.client, self.url, message.body(), delay_seconds)

    def send_batch(self, entries: Sequence[tuple[RefreshMessage, int]]) -> set[int]:
        return _send_batch(self.client, self.url, [(message.body(), delay) for message, delay in entries])

    def delay(self, receipt: str, seconds: int) -> None:
        (self.client or _client()).change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    def dead_letter(self, message: RefreshMessage) -> None:
        if self.dead_letter_url is None:
            raise RuntimeError("this refresh queue has no dead-letter queue configured")
        _send(self.client, self.dead_letter_url, message.body(), 0)
