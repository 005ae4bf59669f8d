"""Labelled identity-matching cases: a dossier, a small directory, the outcome that must happen.

The labels come from the scenario's meaning, written before and independently of the scorer:

* ``linked`` — the directory holds the usager's family and the evidence leaves no reasonable
  doubt: either the usager's own record (same birth date, sex, a surname, first names, plus
  corroboration when one element is only partial: a surname typo, only the first of several
  first names, a usual second name…), or the household designating exactly one family — the
  other allocataire is a parent of it exactly, or several children match it on first names and
  birth dates, with one more piece (the usager, even with a typo'd birth date or another first
  name; the conjoint; a child), nothing in it contradicting the dossier and no other family
  holding part of that household or the usager.
* ``needs_review`` — a plausible candidate exists but linking could put a tariff on the wrong
  account: homonyms the household does not tell apart, contradicting birthplace or sex, married
  name unknown to CAF, lone typos, the same parent in two households with nothing saying which,
  the household in two families, only the children known (grandparents, guardians), only the
  conjoint known, a conjoint's namesake born another day, a namesake born another day…
* ``no_candidate`` — nobody in the directory is plausibly the usager nor found by their
  household's birth dates or the usager's name.

Every case is built from one of twelve fictional personas (accents, particles, compound and
hyphenated names, married names, people born abroad, twins, a very common name, a short
surname…) by one scenario, or written by hand (``_extra_cases``: 1 January namesakes born abroad);
each directory also holds distractor families that share the birth date, the surname, or nothing.
Names and dates are invented.

Loaded by path from the tests (``tests`` is not a package).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from qfbridge.domain.identity import DirectoryChild, DirectoryParent, Family, Person, PivotIdentity
from qfbridge.matching import (
    DirectoryRead,
    DossierIdentity,
    MatchDecision,
    blocking_keys_for_family,
    match,
)

Expected = Literal["linked", "needs_review", "no_candidate"]
D = dt.date


@dataclass(frozen=True)
class Member:
    """A fictional person: how FranceConnect / CAF spell them (accents and case as written)."""

    nom_naissance: str
    prenoms: str
    sexe: Literal["F", "M"]
    date_naissance: dt.date
    nom_usage: str | None = None
    cog: str | None = None
    pays: str = "99100"


@dataclass(frozen=True)
class Persona:
    key: str
    usager: Member
    conjoint: Member | None = None
    enfants: tuple[Member, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class MatchingCase:
    name: str
    scenario: str
    pivot: PivotIdentity
    allocataires: tuple[Person, ...]
    enfants: tuple[Person, ...]
    directory: tuple[Family, ...]
    expected: Expected
    expected_user_id: str | None = None


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "leouis",
        Member("Léouis", "Alexia Marie", "F", D(1987, 4, 10), nom_usage="BERNARD", cog="26079"),
        Member("BERNARD", "HENRI", "M", D(1984, 11, 2)),
        (
            Member("BERNARD", "MARCEL", "M", D(2012, 3, 2)),
            Member("BERNARD", "JULIE", "F", D(2015, 6, 4)),
        ),
        frozenset({"married", "several_prenoms"}),
    ),
    Persona(
        "fontaine",
        Member("de La Fontaine", "Jean-Philippe Marie", "M", D(1979, 9, 23), cog="75056"),
        Member("MOREAU", "SOPHIE ANNE", "F", D(1981, 2, 14)),
        (
            Member("DE LA FONTAINE", "LOUIS", "M", D(2010, 5, 17)),
            Member("DE LA FONTAINE", "LUCAS", "M", D(2010, 5, 17)),
        ),
        frozenset({"particle", "compound_prenom", "twins", "several_prenoms"}),
    ),
    Persona(
        "ndiaye",
        Member("N'Diaye", "Marie-Hélène Françoise", "F", D(1990, 12, 1), nom_usage="D'ALMEIDA", pays="99341"),
        Member("D'ALMEIDA", "PAULO", "M", D(1988, 7, 30), pays="99139"),
        (Member("D'ALMEIDA", "INES", "F", D(2016, 9, 9)),),
        frozenset({"married", "abroad", "apostrophe", "compound_prenom", "several_prenoms"}),
    ),
    Persona(
        "legall",
        Member("Le Gall", "Kévin Éric", "M", D(1992, 3, 15), cog="29019"),
        None,
        (Member("LE GALL", "MAËLYS", "F", D(2018, 11, 11)),),
        frozenset({"particle", "several_prenoms"}),
    ),
    Persona(
        "loeuillet",
        Member("Lœuillet", "Élodie Noëlle", "F", D(1985, 6, 30), nom_usage="SAINT-JUST", cog="69123"),
        Member("SAINT-JUST", "THOMAS", "M", D(1983, 1, 5)),
        (
            Member("SAINT-JUST", "ZOÉ", "F", D(2011, 8, 21)),
            Member("SAINT-JUST", "THÉO", "M", D(2014, 2, 28)),
        ),
        frozenset({"married", "ligature", "saint", "several_prenoms"}),
    ),
    Persona(
        "benali",
        Member("Ben Ali", "Mohamed Amine", "M", D(1980, 10, 10), pays="99351"),
        Member("EL MANSOURI", "FATIMA ZAHRA", "F", D(1984, 4, 4), pays="99350"),
        (
            Member("BEN ALI", "YASMINE", "F", D(2009, 1, 31)),
            Member("BEN ALI", "ADAM", "M", D(2012, 12, 12)),
            Member("BEN ALI", "SAMI", "M", D(2012, 12, 12)),
        ),
        frozenset({"abroad", "particle", "twins", "several_prenoms"}),
    ),
    Persona(
        "garcialopez",
        Member("García López", "Anne-Sophie Claire", "F", D(1995, 8, 8), cog="13055"),
        None,
        (Member("GARCIA LOPEZ", "LÉA", "F", D(2020, 3, 3)),),
        frozenset({"double_surname", "compound_prenom", "several_prenoms"}),
    ),
    Persona(
        "martin",
        Member("Martin", "Jean Pierre Louis", "M", D(1975, 1, 1), cog="59350"),
        Member("DUBOIS", "NATHALIE", "F", D(1976, 5, 5), nom_usage="MARTIN"),
        (Member("MARTIN", "PAUL", "M", D(2005, 6, 6)),),
        frozenset({"common_name", "namesake_father", "several_prenoms"}),
    ),
    Persona(
        "dartagnan",
        Member("d'Artagnan", "Ève Marie-Claire", "F", D(1988, 2, 29), nom_usage="VAN DER BERG", cog="2A004"),
        Member("VAN DER BERG", "PIETER", "M", D(1986, 12, 24), pays="99135"),
        (Member("VAN DER BERG", "NOÉ", "M", D(2019, 7, 14)),),
        frozenset({"married", "particle", "apostrophe", "compound_prenom", "several_prenoms"}),
    ),
    Persona(
        "dupont",
        Member("Dupont", "François Xavier", "M", D(1970, 7, 7), cog="33063"),
        Member("LEBLANC", "JOSÉE MARIE", "F", D(1972, 3, 3), nom_usage="DUPONT"),
        (Member("DUPONT", "GUILLAUME", "M", D(2002, 2, 2)),),
        frozenset({"several_prenoms", "namesake_father"}),
    ),
    Persona(
        "ly",
        Member("Ly", "Ngoc Anh", "F", D(1991, 11, 11), cog="94028"),
        None,
        (Member("LY", "MINH", "M", D(2017, 5, 5)),),
        frozenset({"short_surname", "several_prenoms"}),
    ),
    Persona(
        "saintexupery",
        Member("de Saint-Exupéry", "Camille Andrée", "F", D(1993, 5, 20), cog="35238"),
        Member("ROUX", "CAMILLE MARC", "M", D(1992, 4, 1)),
        (Member("ROUX", "JULES", "M", D(2021, 1, 15)),),
        frozenset({"particle", "saint", "several_prenoms"}),
    ),
)

# --- building blocks ---------------------------------------------------------------------------

_DISTRACTOR_SURNAMES = ("ROBERT", "PETIT", "DURAND", "LEROY", "FOURNIER", "GIRARD", "BONNET", "LAMBERT")
_DISTRACTOR_PRENOMS = {
    "F": ("ISABELLE", "CATHERINE", "SYLVIE", "VALERIE", "CELINE", "AURELIE", "SANDRINE", "PATRICIA"),
    "M": ("PASCAL", "OLIVIER", "LAURENT", "FREDERIC", "STEPHANE", "CHRISTOPHE", "DIDIER", "THIERRY"),
}


def _pivot(member: Member) -> PivotIdentity:
    return PivotIdentity(
        family_name=member.nom_naissance,
        given_name=member.prenoms,
        gender="female" if member.sexe == "F" else "male",
        birthdate=member.date_naissance,
        birthplace=member.cog if member.pays == "99100" else None,
        birthcountry=member.pays,
    )


def _caf(member: Member, *, with_nom_usage: bool = True) -> Person:
    """CAF spells names in upper case; accents kept as the sample shows."""
    return Person(
        nom_naissance=member.nom_naissance.upper(),
        nom_usage=member.nom_usage.upper() if member.nom_usage and with_nom_usage else None,
        prenoms=member.prenoms.upper(),
        date_naissance=member.date_naissance,
        sexe=member.sexe,
    )


def directory_parent(member: Member, *, with_birthplace: bool = False, **changes: object) -> DirectoryParent:
    """The member as an editor's software would store them (by default: no birthplace)."""
    parent = DirectoryParent(
        nom_naissance=member.nom_naissance,
        nom_usage=member.nom_usage,
        prenoms=member.prenoms,
        sexe=member.sexe,
        date_naissance=member.date_naissance,
        code_cog_naissance=member.cog if with_birthplace and member.pays == "99100" else None,
        code_pays_naissance=member.pays if with_birthplace else None,
    )
    return parent.model_copy(update=changes) if changes else parent


def directory_children(persona: Persona) -> list[DirectoryChild]:
    return [
        DirectoryChild(nom=c.nom_naissance, prenoms=c.prenoms, date_naissance=c.date_naissance)
        for c in persona.enfants
    ]


def family(
    persona: Persona,
    user_id: str,
    *,
    usager: DirectoryParent | None = None,
    with_conjoint: bool = True,
    with_children: bool = True,
    usager_second: bool = False,
    with_birthplace: bool = False,
) -> Family:
    parent = usager or directory_parent(persona.usager, with_birthplace=with_birthplace)
    parents = [parent]
    if with_conjoint and persona.conjoint is not None:
        parents.append(directory_parent(persona.conjoint))
        if usager_second:
            parents.reverse()
    return Family(
        user_id=user_id, parents=parents, enfants=directory_children(persona) if with_children else []
    )


def distractors(persona: Persona, index: int) -> list[Family]:
    """Three families that must never be linked: same birth date (other names), same surname
    (other birth date and first names), and an unrelated one."""
    u = persona.usager
    sexe = u.sexe
    other = "M" if sexe == "F" else "F"
    names = _DISTRACTOR_SURNAMES
    prenoms = _DISTRACTOR_PRENOMS
    same_birthdate = Family(
        user_id=f"dis-{persona.key}-samedate",
        parents=[
            DirectoryParent(
                nom_naissance=names[index % 8],
                prenoms=prenoms[sexe][index % 8],
                sexe=sexe,
                date_naissance=u.date_naissance,
            )
        ],
        enfants=[DirectoryChild(nom=names[index % 8], prenoms="ARTHUR", date_naissance=D(2013, 10, 1))],
    )
    same_surname = Family(
        user_id=f"dis-{persona.key}-samename",
        parents=[
            DirectoryParent(
                nom_naissance=u.nom_naissance,
                prenoms=prenoms[sexe][(index + 3) % 8],
                sexe=sexe,
                date_naissance=u.date_naissance.replace(year=u.date_naissance.year - 3, day=1),
            ),
            DirectoryParent(
                nom_naissance=names[(index + 1) % 8],
                prenoms=prenoms[other][(index + 5) % 8],
                sexe=other,
                date_naissance=D(1969, 9, 9),
            ),
        ],
    )
    unrelated = Family(
        user_id=f"dis-{persona.key}-other",
        parents=[
            DirectoryParent(
                nom_naissance=names[(index + 2) % 8],
                prenoms=prenoms["F"][(index + 6) % 8],
                sexe="F",
                date_naissance=D(1982, 1, 2 + index),
            )
        ],
    )
    return [same_birthdate, same_surname, unrelated]


def designates(p: Persona) -> bool:
    """Whether the persona's household can designate a family: the conjoint, or several children."""
    return p.conjoint is not None or len(p.enfants) >= 2


def _typo(name: str) -> str:
    """Replace one inner letter (a plausible keying mistake)."""
    letters = list(name)
    alpha = [i for i, ch in enumerate(letters) if ch.isalpha()]
    i = alpha[len(alpha) // 2]
    letters[i] = "X" if letters[i].upper() != "X" else "Z"
    return "".join(letters)


# --- scenarios ----------------------------------------------------------------------------------
# Each scenario returns (directory families of interest, expected, expected_user_id) or None when
# it does not apply to the persona. The distractors are added afterwards.

Scenario = Callable[[Persona], tuple[list[Family], Expected, str | None] | None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(func: Scenario) -> Scenario:
    SCENARIOS[func.__name__] = func
    return func


def _uid(p: Persona, suffix: str = "") -> str:
    return f"fam-{p.key}{suffix}"


@scenario
def exact_with_birthplace(p: Persona):
    return [family(p, _uid(p), with_birthplace=True)], "linked", _uid(p)


@scenario
def exact_without_birthplace(p: Persona):
    return [family(p, _uid(p))], "linked", _uid(p)


@scenario
def exact_no_children_no_conjoint(p: Persona):
    return [family(p, _uid(p), with_children=False, with_conjoint=False)], "linked", _uid(p)


@scenario
def upper_case_without_accents(p: Persona):
    u = p.usager

    def strip(s: str | None) -> str | None:
        if s is None:
            return None
        return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).upper()

    parent = directory_parent(
        u, nom_naissance=strip(u.nom_naissance), nom_usage=strip(u.nom_usage), prenoms=strip(u.prenoms)
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def lower_case_odd_spacing(p: Persona):
    u = p.usager
    parent = directory_parent(
        u,
        nom_naissance="  " + u.nom_naissance.lower().replace(" ", "   ") + " ",
        prenoms=" " + u.prenoms.lower().replace(" ", "  ") + "  ",
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def particles_glued(p: Persona):
    if "particle" not in p.tags and "apostrophe" not in p.tags:
        return None
    u = p.usager
    glued = u.nom_naissance.upper().replace(" ", "").replace("'", "")
    return [family(p, _uid(p), usager=directory_parent(u, nom_naissance=glued))], "linked", _uid(p)


@scenario
def hyphens_as_spaces(p: Persona):
    u = p.usager
    if "-" not in u.nom_naissance + u.prenoms:
        return None
    parent = directory_parent(
        u, nom_naissance=u.nom_naissance.replace("-", " "), prenoms=u.prenoms.replace("-", " ")
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def spaces_as_hyphens(p: Persona):
    u = p.usager
    parent = directory_parent(
        u, nom_naissance=u.nom_naissance.replace(" ", "-"), prenoms=u.prenoms.replace(" ", "-")
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def saint_abbreviated(p: Persona):
    if "saint" not in p.tags:
        return None
    u = p.usager
    parent = directory_parent(
        u,
        nom_naissance=u.nom_naissance.replace("Saint", "St"),
        nom_usage=u.nom_usage.replace("SAINT", "ST") if u.nom_usage else None,
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


def _first_prenom(u: Member) -> str:
    return u.prenoms.split()[0]


@scenario
def only_first_prenom_with_birthplace(p: Persona):
    u = p.usager
    parent = directory_parent(u, prenoms=_first_prenom(u), with_birthplace=True)
    return [family(p, _uid(p), usager=parent, with_children=False)], "linked", _uid(p)


@scenario
def only_first_prenom_with_children(p: Persona):
    u = p.usager
    parent = directory_parent(u, prenoms=_first_prenom(u))
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def only_first_prenom_nothing_else(p: Persona):
    # Could be a twin "JEAN" of a "JEAN PHILIPPE": without any corroboration an agent decides.
    u = p.usager
    parent = directory_parent(u, prenoms=_first_prenom(u))
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "needs_review", None


@scenario
def prenoms_swapped(p: Persona):
    u = p.usager
    words = u.prenoms.split()
    parent = directory_parent(u, prenoms=" ".join([*words[1:], words[0]]))
    return [family(p, _uid(p), usager=parent, with_children=False)], "linked", _uid(p)


@scenario
def usual_second_prenom_with_children(p: Persona):
    u = p.usager
    parent = directory_parent(u, prenoms=u.prenoms.split()[-1])
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def usual_second_prenom_nothing_else(p: Persona):
    u = p.usager
    parent = directory_parent(u, prenoms=u.prenoms.split()[-1])
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "needs_review", None


@scenario
def married_name_as_directory_nom_naissance(p: Persona):
    # The editor typed the married name in the only surname field; CAF gives the nom d'usage.
    if "married" not in p.tags:
        return None
    u = p.usager
    parent = directory_parent(u, nom_naissance=u.nom_usage, nom_usage=None)
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def married_name_in_directory_nom_usage(p: Persona):
    if "married" not in p.tags:
        return None
    return [family(p, _uid(p), with_children=False)], "linked", _uid(p)


@scenario
def married_name_hyphenated_with_birth_name(p: Persona):
    if "married" not in p.tags:
        return None
    u = p.usager
    parent = directory_parent(
        u, nom_naissance=f"{u.nom_usage}-{u.nom_naissance}", nom_usage=None, with_birthplace=True
    )
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def typo_in_surname_with_birthplace(p: Persona):
    u = p.usager
    if len(u.nom_naissance.replace(" ", "")) < 5:
        return None
    parent = directory_parent(u, nom_naissance=_typo(u.nom_naissance), nom_usage=None, with_birthplace=True)
    return [family(p, _uid(p), usager=parent, with_children=False)], "linked", _uid(p)


@scenario
def typo_in_surname_nothing_else(p: Persona):
    u = p.usager
    if len(u.nom_naissance.replace(" ", "")) < 5:
        return None
    parent = directory_parent(u, nom_naissance=_typo(u.nom_naissance), nom_usage=None)
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "needs_review", None


@scenario
def typo_in_prenom_with_children(p: Persona):
    # On a first name shorter than 4 letters one edit makes another name (EVE / EVA): the usager's
    # own record is another first name, and only a household that designates the family (the
    # conjoint, or several children) links it.
    u = p.usager
    parent = directory_parent(u, prenoms=_typo(_first_prenom(u)))
    if len(_first_prenom(u)) < 4 and not designates(p):
        return [family(p, _uid(p), usager=parent)], "needs_review", None
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def typo_in_prenom_nothing_else(p: Persona):
    u = p.usager
    parent = directory_parent(u, prenoms=_typo(_first_prenom(u)))
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "needs_review", None


@scenario
def born_abroad_country_known(p: Persona):
    if "abroad" not in p.tags:
        return None
    return [family(p, _uid(p), with_birthplace=True, with_children=False)], "linked", _uid(p)


@scenario
def born_abroad_but_directory_says_france(p: Persona):
    if "abroad" not in p.tags:
        return None
    parent = directory_parent(p.usager, code_cog_naissance="75056", code_pays_naissance="99100")
    return [family(p, _uid(p), usager=parent)], "needs_review", None


@scenario
def birthplace_contradicts(p: Persona):
    u = p.usager
    if u.pays != "99100":
        return None
    other = "75056" if u.cog != "75056" else "13055"
    parent = directory_parent(u, code_cog_naissance=other, code_pays_naissance="99100")
    return [family(p, _uid(p), usager=parent)], "needs_review", None


@scenario
def sexe_contradicts(p: Persona):
    u = p.usager
    parent = directory_parent(u, sexe="M" if u.sexe == "F" else "F")
    return [family(p, _uid(p), usager=parent)], "needs_review", None


@scenario
def homonyms_same_name_same_birthdate(p: Persona):
    # Two different people, identical on everything the directory knows about them: an agent
    # decides — unless the other allocataire is a parent of exactly one of the two families.
    twin_family = Family(
        user_id=_uid(p, "-homonym"),
        parents=[directory_parent(p.usager)],
        enfants=[DirectoryChild(nom="DURAND", prenoms="HUGO", date_naissance=D(2008, 4, 4))],
    )
    directory = [family(p, _uid(p), with_children=False), twin_family]
    if p.conjoint is not None:
        return directory, "linked", _uid(p)
    return directory, "needs_review", None


@scenario
def homonyms_told_apart_only_by_children(p: Persona):
    # One child (0.10) must not separate two identical parents; several children matching on
    # first names and birth dates designate the family beyond doubt.
    twin_family = Family(
        user_id=_uid(p, "-homonym"),
        parents=[directory_parent(p.usager)],
        enfants=[DirectoryChild(nom="DURAND", prenoms="HUGO", date_naissance=D(2008, 4, 4))],
    )
    directory = [family(p, _uid(p), with_conjoint=False), twin_family]
    if len(p.enfants) >= 2:
        return directory, "linked", _uid(p)
    return directory, "needs_review", None


@scenario
def homonyms_told_apart_by_birthplace(p: Persona):
    u = p.usager
    if u.pays != "99100":
        return None
    other = "75056" if u.cog != "75056" else "13055"
    homonym = Family(
        user_id=_uid(p, "-homonym"),
        parents=[directory_parent(u, code_cog_naissance=other, code_pays_naissance="99100")],
    )
    return [family(p, _uid(p), with_birthplace=True), homonym], "linked", _uid(p)


@scenario
def same_parent_in_two_households(p: Persona):
    # A separated parent present in two families (former and new partner): an agent chooses.
    second = Family(
        user_id=_uid(p, "-recomposed"),
        parents=[
            directory_parent(p.usager),
            DirectoryParent(
                nom_naissance="FAURE",
                prenoms="ALEX",
                sexe="M" if p.usager.sexe == "F" else "F",
                date_naissance=D(1990, 6, 6),
            ),
        ],
        enfants=[DirectoryChild(nom="FAURE", prenoms="EMMA", date_naissance=D(2022, 2, 2))],
    )
    return [family(p, _uid(p), with_children=False, with_conjoint=False), second], "needs_review", None


@scenario
def twin_sibling_in_directory_too(p: Persona):
    # The usager's twin (same surname, date, birthplace; other first names) has a family too.
    u = p.usager
    twin = Family(
        user_id=_uid(p, "-twin"),
        parents=[
            directory_parent(u, prenoms="BAPTISTE" if u.sexe == "M" else "CLEMENCE", with_birthplace=True)
        ],
        enfants=[DirectoryChild(nom=u.nom_naissance, prenoms="ROSE", date_naissance=D(2019, 9, 19))],
    )
    return [family(p, _uid(p), with_birthplace=True), twin], "linked", _uid(p)


@scenario
def only_twin_sibling_in_directory(p: Persona):
    u = p.usager
    twin = Family(
        user_id=_uid(p, "-twin"),
        parents=[
            directory_parent(u, prenoms="BAPTISTE" if u.sexe == "M" else "CLEMENCE", with_birthplace=True)
        ],
    )
    return [twin], "needs_review", None


@scenario
def namesake_father_and_son_both_present(p: Persona):
    if "namesake_father" not in p.tags:
        return None
    u = p.usager
    father = Family(
        user_id=_uid(p, "-father"),
        parents=[
            directory_parent(
                u,
                date_naissance=u.date_naissance.replace(year=u.date_naissance.year - 27),
                with_birthplace=True,
            )
        ],
    )
    return [family(p, _uid(p)), father], "linked", _uid(p)


@scenario
def namesake_father_only(p: Persona):
    # The father (same names, born 27 years earlier) is not the usager: never linked, but found by
    # name so that the agent sees him.
    if "namesake_father" not in p.tags:
        return None
    u = p.usager
    father = Family(
        user_id=_uid(p, "-father"),
        parents=[
            directory_parent(
                u,
                date_naissance=u.date_naissance.replace(year=u.date_naissance.year - 27),
                with_birthplace=True,
            )
        ],
    )
    return [father], "needs_review", None


@scenario
def usager_is_second_parent(p: Persona):
    if p.conjoint is None:
        return None
    return [family(p, _uid(p), usager_second=True)], "linked", _uid(p)


@scenario
def only_conjoint_in_directory(p: Persona):
    # The usager is not in the directory (a new partner), the other allocataire is a parent of
    # exactly one family and the children match it: the household designates it.
    if p.conjoint is None:
        return None
    fam = Family(user_id=_uid(p), parents=[directory_parent(p.conjoint)], enfants=directory_children(p))
    return [fam], "linked", _uid(p)


@scenario
def not_in_directory(p: Persona):
    return [], "no_candidate", None


@scenario
def directory_birthdate_day_month_swapped(p: Persona):
    # The children's birth dates find the family; several of them matching designate it.
    u = p.usager
    d = u.date_naissance
    if d.day > 12 or d.day == d.month:
        return None
    parent = directory_parent(u, date_naissance=D(d.year, d.day, d.month))
    directory = [family(p, _uid(p), usager=parent, with_conjoint=False)]
    if len(p.enfants) >= 2:
        return directory, "linked", _uid(p)
    return directory, "needs_review", None


@scenario
def married_name_unknown_to_caf(p: Persona):
    # Directory knows only the married name, CAF has no nom d'usage: surnames cannot agree.
    if "married" not in p.tags:
        return None
    u = p.usager
    parent = directory_parent(u, nom_naissance=u.nom_usage, nom_usage=None)
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "needs_review", None


@scenario
def double_surname_one_part_with_birthplace(p: Persona):
    if "double_surname" not in p.tags and "married" not in p.tags:
        return None
    u = p.usager
    if "double_surname" in p.tags:
        part = u.nom_naissance.split()[0]
        parent = directory_parent(u, nom_naissance=part, with_birthplace=True)
    else:
        # Directory: "BIRTH MARRIED" as one surname, dossier: birth name (+ usage).
        parent = directory_parent(
            u, nom_naissance=f"{u.nom_naissance} {u.nom_usage}", nom_usage=None, with_birthplace=True
        )
    return [family(p, _uid(p), usager=parent, with_children=False, with_conjoint=False)], "linked", _uid(p)


@scenario
def near_namesake_without_usager(p: Persona):
    # Someone else with a one-letter-different surname, same date and first names: the usager is
    # not registered. Without corroboration this must stay with an agent.
    u = p.usager
    if len(u.nom_naissance.replace(" ", "")) < 5:
        return None
    other = Family(
        user_id=_uid(p, "-near"),
        parents=[directory_parent(u, nom_naissance=_typo(u.nom_naissance), nom_usage=None)],
    )
    return [other], "needs_review", None


# --- the household's evidence ---------------------------------------------------------------------


def _other_adult(p: Persona, key: str, sexe: Literal["F", "M"], born: dt.date) -> DirectoryParent:
    """An adult who is neither the usager nor the conjoint."""
    prenoms = {"F": ("SOLENNE", "MAGALI"), "M": ("GREGOIRE", "ARMAND")}[sexe][key == "b"]
    return DirectoryParent(nom_naissance="FAURE", prenoms=prenoms, sexe=sexe, date_naissance=born)


def _opposite(sexe: str) -> Literal["F", "M"]:
    return "M" if sexe == "F" else "F"


@scenario
def conjoint_and_children_with_another_partner(p: Persona):
    # The usager is absent (a new partner); the conjoint and the children are in a family that
    # also lists the conjoint's former partner: still the one family the household designates.
    if p.conjoint is None:
        return None
    fam = Family(
        user_id=_uid(p),
        parents=[
            directory_parent(p.conjoint),
            _other_adult(p, "a", _opposite(p.conjoint.sexe), D(1979, 3, 9)),
        ],
        enfants=directory_children(p),
    )
    return [fam], "linked", _uid(p)


@scenario
def usager_with_another_partner_and_the_children(p: Persona):
    # The usager and the children, with a partner who is not the dossier's conjoint: the household
    # contradicts the directory's, an agent decides.
    if p.conjoint is None:
        return None
    fam = Family(
        user_id=_uid(p),
        parents=[directory_parent(p.usager), _other_adult(p, "a", _opposite(p.usager.sexe), D(1979, 3, 9))],
        enfants=directory_children(p),
    )
    return [fam], "needs_review", None


@scenario
def parent_in_two_households_household_decides(p: Persona):
    # A separated parent in two families: the former household (another partner, another child)
    # and the current one (the conjoint and the children of the dossier): the household says which.
    if p.conjoint is None:
        return None
    former = Family(
        user_id=_uid(p, "-former"),
        parents=[directory_parent(p.usager), _other_adult(p, "a", _opposite(p.usager.sexe), D(1978, 8, 18))],
        enfants=[DirectoryChild(nom="FAURE", prenoms="EMMA", date_naissance=D(2004, 2, 2))],
    )
    return [former, family(p, _uid(p))], "linked", _uid(p)


@scenario
def conjoint_in_a_former_family_too(p: Persona):
    # The conjoint is also a parent of another family, with a child the dossier does not list (a
    # former union): the usager's family, with the conjoint and the children, is the household's.
    if p.conjoint is None:
        return None
    former = Family(
        user_id=_uid(p, "-former"),
        parents=[directory_parent(p.conjoint)],
        enfants=[DirectoryChild(nom="FAURE", prenoms="EMMA", date_naissance=D(2004, 2, 2))],
    )
    return [former, family(p, _uid(p))], "linked", _uid(p)


@scenario
def conjoint_alone_in_another_family(p: Persona):
    # The conjoint also has an account alone (no child): two families hold the household's
    # conjoint, nothing says which one the QF is for.
    if p.conjoint is None:
        return None
    own = Family(user_id=_uid(p, "-own"), parents=[directory_parent(p.conjoint)])
    return [own, family(p, _uid(p))], "needs_review", None


@scenario
def parent_in_two_households_only_children_differ(p: Persona):
    # The same parent alone in one family and with other children in another: nothing designates.
    former = Family(
        user_id=_uid(p, "-former"),
        parents=[directory_parent(p.usager)],
        enfants=[DirectoryChild(nom="FAURE", prenoms="EMMA", date_naissance=D(2004, 2, 2))],
    )
    current = family(p, _uid(p), with_children=False, with_conjoint=False)
    return [former, current], "needs_review", None


def _shifted(date: dt.date) -> dt.date:
    """The same date with another day (a keying mistake on one field)."""
    return date.replace(day=date.day + 1 if date.day < 28 else date.day - 1)


@scenario
def usager_birthdate_typo_household_exact(p: Persona):
    # The directory has the usager's birth date one day off; the conjoint and children are exact:
    # their birth dates find the family, and they designate it (with one child only: review).
    parent = directory_parent(p.usager, date_naissance=_shifted(p.usager.date_naissance))
    directory = [family(p, _uid(p), usager=parent)]
    if designates(p):
        return directory, "linked", _uid(p)
    return directory, "needs_review", None


@scenario
def no_birth_commune_everything_else_exact(p: Persona):
    # The directory knows the country (France) but not the commune: nothing to compare, nothing lost.
    if p.usager.pays != "99100":
        return None
    parent = directory_parent(p.usager, code_pays_naissance="99100")
    return [family(p, _uid(p), usager=parent)], "linked", _uid(p)


@scenario
def no_birth_commune_weak_usager_household_exact(p: Persona):
    # No birthplace to corroborate a usager known by a typo'd surname and the first prénom only;
    # the household designates the family (with one child only: review).
    u = p.usager
    if len(u.nom_naissance.replace(" ", "")) < 5:
        return None
    parent = directory_parent(
        u, nom_naissance=_typo(u.nom_naissance), nom_usage=None, prenoms=_first_prenom(u)
    )
    directory = [family(p, _uid(p), usager=parent)]
    if designates(p):
        return directory, "linked", _uid(p)
    return directory, "needs_review", None


@scenario
def household_in_two_families(p: Persona):
    # The usager is absent; the conjoint and the children are in two families (two accounts):
    # the household designates two families, an agent decides.
    if p.conjoint is None:
        return None
    first = Family(
        user_id=_uid(p, "-a"), parents=[directory_parent(p.conjoint)], enfants=directory_children(p)
    )
    second = Family(
        user_id=_uid(p, "-b"), parents=[directory_parent(p.conjoint)], enfants=directory_children(p)
    )
    return [first, second], "needs_review", None


@scenario
def children_only_grandparents(p: Persona):
    # The children are registered with their grandparents (or guardians): only children match.
    u = p.usager
    grandparents = Family(
        user_id=_uid(p, "-grandparents"),
        parents=[
            DirectoryParent(
                nom_naissance=u.nom_naissance, prenoms="GERARD", sexe="M", date_naissance=D(1950, 6, 12)
            ),
            DirectoryParent(
                nom_naissance="MARCHAL", prenoms="MONIQUE", sexe="F", date_naissance=D(1952, 9, 3)
            ),
        ],
        enfants=directory_children(p),
    )
    return [grandparents], "needs_review", None


@scenario
def children_only_single_guardian(p: Persona):
    # One guardian with the children, nobody else of the household: review.
    guardian = Family(
        user_id=_uid(p, "-guardian"),
        parents=[
            DirectoryParent(
                nom_naissance="MARCHAL", prenoms="MONIQUE", sexe="F", date_naissance=D(1961, 9, 3)
            )
        ],
        enfants=directory_children(p),
    )
    return [guardian], "needs_review", None


@scenario
def conjoint_namesake_other_birthdate(p: Persona):
    # A parent with the conjoint's names but another birth date, with the children: not the
    # conjoint, so only the children match.
    if p.conjoint is None:
        return None
    c = p.conjoint
    namesake = directory_parent(c, date_naissance=c.date_naissance.replace(year=c.date_naissance.year - 2))
    return [Family(user_id=_uid(p), parents=[namesake], enfants=directory_children(p))], "needs_review", None


@scenario
def conjoint_namesake_other_birthdate_with_usager(p: Persona):
    # The usager (exact) and a conjoint's namesake born another day: the other parent contradicts.
    if p.conjoint is None:
        return None
    c = p.conjoint
    namesake = directory_parent(c, date_naissance=c.date_naissance.replace(year=c.date_naissance.year - 2))
    fam = Family(user_id=_uid(p), parents=[directory_parent(p.usager), namesake], enfants=[])
    return [fam], "needs_review", None


@scenario
def namesake_born_another_day_only(p: Persona):
    # Someone with the usager's names and sex, born another year: found by name for the agent.
    u = p.usager
    namesake = Family(
        user_id=_uid(p, "-namesake"),
        parents=[
            directory_parent(u, date_naissance=u.date_naissance.replace(year=u.date_naissance.year + 4))
        ],
    )
    return [namesake], "needs_review", None


def _dossier(
    p: Persona, *, with_nom_usage: bool = True
) -> tuple[PivotIdentity, tuple[Person, ...], tuple[Person, ...]]:
    allocataires = [_caf(p.usager, with_nom_usage=with_nom_usage)]
    if p.conjoint is not None:
        allocataires.append(_caf(p.conjoint))
    enfants = tuple(_caf(c) for c in p.enfants)
    return _pivot(p.usager), tuple(allocataires), enfants


def _extra_cases() -> list[MatchingCase]:
    """Hand-written cases that need a dossier unlike the personas' defaults."""
    leouis, fontaine = PERSONAS[0], PERSONAS[1]
    cases: list[MatchingCase] = []

    # A couple born the same day: the family is found once, the usager is its second parent.
    u, c = leouis.usager, leouis.conjoint
    assert c is not None
    same_day = Member(c.nom_naissance, c.prenoms, c.sexe, u.date_naissance)
    fam = Family(
        user_id="fam-sameday",
        parents=[directory_parent(same_day), directory_parent(u)],
        enfants=directory_children(leouis),
    )
    cases.append(
        MatchingCase(
            "extra:couple_born_same_day",
            "couple_born_same_day",
            _pivot(u),
            (_caf(u), _caf(same_day)),
            tuple(_caf(e) for e in leouis.enfants),
            (fam, *distractors(leouis, 0)),
            "linked",
            "fam-sameday",
        )
    )

    # The dossier has no QF block (no allocataires, no enfants): the pivot identity alone.
    cases.append(
        MatchingCase(
            "extra:no_qf_block_exact",
            "no_qf_block",
            _pivot(u),
            (),
            (),
            (family(leouis, "fam-leouis"), *distractors(leouis, 0)),
            "linked",
            "fam-leouis",
        )
    )
    # ... and the directory knows her married name only: nothing tells it is her.
    married_only = directory_parent(u, nom_naissance=u.nom_usage, nom_usage=None)
    cases.append(
        MatchingCase(
            "extra:no_qf_block_married_name_only",
            "no_qf_block",
            _pivot(u),
            (),
            (),
            (family(leouis, "fam-leouis", usager=married_only), *distractors(leouis, 0)),
            "needs_review",
            None,
        )
    )

    # FranceConnect gives one first name, the directory three (first one identical) + children.
    f = fontaine.usager
    one_name = Member(f.nom_naissance, "Jean-Philippe", f.sexe, f.date_naissance, cog=f.cog)
    cases.append(
        MatchingCase(
            "extra:dossier_fewer_prenoms_than_directory",
            "fewer_prenoms",
            _pivot(one_name),
            (_caf(one_name),),
            tuple(_caf(e) for e in fontaine.enfants),
            (
                family(
                    fontaine, "fam-fontaine", usager=directory_parent(f, prenoms="JEAN PHILIPPE MARIE ANDRE")
                ),
                *distractors(fontaine, 1),
            ),
            "linked",
            "fam-fontaine",
        )
    )

    # Twin children swapped in the directory (LOUIS ↔ LUCAS birth dates are the same anyway),
    # and one twin missing: still the family.
    kids = [DirectoryChild(nom="DE LA FONTAINE", prenoms="LUCAS", date_naissance=D(2010, 5, 17))]
    fam = Family(user_id="fam-fontaine", parents=[directory_parent(f, prenoms="JEAN-PHILIPPE")], enfants=kids)
    pivot, allocataires, enfants = _dossier(fontaine)
    cases.append(
        MatchingCase(
            "extra:one_twin_registered",
            "twins",
            pivot,
            allocataires,
            enfants,
            (fam, *distractors(fontaine, 1)),
            "linked",
            "fam-fontaine",
        )
    )
    # Twin children do not pair with a child of another first name born the same day.
    kids = [DirectoryChild(nom="DE LA FONTAINE", prenoms="MATHIS", date_naissance=D(2010, 5, 17))]
    fam = Family(user_id="fam-fontaine", parents=[directory_parent(f, prenoms="JEAN-PHILIPPE")], enfants=kids)
    cases.append(
        MatchingCase(
            "extra:twin_date_but_other_child",
            "twins",
            pivot,
            allocataires,
            enfants,
            (fam, *distractors(fontaine, 1)),
            "needs_review",
            None,
        )
    )

    # 1 January namesakes born abroad (a date of birth unknown to the civil registry is often
    # recorded as 1 January): same names, same date, same country — only the household tells
    # them apart.
    for index, persona in enumerate(PERSONAS):
        if "abroad" not in persona.tags or persona.conjoint is None:
            continue
        jan = dataclasses.replace(
            persona, usager=dataclasses.replace(persona.usager, date_naissance=D(1983, 1, 1))
        )
        namesake = Family(
            user_id=f"fam-{persona.key}-namesake",
            parents=[
                directory_parent(jan.usager, with_birthplace=True),
                _other_adult(jan, "b", _opposite(jan.usager.sexe), D(1985, 5, 15)),
            ],
            enfants=[DirectoryChild(nom="FAURE", prenoms="NOAH", date_naissance=D(2014, 4, 14))],
        )
        pivot, allocataires, enfants = _dossier(jan)
        right = family(jan, f"fam-{persona.key}", with_birthplace=True)
        cases.append(
            MatchingCase(
                f"extra:{persona.key}:january_first_namesakes_household_decides",
                "january_first_namesakes",
                pivot,
                allocataires,
                enfants,
                (namesake, right, *distractors(jan, index)),
                "linked",
                right.user_id,
            )
        )
        # The usager's family without its household in the directory: nothing designates it.
        alone = family(
            jan, f"fam-{persona.key}", with_birthplace=True, with_conjoint=False, with_children=False
        )
        cases.append(
            MatchingCase(
                f"extra:{persona.key}:january_first_namesakes_no_household",
                "january_first_namesakes",
                pivot,
                allocataires,
                enfants,
                (namesake, alone, *distractors(jan, index)),
                "needs_review",
                None,
            )
        )
        # The namesake's family holds the dossier's conjoint too: the household is in two families.
        with_conjoint = Family(
            user_id=namesake.user_id,
            parents=[namesake.parents[0], directory_parent(jan.conjoint)]
            if jan.conjoint
            else namesake.parents,
            enfants=namesake.enfants,
        )
        cases.append(
            MatchingCase(
                f"extra:{persona.key}:january_first_namesakes_conjoint_in_both",
                "january_first_namesakes",
                pivot,
                allocataires,
                enfants,
                (with_conjoint, right, *distractors(jan, index)),
                "needs_review",
                None,
            )
        )
    return cases


def build_cases() -> list[MatchingCase]:
    cases: list[MatchingCase] = []
    for index, persona in enumerate(PERSONAS):
        for name, build in SCENARIOS.items():
            built = build(persona)
            if built is None:
                continue
            families, expected, user_id = built
            caf_knows_usage = name != "married_name_unknown_to_caf"
            pivot, allocataires, enfants = _dossier(persona, with_nom_usage=caf_knows_usage)
            cases.append(
                MatchingCase(
                    name=f"{persona.key}:{name}",
                    scenario=name,
                    pivot=pivot,
                    allocataires=allocataires,
                    enfants=enfants,
                    directory=(*families, *distractors(persona, index)),
                    expected=expected,
                    expected_user_id=user_id,
                )
            )
    cases.extend(_extra_cases())
    return cases


def directory_reader(directory: Sequence[Family]) -> DirectoryRead:
    """The directory's blocking entries in memory, read as the store reads them: the families under
    each key in sort-key (user id) order, at most ``limit`` per key."""
    index: dict[str, list[Family]] = {}
    for fam in sorted(directory, key=lambda f: f.user_id):
        for key in blocking_keys_for_family(fam):
            index.setdefault(key, []).append(fam)

    def read(keys: Sequence[str], limit: int | None) -> list[Family]:
        found: dict[str, Family] = {}
        for key in sorted(set(keys)):
            for fam in index.get(key, [])[:limit]:
                found.setdefault(fam.user_id, fam)
        return list(found.values())

    return read


def run_case(case: MatchingCase) -> MatchDecision:
    """What the reconcile service does, against the case's directory held in memory."""
    identity = DossierIdentity.from_parts(case.pivot, list(case.allocataires), list(case.enfants))
    return match(identity, directory_reader(case.directory))


def iter_cases() -> Iterator[MatchingCase]:
    yield from build_cases()


__all__ = [
    "PERSONAS",
    "SCENARIOS",
    "MatchingCase",
    "build_cases",
    "directory_reader",
    "iter_cases",
    "run_case",
]
