"""Property: the formatting of a name never changes the matching outcome.

Formatting = letter case, diacritics on the same letters, the choice and repetition of separators
(space, hyphen, apostrophe), surrounding blanks, and the space after a surname particle
("DE LA FONTAINE" / "DELAFONTAINE"). Taken from the labelled set, every case is re-spelled on both
sides (dossier and directory) and must give the same decision with the same scores.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qfbridge.domain.identity import DirectoryChild, DirectoryParent, Family, Person, PivotIdentity
from qfbridge.matching import DossierIdentity, MatchDecision, match
from qfbridge.matching.normalize import NAME_PARTICLES, comparable_surname, given_name_tokens


def _load_cases():
    path = Path(__file__).resolve().parents[1] / "data" / "matching_cases.py"
    spec = importlib.util.spec_from_file_location("qfbridge_matching_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cases_module = _load_cases()
CASES = cases_module.build_cases()

ACCENTED = {
    "A": "ÀÂÄÁ",
    "E": "ÉÈÊË",
    "I": "ÎÏÍ",
    "O": "ÔÖÓ",
    "U": "ÙÛÜÚ",
    "C": "Ç",
    "Y": "ŸÝ",
    "N": "Ñ",
}
SEPARATORS = (" ", "-", "'", "  ", " - ", "’", "--")


def _strip_accent(char: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))


@st.composite
def respelled(draw: st.DrawFn, text: str, surname: bool = False) -> str:
    """The same name, differently formatted (one drawn seed drives the per-letter choices, which
    keeps hundreds of examples fast)."""
    rnd = random.Random(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    words = [w for w in text.replace("-", " ").replace("'", " ").replace("’", " ").split(" ") if w]
    out: list[str] = [rnd.choice(["", " ", "  "])]
    for index, word in enumerate(words):
        letters = []
        for char in word:
            base = _strip_accent(char).upper()
            variants = [base, base.lower(), char]
            if base in ACCENTED:
                accented = rnd.choice(ACCENTED[base])
                variants += [accented, accented.lower()]
            letters.append(rnd.choice(variants))
        out.append("".join(letters))
        if index < len(words) - 1:
            glue_particle = surname and _strip_accent(word).upper() in NAME_PARTICLES
            options = ["", *SEPARATORS] if glue_particle else list(SEPARATORS)
            out.append(rnd.choice(options))
    out.append(rnd.choice(["", " ", "  "]))
    return "".join(out)


@st.composite
def respelled_case(draw: st.DrawFn, case):
    def nom(text: str | None) -> str | None:
        return None if text is None else draw(respelled(text, surname=True))

    def prenoms(text: str) -> str:
        return draw(respelled(text)) if text else text

    pivot = case.pivot
    new_pivot = PivotIdentity(
        family_name=nom(pivot.family_name),
        given_name=prenoms(pivot.given_name),
        gender=pivot.gender,
        birthdate=pivot.birthdate,
        birthplace=pivot.birthplace,
        birthcountry=pivot.birthcountry,
    )

    def person(p: Person) -> Person:
        return p.model_copy(
            update={
                "nom_naissance": nom(p.nom_naissance),
                "nom_usage": nom(p.nom_usage),
                "prenoms": prenoms(p.prenoms),
            }
        )

    def parent(p: DirectoryParent) -> DirectoryParent:
        return p.model_copy(
            update={
                "nom_naissance": nom(p.nom_naissance),
                "nom_usage": nom(p.nom_usage),
                "prenoms": prenoms(p.prenoms),
            }
        )

    def child(c: DirectoryChild) -> DirectoryChild:
        return c.model_copy(update={"nom": nom(c.nom), "prenoms": prenoms(c.prenoms)})

    directory = [
        Family(
            user_id=f.user_id, parents=[parent(p) for p in f.parents], enfants=[child(c) for c in f.enfants]
        )
        for f in case.directory
    ]
    return new_pivot, [person(a) for a in case.allocataires], [person(e) for e in case.enfants], directory


def _decide(pivot: PivotIdentity, allocataires, enfants, directory) -> MatchDecision:
    identity = DossierIdentity.from_parts(pivot, allocataires, enfants)
    return match(identity, cases_module.directory_reader(directory))


PROPERTY_SETTINGS = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(data=st.data(), case=st.sampled_from(CASES))
def test_respelling_names_never_changes_the_decision(data: st.DataObject, case) -> None:
    # Given a labelled case and its decision
    baseline = _decide(case.pivot, list(case.allocataires), list(case.enfants), list(case.directory))
    # When every name on both sides is re-spelled (case, accents, separators, particle spacing)
    pivot, allocataires, enfants, directory = data.draw(respelled_case(case))
    decision = _decide(pivot, allocataires, enfants, directory)
    # Then the outcome, the linked family, the ranking and the scores are the same
    assert decision.outcome == baseline.outcome
    assert decision.user_id == baseline.user_id
    assert [(c.user_id, c.score) for c in decision.candidates] == [
        (c.user_id, c.score) for c in baseline.candidates
    ]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from([c.pivot.family_name for c in CASES] + ["de la Fontaine", "d'Artagnan"]),
)
def test_respelling_a_surname_keeps_its_comparable_form(data: st.DataObject, name: str) -> None:
    assert comparable_surname(data.draw(respelled(name, surname=True))) == comparable_surname(name)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from(["Jean-Philippe Marie", "Ève Marie-Claire", "Anne-Sophie Claire", "Ngoc Anh"]),
)
def test_respelling_first_names_keeps_their_tokens(data: st.DataObject, name: str) -> None:
    assert given_name_tokens(data.draw(respelled(name))) == given_name_tokens(name)
