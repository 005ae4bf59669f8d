"""Reconciliation of dossiers with the editor's families: name normalisation and identity matching."""

from qfbridge.reconcile.matching import (
    CandidateScore,
    CrossCheck,
    DossierIdentity,
    MatchDecision,
    MatchPolicy,
    Reason,
    blocking_key_for_dossier,
    blocking_keys_for_dossier,
    blocking_keys_for_family,
    cross_check,
    decide,
    score_candidate,
)

__all__ = [
    "CandidateScore",
    "CrossCheck",
    "DossierIdentity",
    "MatchDecision",
    "MatchPolicy",
    "Reason",
    "blocking_key_for_dossier",
    "blocking_keys_for_dossier",
    "blocking_keys_for_family",
    "cross_check",
    "decide",
    "score_candidate",
]
