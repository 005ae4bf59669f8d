"""The EventBridge bus: the events the editor's software subscribes to.

Every event is ``source = "qfbridge"``, ``detail-type`` = the event name (``dossier.linked`` …),
and a detail modelled in ``qfbridge.messages`` (one model per detail-type, from which the JSON
Schemas of ``docs/events/`` are generated). Events carry ids and QF values, never identities (data
minimisation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from qfbridge.messages import EVENT_TYPES, SOURCE, BusEvent

__all__ = ["EVENT_TYPES", "SOURCE", "EventPublisher"]

PUT_EVENTS_BATCH = 10  # PutEvents' maximum entries per call


@cache
def _client() -> Any:
    from qfbridge.store import aws

    return aws.client("events")


@dataclass
class EventPublisher:
    """The bus, through PutEvents."""

    bus_name: str

    def publish(self, event: BusEvent) -> None:
        self.publish_many([event])

    def publish_many(self, events: Sequence[BusEvent]) -> None:
        for start in range(0, len(events), PUT_EVENTS_BATCH):
            chunk = events[start : start + PUT_EVENTS_BATCH]
            response = _client().put_events(
                Entries=[
                    {
                        "Source": SOURCE,
                        "DetailType": event.detail_type,
                        "Detail": json.dumps(event.detail(), separators=(",", ":")),
                        "EventBusName": self.bus_name,
                    }
                    for event in chunk
                ]
            )
            if response.get("FailedEntryCount"):
                raise RuntimeError(f"EventBridge refused {response['FailedEntryCount']} event(s)")
