"""The families table: the editor's directory, the pivot identity, the current QF and its history.

Item layout (one partition per tenant, ``pk = T#<siret>``):

* ``sk = F#<user_id>`` — the family: ``family`` (directory identity), ``pivot_identity``, ``qf``,
  ``qf_history`` (+ ``qf_history_keys``, the idempotency keys of the entries), ``members``,
  ``refresh`` (status of the monthly refresh), ``refresh_tenant``/``next_refresh_at`` (the sparse
  ``by_refresh_due`` index), ``case_ids`` and ``link_ids`` (what an erasure must reach).
* ``sk = B#<key>#<user_id>`` — a blocking entry per blocking key of the family
  (``qfbridge.reconcile.blocking_keys_for_family``: each distinct birth date of its parents and
  children, and each parent's name key ``name:<surname>:<first prénom>``), carrying a copy of the
  directory identity: identity matching reads one Query per birth date of the dossier's household
  (and, for the review list only, a bounded Query per name key of the usager), never the whole
  directory. The family item lists its keys in ``blocking_dates``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qfbridge.domain.identity import Family, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.tables import dynamodb, key_condition, plain, table, to_dynamo

HISTORY_LIMIT = 60  # five years of monthly refreshes


def family_pk(siret: str) -> str:
    return f"T#{siret}"


def family_sk(user_id: str) -> str:
    return f"F#{user_id}"


def blocking_sk(birthdate: str, user_id: str) -> str:
    return f"B#{birthdate}#{user_id}"


def blocking_dates(family: Family) -> set[str]:
    """The family's blocking keys: its members' birth dates and its parents' name keys."""
    # Imported here: the matcher (its models, rapidfuzz) is for the functions that write the
    # directory or match; hubee_poll and qf_refresh read families and never load it.
    from qfbridge.reconcile.matching import blocking_keys_for_family

    return blocking_keys_for_family(family)


class QfEntry(BaseModel):
    """One QF value received for a family, from a dossier or a refresh."""

    model_config = ConfigDict(extra="ignore")

    quotient_familial: QuotientFamilial
    source: str  # "dossier" | "refresh" | "review"
    source_id: str  # case id or refresh period
    received_at: str


class RefreshState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = (
        "pending"  # pending | ok | not_found | identity_rejected | token_expired | forbidden | failed
    )
    last_attempt_at: str | None = None
    last_outcome: str | None = None
    not_found_count: int = 0


class FamilyRecord(BaseModel):
    """Everything qfbridge holds about one family."""

    model_config = ConfigDict(extra="ignore")

    siret: str
    user_id: str
    family: Family | None = None
    pivot_identity: PivotIdentity | None = None
    qf: QfEntry | None = None
    qf_history: list[QfEntry] = Field(default_factory=list)
    members: dict[str, Any] | None = None
    refresh: RefreshState = Field(default_factory=RefreshState)
    next_refresh_at: str | None = None
    case_ids: list[str] = Field(default_factory=list)
    link_ids: list[str] = Field(default_factory=list)


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    """Values for a transaction item sent through the resource's client, which serialises them itself."""
    return {key: to_dynamo(value) for key, value in item.items()}


class FamilyRepository:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = table(table_name)

    # ------------------------------------------------------------------ directory
    def get(self, siret: str, user_id: str) -> FamilyRecord | None:
        item = self._table.get_item(Key={"pk": family_pk(siret), "sk": family_sk(user_id)}).get("Item")
        return _record(siret, item) if item else None

    def upsert(self, siret: str, family: Family) -> bool:
        """Create or replace a family's directory identity; returns True when it was created."""
        return self.upsert_many(siret, [family])[0]

    def upsert_many(self, siret: str, families: list[Family]) -> list[bool]:
        """Bulk upsert: one BatchGet per 100 families, then batched writes of families and blocking entries."""
        existing: dict[str, dict[str, Any]] = {}
        client = dynamodb().meta.client
        user_ids = list(dict.fromkeys(f.user_id for f in families))
        for start in range(0, len(user_ids), 100):
            keys = [{"pk": family_pk(siret), "sk": family_sk(uid)} for uid in user_ids[start : start + 100]]
            request: dict[str, Any] = {self.table_name: {"Keys": keys}}
            while request:
                response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    existing[str(item["sk"])[2:]] = item
                request = response.get("UnprocessedKeys") or {}
        created: list[bool] = []
        with self._table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for family in families:
                old = existing.get(family.user_id)
                created.append(old is None)
                item = dict(old or {"pk": family_pk(siret), "sk": family_sk(family.user_id)})
                directory = family.model_dump(mode="json")
                item["family"] = directory
                new_dates = blocking_dates(family)
                old_dates = set(plain(old.get("blocking_dates", []))) if old else set()
                item["blocking_dates"] = sorted(new_dates)
                item["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
                batch.put_item(Item=to_dynamo(item))
                for date in new_dates:
                    batch.put_item(
                        Item=to_dynamo(
                            {
                                "pk": family_pk(siret),
                                "sk": blocking_sk(date, family.user_id),
                                "user_id": family.user_id,
                                "family": directory,
                            }
                        )
                    )
                for date in old_dates - new_dates:
                    batch.delete_item(Key={"pk": family_pk(siret), "sk": blocking_sk(date, family.user_id)})
        return created

    def ensure_exists(self, siret: str, user_id: str) -> None:
        """A family item for an account the directory has not sent yet (a link issued to it was used)."""
        try:
            self._table.put_item(
                Item={
                    "pk": family_pk(siret),
                    "sk": family_sk(user_id),
                    "updated_at": dt.datetime.now(dt.UTC).isoformat(),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    def candidates(self, siret: str, birthdate: dt.date) -> list[Family]:
        """The directory families with a parent born on ``birthdate``: one Query on the blocking entries."""
        return self.candidates_on(siret, [birthdate.isoformat()])

    def candidates_on(self, siret: str, keys: Iterable[str], *, limit: int | None = None) -> list[Family]:
        """The directory families under any of ``keys`` (birth dates or name keys), each family once:
        one Query per key. With ``limit``, at most that many entries per key, in one request (the
        bounded name-key read); without, every entry (one request unless a 1 MB page is full)."""
        found: dict[str, Family] = {}
        for key in sorted(set(keys)):  # each key read once, in a stable order
            kwargs: dict[str, Any] = {
                "KeyConditionExpression": key_condition("pk").eq(family_pk(siret))
                & key_condition("sk").begins_with(f"B#{key}#"),
            }
            if limit is not None:
                kwargs["Limit"] = limit
            while True:
                response = self._table.query(**kwargs)
                for item in response.get("Items", []):
                    family = Family.model_validate(plain(item["family"]))
                    found.setdefault(family.user_id, family)
                if limit is not None or "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return list(found.values())

    # ------------------------------------------------------------------ QF
    def link_update(
        self,
        siret: str,
        user_id: str,
        *,
        pivot: PivotIdentity,
        entry: QfEntry,
        members: dict[str, Any],
        case_id: str,
        next_refresh_at: str,
    ) -> dict[str, Any]:
        """The family half of the linking transaction (see ``DossierRepository.persist_link``)."""
        history_key = f"{entry.source}:{entry.source_id}"
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": serialize({"pk": family_pk(siret), "sk": family_sk(user_id)}),
                "UpdateExpression": (
                    "SET pivot_identity = :pivot, qf = :qf, members = :members, "
                    "qf_history = list_append(if_not_exists(qf_history, :empty), :entry), "
                    "case_ids = list_append(if_not_exists(case_ids, :empty), :case), "
                    "refresh_tenant = :siret, next_refresh_at = :next, #refresh = :refresh "
                    "ADD qf_history_keys :key"
                ),
                "ConditionExpression": "attribute_not_exists(qf_history_keys) OR NOT contains(qf_history_keys, :k)",
                "ExpressionAttributeNames": {"#refresh": "refresh"},
                "ExpressionAttributeValues": serialize(
                    {
                        ":pivot": pivot.model_dump(mode="json"),
                        ":qf": entry.model_dump(mode="json"),
                        ":members": members,
                        ":empty": [],
                        ":entry": [entry.model_dump(mode="json")],
                        ":case": [case_id],
                        ":siret": siret,
                        ":next": next_refresh_at,
                        ":refresh": RefreshState().model_dump(mode="json"),
                        ":k": history_key,
                        ":key": {history_key},
                    }
                ),
            }
        }

    def record_refresh(
        self,
        siret: str,
        user_id: str,
        *,
        entry: QfEntry | None,
        state: RefreshState,
        next_refresh_at: str | None,
    ) -> bool:
        """Store a refresh's result; the QF entry is appended once per period (idempotent).

        ``next_refresh_at=None`` takes the family out of the due index (refreshes stopped).
        Returns False when the family no longer exists (erased meanwhile).
        """
        key = {"pk": family_pk(siret), "sk": family_sk(user_id)}
        sets = ["#refresh = :refresh"]
        values: dict[str, Any] = {":refresh": state.model_dump(mode="json")}
        removes: list[str] = []
        if next_refresh_at is None:
            removes += ["refresh_tenant", "next_refresh_at"]
        else:
            sets += ["next_refresh_at = :next", "refresh_tenant = :siret"]
            values |= {":next": next_refresh_at, ":siret": siret}
        names = {"#refresh": "refresh"}
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            if entry is not None:
                history_key = f"{entry.source}:{entry.source_id}"
                self._table.update_item(
                    Key=key,
                    UpdateExpression=expression.replace(
                        "SET ",
                        "SET qf = :qf, qf_history = list_append(if_not_exists(qf_history, :empty), :entry), ",
                        1,
                    )
                    + " ADD qf_history_keys :key",
                    ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(qf_history_keys) "
                    "OR NOT contains(qf_history_keys, :k))",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=to_dynamo(
                        values
                        | {
                            ":qf": entry.model_dump(mode="json"),
                            ":empty": [],
                            ":entry": [entry.model_dump(mode="json")],
                            ":key": {history_key},
                            ":k": history_key,
                        }
                    ),
                )
                return True
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            # Either erased, or this period's entry is already there (a redelivered message).
            if self.get(siret, user_id) is None:
                return False
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_dynamo(values),
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def due(self, siret: str, until: str, limit: int) -> list[str]:
        """User ids of the tenant's families due for a refresh at ``until`` (oldest first)."""
        response = self._table.query(
            IndexName="by_refresh_due",
            KeyConditionExpression=key_condition("refresh_tenant").eq(siret)
            & key_condition("next_refresh_at").lte(until),
            Limit=limit,
        )
        return [str(item["sk"])[2:] for item in response.get("Items", [])]

    def defer(self, siret: str, user_id: str, next_refresh_at: str) -> None:
        """Move a family's due date (it was just enqueued) so the next dispatch does not enqueue it again."""
        try:
            self._table.update_item(
                Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
                UpdateExpression="SET next_refresh_at = :next",
                ConditionExpression="attribute_exists(refresh_tenant)",
                ExpressionAttributeValues={":next": next_refresh_at},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    def add_link(self, siret: str, user_id: str, link_id: str) -> None:
        self._table.update_item(
            Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
            UpdateExpression="SET link_ids = list_append(if_not_exists(link_ids, :empty), :link)",
            ExpressionAttributeValues={":empty": [], ":link": [link_id]},
        )

    # ------------------------------------------------------------------ erasure
    def erase(self, siret: str, user_id: str) -> FamilyRecord | None:
        """Delete the family and its blocking entries; returns what was deleted (to reach links, dossiers)."""
        item = self._table.get_item(Key={"pk": family_pk(siret), "sk": family_sk(user_id)}).get("Item")
        if not item:
            return None
        record = _record(siret, item)
        with self._table.batch_writer() as batch:
            for date in plain(item.get("blocking_dates", [])):
                batch.delete_item(Key={"pk": family_pk(siret), "sk": blocking_sk(date, user_id)})
            batch.delete_item(Key={"pk": family_pk(siret), "sk": family_sk(user_id)})
        return record


def _record(siret: str, item: dict[str, Any]) -> FamilyRecord:
    data = plain(item)
    return FamilyRecord.model_validate({**data, "siret": siret, "user_id": str(data["sk"])[2:]})


def sort_history(entries: Iterable[QfEntry]) -> list[QfEntry]:
    return sorted(entries, key=lambda e: (e.quotient_familial.annee, e.quotient_familial.mois, e.received_at))
