"""Per-notification markers: queued once, acknowledged once, and how long each has been pending.

HubEE lists every notification until it is deleted and has no cursor: without memory, each poll
would queue again every notification still pending (in progress in reconcile, or failing), and each
copy would cost HubEE calls again. A marker (an item ``N#<notification id>`` of the dossiers table,
outside every index) says:

* ``queued_until``: the notification is queued or in progress until then — the dossiers queue's
  visibility timeout plus a margin; after it, a poll that still sees it queues it again;
* ``polls``: how many polls saw it pending; beyond ``stuck_after_polls`` it is *stuck* (shown in
  the tenant's status and the ``HubeeStuckNotifications`` metric);
* ``acked`` / ``deleted``: reconcile acknowledged its event / deleted it (a second copy skips both).

Markers expire with the table's TTL (``expires_at``), 14 days after they were last written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qfbridge.clock import epoch
from qfbridge.store.tables import dynamodb, plain, table

PREFIX = "N#"
RETENTION_S = 14 * 24 * 3600
BATCH_GET = 100
BATCH_WRITE = 25


@dataclass(frozen=True)
class Marker:
    notification_id: str
    queued_until: float = 0.0
    polls: int = 0
    first_seen: float = 0.0
    case_id: str | None = None
    acked: bool = False
    deleted: bool = False
    left_by: str | None = None
    """The credential (its holder) whose reconcile left the notification to its tenant's own
    credential: for that credential it stays in flight, another credential's poll queues it at once."""

    def in_flight(self, now: float) -> bool:
        return self.queued_until > now

    def held_for(self, holder: str, now: float) -> bool:
        """In flight for ``holder``'s poll: not when another credential's reconcile left it to this one."""
        return self.in_flight(now) and (self.left_by is None or self.left_by == holder)


class MarkerRepository:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = table(table_name)

    def get(self, notification_id: str) -> Marker | None:
        item = self._table.get_item(Key={"case_id": PREFIX + notification_id}, ConsistentRead=True).get(
            "Item"
        )
        return _marker(item) if item else None

    def get_many(self, notification_ids: Iterable[str]) -> dict[str, Marker]:
        ids = list(dict.fromkeys(notification_ids))
        found: dict[str, Marker] = {}
        for start in range(0, len(ids), BATCH_GET):
            keys: list[dict[str, Any]] = [{"case_id": PREFIX + nid} for nid in ids[start : start + BATCH_GET]]
            for _ in range(8):
                if not keys:
                    break
                response = dynamodb().batch_get_item(
                    RequestItems={self.table_name: {"Keys": keys, "ConsistentRead": True}}
                )
                for item in response.get("Responses", {}).get(self.table_name, []):
                    marker = _marker(item)
                    found[marker.notification_id] = marker
                keys = response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
                if keys:
                    time.sleep(0.05)
        return found

    def put_many(self, markers: Iterable[Marker]) -> None:
        """Write markers as given (the poll computed each one from the marker it read)."""
        now = epoch()
        with self._table.batch_writer(overwrite_by_pkeys=["case_id"]) as batch:
            for marker in markers:
                item: dict[str, Any] = {
                    "case_id": PREFIX + marker.notification_id,
                    "queued_until": int(marker.queued_until),
                    "polls": marker.polls,
                    "first_seen": int(marker.first_seen),
                    "expires_at": int(now + RETENTION_S),
                    "acked": marker.acked,
                    "deleted": marker.deleted,
                }
                if marker.case_id:
                    item["marker_case_id"] = marker.case_id
                if marker.left_by:
                    item["left_by"] = marker.left_by
                batch.put_item(Item=item)

    def leave(self, notification_id: str, holder: str) -> None:
        """``holder``'s reconcile left the notification to its tenant's own credential: that
        credential's next poll queues it, while ``holder``'s keeps it in flight (counted, not re-queued)."""
        try:
            self._table.update_item(
                Key={"case_id": PREFIX + notification_id},
                UpdateExpression="SET left_by = :h",
                ConditionExpression="attribute_exists(case_id)",
                ExpressionAttributeValues={":h": holder},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return  # no marker: nothing holds it

    def release(self, notification_id: str) -> None:
        """No longer in flight (its message leaves the queue for the DLQ): the next poll queues it again."""
        try:
            self._table.update_item(
                Key={"case_id": PREFIX + notification_id},
                UpdateExpression="SET queued_until = :zero",
                ConditionExpression="attribute_exists(case_id)",
                ExpressionAttributeValues={":zero": 0},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    def flag(self, notification_id: str, name: str) -> None:
        """Record ``acked`` or ``deleted`` (reconcile), creating the marker if a copy arrived without one."""
        if name not in ("acked", "deleted"):
            raise ValueError(name)
        self._table.update_item(
            Key={"case_id": PREFIX + notification_id},
            UpdateExpression="SET #f = :t, expires_at = :e",
            ExpressionAttributeNames={"#f": name},
            ExpressionAttributeValues={":t": True, ":e": int(epoch() + RETENTION_S)},
        )


def _marker(item: dict[str, Any]) -> Marker:
    data = plain(item)
    return Marker(
        notification_id=str(data["case_id"])[len(PREFIX) :],
        queued_until=float(data.get("queued_until", 0)),
        polls=int(data.get("polls", 0)),
        first_seen=float(data.get("first_seen", 0)),
        case_id=data.get("marker_case_id"),
        acked=bool(data.get("acked", False)),
        deleted=bool(data.get("deleted", False)),
        left_by=data.get("left_by"),
    )
