"""What the pipeline keeps of a dossier between its steps, how a dossier is linked to a family,
and the QF event.

Shared by intake (reconcile), review (api) and the refresh: light on purpose, the api function
imports it at cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qfbridge.domain.dossier import ParsedDossier
from qfbridge.domain.errors import QfbridgeError
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.dossiers import DossierExists, DossierPatch, FamilyChanged, Step
from qfbridge.store.families import (
    QF_WRITE_ATTEMPTS,
    FamilyBusy,
    FamilyGone,
    FamilyRecord,
    FamilyRepository,
    QfEntry,
    identity_key,
    merge_entry,
)

if TYPE_CHECKING:
    import datetime as dt

    from qfbridge.store.dossiers import DossierRecord, DossierRepository


def dossier_snapshot(parsed: ParsedDossier) -> dict[str, Any]:
    """What review needs later, stored on the dossier record (erased with the family)."""
    return {
        "external_id": parsed.external_id,
        "pivot_identity": parsed.pivot_identity.model_dump(mode="json"),
        "quotient_familial": parsed.quotient_familial.model_dump(mode="json")
        if parsed.quotient_familial
        else None,
        "allocataires": [p.model_dump(mode="json") for p in parsed.allocataires],
        "enfants": [p.model_dump(mode="json") for p in parsed.enfants],
        "source_version": parsed.source_version,
    }


def snapshot_parsed(snapshot: dict[str, Any]) -> ParsedDossier:
    return ParsedDossier(
        external_id=snapshot.get("external_id"),
        pivot_identity=PivotIdentity.model_validate(snapshot["pivot_identity"]),
        quotient_familial=(
            QuotientFamilial.model_validate(snapshot["quotient_familial"])
            if snapshot.get("quotient_familial")
            else None
        ),
        allocataires=tuple(Person.model_validate(p) for p in snapshot.get("allocataires", [])),
        enfants=tuple(Person.model_validate(p) for p in snapshot.get("enfants", [])),
        source_version=snapshot.get("source_version", "v3"),
    )


def members_of(parsed: ParsedDossier) -> dict[str, Any]:
    return {
        "allocataires": [p.model_dump(mode="json") for p in parsed.allocataires],
        "enfants": [p.model_dump(mode="json") for p in parsed.enfants],
    }


class IdentityConflict(QfbridgeError):
    """The family already holds another person's pivot identity and no directory identity vouches for
    the newcomer: an automatic link would hand the family to a stranger, so the dossier goes to review."""

    code = "identity_conflict"


@dataclass(frozen=True)
class LinkResult:
    applied: bool
    """False when an earlier attempt had already applied it."""
    qf: QfEntry | None = None
    """The family's current QF right after this link (None when not applied here)."""


def persist_link(
    families: FamilyRepository,
    dossiers: DossierRepository,
    record: DossierRecord,
    parsed: ParsedDossier,
    user_id: str,
    *,
    source: str,
    now: dt.datetime,
    patch: DossierPatch,
    steps: tuple[Step, ...] = (Step.PERSISTED,),
    guard_identity: bool = False,
    current: FamilyRecord | None = None,
    lease: float | None = None,
) -> LinkResult:
    """Store the dossier's QF, pivot identity and members on the family and the link on the dossier,
    in one transaction (``DossierRepository.persist_link_transaction``), journaling ``steps`` (the
    first one conditions it) with ``patch``.

    The family must exist (``FamilyGone`` otherwise: a link never creates or recreates a family).
    The transaction is conditioned on the family as read (``current`` when the caller just read it,
    else read here); a concurrent write makes it fail and it is read and tried again.
    ``guard_identity`` (automatic links): a family without a directory identity that already holds a
    different pivot identity raises ``IdentityConflict``. ``lease`` fences the dossier's write with
    the processing lease the caller holds (``LeaseLost``).
    """
    from qfbridge.domain.schedule import next_refresh_date

    if parsed.quotient_familial is None:
        raise ValueError("a dossier without a quotient familial cannot be linked")
    entry = QfEntry(
        quotient_familial=parsed.quotient_familial,
        source=source,
        source_id=record.case_id,
        received_at=now.isoformat(),
    )
    key = identity_key(parsed.pivot_identity)
    patch = patch.merged(DossierPatch(tenant_siret=record.tenant_siret, outcome="linked", user_id=user_id))
    for attempt in range(QF_WRITE_ATTEMPTS):
        if attempt or current is None:
            current = families.get(record.tenant_siret, user_id)
        if current is None:
            raise FamilyGone("No such family for this tenant.")
        if record.case_id in current.case_ids:
            # An earlier attempt linked it (the family holds this dossier): record the dossier alone.
            if not record.stored:
                raise DossierExists(f"Case {record.case_id} was linked by another delivery.")
            return LinkResult(
                dossiers.mark_once(record.case_id, steps[0], now, patch, also=steps[1:]) is not None
            )
        if (
            guard_identity
            and current.family is None
            and current.identity_key is not None
            and current.identity_key != key
        ):
            raise IdentityConflict("The family holds another person's identity.")
        update = families.link_update(
            record.tenant_siret,
            user_id,
            pivot=parsed.pivot_identity,
            entry=entry,
            members=members_of(parsed),
            case_id=record.case_id,
            next_refresh_at=next_refresh_date(now.date()).isoformat(),
            current=current,
        )
        try:
            applied = dossiers.persist_link_transaction(record, update, now, steps, patch, lease=lease)
        except FamilyChanged:
            continue
        return LinkResult(applied, merge_entry(current, entry).current if applied else None)
    raise FamilyBusy("The family kept changing while the dossier was linked.")
