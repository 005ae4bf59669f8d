"""What the pipeline keeps of a dossier between its steps, how a dossier is linked to a family,
and the QF event's detail.

Shared by intake (reconcile), review (api) and the refresh: light on purpose, the api function
imports it at cold start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qfbridge.domain.dossier import ParsedDossier
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.families import FamilyRepository, QfEntry

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


def qf_event_detail(siret: str, user_id: str, entry: QfEntry, previous: int | None = None) -> dict[str, Any]:
    qf = entry.quotient_familial
    detail: dict[str, Any] = {
        "tenant_siret": siret,
        "user_id": user_id,
        "quotient_familial": qf.valeur,
        "fournisseur": qf.fournisseur,
        "annee": qf.annee,
        "mois": qf.mois,
        "source": entry.source,
        "received_at": entry.received_at,
    }
    if previous is not None:
        detail["previous_quotient_familial"] = previous
    return detail


def persist_link(
    families: FamilyRepository,
    dossiers: DossierRepository,
    record: DossierRecord,
    parsed: ParsedDossier,
    user_id: str,
    *,
    source: str,
    now: dt.datetime,
    step: str = "persisted",
    **fields: Any,
) -> bool:
    """Store the dossier's QF, pivot identity and members on the family and the link on the dossier,
    in one transaction (``DossierRepository.persist_link_transaction``); False if already applied."""
    from qfbridge.domain.schedule import next_refresh_date

    if parsed.quotient_familial is None:
        raise ValueError("a dossier without a quotient familial cannot be linked")
    if families.get(record.tenant_siret, user_id) is None:
        # A link to an account the directory does not know yet: create the family shell.
        families.ensure_exists(record.tenant_siret, user_id)
    entry = QfEntry(
        quotient_familial=parsed.quotient_familial,
        source=source,
        source_id=record.case_id,
        received_at=now.isoformat(),
    )
    update = families.link_update(
        record.tenant_siret,
        user_id,
        pivot=parsed.pivot_identity,
        entry=entry,
        members=members_of(parsed),
        case_id=record.case_id,
        next_refresh_at=next_refresh_date(now.date()).isoformat(),
    )
    return dossiers.persist_link_transaction(
        record, update, now, step=step, outcome="linked", user_id=user_id, **fields
    )
