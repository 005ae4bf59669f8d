"""What the pipeline keeps of a dossier between its steps, and the QF event's detail.

Shared by intake (reconcile), review (api) and the refresh: light on purpose, the api function
imports it at cold start.
"""

from __future__ import annotations

from typing import Any

from qfbridge.domain.dossier import ParsedDossier
from qfbridge.domain.identity import Person, PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.store.families import QfEntry


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
