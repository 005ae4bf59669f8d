"""The dossiers table: one record per HubEE case, with its outcome and the journal of steps done.

The journal (``steps``: ``Step`` → time) is what makes reconcile resumable: a retried message
skips every step already recorded, so a status is never posted twice and nothing is persisted twice.
Every write takes a ``DossierPatch`` (a typed model refusing unknown attributes: a misspelt
attribute fails instead of being stored) and records one or more steps at once, so reconcile
journals several steps in the writes it makes anyway (docs/performance.md, DynamoDB per dossier).
Records expire 90 days after reception (TTL ``expires_at``): the support window the form promises the usager.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qfbridge.domain.errors import NotFoundError, QfbridgeError
from qfbridge.store.families import serialize
from qfbridge.store.tables import (
    decode_cursor,
    dynamodb,
    encode_cursor,
    key_condition,
    plain,
    table,
    to_dynamo,
)

RETENTION_DAYS = 90

Outcome = Literal["received", "linked", "needs_review", "rejected", "awaiting_onboarding"]
FINAL_OUTCOMES = ("linked", "rejected")
OUTCOMES: tuple[str, ...] = ("received", "linked", "needs_review", "rejected", "awaiting_onboarding")
LinkMethod = Literal["external_id", "identity", "review"]
ExternalIdStatus = Literal["absent", "valid", "forged", "foreign", "expired", "unknown"]
RejectionReason = Literal[
    # the case is not one of our tenants' FormulaireQF
    "foreign_recipient",
    "foreign_process_code",
    "bad_reference",
    # the dossier cannot be used (the codes of ``DossierError`` and its subclasses)
    "dossier_unusable",
    "attachment_unavailable",
    "digest_mismatch",
    "digest_unreadable",
    "size_mismatch",
    "malformed_json",
    "malformed_xml",
    "not_an_object",
    "invalid_field",
    "missing_identity",
    "missing_quotient_familial",
    "too_deep",
    "too_large",
    "hubee_attachment_too_large",
    # failing again and again for no dossier reason
    "unprocessable",
]
"""Why the pipeline rejected a dossier. An agent's rejection carries the agent's own words instead."""
REJECTION_REASONS: frozenset[str] = frozenset(RejectionReason.__args__)  # type: ignore[attr-defined]


def rejection_reason(code: str) -> RejectionReason:
    """The reason recorded for a ``DossierError`` code: its own when listed, else ``dossier_unusable``."""
    return code if code in REJECTION_REASONS else "dossier_unusable"  # type: ignore[return-value]


class Step(StrEnum):
    """The journal's steps (``DossierRecord.steps``)."""

    VERIFIED = "verified"
    """The case was read and is one of ours (or why not)."""
    PARSED = "parsed"
    """The attachment was downloaded and parsed (its snapshot is ``parsed``)."""
    PERSISTED = "persisted"
    """The outcome is stored (with the family's QF, in one transaction, when linked)."""
    REJECTED = "rejected"
    """The dossier is recorded rejected with its reason."""
    AWAITING_ONBOARDING = "awaiting_onboarding"
    """Kept, unread, for a collectivité not served yet."""
    AUDIT_STARTED = "audit_started"
    """An automatic link's audit record is about to be written (a retry looks it up first)."""
    AUDITED = "audited"
    SI_RECEIVED = "si_received"
    FINAL_STATUS = "final_status"
    STATUS_REFUSED = "status_refused"
    NOTIFICATION_DELETED = "notification_deleted"
    PUBLISHED = "published"
    REVIEWED = "reviewed"
    """An agent's decision (API)."""
    REVIEW_PUBLISHED = "review_published"


class DossierBusy(QfbridgeError):
    """Another delivery holds the case's processing lease: retry later."""

    code = "dossier_busy"


class LeaseLost(DossierBusy):
    """This attempt's processing lease expired and another delivery took the case: nothing more is
    written by it (its writes are fenced by the lease it holds); the message is retried later."""

    code = "lease_lost"


class DossierExists(QfbridgeError):
    """A first delivery's record was created meanwhile by another delivery: take the lease instead."""

    code = "dossier_exists"


class DossierPatch(BaseModel):
    """The attributes a journal write sets; only those given are written (``None`` clears one).

    Unknown attributes are refused (``extra="forbid"``): a misspelt name fails loudly.
    """

    model_config = ConfigDict(extra="forbid")

    tenant_siret: str | None = None
    """With ``outcome``: both key the listing indexes and move together."""
    outcome: Outcome | None = None
    reason: RejectionReason | str | None = None
    """``RejectionReason`` from the pipeline; an agent's rejection carries the agent's words."""
    reference: str | None = None
    user_id: str | None = None
    link_method: LinkMethod | None = None
    external_id_status: ExternalIdStatus | None = None
    candidates: list[dict[str, Any]] | None = None
    evidence: list[str] | None = None
    parsed: dict[str, Any] | None = None
    hubee_status: str | None = None
    status_refused: dict[str, Any] | None = None
    awaiting_holder: str | None = None
    resolved_by: str | None = None

    def merged(self, later: DossierPatch) -> DossierPatch:
        """This patch, then ``later`` over it."""
        return DossierPatch.model_validate(self.fields() | later.fields())

    def fields(self) -> dict[str, Any]:
        """The attributes given, as stored."""
        return self.model_dump(exclude_unset=True)


class DossierRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    case_id: str
    tenant_siret: str
    reference: str | None = None
    received_at: str
    outcome: Outcome = "received"
    reason: str | None = None
    steps: dict[str, str] = Field(default_factory=dict)
    hubee_status: str | None = None
    user_id: str | None = None
    link_method: LinkMethod | None = None
    external_id_status: ExternalIdStatus | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    parsed: dict[str, Any] | None = None  # the dossier's data, kept for review; erased with the family
    notification_ids: list[str] = Field(default_factory=list)
    deleted_notification_ids: list[str] = Field(default_factory=list)
    attempts: int = 0
    """Deliveries that took the processing lease."""
    failures: int = 0
    """Attempts that failed for no dossier reason without progress (bounded: such a case ends)."""
    status_refused: dict[str, Any] | None = None
    """The status HubEE refused (4xx) and from which status; nothing is posted until it is cleared."""
    last_status_refusal: dict[str, Any] | None = None
    resolved_by: str | None = None
    awaiting_holder: str | None = None
    """For a dossier awaiting its collectivité's onboarding: the tenant whose credential saw it."""
    decisions: list[dict[str, Any]] = Field(default_factory=list)  # earlier decisions, re-opened
    expires_at: int | None = None
    lease_until: float | None = None
    _stored: bool = PrivateAttr(default=True)

    @property
    def stored(self) -> bool:
        """False for a first delivery's draft: its first write creates the record (and takes the lease)."""
        return self._stored

    @classmethod
    def draft(
        cls, case_id: str, tenant_siret: str, notification_id: str, now: dt.datetime, lease_seconds: int
    ) -> DossierRecord:
        """The record a first delivery will create with its first write (``DossierRepository.start``'s)."""
        record = cls(
            case_id=case_id,
            tenant_siret=tenant_siret,
            received_at=now.isoformat(),
            notification_ids=[notification_id],
            attempts=1,
            expires_at=int((now + dt.timedelta(days=RETENTION_DAYS)).timestamp()),
            lease_until=now.timestamp() + lease_seconds,
        )
        record._stored = False
        return record

    def done(self, step: Step | str) -> bool:
        return str(step) in self.steps

    def applied(self, steps: Iterable[Step], now: dt.datetime, patch: DossierPatch) -> DossierRecord:
        """This record after a write of ``steps`` and ``patch`` (what the write stored)."""
        record = self.model_copy(
            update=patch.fields()
            | {"steps": self.steps | {str(s): self.steps.get(str(s), now.isoformat()) for s in steps}}
        )
        record._stored = True
        return record


class FamilyChanged(QfbridgeError):
    """The family half of a linking transaction failed its condition: read the family again."""

    code = "family_changed"


class DossierRepository:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = table(table_name)

    def get(self, case_id: str) -> DossierRecord | None:
        item = self._table.get_item(Key={"case_id": case_id}, ConsistentRead=True).get("Item")
        return DossierRecord.model_validate(plain(item)) if item else None

    def start(
        self,
        case_id: str,
        tenant_siret: str,
        notification_id: str,
        now: dt.datetime,
        lease_seconds: int = 300,
    ) -> DossierRecord:
        """Create the record on first sight (or find it again) and take the processing lease.

        The lease keeps two deliveries of the same case (HubEE duplicates, concurrent batches) from
        working on it at once; a crashed attempt's lease simply expires. Raises ``DossierBusy``.
        """
        expires = int((now + dt.timedelta(days=RETENTION_DAYS)).timestamp())
        now_ts = now.timestamp()
        try:
            response = self._table.update_item(
                Key={"case_id": case_id},
                UpdateExpression=(
                    "SET tenant_siret = if_not_exists(tenant_siret, :t), received_at = if_not_exists(received_at, :r), "
                    "outcome = if_not_exists(outcome, :o), tenant_outcome = if_not_exists(tenant_outcome, :to), "
                    "expires_at = if_not_exists(expires_at, :e), steps = if_not_exists(steps, :s), "
                    "lease_until = :lease, attempts = if_not_exists(attempts, :zero) + :one, "
                    "notification_ids = list_append(if_not_exists(notification_ids, :empty), :n)"
                ),
                ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now",
                ExpressionAttributeValues=to_dynamo(
                    {
                        ":t": tenant_siret,
                        ":r": now.isoformat(),
                        ":o": "received",
                        ":to": f"{tenant_siret}#received",
                        ":e": expires,
                        ":s": {},
                        ":empty": [],
                        ":n": [notification_id],
                        ":now": now_ts,
                        ":lease": now_ts + lease_seconds,
                        ":zero": 0,
                        ":one": 1,
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException as exc:
            raise DossierBusy(f"Case {case_id} is being processed by another delivery.") from exc
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def release(self, case_id: str, lease: float | None = None) -> None:
        """Give the processing lease up; with ``lease``, only if it is still that one (not another
        delivery's, taken after this one's expired)."""
        if lease is None:
            self._table.update_item(Key={"case_id": case_id}, UpdateExpression="REMOVE lease_until")
            return
        try:
            self._table.update_item(
                Key={"case_id": case_id},
                UpdateExpression="REMOVE lease_until",
                ConditionExpression="lease_until = :held",
                ExpressionAttributeValues=to_dynamo({":held": lease}),
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return

    def mark(
        self, case_id: str, step: Step, now: dt.datetime, patch: DossierPatch | None = None
    ) -> DossierRecord:
        """Record a step as done, with the attributes it produced; returns the updated record."""
        names, values, expression = _step_update((step,), now, patch or DossierPatch())
        response = self._table.update_item(
            Key={"case_id": case_id},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_dynamo(values),
            ReturnValues="ALL_NEW",
        )
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def write(
        self,
        record: DossierRecord,
        steps: Iterable[Step],
        now: dt.datetime,
        patch: DossierPatch | None = None,
        *,
        release: bool = False,
        deleted_notification: str | None = None,
        lease: float | None = None,
    ) -> DossierRecord:
        """Journal ``steps`` at once with ``patch``, in one UpdateItem; returns the record as stored.

        A first delivery's draft (``record.stored`` false) is created by this write, with the
        processing lease, on condition that no other delivery created it meanwhile
        (``DossierExists`` otherwise). ``release`` gives the lease up in the same write;
        ``deleted_notification`` journals that notification's acknowledgement. ``lease``, the
        ``lease_until`` this attempt holds, fences the write: if another delivery took the case
        after that lease expired, nothing is written and ``LeaseLost`` is raised.
        """
        steps = tuple(steps)
        patch = patch or DossierPatch()
        if "outcome" in patch.fields() and "tenant_siret" not in patch.fields():
            patch = DossierPatch(tenant_siret=record.tenant_siret).merged(patch)
        if not record.stored:
            names, values, expression = _create(record, steps, now, patch, release, deleted_notification)
            try:
                response = self._table.update_item(
                    Key={"case_id": record.case_id},
                    UpdateExpression=expression,
                    ConditionExpression="attribute_not_exists(case_id)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=to_dynamo(values),
                    ReturnValues="ALL_NEW",
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException as exc:
                raise DossierExists(f"Case {record.case_id} was recorded by another delivery.") from exc
            return DossierRecord.model_validate(plain(response["Attributes"]))
        names, values, expression = _step_update(steps, now, patch)
        if deleted_notification is not None:
            expression += ", deleted_notification_ids = list_append(if_not_exists(deleted_notification_ids, :dempty), :dn)"
            values |= {":dempty": [], ":dn": [deleted_notification]}
        if release:
            expression += " REMOVE lease_until"
        fence: dict[str, Any] = {}
        if lease is not None:
            values |= {":held": lease}
            fence = {"ConditionExpression": "lease_until = :held"}
        try:
            response = self._table.update_item(
                Key={"case_id": record.case_id},
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_dynamo(values),
                ReturnValues="ALL_NEW",
                **fence,
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException as exc:
            raise LeaseLost(f"Case {record.case_id} was taken over by another delivery.") from exc
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def count_failure(self, case_id: str) -> int:
        """One more attempt failed without progress; returns how many did."""
        response = self._table.update_item(
            Key={"case_id": case_id},
            UpdateExpression="SET failures = if_not_exists(failures, :zero) + :one",
            ExpressionAttributeValues={":zero": 0, ":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["failures"])

    def clear_status_refusal(self, case_id: str, now: dt.datetime, actor: str) -> DossierRecord | None:
        """An operator asks to post the refused status again: the refusal moves to ``last_status_refusal``.

        ``None`` when the dossier has no refusal recorded (nothing to retry).
        """
        try:
            response = self._table.update_item(
                Key={"case_id": case_id},
                UpdateExpression=(
                    "SET last_status_refusal = status_refused, status_retry_by = :actor, status_retry_at = :now "
                    "REMOVE status_refused, #steps.#step"
                ),
                ConditionExpression="attribute_exists(#steps.#step)",
                ExpressionAttributeNames={"#steps": "steps", "#step": "status_refused"},
                ExpressionAttributeValues=to_dynamo({":actor": actor, ":now": now.isoformat()}),
                ReturnValues="ALL_NEW",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return None
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def mark_once(
        self,
        case_id: str,
        step: Step,
        now: dt.datetime,
        patch: DossierPatch | None = None,
        *,
        also: Iterable[Step] = (),
    ) -> DossierRecord | None:
        """``mark`` only if the step is not recorded yet; None when it already was.

        An agent's review decision is taken once: two concurrent decisions on the same dossier
        must not both apply (the second one is told the dossier is no longer in review).
        """
        names, values, expression = _step_update((step, *also), now, patch or DossierPatch())
        try:
            response = self._table.update_item(
                Key={"case_id": case_id},
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(case_id) AND attribute_not_exists(#steps.#s0)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_dynamo(values),
                ReturnValues="ALL_NEW",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return None
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def persist_link_transaction(
        self,
        record: DossierRecord,
        family_update: dict[str, Any],
        now: dt.datetime,
        steps: tuple[Step, ...],
        patch: DossierPatch,
        lease: float | None = None,
    ) -> bool:
        """Atomically store the link on the dossier and the QF on the family.

        ``steps[0]`` names the journal entry the transaction is conditioned on (``persisted`` for
        intake, ``reviewed`` for an agent's review decision, which happens after ``persisted``); the
        others are journaled with it. A first delivery's draft is created by the transaction
        (``DossierExists`` when another delivery created it meanwhile). Returns False when the
        transaction was already applied by an earlier attempt. ``lease`` fences it as it does
        ``write`` (``LeaseLost``).
        """
        if "tenant_siret" not in patch.fields():
            patch = DossierPatch(tenant_siret=record.tenant_siret).merged(patch)
        if record.stored:
            names, values, expression = _step_update(steps, now, patch)
            condition = "attribute_not_exists(#steps.#s0)"
            if lease is not None:
                condition += " AND lease_until = :held"
                values |= {":held": lease}
        else:
            names, values, expression = _create(record, steps, now, patch, False, None)
            condition = "attribute_not_exists(case_id)"
        dossier_update = {
            "Update": {
                "TableName": self.table_name,
                "Key": serialize({"case_id": record.case_id}),
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": serialize(to_dynamo(values)),
            }
        }
        client = dynamodb()
        try:
            client.transact_write_items(TransactItems=[dossier_update, family_update])
        except client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                if not record.stored:
                    raise DossierExists(f"Case {record.case_id} was recorded by another delivery.") from exc
                if lease is not None:
                    stored = self.get(record.case_id)
                    if stored is None or not stored.done(steps[0]):
                        raise LeaseLost(f"Case {record.case_id} was taken over by another delivery.") from exc
                return False
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                # The family changed since it was read (or is gone): the caller reads it again.
                raise FamilyChanged(record.case_id) from exc
            if "TransactionConflict" in reasons:
                raise FamilyChanged(record.case_id) from exc
            raise
        return True

    def by_reference(self, reference: str) -> list[DossierRecord]:
        response = self._table.query(
            IndexName="by_reference", KeyConditionExpression=key_condition("reference").eq(reference)
        )
        return [DossierRecord.model_validate(plain(item)) for item in response.get("Items", [])]

    def require_for_tenant(self, tenant_siret: str, reference: str) -> DossierRecord:
        for record in self.by_reference(reference):
            if record.tenant_siret == tenant_siret:
                return record
        raise NotFoundError(f"No dossier {reference} for tenant {tenant_siret}.", code="dossier_not_found")

    def list_page(
        self, tenant_siret: str, *, outcome: str | None, limit: int, cursor: str | None
    ) -> tuple[list[DossierRecord], str | None]:
        if outcome:
            index, key_name, key_value = "by_tenant_outcome", "tenant_outcome", f"{tenant_siret}#{outcome}"
        else:
            index, key_name, key_value = "by_tenant", "tenant_siret", tenant_siret
        kwargs: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": key_condition(key_name).eq(key_value),
            "Limit": limit,
            "ScanIndexForward": False,
        }
        start = decode_cursor(cursor, {"case_id", key_name, "received_at"})
        if start:
            if start[key_name] != key_value:
                from qfbridge.domain.errors import ValidationError

                raise ValidationError("The cursor belongs to another listing.", code="invalid_cursor")
            kwargs["ExclusiveStartKey"] = start
        response = self._table.query(**kwargs)
        records = [DossierRecord.model_validate(plain(item)) for item in response.get("Items", [])]
        return records, encode_cursor(response.get("LastEvaluatedKey"))

    def in_review(self, tenant_siret: str) -> Iterator[DossierRecord]:
        """Every dossier of the tenant waiting for review (one Query on ``by_tenant_outcome``, paged)."""
        cursor: str | None = None
        while True:
            records, cursor = self.list_page(tenant_siret, outcome="needs_review", limit=100, cursor=cursor)
            for record in records:
                full = self.get(record.case_id)  # the index may project less than the record
                if full is not None and full.outcome == "needs_review":
                    yield full
            if cursor is None:
                return

    def strike_candidate(self, case_id: str, user_id: str) -> None:
        """Remove an erased family from a dossier's candidates (the dossier stays in review)."""
        for _ in range(5):
            record = self.get(case_id)
            if record is None:
                return
            kept = [c for c in record.candidates if c.get("user_id") != user_id]
            if len(kept) == len(record.candidates):
                return
            try:
                self._table.update_item(
                    Key={"case_id": case_id},
                    UpdateExpression="SET candidates = :kept",
                    ConditionExpression="candidates = :seen",
                    ExpressionAttributeValues=to_dynamo({":kept": kept, ":seen": record.candidates}),
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue
            return

    def reopen(self, record: DossierRecord, now: dt.datetime, *, reopened_by: str) -> DossierRecord | None:
        """Back to review, the decision it replaces kept in ``decisions``; None if it changed meanwhile."""
        earlier = {
            "outcome": record.outcome,
            "user_id": record.user_id,
            "link_method": record.link_method,
            "reason": record.reason,
            "resolved_by": record.resolved_by,
            "reopened_by": reopened_by,
            "reopened_at": now.isoformat(),
        }
        try:
            response = self._table.update_item(
                Key={"case_id": record.case_id},
                UpdateExpression=(
                    "SET outcome = :review, tenant_outcome = :to, "
                    "decisions = list_append(if_not_exists(decisions, :empty), :earlier) "
                    "REMOVE user_id, link_method, resolved_by, reason, #steps.reviewed, #steps.review_published"
                ),
                ConditionExpression="outcome = :seen",
                ExpressionAttributeNames={"#steps": "steps"},
                ExpressionAttributeValues=to_dynamo(
                    {
                        ":review": "needs_review",
                        ":to": f"{record.tenant_siret}#needs_review",
                        ":empty": [],
                        ":earlier": [{k: v for k, v in earlier.items() if v is not None}],
                        ":seen": record.outcome,
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return None
        return DossierRecord.model_validate(plain(response["Attributes"]))

    def erase_personal_data(self, case_id: str) -> None:
        """RGPD erasure: drop the dossier's personal data, keep the technical trace (outcome, steps)."""
        try:
            self._table.update_item(
                Key={"case_id": case_id},
                UpdateExpression="REMOVE parsed, candidates, user_id, evidence, decisions SET erased = :t",
                ConditionExpression="attribute_exists(case_id)",
                ExpressionAttributeValues={":t": True},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return


def _step_update(
    steps: Iterable[Step], now: dt.datetime, patch: DossierPatch
) -> tuple[dict[str, str], dict[str, Any], str]:
    """Names, values and SET expression recording ``steps`` with the attributes ``patch`` gives."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets = []
    steps = tuple(steps)
    if steps:
        names["#steps"] = "steps"
        values[":now"] = now.isoformat()
    for i, step in enumerate(steps):
        names[f"#s{i}"] = str(step)
        sets.append(f"#steps.#s{i} = :now")
    fields = patch.fields()
    tenant_siret = fields.pop("tenant_siret", None)
    for i, (key, value) in enumerate(fields.items()):
        names[f"#a{i}"] = key
        values[f":a{i}"] = value
        sets.append(f"#a{i} = :a{i}")
    if "outcome" in fields:
        if tenant_siret is None:
            raise ValueError("changing the outcome needs the tenant (it keys the by_tenant_outcome index)")
        names["#to"] = "tenant_outcome"
        values[":to"] = f"{tenant_siret}#{fields['outcome']}"
        sets.append("#to = :to")
        names["#t"] = "tenant_siret"  # keys the by_tenant index: the outcome and its tenant move together
        values[":t"] = tenant_siret
        sets.append("#t = :t")
    return names, values, "SET " + ", ".join(sets)


def _create(
    draft: DossierRecord,
    steps: Iterable[Step],
    now: dt.datetime,
    patch: DossierPatch,
    release: bool,
    deleted_notification: str | None,
) -> tuple[dict[str, str], dict[str, Any], str]:
    """The first write of a first delivery: every attribute ``start`` would have set, the lease
    (unless given up at once), the journal's ``steps`` and ``patch``."""
    fields = patch.fields()
    tenant = fields.pop("tenant_siret", None) or draft.tenant_siret
    outcome = fields.pop("outcome", None) or draft.outcome
    item: dict[str, Any] = {
        "tenant_siret": tenant,
        "received_at": draft.received_at,
        "outcome": outcome,
        "tenant_outcome": f"{tenant}#{outcome}",
        "expires_at": draft.expires_at,
        "steps": {str(s): now.isoformat() for s in steps},
        "attempts": draft.attempts,
        "notification_ids": draft.notification_ids,
    } | fields
    if not release:
        item["lease_until"] = draft.lease_until
    if deleted_notification is not None:
        item["deleted_notification_ids"] = [deleted_notification]
    names = {f"#c{i}": key for i, key in enumerate(item)}
    values = {f":c{i}": value for i, value in enumerate(item.values())}
    expression = "SET " + ", ".join(f"#c{i} = :c{i}" for i in range(len(item)))
    return names, values, expression
