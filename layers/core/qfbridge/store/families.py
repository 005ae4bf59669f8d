"""The families table: the editor's directory, the pivot identity, the current QF and its history.

Item layout (one partition per tenant, ``pk = T#<siret>``):

* ``sk = F#<user_id>`` — the family. Its attributes belong to one writer each (``OWNERSHIP``); a
  writer changes only its own attributes, with an UpdateItem (never a read-then-put of the whole
  item), so no write erases what another path stored meanwhile:

  - the **directory** (``upsert_many``): ``family`` (directory identity), ``blocking_dates`` (the
    family's blocking keys), ``blocking_format`` (their layout), ``directory_updated_at``;
  - **links and dossiers** (``link_update``, the form-link issuance, ``unlink_case``):
    ``pivot_identity``, ``identity_key``, ``pivot_case_id``, ``members``, ``case_ids``, ``link_ids``;
  - **the QF** (``link_update``, ``record_refresh``, ``unlink_case``, versioned by ``qf_version``: a
    conditional write re-read and retried on conflict): ``qf``, ``qf_history``, ``qf_history_keys``;
  - **the refresh** (``record_refresh``, ``defer``, ``expire_identity``, and a link that (re)starts
    the cycle): ``refresh``, ``refresh_tenant``/``next_refresh_at`` (the sparse ``by_refresh_due``
    index).

* ``sk = K#<key>#<shard>`` — the blocking index: one item per blocking key of the directory
  (``qfbridge.matching.blocking_keys_for_family``: each distinct birth date of a family's parents
  and children, and each parent's name key ``name:<surname>:<first prénom>``), holding one attribute
  per family under that key, ``f:<user_id>``, whose value is what scoring reads — the family's
  ``Candidate``, names folded once at write time (``qfbridge.matching.encode_candidate``) —, and
  the set of their user ids, ``ids``: the item is deleted with its last family, so an erasure
  leaves no key naming anyone. A
  crowded key (1 January: parents born abroad whose day of birth is unknown) is spread over
  ``CROWDED_SHARDS`` items by a hash of the user id, so no item nears DynamoDB's 400 KB. Identity
  matching reads every key of the dossier's household in **one BatchGetItem** (and, for the review
  list only, the usager's name keys in a second one), never the directory. The family item lists its
  keys in ``blocking_dates`` and the layout in ``blocking_format``.

  Layout 1 (``blocking_format`` absent) kept one item per family and key, ``B#<key>#<user_id>``,
  with a copy of the directory identity. A directory push rewrites such a family in layout 2 (its
  identity unchanged or not) and deletes its old items; ``reindex`` does it for a whole tenant from
  the stored identities (``qfbridge directory reindex``).

The current QF is the entry of the most recent period (``annee``, ``mois``, then the calculation
date, then the reception time); an older entry only joins the history, which keeps the
``HISTORY_LIMIT`` most recent periods.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from qfbridge.clock import utc_now
from qfbridge.domain.errors import NotFoundError, QfbridgeError
from qfbridge.domain.identity import Family, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.tables import dynamodb, from_wire, key_condition, plain, table, to_dynamo

if TYPE_CHECKING:
    from qfbridge.matching.scoring import Candidate

HISTORY_LIMIT = 60  # five years of monthly refreshes
QF_WRITE_ATTEMPTS = 8
"""Versioned QF writes re-read and retried on a conflict, before giving up (the caller retries later)."""
REFRESH_LEASE = "refresh_lease"
"""A family's refresh lease (``qfbridge.store.leases``): holder and expiry, while a refresh is in flight."""
UPSERT_WORKERS = 8
BLOCKING_FORMAT = 2
"""The blocking index's layout (see the module docstring); a family stored in another is rewritten."""
CROWDED_SHARDS = 16
"""Items a crowded blocking key (a 1 January) is spread over: ~1,500 families fit in one 400 KB item."""
BATCH_GET_KEYS = 100

OWNERSHIP: dict[str, tuple[str, ...]] = {
    "directory": ("family", "blocking_dates", "blocking_format", "directory_updated_at"),
    "links": ("pivot_identity", "identity_key", "pivot_case_id", "members", "case_ids", "link_ids"),
    "qf": ("qf", "qf_history", "qf_history_keys", "qf_version"),
    "refresh": ("refresh", "refresh_tenant", "next_refresh_at"),
}
"""Which writer owns which attribute of a family item (see the module docstring)."""


class FamilyGone(NotFoundError):
    """The family does not exist (never pushed nor linked, or erased): nothing is linked to it."""

    code = "family_not_found"


class FamilyBusy(QfbridgeError):
    """The family's QF kept changing under a versioned write: retry later."""

    code = "family_busy"


def family_pk(siret: str) -> str:
    return f"T#{siret}"


def family_sk(user_id: str) -> str:
    return f"F#{user_id}"


def legacy_blocking_sk(key: str, user_id: str) -> str:
    """A blocking entry of layout 1 (one item per family and key), deleted when the family is rewritten."""
    return f"B#{key}#{user_id}"


def bucket_shards(key: str) -> int:
    """How many items hold the families under ``key``: ``CROWDED_SHARDS`` for a 1 January, else 1."""
    return CROWDED_SHARDS if key.endswith("-01-01") else 1


def bucket_sk(key: str, shard: int) -> str:
    return f"K#{key}#{shard}"


def bucket_sks(key: str) -> list[str]:
    """Every item of the blocking index under ``key``."""
    return [bucket_sk(key, shard) for shard in range(bucket_shards(key))]


def bucket_of(key: str, user_id: str) -> str:
    """The item of the blocking index holding ``user_id``'s entry under ``key``."""
    return bucket_sk(key, zlib.crc32(user_id.encode()) % bucket_shards(key))


def entry_attribute(user_id: str) -> str:
    return f"f:{user_id}"


def blocking_dates(family: Family) -> set[str]:
    """The family's blocking keys: its members' birth dates and its parents' name keys."""
    # Imported here: the matcher (its models, rapidfuzz) is for the functions that write the
    # directory or match; hubee_poll and qf_refresh read families and never load it.
    from qfbridge.matching.scoring import blocking_keys_for_family

    return blocking_keys_for_family(family)


def blocking_entries(family: Family) -> dict[str, tuple[str, str, str]]:
    """The family's blocking entries by key: (the bucket's sort key, the attribute, its value)."""
    from qfbridge.matching.scoring import encode_candidate

    value = encode_candidate(family)
    attribute = entry_attribute(family.user_id)
    return {key: (bucket_of(key, family.user_id), attribute, value) for key in sorted(blocking_dates(family))}


def stored_blocking(item: dict[str, Any] | None) -> tuple[set[str], int]:
    """The blocking keys a stored family item says it has, and their layout."""
    if not item:
        return set(), BLOCKING_FORMAT
    keys = {str(key) for key in plain(item.get("blocking_dates", []))}
    return keys, int(item.get("blocking_format", 1))


def person_key(surname: str, given_names: str, sexe: str, birthdate: dt.date) -> str:
    """A digest naming one person (folded birth name, first given name, sex, birth date): two dossiers
    of the same usager get the same key, whatever accents or extra first names they carry."""
    from qfbridge.matching.normalize import comparable_surname, given_name_tokens

    first = given_name_tokens(given_names)[:1]
    material = "|".join([comparable_surname(surname), first[0] if first else "", sexe, birthdate.isoformat()])
    return hashlib.sha256(material.encode()).hexdigest()


def identity_key(pivot: PivotIdentity) -> str:
    """The ``person_key`` of a pivot identity."""
    return person_key(pivot.family_name, pivot.given_name, pivot.sexe, pivot.birthdate)


class QfEntry(BaseModel):
    """One QF value received for a family, from a dossier or a refresh."""

    model_config = ConfigDict(extra="ignore")

    quotient_familial: QuotientFamilial
    source: str  # "dossier" | "refresh" | "review"
    source_id: str  # case id or refresh period
    received_at: str

    @property
    def history_key(self) -> str:
        return f"{self.source}:{self.source_id}"


def period_key(entry: QfEntry) -> tuple[int, int, int, int, str]:
    """How recent a QF is: its period (annee, mois), then its calculation date, then its reception."""
    qf = entry.quotient_familial
    return (qf.annee, qf.mois, qf.annee_calcul or 0, qf.mois_calcul or 0, entry.received_at)


class RefreshState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "pending"  # pending | ok | not_found | identity_rejected | token_expired | forbidden | failed | expired
    last_attempt_at: str | None = None
    last_outcome: str | None = None
    reason: str | None = None
    """Why the last refresh failed, for the agent: API Particulier's error codes (``00420``…) or ours
    (``name_not_accepted``); never personal data."""
    not_found_count: int = 0


class FamilyRecord(BaseModel):
    """Everything qfbridge holds about one family."""

    model_config = ConfigDict(extra="ignore")

    siret: str
    user_id: str
    family: Family | None = None
    pivot_identity: PivotIdentity | None = None
    identity_key: str | None = None
    pivot_case_id: str | None = None
    qf: QfEntry | None = None
    qf_history: list[QfEntry] = Field(default_factory=list)
    qf_history_keys: list[str] = Field(default_factory=list)
    qf_version: int = 0
    members: dict[str, Any] | None = None
    refresh: RefreshState = Field(default_factory=RefreshState)
    next_refresh_at: str | None = None
    case_ids: list[str] = Field(default_factory=list)
    link_ids: list[str] = Field(default_factory=list)


class QfMerge(BaseModel):
    """The QF attributes after adding one entry to a family (a pure computation, then one write)."""

    history: list[QfEntry]
    current: QfEntry
    becomes_current: bool


def merge_entry(record: FamilyRecord | None, entry: QfEntry) -> QfMerge:
    """Add ``entry`` to the family's history (most recent ``HISTORY_LIMIT`` periods kept); the current
    QF is the most recent period's, so an older entry arriving late only joins the history."""
    previous = list(record.qf_history) if record else []
    history = sort_history([e for e in previous if e.history_key != entry.history_key] + [entry])
    history = history[-HISTORY_LIMIT:]
    current = record.qf if record else None
    becomes_current = current is None or period_key(entry) >= period_key(current)
    return QfMerge(
        history=history,
        current=entry if becomes_current or current is None else current,
        becomes_current=becomes_current,
    )


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    """Values for a transaction item sent through the resource's client, which serialises them itself."""
    return {key: to_dynamo(value) for key, value in item.items()}


def _version_condition(version: int) -> tuple[str, dict[str, Any]]:
    if version == 0:
        return "attribute_not_exists(qf_version)", {}
    return "qf_version = :seen", {":seen": version}


class FamilyRepository:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = table(table_name)

    def _conditional_failed(self) -> type[Exception]:
        return self._table.meta.client.exceptions.ConditionalCheckFailedException

    # ------------------------------------------------------------------ directory
    def get(self, siret: str, user_id: str) -> FamilyRecord | None:
        item = self._table.get_item(
            Key={"pk": family_pk(siret), "sk": family_sk(user_id)}, ConsistentRead=True
        ).get("Item")
        return _record(siret, item) if item else None

    def upsert(self, siret: str, family: Family) -> bool:
        """Create or replace a family's directory identity; returns True when it was created."""
        return self.upsert_many(siret, [family])[0]

    def upsert_many(self, siret: str, families: list[Family]) -> list[bool]:
        """Write the directory's attributes of each family — one UpdateItem each, never the attributes
        intake, refresh and links own — then its blocking entries; True for each family created.

        One BatchGet per 100 families first: a family whose stored directory identity is already the
        one pushed, in the current blocking layout, is not written again (a nightly sync re-pushes
        mostly unchanged families).
        """
        latest = {family.user_id: family for family in families}  # a repeated user_id: the last wins
        seen = self._batch_get(siret, list(latest), "sk, #family, blocking_dates, blocking_format")
        changed = [
            family
            for family in latest.values()
            if family.user_id not in seen
            or plain(seen[family.user_id].get("family")) != family.model_dump(mode="json")
            or sorted(plain(seen[family.user_id].get("blocking_dates", []))) != sorted(blocking_dates(family))
            or int(seen[family.user_id].get("blocking_format", 1)) != BLOCKING_FORMAT
        ]
        client = dynamodb()
        now = utc_now().isoformat()

        def write(family: Family) -> dict[str, Any] | None:
            response = client.update_item(
                TableName=self.table_name,
                Key={"pk": family_pk(siret), "sk": family_sk(family.user_id)},
                UpdateExpression="SET #family = :family, blocking_dates = :dates, "
                "blocking_format = :format, directory_updated_at = :now",
                ExpressionAttributeNames={"#family": "family"},
                ExpressionAttributeValues=to_dynamo(
                    {
                        ":family": family.model_dump(mode="json"),
                        ":dates": sorted(blocking_dates(family)),
                        ":format": BLOCKING_FORMAT,
                        ":now": now,
                    }
                ),
                # What this write replaced, atomically: the old blocking keys and their layout.
                ReturnValues="UPDATED_OLD",
            )
            # An attribute the write left as it was may be missing from the answer: then it is what
            # the read above found (a push racing in between is settled by ``_write_blocking``).
            before = seen.get(family.user_id, {})
            kept = {name: before[name] for name in ("blocking_dates", "blocking_format") if name in before}
            return kept | (response.get("Attributes") or {})

        olds = self._run(write, changed)
        if changed:
            self._write_blocking(siret, changed, olds)
        return [family.user_id not in seen for family in families]

    def reindex(self, siret: str) -> int:
        """Rewrite, in the current layout, the blocking index of the tenant's families stored in an
        older one, from their stored directory identities (what a re-push of the directory does).
        Returns how many families were rewritten. One Query page of family items at a time."""
        rewritten = 0
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": key_condition("pk").eq(family_pk(siret))
            & key_condition("sk").begins_with("F#"),
            "ProjectionExpression": "sk, #family, blocking_format",
            "ExpressionAttributeNames": {"#family": "family"},
        }
        while True:
            response = self._table.query(**kwargs)
            stale = [
                Family.model_validate(plain(item["family"]))
                for item in response.get("Items", [])
                if "family" in item and int(item.get("blocking_format", 1)) != BLOCKING_FORMAT
            ]
            if stale:
                self.upsert_many(siret, stale)
                rewritten += len(stale)
            if "LastEvaluatedKey" not in response:
                return rewritten
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _run(self, write: Any, items: list[Any]) -> list[Any]:
        if len(items) > 1:
            with ThreadPoolExecutor(max_workers=UPSERT_WORKERS) as pool:
                return list(pool.map(write, items))
        return [write(item) for item in items]

    def _set_entry(self, siret: str, sk: str, attribute: str, value: str) -> None:
        self._table.update_item(
            Key={"pk": family_pk(siret), "sk": sk},
            UpdateExpression="SET #entry = :value ADD ids :user",
            ExpressionAttributeNames={"#entry": attribute},
            ExpressionAttributeValues={":value": value, ":user": {attribute[2:]}},
        )

    def _remove_entry(self, siret: str, sk: str, attribute: str) -> None:
        """Remove one family's entry; the item goes with its last entry (its key may name someone)."""
        key = {"pk": family_pk(siret), "sk": sk}
        response = self._table.update_item(
            Key=key,
            UpdateExpression="REMOVE #entry DELETE ids :user",
            ExpressionAttributeNames={"#entry": attribute},
            ExpressionAttributeValues={":user": {attribute[2:]}},
            ReturnValues="UPDATED_NEW",  # ``ids`` as left; DynamoDB drops an emptied set
        )
        if "ids" in (response.get("Attributes") or {}):
            return
        try:  # unless a family was added meanwhile
            self._table.delete_item(Key=key, ConditionExpression="attribute_not_exists(ids)")
        except self._conditional_failed():
            return

    def _drop_blocking(self, siret: str, user_id: str, keys: set[str], layout: int) -> list[tuple[Any, ...]]:
        """The writes removing ``user_id``'s entries under ``keys`` (layout 1 items are deleted in batch)."""
        if layout == BLOCKING_FORMAT:
            return [("remove", bucket_of(key, user_id), entry_attribute(user_id)) for key in sorted(keys)]
        if keys:
            with self._table.batch_writer() as batch:
                for key in keys:
                    batch.delete_item(Key={"pk": family_pk(siret), "sk": legacy_blocking_sk(key, user_id)})
        return []

    def _apply(self, siret: str, writes: list[tuple[Any, ...]]) -> None:
        def one(write: tuple[Any, ...]) -> None:
            if write[0] == "set":
                self._set_entry(siret, write[1], write[2], write[3])
            else:
                self._remove_entry(siret, write[1], write[2])

        self._run(one, writes)

    def _write_blocking(self, siret: str, families: list[Family], olds: list[dict[str, Any] | None]) -> None:
        """Set each family's blocking entries, remove those it no longer has; then settle the races:
        an erasure or another push of the same family that ran meanwhile leaves the blocking entries
        of what the family item holds now, and no others."""
        written: dict[str, set[str]] = {}
        writes: list[tuple[Any, ...]] = []
        for family, old in zip(families, olds, strict=True):
            entries = blocking_entries(family)
            writes += [("set", sk, attribute, value) for sk, attribute, value in entries.values()]
            old_keys, layout = stored_blocking(old)
            gone = old_keys if layout != BLOCKING_FORMAT else old_keys - set(entries)
            writes += self._drop_blocking(siret, family.user_id, gone, layout)
            written[family.user_id] = set(entries)
        self._apply(siret, writes)
        current = self._batch_get(siret, list(written), "sk, #family")
        settle: list[tuple[Any, ...]] = []
        for family in families:
            found = current.get(family.user_id)
            now_family = plain(found["family"]) if found and "family" in found else None
            if now_family == family.model_dump(mode="json"):
                continue
            wanted = blocking_entries(Family.model_validate(now_family)) if now_family is not None else {}
            settle += self._drop_blocking(
                siret, family.user_id, written[family.user_id] - set(wanted), BLOCKING_FORMAT
            )
            settle += [("set", sk, attribute, value) for sk, attribute, value in wanted.values()]
        self._apply(siret, settle)

    def _batch_get(self, siret: str, user_ids: list[str], projection: str) -> dict[str, dict[str, Any]]:
        client = dynamodb()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(user_ids), 100):
            keys = [{"pk": family_pk(siret), "sk": family_sk(uid)} for uid in user_ids[start : start + 100]]
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": projection,
                    "ExpressionAttributeNames": {"#family": "family"},
                }
            }
            while request:
                response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[str(item["sk"])[2:]] = item
                request = response.get("UnprocessedKeys") or {}
        return found

    def candidates(self, siret: str, birthdate: dt.date) -> list[Candidate]:
        """The directory families with a member born on ``birthdate``."""
        return self.candidates_on(siret, [birthdate.isoformat()])

    def candidates_on(self, siret: str, keys: Iterable[str], *, limit: int | None = None) -> list[Candidate]:
        """The directory families under any of ``keys`` (birth dates or name keys), each family once,
        as scoring reads them: every key's items in one BatchGetItem (up to 100 items a request; keys
        DynamoDB leaves unprocessed are asked again). With ``limit``, at most that many families per
        key, the first by user id (the bounded name-key read)."""
        from qfbridge.matching.scoring import decode_candidate

        wanted = sorted(set(keys))  # each key read once, in a stable order
        sks = [sk for key in wanted for sk in bucket_sks(key)]
        entries: dict[str, dict[str, str]] = {}  # bucket sort key → {user id: entry}
        client = dynamodb()
        for start in range(0, len(sks), BATCH_GET_KEYS):
            chunk = sks[start : start + BATCH_GET_KEYS]
            request: dict[str, Any] = {
                self.table_name: {"Keys": [{"pk": family_pk(siret), "sk": sk} for sk in chunk]}
            }
            while request:
                response = client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    entries[str(item["sk"])] = {
                        name[2:]: str(value) for name, value in item.items() if name.startswith("f:")
                    }
                request = response.get("UnprocessedKeys") or {}
        found: dict[str, Candidate] = {}
        for key in wanted:
            under = sorted(
                (user_id, value) for sk in bucket_sks(key) for user_id, value in entries.get(sk, {}).items()
            )
            for user_id, value in under[:limit]:
                if user_id not in found:
                    found[user_id] = decode_candidate(user_id, value)
        return list(found.values())

    # ------------------------------------------------------------------ links
    def link_issue_update(self, siret: str, user_id: str, link_id: str, now: str) -> dict[str, Any]:
        """The family half of a form link's issuance (a transaction with the link's item): the link id
        is on the family, creating a shell for an account the directory has not sent yet, or neither is
        written — an erasure always reaches every link of the family."""
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": serialize({"pk": family_pk(siret), "sk": family_sk(user_id)}),
                "UpdateExpression": "SET link_ids = list_append(if_not_exists(link_ids, :empty), :link), "
                "created_at = if_not_exists(created_at, :now)",
                "ExpressionAttributeValues": serialize({":empty": [], ":link": [link_id], ":now": now}),
            }
        }

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
        current: FamilyRecord | None = None,
    ) -> dict[str, Any]:
        """The family half of the linking transaction (see ``DossierRepository.persist_link_transaction``).

        ``current`` is the family as read just before: the write is conditioned on its QF version
        (and on the family existing — a link never creates a family), so a concurrent QF write makes
        the transaction fail and the caller re-reads and retries. The dossier's pivot identity and
        members become the family's only when its QF is the most recent one.
        """
        merge = merge_entry(current, entry)
        version = current.qf_version if current else 0
        condition, condition_values = _version_condition(version)
        sets = [
            "qf = :qf",
            "qf_history = :history",
            "qf_history_keys = :keys",
            "qf_version = :version",
            "case_ids = list_append(if_not_exists(case_ids, :empty), :case)",
            "refresh_tenant = :siret",
            "next_refresh_at = :next",
            "#refresh = :refresh",
        ]
        values: dict[str, Any] = {
            ":qf": merge.current.model_dump(mode="json"),
            ":history": [e.model_dump(mode="json") for e in merge.history],
            ":keys": {e.history_key for e in merge.history},
            ":version": version + 1,
            ":empty": [],
            ":case": [case_id],
            ":siret": siret,
            ":next": next_refresh_at,
            ":refresh": RefreshState().model_dump(mode="json"),
            ":case_id": case_id,
        }
        if merge.becomes_current or current is None or current.pivot_identity is None:
            sets += [
                "pivot_identity = :pivot",
                "identity_key = :ikey",
                "pivot_case_id = :case_id",
                "members = :members",
            ]
            values |= {
                ":pivot": pivot.model_dump(mode="json"),
                ":ikey": identity_key(pivot),
                ":members": members,
            }
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": serialize({"pk": family_pk(siret), "sk": family_sk(user_id)}),
                "UpdateExpression": "SET " + ", ".join(sets),
                "ConditionExpression": f"attribute_exists(pk) AND {condition} "
                "AND (attribute_not_exists(case_ids) OR NOT contains(case_ids, :case_id))",
                "ExpressionAttributeNames": {"#refresh": "refresh"},
                "ExpressionAttributeValues": serialize(values | condition_values),
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
        forget_identity: bool = False,
        known: FamilyRecord | None = None,
        lease_holder: str | None = None,
    ) -> bool:
        """Store a refresh's result; the QF entry is added once per period (idempotent), and becomes
        the current QF only if no more recent period is stored (a versioned write, retried on conflict).

        ``next_refresh_at=None`` takes the family out of the due index (refreshes stopped);
        ``forget_identity`` also drops its pivot identity (API Particulier rejected it: it is of no
        further use). Returns False when the family no longer exists (erased meanwhile).

        ``known``: the family as the caller read it (its refresh lease's write returns it), written
        against without reading it again; a stale one fails the version condition, and the write
        retries on the item the failed condition returns. ``lease_holder``: the same write gives the
        family's refresh lease back (``qfbridge.store.leases``) if that holder still has it; a lease
        another refresh took meanwhile is left to it, and the result is stored all the same.
        """
        key = {"pk": family_pk(siret), "sk": family_sk(user_id)}
        record = known
        for _ in range(QF_WRITE_ATTEMPTS):
            if record is None:
                record = self.get(siret, user_id)
            if record is None:
                return False
            sets = ["#refresh = :refresh"]
            values: dict[str, Any] = {":refresh": state.model_dump(mode="json")}
            names = {"#refresh": "refresh"}
            removes: list[str] = []
            if next_refresh_at is None:
                removes += ["refresh_tenant", "next_refresh_at"]
            else:
                sets += ["next_refresh_at = :next", "refresh_tenant = :siret"]
                values |= {":next": next_refresh_at, ":siret": siret}
            if forget_identity:
                removes += ["pivot_identity", "identity_key", "pivot_case_id", "members"]
            condition = "attribute_exists(pk)"
            if entry is not None and entry.history_key not in record.qf_history_keys:
                merge = merge_entry(record, entry)
                version_condition, condition_values = _version_condition(record.qf_version)
                condition += f" AND {version_condition}"
                sets += [
                    "qf = :qf",
                    "qf_history = :history",
                    "qf_history_keys = :keys",
                    "qf_version = :version",
                ]
                values |= condition_values | {
                    ":qf": merge.current.model_dump(mode="json"),
                    ":history": [e.model_dump(mode="json") for e in merge.history],
                    ":keys": {e.history_key for e in merge.history},
                    ":version": record.qf_version + 1,
                }
            if lease_holder is not None:
                removes.append("#lease")
                condition += " AND (attribute_not_exists(#lease) OR #lease.#holder = :holder)"
                names |= {"#lease": REFRESH_LEASE, "#holder": "holder"}
                values[":holder"] = lease_holder
            expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
            try:
                self._table.update_item(
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=to_dynamo(values),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except self._conditional_failed() as failed:
                # Erased, the QF changed meanwhile, or another refresh holds the lease: again, on the
                # family as the failed condition found it.
                wire = getattr(failed, "response", {}).get("Item")
                if not wire:
                    return False
                item = from_wire(wire)
                record = _record(siret, item)
                holder = (item.get(REFRESH_LEASE) or {}).get("holder")
                if lease_holder is not None and holder not in (None, lease_holder):
                    lease_holder = None
                continue
            return True
        raise FamilyBusy(f"The family's QF kept changing during a refresh ({QF_WRITE_ATTEMPTS} attempts).")

    def unlink_case(self, siret: str, user_id: str, case_id: str) -> bool:
        """Take a dossier wrongly linked off the family: its QF entry leaves the history (the current
        QF falls back on the most recent remaining entry), and a pivot identity it brought goes, with
        the refresh cycle it fed. The family stays. False when the family is gone."""
        for _ in range(QF_WRITE_ATTEMPTS):
            record = self.get(siret, user_id)
            if record is None:
                return False
            history = sort_history(e for e in record.qf_history if e.source_id != case_id)
            sets = ["qf_version = :version", "case_ids = :cases"]
            removes: list[str] = []
            values: dict[str, Any] = {
                ":version": record.qf_version + 1,
                ":cases": [c for c in record.case_ids if c != case_id],
            }
            if history:
                sets += ["qf = :qf", "qf_history = :history", "qf_history_keys = :keys"]
                values |= {
                    ":qf": history[-1].model_dump(mode="json"),
                    ":history": [e.model_dump(mode="json") for e in history],
                    ":keys": {e.history_key for e in history},
                }
            else:
                removes += ["qf", "qf_history", "qf_history_keys"]
            if record.pivot_case_id == case_id:
                removes += ["pivot_identity", "identity_key", "pivot_case_id", "members"]
                removes += ["refresh_tenant", "next_refresh_at"]
            condition, condition_values = _version_condition(record.qf_version)
            try:
                self._table.update_item(
                    Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
                    UpdateExpression="SET "
                    + ", ".join(sets)
                    + (" REMOVE " + ", ".join(removes) if removes else ""),
                    ConditionExpression=f"attribute_exists(pk) AND {condition}",
                    ExpressionAttributeValues=to_dynamo(values | condition_values),
                )
            except self._conditional_failed():
                continue
            return True
        raise FamilyBusy("The family kept changing while a dossier was taken off it.")

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
        except self._conditional_failed():
            return

    def expire_identity(self, siret: str, user_id: str, not_refreshed_since: str, now: str) -> bool:
        """Drop the pivot identity of a family whose QF has not been refreshed since ``not_refreshed_since``
        (still due from then on): it leaves the refresh cycle; a new dossier brings it back."""
        try:
            self._table.update_item(
                Key={"pk": family_pk(siret), "sk": family_sk(user_id)},
                UpdateExpression="REMOVE pivot_identity, identity_key, pivot_case_id, members, refresh_tenant, next_refresh_at "
                "SET #refresh.#status = :expired, #refresh.last_outcome = :expired, #refresh.last_attempt_at = :now",
                ConditionExpression="attribute_exists(pk) AND next_refresh_at <= :since",
                ExpressionAttributeNames={"#refresh": "refresh", "#status": "status"},
                ExpressionAttributeValues={":expired": "expired", ":since": not_refreshed_since, ":now": now},
            )
        except self._conditional_failed():
            return False
        return True

    # ------------------------------------------------------------------ erasure
    def erase(self, siret: str, user_id: str) -> FamilyRecord | None:
        """Delete the family and its blocking entries; returns what was deleted (to reach links, dossiers).

        The item is deleted first and read in the same request (``ALL_OLD``): a link or dossier
        attached to it before that instant is in what is returned; after it, no write attaches
        anything to it (links and dossiers require the family to exist).
        """
        response = self._table.delete_item(
            Key={"pk": family_pk(siret), "sk": family_sk(user_id)}, ReturnValues="ALL_OLD"
        )
        item = response.get("Attributes")
        if not item:
            return None
        record = _record(siret, item)
        keys, layout = stored_blocking(item)
        self._apply(siret, self._drop_blocking(siret, user_id, keys, layout))
        return record


def family_record(siret: str, item: dict[str, Any]) -> FamilyRecord:
    """A family's record from its item as the table resource returns it."""
    return _record(siret, item)


def _record(siret: str, item: dict[str, Any]) -> FamilyRecord:
    data = plain(item)
    return FamilyRecord.model_validate({**data, "siret": siret, "user_id": str(data["sk"])[2:]})


def sort_history(entries: Iterable[QfEntry]) -> list[QfEntry]:
    """Oldest period first (see ``period_key``)."""
    return sorted(entries, key=period_key)
