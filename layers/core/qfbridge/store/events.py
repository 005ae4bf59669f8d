"""The EventBridge bus: the events the editor's software subscribes to.

Every event is ``source = "qfbridge"``, ``detail-type`` = the event name (``dossier.linked`` …),
and a detail documented by a JSON Schema in ``docs/events/``. Events carry ids and QF values,
never identities (data minimisation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

SOURCE = "qfbridge"

EVENT_TYPES = (
    "dossier.linked",
    "dossier.needs_review",
    "dossier.rejected",
    "qf.updated",
    "refresh.failed",
    "tenant.token_expiring",
    "tenant.token_expired",
    "tenant.hubee_auth_failed",
)


@cache
def _client() -> Any:
    import boto3

    return boto3.client("events")


@dataclass
class EventPublisher:
    bus_name: str
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.publish_many([(detail_type, detail)])

    def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for detail_type, _ in events:
            if detail_type not in EVENT_TYPES:
                raise ValueError(f"unknown event type {detail_type}")
        for start in range(0, len(events), 10):
            chunk = events[start : start + 10]
            response = _client().put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(detail, separators=(",", ":"), default=str),
                        "EventBusName": self.bus_name,
                    }
                    for detail_type, detail in chunk
                ]
            )
            if response.get("FailedEntryCount"):
                raise RuntimeError(f"EventBridge refused {response['FailedEntryCount']} event(s)")
            self.published.extend(chunk)
