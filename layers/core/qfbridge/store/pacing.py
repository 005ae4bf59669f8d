"""Per-tenant pacing of API Particulier calls: one shared "next free slot" on the tenant's item.

Why not SQS alone: ``DelaySeconds`` spreads a tenant's refreshes in whole seconds only, and the
concurrent qf_refresh invocations receive one second's messages together, so two seconds' worth can
meet in the same sliding second of API Particulier's counter (a 429, and a 12 h ban if repeated).
The dispatcher's spreading keeps the flow near the budget; this pacer makes it exact: every call
reserves the tenant's next slot (GCRA: a "theoretical arrival time" advanced by one spacing per call)
and waits for it, whichever invocation, container or retry it comes from.

The slot lives on the tenant's item (``refresh_pace_at``, epoch seconds) and is reserved by one
conditional ``UpdateItem`` without a prior read; no lock, no clean-up (a stale value is in the past).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from qfbridge.store.tables import table

PACE_ATTRIBUTE = "refresh_pace_at"
RESERVE_ATTEMPTS = 8


@dataclass(frozen=True)
class Slot:
    """A reservation: call after ``wait_seconds``; or, when not ``granted``, retry after it."""

    granted: bool
    wait_seconds: float


def _epoch(value: float) -> Decimal:
    return Decimal(f"{value:.4f}")


class TenantPacer:
    def __init__(self, table_name: str) -> None:
        self._table = table(table_name)

    def reserve(self, siret: str, *, spacing: float, now: float, max_wait: float) -> Slot:
        """Reserve the tenant's next call slot ``spacing`` seconds after the previous one.

        A slot further than ``max_wait`` seconds away is not reserved: the caller should come back
        later (``Slot(False, wait)``) rather than hold a Lambda for long.
        """
        errors = self._table.meta.client.exceptions
        for _ in range(RESERVE_ATTEMPTS):
            try:  # the tenant is idle: the slot is now, the next one a spacing later
                self._table.update_item(
                    Key={"siret": siret},
                    UpdateExpression="SET #pace = :next",
                    ConditionExpression="attribute_exists(siret) AND (attribute_not_exists(#pace) OR #pace <= :now)",
                    ExpressionAttributeNames={"#pace": PACE_ATTRIBUTE},
                    ExpressionAttributeValues={":next": _epoch(now + spacing), ":now": _epoch(now)},
                )
                return Slot(True, 0.0)
            except errors.ConditionalCheckFailedException:
                pass
            try:  # calls are queued: take the slot after the last one reserved
                response = self._table.update_item(
                    Key={"siret": siret},
                    UpdateExpression="SET #pace = #pace + :spacing",
                    ConditionExpression="#pace > :now AND #pace <= :latest",
                    ExpressionAttributeNames={"#pace": PACE_ATTRIBUTE},
                    ExpressionAttributeValues={
                        ":spacing": _epoch(spacing), ":now": _epoch(now), ":latest": _epoch(now + max_wait),
                    },
                    ReturnValues="UPDATED_NEW",
                )
                slot_at = float(response["Attributes"][PACE_ATTRIBUTE]) - spacing
                return Slot(True, max(0.0, slot_at - now))
            except errors.ConditionalCheckFailedException:
                pass
            pace = self._pace(siret)
            if pace is None:  # the tenant was deleted meanwhile: nothing to pace
                return Slot(True, 0.0)
            if pace > now + max_wait:
                return Slot(False, pace - now)
            # else the slot moved between our two updates (another call took it): try again
        return Slot(False, spacing)

    def hold(self, siret: str, *, until: float) -> None:
        """No call of the tenant before ``until`` (a 429's ``Retry-After`` applies to the token)."""
        try:
            self._table.update_item(
                Key={"siret": siret},
                UpdateExpression="SET #pace = :until",
                ConditionExpression="attribute_exists(siret) AND (attribute_not_exists(#pace) OR #pace < :until)",
                ExpressionAttributeNames={"#pace": PACE_ATTRIBUTE},
                ExpressionAttributeValues={":until": _epoch(until)},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    def _pace(self, siret: str) -> float | None:
        item: dict[str, Any] | None = self._table.get_item(
            Key={"siret": siret}, ProjectionExpression="#pace, siret",
            ExpressionAttributeNames={"#pace": PACE_ATTRIBUTE}, ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        value = item.get(PACE_ATTRIBUTE)
        return float(value) if value is not None else 0.0
