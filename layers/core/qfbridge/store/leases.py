"""One refresh of a family at a time: a lease on the family's item while its refresh is in flight.

Two queued refreshes of the same family (a manual one and the monthly one, or SQS delivering a
message twice) may be handled at once by two invocations; API Particulier answers the second one
409 ("same request already running"). The lease (``refresh_lease``: holder and expiry, epoch seconds)
is taken with one conditional write before the call and removed after the outcome is stored; it
expires on its own when an invocation dies holding it (longer than the function's timeout).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from qfbridge.store.families import family_pk, family_sk
from qfbridge.store.tables import table

LEASE = "refresh_lease"
LeaseResult = Literal["acquired", "busy", "missing"]


class FamilyRefreshLease:
    def __init__(self, table_name: str) -> None:
        self._table = table(table_name)

    def acquire(self, siret: str, user_id: str, holder: str, *, now: float, seconds: float) -> LeaseResult:
        """Take the family's refresh lease for ``seconds``: ``busy`` when another refresh holds it,
        ``missing`` when the family no longer exists. The same holder may take it again (a redelivery)."""
        try:
            self._table.update_item(
                Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
                UpdateExpression="SET #lease = :lease",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(#lease) OR #lease.#until < :now "
                    "OR #lease.#holder = :holder)"
                ),
                ExpressionAttributeNames={"#lease": LEASE, "#until": "until", "#holder": "holder"},
                ExpressionAttributeValues={
                    ":lease": {"holder": holder, "until": Decimal(f"{now + seconds:.3f}")},
                    ":now": Decimal(f"{now:.3f}"),
                    ":holder": holder,
                },
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            item = self._table.get_item(
                Key={"pk": family_pk(siret), "sk": family_sk(user_id)}, ProjectionExpression="pk"
            ).get("Item")
            return "busy" if item else "missing"
        return "acquired"

    def release(self, siret: str, user_id: str, holder: str) -> None:
        """Give the lease back (only if this holder still has it)."""
        try:
            self._table.update_item(
                Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
                UpdateExpression="REMOVE #lease",
                ConditionExpression="#lease.#holder = :holder",
                ExpressionAttributeNames={"#lease": LEASE, "#holder": "holder"},
                ExpressionAttributeValues={":holder": holder},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return
