"""One refresh of a family at a time: a lease on the family's item while its refresh is in flight.

Two queued refreshes of the same family (a manual one and the monthly one, or SQS delivering a
message twice) may be handled at once by two invocations; API Particulier answers the second one
409 ("same request already running"). The lease (``refresh_lease``: holder and expiry, epoch seconds)
is taken with one conditional write before the call, which also returns the family the refresh
needs, and removed by the write that stores the outcome; it expires on its own when an invocation
dies holding it (longer than the function's timeout).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from qfbridge.store.families import REFRESH_LEASE, FamilyRecord, family_pk, family_record, family_sk
from qfbridge.store.tables import table

LEASE = REFRESH_LEASE
LeaseResult = Literal["acquired", "busy", "missing"]


class FamilyRefreshLease:
    def __init__(self, table_name: str) -> None:
        self._table = table(table_name)

    def acquire(self, siret: str, user_id: str, holder: str, *, now: float, seconds: float) -> LeaseResult:
        """Take the family's refresh lease for ``seconds``: ``busy`` when another refresh holds it,
        ``missing`` when the family no longer exists. The same holder may take it again (a redelivery)."""
        taken = self._take(siret, user_id, holder, now=now, seconds=seconds, returns="NONE")
        return taken if isinstance(taken, str) else "acquired"

    def acquire_family(
        self, siret: str, user_id: str, holder: str, *, now: float, seconds: float
    ) -> FamilyRecord | Literal["busy", "missing"]:
        """``acquire``, returning the family as the lease's write leaves it: the refresh reads the
        family from its lease rather than with a read of its own."""
        taken = self._take(siret, user_id, holder, now=now, seconds=seconds, returns="ALL_NEW")
        return taken if isinstance(taken, str) else family_record(siret, taken)

    def _take(
        self, siret: str, user_id: str, holder: str, *, now: float, seconds: float, returns: str
    ) -> dict[str, Any] | Literal["busy", "missing"]:
        try:
            response = self._table.update_item(
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
                ReturnValues=returns,
                # Which of the two the condition failed on, without a read: the item, if any.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException as failed:
            return "busy" if failed.response.get("Item") else "missing"
        return dict(response.get("Attributes") or {})

    def release(self, siret: str, user_id: str, holder: str) -> None:
        """Give the lease back (only if this holder still has it). A refresh that stores its outcome
        gives it back with that write instead (``FamilyRepository.record_refresh``, ``lease_holder``)."""
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
