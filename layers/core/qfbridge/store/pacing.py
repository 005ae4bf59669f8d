"""Per-tenant pacing of API Particulier calls: the tenant's call permits, on the tenant's item.

Why not SQS alone: ``DelaySeconds`` releases a tenant's refreshes in whole seconds, and concurrent
qf_refresh invocations handle one second's release together; two releases handled a little early and
a little late meet in one sliding second of API Particulier's counter (a 429; a 12 h ban if repeated).
The dispatcher's spreading keeps the flow under the budget on average; this pacer makes it exact.

The rule mirrors the API's own limiter, a sliding window: a tenant has ``permits`` permits, and each
may start one call per ``window`` seconds, so no window of that length ever holds more than
``permits`` calls. Unlike a token bucket (which lets a full burst follow a full second), this never
exceeds the window's count. The tenant's calls are also spread over the window: each starts at
least ``window / permits`` after the one before it, whichever permits they use (1.75 req/s: one call
every 0.57 s, not two at once every 1.14 s), so the jitter of one call's arrival never meets
another call of the same instant, and the calls over any stretch of time stay within the budget.

A call *looks* (one read of the tenant's item: the tenant itself, every permit's last use and the
hold — the refresh needs the tenant anyway, so pacing costs one write more), *takes* the permit free
soonest for the instant it frees (one conditional write: the permit was not used meanwhile), at most
a second ahead, then waits for that instant. Taken before the wait, a permit is seen used by the
tenant's other refreshes waiting in other invocations, which take the next ones instead of all
waiting for the same one and all but one waiting again. The recorded instant stays within one
write of the real call: the caller gives the permit up when it reaches the call late.

State, on the tenant's item: ``refresh_pace_<i>`` (permit ``i``'s last call, epoch seconds) and
``refresh_pace_hold`` (no call before: a 429's ``Retry-After``).

Admission: what is *enqueued* is booked too. ``refresh_booked_until`` (epoch seconds) is when the
refreshes already queued for the tenant (monthly dispatch and manual ones alike) will have been
served at the tenant's release rate. A new refresh is released at that instant (its SQS delay), and
nothing is enqueued that could not be served within the horizon its sender gives (the dispatch
interval, or SQS's longest delay for a manual refresh): the queue never holds more than the budget
serves before the messages are due, so their waits for a permit stay short.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from qfbridge.store.tables import plain, table
from qfbridge.store.tenants import Tenant

PERMIT_PREFIX = "refresh_pace_"
HOLD = "refresh_pace_hold"
BOOKED_UNTIL = "refresh_booked_until"
BOOKING_ATTEMPTS = 8


def permit_attribute(index: int) -> str:
    return f"{PERMIT_PREFIX}{index}"


def _epoch(value: float) -> Decimal:
    return Decimal(f"{value:.4f}")


@dataclass(frozen=True)
class Permit:
    """A permit that is free from ``free_at`` (epoch seconds); ``seen`` (every permit's last use, as
    looked at) guards the take: no call of the tenant was placed meanwhile."""

    index: int
    last_use: Decimal | None
    free_at: float
    seen: tuple[Decimal | None, ...]


def earliest_permit(
    last_uses: list[Decimal | None], *, window: float, now: float, hold: float, rng: random.Random
) -> Permit:
    """The permit free soonest (ties broken at random): a window after its own last use, and
    ``window / permits`` after the tenant's last call."""
    latest = max((float(last) for last in last_uses if last is not None), default=None)
    spread = latest + window / len(last_uses) if latest is not None else now
    earliest = max(now, hold, spread)
    candidates = [
        Permit(
            index,
            last,
            max(earliest, float(last) + window if last is not None else earliest),
            tuple(last_uses),
        )
        for index, last in enumerate(last_uses)
    ]
    soonest = min(permit.free_at for permit in candidates)
    return rng.choice([permit for permit in candidates if permit.free_at <= soonest + 1e-3])


class TenantPacer:
    def __init__(self, table_name: str, *, rng: random.Random | None = None) -> None:
        self._table = table(table_name)
        self._rng = rng or random.Random()

    def look(
        self, siret: str, *, rule: Callable[[Tenant], tuple[int, float]], now: Callable[[], float]
    ) -> tuple[Tenant, Permit] | None:
        """The tenant and its permit free soonest under ``rule(tenant)`` = (permits, window seconds);
        None when the tenant does not exist. ``now`` is read after the item, not before."""
        item: dict[str, Any] | None = self._table.get_item(Key={"siret": siret}, ConsistentRead=True).get(
            "Item"
        )
        if item is None:
            return None
        tenant = Tenant.model_validate(plain(item))
        permits, window = rule(tenant)
        last_uses = [item.get(permit_attribute(i)) for i in range(permits)]
        permit = earliest_permit(
            last_uses, window=window, now=now(), hold=float(item.get(HOLD, 0)), rng=self._rng
        )
        return tenant, permit

    def take(self, siret: str, permit: Permit, *, at: float) -> bool:
        """Use ``permit`` at ``at``; False when a call of the tenant was placed since it was looked at."""
        names: dict[str, str] = {}
        conditions = ["attribute_exists(siret)"]
        values: dict[str, Any] = {":at": _epoch(at)}
        for index, last in enumerate(permit.seen):
            names[f"#p{index}"] = permit_attribute(index)
            if last is None:
                conditions.append(f"attribute_not_exists(#p{index})")
            else:
                conditions.append(f"#p{index} = :last{index}")
                values[f":last{index}"] = last
        try:
            self._table.update_item(
                Key={"siret": siret},
                UpdateExpression=f"SET #p{permit.index} = :at",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def hold(self, siret: str, *, until: float) -> None:
        """No call of the tenant before ``until`` (a 429's ``Retry-After`` applies to the token)."""
        try:
            self._table.update_item(
                Key={"siret": siret},
                UpdateExpression="SET #hold = :until",
                ConditionExpression="attribute_exists(siret) AND (attribute_not_exists(#hold) OR #hold < :until)",
                ExpressionAttributeNames={"#hold": HOLD},
                ExpressionAttributeValues={":until": _epoch(until)},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    # ------------------------------------------------------------------ admission
    def booked_until(self, siret: str, *, now: float) -> float:
        """When the refreshes already queued for the tenant will have been released (``now`` at least)."""
        item = self._table.get_item(
            Key={"siret": siret},
            ConsistentRead=True,
            ProjectionExpression="siret, #b",
            ExpressionAttributeNames={"#b": BOOKED_UNTIL},
        ).get("Item")
        return max(now, float(item.get(BOOKED_UNTIL, 0))) if item else now

    def book(self, siret: str, count: int, *, rate: float, now: float, horizon: float) -> list[float]:
        """Book up to ``count`` release instants at ``rate`` per second after what is already booked,
        none later than ``now + horizon``; returns their offsets from ``now`` (seconds, ascending).

        One conditional write: two senders booking at once never get the same instants.
        """
        if count <= 0 or rate <= 0:
            return []
        for _ in range(BOOKING_ATTEMPTS):
            item = self._table.get_item(
                Key={"siret": siret},
                ConsistentRead=True,
                ProjectionExpression="siret, #b",
                ExpressionAttributeNames={"#b": BOOKED_UNTIL},
            ).get("Item")
            if item is None:
                return []
            previous = item.get(BOOKED_UNTIL)
            start = max(now, float(previous)) if previous is not None else now
            capacity = math.floor((now + horizon - start) * rate + 1e-9)
            granted = max(0, min(count, capacity))
            if granted == 0:
                return []
            offsets = [start - now + i / rate for i in range(granted)]
            if previous is None:
                condition, values = "attribute_exists(siret) AND attribute_not_exists(#b)", {}
            else:
                condition, values = "#b = :previous", {":previous": previous}
            try:
                self._table.update_item(
                    Key={"siret": siret},
                    UpdateExpression="SET #b = :until",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#b": BOOKED_UNTIL},
                    ExpressionAttributeValues={":until": _epoch(start + granted / rate), **values},
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue  # another sender booked meanwhile: book after it
            return offsets
        return []

    def release(self, siret: str, count: int, *, rate: float) -> None:
        """Give back the last ``count`` booked instants (their messages could not be sent)."""
        if count <= 0 or rate <= 0:
            return
        try:
            self._table.update_item(
                Key={"siret": siret},
                UpdateExpression="SET #b = #b - :span",
                ConditionExpression="attribute_exists(#b)",
                ExpressionAttributeNames={"#b": BOOKED_UNTIL},
                ExpressionAttributeValues={":span": _epoch(count / rate)},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return
