"""Identity matching of a dossier against the editor's directory of families.

A wrong automatic link puts one family's tariff on another family's account, so the rules are
built for precision first:

* **Blocking** — candidates are the families where a parent shares the usager's birth date
  (``blocking_keys_for_family`` / ``blocking_key_for_dossier``): the store keeps one index entry
  per parent birth date and matching reads one Query, never the directory.
  ``blocking_keys_for_dossier`` adds the birth dates of the other allocataires (the usager's
  conjoint): it finds the household when only the conjoint is in the directory. Such candidates
  can never be linked automatically (the usager's own birth date does not match), they only reach
  an agent with the reason ``conjoint_only_match``; recall of review goes up, precision cannot
  go down.
* **Scoring** — each family is scored by its best parent: points for birth date, sex, nom de
  naissance / nom d'usage (exact, typo, part of a compound name), first names (exact, same set in
  another order, first names only, overlap, typo), birthplace (COG commune, or country when born
  abroad), then the household as corroboration (children by first name **and** birth date — twins
  share a birth date —, the conjoint). A candidate that fails a *gate* (birth date not exact,
  sex or birthplace contradicting, no name or no first-name evidence) keeps only
  ``GATED_FACTOR`` of its points, which is always below the link threshold: it can be reviewed,
  never linked.
* **Decision** — link only when exactly one candidate is at or above ``MatchPolicy.threshold``
  and leads the next one by ``MatchPolicy.margin``; candidates under ``review_floor`` are not
  shown; no candidate left → ``no_candidate``.

Reasons are stable codes with numeric points, never names or dates: they are shown to agents and
may end up in logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qfbridge.domain.identity import (
    FRANCE_COG,
    DirectoryChild,
    DirectoryParent,
    Family,
    Person,
    PivotIdentity,
    Sexe,
)
from qfbridge.reconcile.normalize import (
    comparable_surname,
    given_name_tokens,
    is_typo_of,
    similarity,
    surname_tokens,
)

ReasonCode = Literal[
    "birthdate_exact",
    "birthdate_close",
    "birthdate_mismatch",
    "sexe_match",
    "sexe_mismatch",
    "nom_naissance_exact",
    "nom_usage_match",
    "nom_naissance_fuzzy",
    "nom_usage_fuzzy",
    "nom_partial",
    "nom_mismatch",
    "prenoms_exact",
    "prenoms_same_set",
    "prenom_first_match",
    "prenoms_overlap",
    "prenom_fuzzy",
    "prenom_mismatch",
    "birthplace_match",
    "birthplace_mismatch",
    "birthcountry_match",
    "birthcountry_mismatch",
    "birthplace_unknown",
    "children_corroborate",
    "conjoint_corroborate",
    "conjoint_only_match",
    "not_auto_linkable",
    "identity_mismatch",
    "household_corroborates",
]

Outcome = Literal["linked", "needs_review", "no_candidate"]

# Points of each piece of evidence (the best a family can get is capped at 1.0).
POINTS: dict[str, float] = {
    "birthdate_exact": 0.35,
    "birthdate_close": 0.10,
    "sexe_match": 0.05,
    "nom_naissance_exact": 0.25,
    "nom_usage_match": 0.25,
    "nom_naissance_fuzzy": 0.15,
    "nom_usage_fuzzy": 0.15,
    "nom_partial": 0.15,
    "prenoms_exact": 0.25,
    "prenoms_same_set": 0.22,
    "prenom_first_match": 0.17,
    "prenoms_overlap": 0.12,
    "prenom_fuzzy": 0.10,
    "birthplace_match": 0.05,
    "birthcountry_match": 0.05,
    "children_corroborate": 0.10,  # once, however many children agree
    "conjoint_corroborate": 0.05,
}
# A candidate that fails a gate keeps this share of its points: 0.6 x 1.0 < any valid threshold.
GATED_FACTOR = 0.6
# Score given to a household found only through the usager's conjoint (review only).
CONJOINT_ONLY_SCORE = 0.55

_NOM_EVIDENCE = {
    "nom_naissance_exact",
    "nom_usage_match",
    "nom_naissance_fuzzy",
    "nom_usage_fuzzy",
    "nom_partial",
}
_PRENOM_EVIDENCE = {
    "prenoms_exact",
    "prenoms_same_set",
    "prenom_first_match",
    "prenoms_overlap",
    "prenom_fuzzy",
}
_GATE_BREAKERS = {
    "birthdate_close",
    "birthdate_mismatch",
    "sexe_mismatch",
    "birthplace_mismatch",
    "birthcountry_mismatch",
}


class Reason(BaseModel):
    """One piece of evidence: a stable code and the points it brought (no personal data)."""

    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    points: float = 0.0
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)


class CandidateScore(BaseModel):
    """How well one family of the directory matches the dossier."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    score: float = Field(ge=0.0, le=1.0)
    reasons: list[Reason]
    matched_parent: int | None = Field(
        default=None, description="Index in Family.parents of the parent that matched the usager best"
    )


class MatchPolicy(BaseModel):
    """When a match is confident enough to link without an agent.

    * ``threshold`` 0.85: an exact birth date, sex, surname and first names give 0.90; one weaker
      element (a surname typo, only the first of several first names) needs one corroboration
      (birthplace, a child, the conjoint) to reach it.
    * ``margin`` 0.15: more than the children's corroboration (0.10) so that
      two people with the same name and birth date are never told apart by their children alone.
    * ``review_floor`` 0.35: candidates below it are not worth an agent's time (someone who only
      shares the birth date and the sex scores 0.24); a woman known to the directory under her
      married name only, with CAF unaware of it (birth date, sex and first names: 0.39), still
      reaches an agent.
    """

    model_config = ConfigDict(frozen=True)

    threshold: float = Field(default=0.85, gt=GATED_FACTOR, le=1.0)
    margin: float = Field(default=0.15, ge=0.0, le=1.0)
    review_floor: float = Field(default=0.35, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _floor_below_threshold(self) -> MatchPolicy:
        if self.review_floor >= self.threshold:
            raise ValueError("review_floor must be below threshold")
        return self


class MatchDecision(BaseModel):
    """Outcome of identity matching for one dossier."""

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    user_id: str | None = None
    candidates: list[CandidateScore] = Field(default_factory=list, description="Best first")


class CrossCheck(BaseModel):
    """Whether a family reached through a verified external_id is plausibly the usager's."""

    model_config = ConfigDict(frozen=True)

    strong_mismatch: bool
    reasons: list[Reason]


class DossierIdentity(BaseModel):
    """The usager and household as the dossier describes them, ready to be matched."""

    model_config = ConfigDict(frozen=True)

    nom_naissance: str = Field(min_length=1)
    nom_usage: str | None = None
    prenoms: str = Field(min_length=1)
    sexe: Sexe
    date_naissance: dt.date
    code_cog_naissance: str | None = None
    code_pays_naissance: str = FRANCE_COG
    conjoints: tuple[Person, ...] = ()
    enfants: tuple[Person, ...] = ()

    @classmethod
    def from_parts(
        cls, pivot: PivotIdentity, allocataires: Sequence[Person], enfants: Sequence[Person]
    ) -> DossierIdentity:
        """Build from the parsed dossier: the pivot identity is the usager; the allocataire that is
        the same person gives the nom d'usage; the other allocataires are the conjoint(s)."""
        usager = _usager_allocataire(pivot, allocataires)
        nom_usage = None
        if (
            usager is not None
            and usager.nom_usage
            and comparable_surname(usager.nom_usage) != comparable_surname(pivot.family_name)
        ):
            nom_usage = usager.nom_usage
        conjoints = tuple(a for a in allocataires if a is not usager)
        return cls(
            nom_naissance=pivot.family_name,
            nom_usage=nom_usage,
            prenoms=pivot.given_name,
            sexe=pivot.sexe,
            date_naissance=pivot.birthdate,
            code_cog_naissance=None if pivot.born_abroad else pivot.birthplace,
            code_pays_naissance=pivot.birthcountry,
            conjoints=conjoints,
            enfants=tuple(enfants),
        )


def _usager_allocataire(pivot: PivotIdentity, allocataires: Sequence[Person]) -> Person | None:
    """The allocataire who is the usager: same birth date, same (or typo'd) birth name, a common
    first name. When several qualify the exact surname wins; none → None."""
    pivot_nom = comparable_surname(pivot.family_name)
    pivot_prenoms = set(given_name_tokens(pivot.given_name))
    best: tuple[int, Person] | None = None
    for allocataire in allocataires:
        if allocataire.date_naissance != pivot.birthdate:
            continue
        if not pivot_prenoms & set(given_name_tokens(allocataire.prenoms)):
            continue
        nom = comparable_surname(allocataire.nom_naissance)
        rank = 2 if nom == pivot_nom else 1 if is_typo_of(nom, pivot_nom) else 0
        if rank and (best is None or rank > best[0]):
            best = (rank, allocataire)
    return best[1] if best else None


# --- blocking -------------------------------------------------------------------------------


def blocking_keys_for_family(family: Family) -> set[str]:
    """Index keys of a family: the ISO birth date of each parent."""
    return {parent.date_naissance.isoformat() for parent in family.parents}


def blocking_key_for_dossier(identity: DossierIdentity) -> str:
    """The key to Query for a dossier: the usager's ISO birth date."""
    return identity.date_naissance.isoformat()


def blocking_keys_for_dossier(identity: DossierIdentity) -> set[str]:
    """The usager's key plus the conjoints' birth dates (finds a household known only through the
    conjoint; such candidates are review-only, see the module docstring)."""
    keys = {blocking_key_for_dossier(identity)}
    keys.update(c.date_naissance.isoformat() for c in identity.conjoints if c.date_naissance)
    return keys


# --- comparing people --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Profile:
    """Normalised view of one person (dossier side or directory side)."""

    nom_naissance: str
    nom_usage: str
    nom_naissance_tokens: tuple[str, ...]
    nom_usage_tokens: tuple[str, ...]
    prenoms: tuple[str, ...]
    sexe: Sexe | None
    date_naissance: dt.date | None
    cog: str | None
    pays: str | None


def _profile_of_dossier(identity: DossierIdentity) -> _Profile:
    return _Profile(
        nom_naissance=comparable_surname(identity.nom_naissance),
        nom_usage=comparable_surname(identity.nom_usage),
        nom_naissance_tokens=surname_tokens(identity.nom_naissance),
        nom_usage_tokens=surname_tokens(identity.nom_usage),
        prenoms=given_name_tokens(identity.prenoms),
        sexe=identity.sexe,
        date_naissance=identity.date_naissance,
        cog=identity.code_cog_naissance,
        pays=identity.code_pays_naissance,
    )


def _profile_of_person(person: Person) -> _Profile:
    return _Profile(
        nom_naissance=comparable_surname(person.nom_naissance),
        nom_usage=comparable_surname(person.nom_usage),
        nom_naissance_tokens=surname_tokens(person.nom_naissance),
        nom_usage_tokens=surname_tokens(person.nom_usage),
        prenoms=given_name_tokens(person.prenoms),
        sexe=person.sexe,
        date_naissance=person.date_naissance,
        cog=None,
        pays=None,
    )


def _profile_of_parent(parent: DirectoryParent) -> _Profile:
    pays = parent.code_pays_naissance
    if pays is None and parent.code_cog_naissance is not None:
        pays = FRANCE_COG
    return _Profile(
        nom_naissance=comparable_surname(parent.nom_naissance),
        nom_usage=comparable_surname(parent.nom_usage),
        nom_naissance_tokens=surname_tokens(parent.nom_naissance),
        nom_usage_tokens=surname_tokens(parent.nom_usage),
        prenoms=given_name_tokens(parent.prenoms),
        sexe=parent.sexe,
        date_naissance=parent.date_naissance,
        cog=parent.code_cog_naissance,
        pays=pays,
    )


def _reason(code: ReasonCode, sim: float | None = None) -> Reason:
    return Reason(code=code, points=POINTS.get(code, 0.0), similarity=None if sim is None else round(sim, 4))


def _compare_birthdate(left: dt.date | None, right: dt.date | None) -> Reason:
    if left is None or right is None:
        return _reason("birthdate_mismatch")
    if left == right:
        return _reason("birthdate_exact")
    swapped = left.year == right.year and left.month == right.day and left.day == right.month
    one_field = sum((left.year != right.year, left.month != right.month, left.day != right.day)) == 1
    return _reason("birthdate_close" if swapped or one_field else "birthdate_mismatch")


def _compare_surnames(d: _Profile, p: _Profile) -> Reason:
    """Nom de naissance and nom d'usage on both sides: exact, then typo, then compound part."""
    if d.nom_naissance == p.nom_naissance:
        return _reason("nom_naissance_exact")
    d_names = [(d.nom_naissance, d.nom_naissance_tokens, False), (d.nom_usage, d.nom_usage_tokens, True)]
    p_names = [(p.nom_naissance, p.nom_naissance_tokens, False), (p.nom_usage, p.nom_usage_tokens, True)]
    pairs = [(dn, pn) for dn in d_names if dn[0] for pn in p_names if pn[0]]
    if any(dn[0] == pn[0] for dn, pn in pairs):
        return _reason("nom_usage_match")
    best: Reason | None = None
    for (d_name, _, d_usage), (p_name, _, p_usage) in pairs:
        if is_typo_of(d_name, p_name):
            sim = similarity(d_name, p_name)
            code: ReasonCode = "nom_usage_fuzzy" if d_usage or p_usage else "nom_naissance_fuzzy"
            if best is None or (best.similarity or 0.0) < sim:
                best = _reason(code, sim)
    if best is not None:
        return best
    for (_, d_tokens, _), (_, p_tokens, _) in pairs:
        shorter, longer = sorted((set(d_tokens), set(p_tokens)), key=len)
        if shorter and len(longer) > len(shorter) and shorter <= longer:
            return _reason("nom_partial")
    return _reason("nom_mismatch")


def _compare_given_names(left: tuple[str, ...], right: tuple[str, ...]) -> Reason:
    """Several first names, in any order; the directory often keeps only the usual one."""
    if not left or not right:
        return _reason("prenom_mismatch")
    if left == right:
        return _reason("prenoms_exact")
    if sorted(left) == sorted(right):
        return _reason("prenoms_same_set")
    shorter, longer = sorted((left, right), key=len)
    if longer[: len(shorter)] == shorter:
        return _reason("prenom_first_match")
    if set(left) & set(right):
        return _reason("prenoms_overlap")
    typos = [similarity(a, b) for a in left for b in right if is_typo_of(a, b)]
    if typos:
        return _reason("prenom_fuzzy", max(typos))
    return _reason("prenom_mismatch")


def _compare_birthplace(d: _Profile, p: _Profile) -> Reason:
    if d.cog and p.cog:
        return _reason("birthplace_match" if d.cog == p.cog else "birthplace_mismatch")
    if d.pays and p.pays:
        if d.pays != p.pays:
            return _reason("birthcountry_mismatch")
        if d.pays != FRANCE_COG:
            return _reason("birthcountry_match")
    return _reason("birthplace_unknown")


def _compare_person(d: _Profile, p: _Profile) -> list[Reason]:
    reasons = [_compare_birthdate(d.date_naissance, p.date_naissance)]
    if d.sexe and p.sexe:
        reasons.append(_reason("sexe_match" if d.sexe == p.sexe else "sexe_mismatch"))
    reasons.append(_compare_surnames(d, p))
    reasons.append(_compare_given_names(d.prenoms, p.prenoms))
    reasons.append(_compare_birthplace(d, p))
    return reasons


def _passes_gates(reasons: Iterable[Reason]) -> bool:
    codes = {r.code for r in reasons}
    return (
        "birthdate_exact" in codes
        and not codes & _GATE_BREAKERS
        and bool(codes & _NOM_EVIDENCE)
        and bool(codes & _PRENOM_EVIDENCE)
    )


def _same_person_as_conjoint(conjoint: _Profile, parent: _Profile) -> bool:
    return _passes_gates(_compare_person(conjoint, parent))


def _matched_children(dossier_enfants: Sequence[Person], directory_enfants: Sequence[DirectoryChild]) -> int:
    """Children present on both sides: same birth date AND first names agreeing (twins share a
    birth date, so the date alone never pairs a child). One-to-one, exact names paired first."""
    remaining = list(directory_enfants)
    dossier = [(e.date_naissance, given_name_tokens(e.prenoms)) for e in dossier_enfants if e.date_naissance]
    matched = 0
    for strict in (True, False):
        unmatched = []
        for date, prenoms in dossier:
            found = None
            for child in remaining:
                if child.date_naissance != date:
                    continue
                reason = _compare_given_names(prenoms, given_name_tokens(child.prenoms))
                ok = reason.code == "prenoms_exact" if strict else reason.code in _PRENOM_EVIDENCE
                if ok:
                    found = child
                    break
            if found is None:
                unmatched.append((date, prenoms))
            else:
                remaining.remove(found)
                matched += 1
        dossier = unmatched
    return matched


# --- scoring and deciding ------------------------------------------------------------------------


def score_candidate(identity: DossierIdentity, family: Family) -> CandidateScore:
    """Score one family: its best parent against the usager, then household corroboration."""
    usager = _profile_of_dossier(identity)
    parents = [_profile_of_parent(p) for p in family.parents]
    compared = [_compare_person(usager, parent) for parent in parents]

    def rank(index: int) -> tuple[bool, float]:
        return (_passes_gates(compared[index]), sum(r.points for r in compared[index]))

    best_index = max(range(len(parents)), key=rank)
    reasons = list(compared[best_index])
    gates_ok = _passes_gates(reasons)

    children = _matched_children(identity.enfants, family.enfants)
    if children:
        reasons.append(_reason("children_corroborate"))

    conjoints = [_profile_of_person(c) for c in identity.conjoints]
    other_parents = [p for i, p in enumerate(parents) if i != best_index or not gates_ok]
    conjoint_found = any(_same_person_as_conjoint(c, p) for c in conjoints for p in other_parents)
    if conjoint_found and gates_ok:
        reasons.append(_reason("conjoint_corroborate"))

    raw = min(1.0, sum(r.points for r in reasons))
    if gates_ok:
        score = raw
    else:
        score = raw * GATED_FACTOR
        reasons.append(Reason(code="not_auto_linkable", points=round(score - raw, 4)))
        if conjoint_found and score < CONJOINT_ONLY_SCORE:
            reasons.append(Reason(code="conjoint_only_match", points=round(CONJOINT_ONLY_SCORE - score, 4)))
            score = CONJOINT_ONLY_SCORE
    return CandidateScore(
        user_id=family.user_id, score=round(score, 4), reasons=reasons, matched_parent=best_index
    )


def decide(
    identity: DossierIdentity, candidates: Iterable[Family], *, policy: MatchPolicy | None = None
) -> MatchDecision:
    """Link only when exactly one candidate is confidently above the threshold with a clear margin."""
    policy = policy or MatchPolicy()
    best_by_user: dict[str, CandidateScore] = {}
    for family in candidates:
        scored = score_candidate(identity, family)
        known = best_by_user.get(scored.user_id)
        if known is None or scored.score > known.score:
            best_by_user[scored.user_id] = scored
    ranked = sorted(best_by_user.values(), key=lambda c: (-c.score, c.user_id))
    shown = [c for c in ranked if c.score >= policy.review_floor]
    if not shown:
        return MatchDecision(outcome="no_candidate")
    top = ranked[0]
    runner_up = ranked[1].score if len(ranked) > 1 else 0.0
    # Compare with a small tolerance so that float sums never decide a borderline case.
    epsilon = 1e-9
    if top.score + epsilon >= policy.threshold and top.score - runner_up + epsilon >= policy.margin:
        return MatchDecision(outcome="linked", user_id=top.user_id, candidates=shown)
    return MatchDecision(outcome="needs_review", candidates=shown)


def cross_check(identity: DossierIdentity, family: Family) -> CrossCheck:
    """For a family reached through a verified external_id: is the dossier someone else entirely?

    The link was issued to that family's account, so the bar is low: the usager resembles one of
    its parents (two of birth date / surname / first names, sex not contradicting), or the
    household does (the conjoint is a parent, or a child matches). Otherwise — a different
    person in a different household — ``strong_mismatch`` sends the dossier to review.
    """
    usager = _profile_of_dossier(identity)
    parents = [_profile_of_parent(p) for p in family.parents]
    best: list[Reason] = []
    best_agreements = -1
    for parent in parents:
        reasons = _compare_person(usager, parent)
        codes = {r.code for r in reasons}
        agreements = sum(
            (
                "birthdate_exact" in codes,
                bool(codes & _NOM_EVIDENCE),
                bool(codes & _PRENOM_EVIDENCE),
            )
        )
        if "sexe_mismatch" in codes:
            agreements = min(agreements, 1)
        if agreements > best_agreements:
            best, best_agreements = reasons, agreements
    person_agrees = best_agreements >= 2
    conjoints = [_profile_of_person(c) for c in identity.conjoints]
    conjoint_found = any(_same_person_as_conjoint(c, p) for c in conjoints for p in parents)
    children = _matched_children(identity.enfants, family.enfants)
    reasons = list(best)
    if conjoint_found:
        reasons.append(_reason("conjoint_corroborate"))
    if children:
        reasons.append(Reason(code="children_corroborate", points=0.0))
    household_agrees = conjoint_found or children > 0
    if household_agrees and not person_agrees:
        reasons.append(Reason(code="household_corroborates"))
    strong = not person_agrees and not household_agrees
    if strong:
        reasons.append(Reason(code="identity_mismatch"))
    return CrossCheck(strong_mismatch=strong, reasons=reasons)
