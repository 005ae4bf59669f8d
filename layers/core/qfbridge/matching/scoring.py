"""Identity matching of a dossier against the editor's directory of families.

A wrong automatic link puts one family's tariff on another family's account, so the rules are
built for precision first:

* **Blocking** — the store keeps one index entry per distinct birth date of a family's members
  (parents **and** children) and one per name key of each parent (folded surname — nom de
  naissance and nom d'usage — and first prénom): ``blocking_keys_for_family``. Matching reads the
  families under every distinct birth date of the dossier's household at once
  (``blocking_keys_for_dossier``: the usager's, the other allocataires', the children's), never the
  directory: a household the directory knows through the other parent or the children is found even
  when the usager's own record is missing or carries a typo. Only when that gives no link, a second,
  bounded read on the usager's name keys (``name_keys_for_dossier``, at most ``NAME_KEY_LIMIT``
  families per key) adds namesakes born another day to the review list (reason ``found_by_name``);
  they are never linked. The store answers with ``Candidate``s: what scoring reads, names folded
  once when the directory was written (``encode_candidate``).
* **Scoring** — each family is scored with named reasons. The usager against the best parent
  that is not the dossier's conjoint: points for birth date, sex, nom de naissance / nom d'usage
  (exact, typo, part of a compound name), first names (exact, same set in another order, first
  names only, overlap, typo), birthplace (COG commune, or country when born abroad). A usager
  that fails a *gate* (birth date not exact, sex or birthplace contradicting, no name or no
  first-name evidence) keeps only ``GATED_FACTOR`` of those points. Then the household, uncapped:
  the dossier's other allocataire matching a parent exactly (``conjoint_match``), each child
  matching on first names **and** birth date (``child_match`` — twins share a birth date, the
  date alone never pairs a child); and what contradicts it costs points: the usager's partner in
  the family is not the conjoint the dossier names (``other_parent_mismatch``; a family holding the
  conjoint but not the usager may hold the conjoint's former partner), children on both sides of
  which none pairs (``children_contradict``).
* **Decision** (``decide``) — a family is linked automatically by one of two rules, never else:

  1. *identity*: its usager passes the gates, nothing contradicts, its score is at least
     ``MatchPolicy.threshold`` and it leads every other family by ``MatchPolicy.margin`` — on the
     whole score **and** on the usager's own points (a household can not tell two identical
     usagers apart under this rule), and no other family holds the dossier's conjoint (but for the
     conjoint's family of a former union: without the usager, its children contradicting);
  2. *household*: exactly one family is **designated by the household** — nothing in it
     contradicts the dossier, and the conjoint matches a parent exactly, or several children match
     exactly, together with one more piece (the usager, even weakly — a typo'd birth date, another
     spelling of the name — the conjoint, or a child) — and no other family remains plausible
     (holding the conjoint — unless it is the conjoint's family of a former union: without the
     usager, its children contradicting the dossier's —, several of the children, the usager
     with a child, or — when the designated family lacks the usager's exact identity — the
     usager alone, with nothing contradicting).

  Otherwise the dossier goes to review: two families plausible, only children matching
  (grandparents, guardians), only the conjoint, anything contradicting. A family sharing only a
  date with the dossier (``_Screen``) is not scored: it can change no decision. Candidates under
  ``review_floor`` are not shown, unless they hold the conjoint or a child, or were found by name;
  none left → ``no_candidate``.

Reasons are stable codes with numeric points, never names or dates: they are shown to agents and
may end up in logs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
from qfbridge.matching.normalize import (
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
    "usager_absent",
    "usager_contradicts",
    "children_corroborate",
    "conjoint_corroborate",
    "conjoint_match",
    "child_match",
    "child_partial",
    "other_parent_mismatch",
    "children_contradict",
    "conjoint_only_match",
    "children_only_match",
    "household_designates",
    "found_by_name",
    "not_auto_linkable",
    "identity_mismatch",
    "household_corroborates",
]

Outcome = Literal["linked", "needs_review", "no_candidate"]
LinkRule = Literal["identity", "household"]

# Points of each piece of evidence. A family's score is their sum: it is not capped, so the
# household's evidence is never hidden, and what contradicts the dossier costs points.
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
    "conjoint_match": 0.20,
    "child_match": 0.10,  # per child, at most MAX_CHILDREN_COUNTED of them
    "child_partial": 0.05,  # same birth date, first names only overlapping
    "other_parent_mismatch": -0.20,
    "children_contradict": -0.10,
    # cross_check's corroborations
    "children_corroborate": 0.10,
    "conjoint_corroborate": 0.05,
}
MAX_CHILDREN_COUNTED = 3
# A usager that fails a gate keeps this share of its points: 0.6 x 0.95 < any valid threshold.
GATED_FACTOR = 0.6
# Children's birth dates read per dossier (each one Query): more children than this are rare.
MAX_CHILD_KEYS = 6
# The second, review-only read: families per name key (one Query each, never paginated).
NAME_KEY_LIMIT = 20
NAME_KEY_PREFIX = "name:"

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
_CONTRADICTING_FACTS = {"sexe_mismatch", "birthplace_mismatch", "birthcountry_mismatch"}
_GATE_BREAKERS = {"birthdate_close", "birthdate_mismatch", *_CONTRADICTING_FACTS}


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
    score: float = Field(ge=0.0, description="Sum of the reasons' points, not capped")
    reasons: list[Reason]
    matched_parent: int | None = Field(
        default=None,
        description="Index in Family.parents of the parent that matched the usager best (None: absent)",
    )


class MatchPolicy(BaseModel):
    """When a match is confident enough to link without an agent.

    * ``threshold`` 0.85: an exact birth date, sex, surname and first names give 0.90; one weaker
      element (a surname typo, only the first of several first names) needs one corroboration
      (birthplace, a child, the conjoint) to reach it.
    * ``margin`` 0.15: more than one child's corroboration (0.10) so that two people with the same
      name and birth date are never told apart by one child alone; under the identity rule the
      usager's own points must lead by it too.
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
    rule: LinkRule | None = Field(default=None, description="Which rule linked (None: not linked)")
    candidates: list[CandidateScore] = Field(
        default_factory=list, description="The linked one, then best first"
    )


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


def name_key(surname: str | None, prenoms: str | None) -> str | None:
    """``name:<folded surname>:<first prénom>``; None when either is empty."""
    nom = comparable_surname(surname)
    tokens = given_name_tokens(prenoms)
    if not nom or not tokens:
        return None
    return f"{NAME_KEY_PREFIX}{nom}:{tokens[0]}"


def is_name_key(key: str) -> bool:
    return key.startswith(NAME_KEY_PREFIX)


def blocking_keys_for_family(family: Family) -> set[str]:
    """Index keys of a family: the ISO birth date of each parent and each child, and the name keys
    of each parent (nom de naissance and nom d'usage, with the first prénom)."""
    keys = {parent.date_naissance.isoformat() for parent in family.parents}
    keys.update(child.date_naissance.isoformat() for child in family.enfants)
    for parent in family.parents:
        for surname in (parent.nom_naissance, parent.nom_usage):
            key = name_key(surname, parent.prenoms)
            if key is not None:
                keys.add(key)
    return keys


def blocking_key_for_dossier(identity: DossierIdentity) -> str:
    """The usager's own key: their ISO birth date."""
    return identity.date_naissance.isoformat()


def blocking_keys_for_dossier(identity: DossierIdentity) -> set[str]:
    """The birth dates to Query, one Query each: the usager's, the other allocataires', and the
    children's (at most ``MAX_CHILD_KEYS`` distinct dates, earliest first)."""
    keys = {blocking_key_for_dossier(identity)}
    keys.update(c.date_naissance.isoformat() for c in identity.conjoints if c.date_naissance)
    children = sorted({e.date_naissance for e in identity.enfants if e.date_naissance})
    keys.update(date.isoformat() for date in children[:MAX_CHILD_KEYS])
    return keys


def name_keys_for_dossier(identity: DossierIdentity) -> set[str]:
    """The usager's name keys (birth name, and nom d'usage when CAF gives one): at most two, read
    only for the review list."""
    keys = {
        name_key(identity.nom_naissance, identity.prenoms),
        name_key(identity.nom_usage, identity.prenoms),
    }
    return {k for k in keys if k is not None}


DirectoryRead = Callable[[Sequence[str], int | None], Sequence["Family | Candidate"]]
"""Reads the directory: the families under the keys (the store answers with ``Candidate``s, what
scoring reads), at most ``limit`` per key when a limit is given."""


def match(
    identity: DossierIdentity, read: DirectoryRead, *, policy: MatchPolicy | None = None
) -> MatchDecision:
    """What reconcile does: the blocking reads on the household's birth dates, ``decide``; when that
    links nothing, the bounded name-key read adds namesakes for the agent (never linked)."""
    date_keys = sorted(blocking_keys_for_dossier(identity))
    found = read(date_keys, None)
    decision = decide(identity, found, policy=policy)
    if decision.outcome == "linked":
        return decision
    by_name = read(sorted(name_keys_for_dossier(identity)), NAME_KEY_LIMIT)
    if not by_name:
        return decision
    return decide(identity, found, policy=policy, by_name=by_name)


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


def _profile(
    nom_naissance: str | None,
    nom_usage: str | None,
    prenoms: str | None,
    sexe: Sexe | None,
    date_naissance: dt.date | None,
    cog: str | None = None,
    pays: str | None = None,
) -> _Profile:
    return _Profile(
        nom_naissance=comparable_surname(nom_naissance),
        nom_usage=comparable_surname(nom_usage),
        nom_naissance_tokens=surname_tokens(nom_naissance),
        nom_usage_tokens=surname_tokens(nom_usage),
        prenoms=given_name_tokens(prenoms),
        sexe=sexe,
        date_naissance=date_naissance,
        cog=cog,
        pays=pays,
    )


def _profile_of_dossier(identity: DossierIdentity) -> _Profile:
    return _profile(
        identity.nom_naissance,
        identity.nom_usage,
        identity.prenoms,
        identity.sexe,
        identity.date_naissance,
        identity.code_cog_naissance,
        identity.code_pays_naissance,
    )


def _profile_of_person(person: Person) -> _Profile:
    return _profile(
        person.nom_naissance, person.nom_usage, person.prenoms, person.sexe, person.date_naissance
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


_REASONS: dict[tuple[str, float | None], Reason] = {}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A directory family as scoring reads it: its parents normalised, its children's birth dates and
    first-name tokens. The store keeps it, normalised once when the directory is written
    (``encode_candidate``), in the blocking entries; ``candidate_of`` builds it from a ``Family``."""

    user_id: str
    parents: tuple[_Profile, ...]
    children: tuple[_ChildKey, ...]


def candidate_of(family: Family) -> Candidate:
    return Candidate(
        user_id=family.user_id,
        parents=tuple(_profile_of_parent(p) for p in family.parents),
        children=tuple((c.date_naissance, given_name_tokens(c.prenoms)) for c in family.enfants),
    )


def _as_candidate(family: Family | Candidate) -> Candidate:
    return family if isinstance(family, Candidate) else candidate_of(family)


def encode_candidate(family: Family) -> str:
    """What a blocking entry carries: the family's ``Candidate`` as compact JSON — per parent its
    surname tokens (birth name, nom d'usage), first-name tokens, sex, birth date, COG, country; per
    child its birth date and first-name tokens (a subset of the family item's identity)."""
    candidate = candidate_of(family)
    parents = [
        [
            list(p.nom_naissance_tokens),
            list(p.nom_usage_tokens),
            list(p.prenoms),
            p.sexe,
            p.date_naissance.isoformat() if p.date_naissance else None,
            p.cog,
            p.pays,
        ]
        for p in candidate.parents
    ]
    children = [[date.isoformat(), list(prenoms)] for date, prenoms in candidate.children]
    return json.dumps([parents, children], separators=(",", ":"), ensure_ascii=False)


def decode_candidate(user_id: str, text: str) -> Candidate:
    """The inverse of ``encode_candidate``."""
    parents, children = json.loads(text)
    return Candidate(
        user_id=user_id,
        parents=tuple(_decode_parent(p) for p in parents),
        children=tuple((dt.date.fromisoformat(d), tuple(prenoms)) for d, prenoms in children),
    )


def _decode_parent(fields: list[Any]) -> _Profile:
    nn, nu, prenoms, sexe, born, cog, pays = fields
    return _Profile(
        nom_naissance="".join(nn),
        nom_usage="".join(nu),
        nom_naissance_tokens=tuple(nn),
        nom_usage_tokens=tuple(nu),
        prenoms=tuple(prenoms),
        sexe=sexe,
        date_naissance=dt.date.fromisoformat(born) if born else None,
        cog=cog,
        pays=pays,
    )


def _reason(code: ReasonCode, sim: float | None = None) -> Reason:
    """The reason for ``code`` (frozen, so one instance per code and similarity serves every family)."""
    key = (code, None if sim is None else round(sim, 4))
    reason = _REASONS.get(key)
    if reason is None:
        reason = Reason(code=code, points=POINTS.get(code, 0.0), similarity=key[1])
        if len(_REASONS) < 4096:
            _REASONS[key] = reason
    return reason


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
    if conjoint.date_naissance is None or conjoint.date_naissance != parent.date_naissance:
        return False  # the gates need the exact birth date: nothing else to compare
    return _passes_gates(_compare_person(conjoint, parent))


UsagerLevel = Literal["strong", "weak", "none"]


def _usager_level(reasons: Sequence[Reason]) -> UsagerLevel:
    """strong: passes the gates; weak: nothing contradicts, the birth date is exact or one typo
    away, and a surname or the first names agree; none: someone else."""
    if _passes_gates(reasons):
        return "strong"
    codes = {r.code for r in reasons}
    if codes & _CONTRADICTING_FACTS or "birthdate_mismatch" in codes:
        return "none"
    return "weak" if codes & (_NOM_EVIDENCE | _PRENOM_EVIDENCE) else "none"


def _contradicts_usager(reasons: Sequence[Reason]) -> bool:
    """The usager's names and birth date, but a contradicting sex or birthplace."""
    codes = {r.code for r in reasons}
    return (
        bool(codes & _CONTRADICTING_FACTS)
        and "birthdate_mismatch" not in codes
        and bool(codes & _NOM_EVIDENCE)
        and bool(codes & _PRENOM_EVIDENCE)
    )


_ChildKey = tuple[dt.date, tuple[str, ...]]


def _pair_children(dossier: Sequence[_ChildKey], directory: Sequence[_ChildKey]) -> tuple[int, int]:
    """Children present on both sides: same birth date AND first names agreeing (twins share a
    birth date, so the date alone never pairs a child). One-to-one, exact names paired first.
    Returns (exact pairs, pairs on overlapping first names only)."""
    if not dossier or not directory or not {d for d, _ in dossier} & {d for d, _ in directory}:
        return 0, 0  # no birth date in common: nothing can pair
    remaining = list(directory)
    counts = [0, 0]
    pending = list(dossier)
    for level, strict in enumerate((True, False)):
        unmatched = []
        for date, prenoms in pending:
            found = None
            for index, (child_date, child_prenoms) in enumerate(remaining):
                if child_date != date:
                    continue
                reason = _compare_given_names(prenoms, child_prenoms)
                if reason.code == "prenoms_exact" if strict else reason.code in _PRENOM_EVIDENCE:
                    found = index
                    break
            if found is None:
                unmatched.append((date, prenoms))
            else:
                del remaining[found]
                counts[level] += 1
        pending = unmatched
    return counts[0], counts[1]


def _child_keys(enfants: Sequence[Person]) -> list[_ChildKey]:
    return [(e.date_naissance, given_name_tokens(e.prenoms)) for e in enfants if e.date_naissance]


def _matched_children(dossier_enfants: Sequence[Person], directory_enfants: Sequence[DirectoryChild]) -> int:
    directory = [(c.date_naissance, given_name_tokens(c.prenoms)) for c in directory_enfants]
    exact, partial = _pair_children(_child_keys(dossier_enfants), directory)
    return exact + partial


# --- scoring and deciding ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dossier:
    """The dossier's side, normalised once for all the candidates."""

    usager: _Profile
    conjoints: tuple[_Profile, ...]
    children: tuple[_ChildKey, ...]

    @classmethod
    def of(cls, identity: DossierIdentity) -> _Dossier:
        return cls(
            usager=_profile_of_dossier(identity),
            conjoints=tuple(_profile_of_person(c) for c in identity.conjoints),
            children=tuple(_child_keys(identity.enfants)),
        )


@dataclass(frozen=True, slots=True)
class _Assessment:
    """One family against the dossier: its score and the household facts the decision uses."""

    user_id: str
    score: float  # rounded to 4 decimals, as shown
    reasons: tuple[Reason, ...]
    matched_parent: int | None
    usager_level: UsagerLevel
    usager_points: float  # after the gate
    conjoint_found: bool
    children_exact: int
    conflicts: frozenset[str]
    designated: bool
    by_name: bool

    @property
    def candidate(self) -> CandidateScore:
        """Built for the families shown only (scoring hundreds of them needs none)."""
        return CandidateScore(
            user_id=self.user_id,
            score=self.score,
            reasons=list(self.reasons),
            matched_parent=self.matched_parent,
        )


_RANK = {"strong": 2, "weak": 1, "none": 0}


def _assess(dossier: _Dossier, family: Candidate, *, by_name: bool = False) -> _Assessment:
    parents = family.parents
    conjoint_of = [any(_same_person_as_conjoint(c, p) for c in dossier.conjoints) for p in parents]
    compared = [_compare_person(dossier.usager, parent) for parent in parents]
    levels = [_usager_level(r) for r in compared]
    # The usager is looked for among the parents who are not the dossier's conjoint.
    eligible = [i for i in range(len(parents)) if not conjoint_of[i] or levels[i] == "strong"]
    usager_index = (
        max(eligible, key=lambda i: (_RANK[levels[i]], sum(r.points for r in compared[i])))
        if eligible
        else None
    )
    reasons: list[Reason] = []
    level: UsagerLevel = "none"
    usager_points = 0.0
    conflicts: set[str] = set()
    if usager_index is None:
        reasons.append(_reason("usager_absent"))
    else:
        reasons.extend(compared[usager_index])
        level = levels[usager_index]
        raw = sum(r.points for r in compared[usager_index])
        usager_points = raw if level == "strong" else raw * GATED_FACTOR
        if level != "strong":
            reasons.append(Reason(code="not_auto_linkable", points=round(usager_points - raw, 4)))
        if _contradicts_usager(compared[usager_index]):
            conflicts.add("usager_contradicts")
            reasons.append(_reason("usager_contradicts"))

    usager_parent = usager_index if level != "none" else None
    conjoint_found = any(conjoint_of[j] for j in range(len(parents)) if j != usager_parent)
    exact, partial = _pair_children(dossier.children, family.children)
    ours = level != "none" or conjoint_found

    household: list[Reason] = []
    if conjoint_found:
        household.append(_reason("conjoint_match"))
    household.extend(_reason("child_match") for _ in range(min(exact, MAX_CHILDREN_COUNTED)))
    household.extend(_reason("child_partial") for _ in range(min(partial, MAX_CHILDREN_COUNTED)))
    # The usager's partner in the family is not the dossier's conjoint: another household. (When the
    # usager is absent, the conjoint's other parent in the directory is a former partner: no conflict.)
    others = [j for j in range(len(parents)) if j != usager_parent and not conjoint_of[j]]
    if dossier.conjoints and others and usager_parent is not None:
        conflicts.add("other_parent_mismatch")
        household.append(_reason("other_parent_mismatch"))
    if ours and dossier.children and family.children and not exact + partial:
        conflicts.add("children_contradict")
        household.append(_reason("children_contradict"))
    if conjoint_found and level == "none":
        household.append(_reason("conjoint_only_match"))
    if exact and level == "none" and not conjoint_found:
        household.append(_reason("children_only_match"))

    pieces = (level != "none") + conjoint_found + (exact >= 1)
    designated = not by_name and not conflicts and (conjoint_found or exact >= 2) and pieces >= 2
    if designated:
        household.append(_reason("household_designates"))
    if by_name:
        household.append(_reason("found_by_name"))
    reasons.extend(household)
    score = max(0.0, usager_points + sum(r.points for r in household))
    return _Assessment(
        user_id=family.user_id,
        score=round(score, 4),
        reasons=tuple(reasons),
        matched_parent=usager_parent,
        usager_level=level,
        usager_points=usager_points,
        conjoint_found=conjoint_found,
        children_exact=exact,
        conflicts=frozenset(conflicts),
        designated=designated,
        by_name=by_name,
    )


def score_candidate(identity: DossierIdentity, family: Family | Candidate) -> CandidateScore:
    """Score one family: the usager against its best parent, then the household's evidence."""
    return _assess(_Dossier.of(identity), _as_candidate(family)).candidate


def _holds_the_conjoint(other: _Assessment) -> bool:
    """Another family with the dossier's conjoint — unless it is the conjoint's family of a former
    union: without the usager, its children contradicting the dossier's."""
    former_union = other.usager_level == "none" and "children_contradict" in other.conflicts
    return other.conjoint_found and not former_union


def _still_plausible(other: _Assessment, designated: _Assessment) -> bool:
    """Whether another family stays plausible beside the one the household designates."""
    if _holds_the_conjoint(other) or other.children_exact >= 2:
        return True
    if other.conflicts:
        return False
    if other.usager_level != "none" and other.children_exact >= 1:
        return True
    return other.usager_level == "strong" and designated.usager_level != "strong"


def _identity_link(top: _Assessment, others: Sequence[_Assessment], policy: MatchPolicy) -> bool:
    epsilon = 1e-9  # float sums never decide a borderline case
    if top.by_name or top.usager_level != "strong" or top.conflicts:
        return False
    if top.score + epsilon < policy.threshold:
        return False
    for other in others:
        if other.designated or _holds_the_conjoint(other):
            return False
        if top.score - other.score + epsilon < policy.margin:
            return False
        if top.usager_points - other.usager_points + epsilon < policy.margin:
            return False
    return True


# A family with no parent bearing any of the usager's names or first names (not even a typo away),
# none born on the conjoint's birth date and no child born on a dossier child's, scores at most this:
# the gated points of a birth date, a sex and a birthplace.
_NAMELESS_MAX = GATED_FACTOR * (
    POINTS["birthdate_exact"]
    + POINTS["sexe_match"]
    + max(POINTS["birthplace_match"], POINTS["birthcountry_match"])
)
# A usager passing the gates has at least these points: birth date, the weakest surname and first-name evidence.
_STRONG_MIN = (
    POINTS["birthdate_exact"]
    + min(POINTS[c] for c in _NOM_EVIDENCE if c in POINTS)
    + min(POINTS[c] for c in _PRENOM_EVIDENCE if c in POINTS)
)


def _names_relate(d: _Profile, p: _Profile) -> bool:
    """Whether ``_compare_surnames`` or ``_compare_given_names`` would find any evidence between them."""
    if d.nom_naissance == p.nom_naissance:
        return True
    ours = [
        (n, t) for n, t in ((d.nom_naissance, d.nom_naissance_tokens), (d.nom_usage, d.nom_usage_tokens)) if n
    ]
    for name, tokens in ((p.nom_naissance, p.nom_naissance_tokens), (p.nom_usage, p.nom_usage_tokens)):
        if not name:
            continue
        for our_name, our_tokens in ours:
            if our_name == name or is_typo_of(our_name, name):
                return True
            shorter, longer = sorted((set(our_tokens), set(tokens)), key=len)
            if shorter and len(longer) > len(shorter) and shorter <= longer:
                return True
    return _compare_given_names(d.prenoms, p.prenoms).code in _PRENOM_EVIDENCE


@dataclass(frozen=True, slots=True)
class _Screen:
    """Tells apart, cheaply, the families that cannot change the decision. Under a crowded birth date
    (1 January for parents born abroad) most families share only a date with the dossier: no parent
    bears the usager's names or first names (not even a typo away), none is the conjoint, no child
    pairs with a dossier's child. Such a family scores at most ``_NAMELESS_MAX``: it is not shown
    (under the review floor), never leads, never designates, never stays plausible beside a
    designated family and never comes within the margin of a family the identity rule links — so
    scoring it is skipped. Used only with a policy for which all of that holds (``applies``)."""

    usager: _Profile
    conjoints: dict[dt.date, tuple[_Profile, ...]]
    children: dict[dt.date, tuple[tuple[str, ...], ...]]

    @staticmethod
    def applies(policy: MatchPolicy) -> bool:
        return (
            policy.review_floor > _NAMELESS_MAX
            and policy.margin <= policy.threshold - _NAMELESS_MAX
            and policy.margin <= _STRONG_MIN - _NAMELESS_MAX
        )

    @classmethod
    def of(cls, dossier: _Dossier) -> _Screen:
        conjoints: dict[dt.date, list[_Profile]] = {}
        for conjoint in dossier.conjoints:
            if conjoint.date_naissance is not None:
                conjoints.setdefault(conjoint.date_naissance, []).append(conjoint)
        children: dict[dt.date, list[tuple[str, ...]]] = {}
        for date, prenoms in dossier.children:
            children.setdefault(date, []).append(prenoms)
        return cls(
            usager=dossier.usager,
            conjoints={d: tuple(c) for d, c in conjoints.items()},
            children={d: tuple(c) for d, c in children.items()},
        )

    def irrelevant(self, family: Candidate) -> bool:
        for parent in family.parents:
            if _names_relate(self.usager, parent):
                return False  # the usager, or someone the agent may have to see
            conjoints = self.conjoints.get(parent.date_naissance) if parent.date_naissance else None
            if conjoints and any(_names_relate(c, parent) for c in conjoints):
                return False  # maybe the conjoint (the gates need the date and both names)
        for date, prenoms in family.children:
            for ours in self.children.get(date, ()):
                if _compare_given_names(ours, prenoms).code in _PRENOM_EVIDENCE:
                    return False  # a child pairs (exactly or on first names)
        return True


def decide(
    identity: DossierIdentity,
    candidates: Iterable[Family | Candidate],
    *,
    policy: MatchPolicy | None = None,
    by_name: Iterable[Family | Candidate] = (),
) -> MatchDecision:
    """Link by the identity rule or the household rule (see the module docstring), else review.

    ``candidates`` come from the birth-date blocking; ``by_name`` from the name keys: those not
    among the candidates are shown to an agent (``found_by_name``), never linked.
    """
    policy = policy or MatchPolicy()
    dossier = _Dossier.of(identity)
    screen = _Screen.of(dossier) if _Screen.applies(policy) else None
    assessed: dict[str, _Assessment] = {}
    for family in candidates:
        if family.user_id not in assessed:
            candidate = _as_candidate(family)
            if screen is not None and screen.irrelevant(candidate):
                continue
            assessed[family.user_id] = _assess(dossier, candidate)
    for family in by_name:
        if family.user_id not in assessed:
            assessed[family.user_id] = _assess(dossier, _as_candidate(family), by_name=True)
    ranked = sorted(assessed.values(), key=lambda a: (-a.score, a.user_id))
    shown = [
        a
        for a in ranked
        if a.score >= policy.review_floor or a.conjoint_found or a.children_exact or a.by_name
    ]
    if not shown:
        return MatchDecision(outcome="no_candidate")

    linked: _Assessment | None = None
    rule: LinkRule | None = None
    if _identity_link(ranked[0], ranked[1:], policy):
        linked, rule = ranked[0], "identity"
    else:
        designated = [a for a in ranked if a.designated]
        if len(designated) == 1 and not any(
            _still_plausible(a, designated[0]) for a in ranked if a is not designated[0]
        ):
            linked, rule = designated[0], "household"
    if linked is None:
        return MatchDecision(outcome="needs_review", candidates=[a.candidate for a in shown])
    listed = [linked.candidate, *(a.candidate for a in shown if a is not linked)]
    return MatchDecision(outcome="linked", user_id=linked.user_id, rule=rule, candidates=listed)


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
