"""French name normalisation: formatting differences disappear, real differences stay."""

from __future__ import annotations

import pytest

from qfbridge.matching.normalize import (
    comparable_given_names,
    comparable_surname,
    edit_distance,
    fold,
    given_name_tokens,
    is_typo_of,
    similarity,
    surname_tokens,
)


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("Léouis", "LEOUIS"),
        ("  élodie   noëlle ", "ELODIE NOELLE"),
        ("Jean-Philippe", "JEAN PHILIPPE"),
        ("N'Diaye", "N DIAYE"),
        ("N’Diaye", "N DIAYE"),  # typographic apostrophe
        ("Lœuillet", "LOEUILLET"),
        ("Lætitia", "LAETITIA"),
        ("Strauß", "STRAUSS"),
        ("García López", "GARCIA LOPEZ"),
        ("Øster", "OSTER"),
        ("Ｍａｒｔｉｎ", "MARTIN"),  # full-width letters (NFKC)
        ("de_la.fontaine", "DE LA FONTAINE"),
        ("", ""),
        (" - ' ", ""),
    ],
)
def test_fold_upper_cases_strips_accents_and_collapses_separators(raw: str, folded: str) -> None:
    # Given a name as some system wrote it / When folded / Then only formatting is gone
    assert fold(raw) == folded


@pytest.mark.parametrize(
    "spelling",
    [
        "DE LA FONTAINE",
        "de la Fontaine",
        "De-La-Fontaine",
        "DELAFONTAINE",
        "de La  fontaine",
        "DE LAFONTAINE",
    ],
)
def test_particles_are_glued_so_particle_spacing_never_matters(spelling: str) -> None:
    assert surname_tokens(spelling) == ("DELAFONTAINE",)
    assert comparable_surname(spelling) == "DELAFONTAINE"


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("d'Artagnan", ("DARTAGNAN",)),
        ("Le Gall-Martin", ("LEGALL", "MARTIN")),
        ("van der Berg", ("VANDERBERG",)),
        ("Ben Ali", ("BENALI",)),
        ("García López", ("GARCIA", "LOPEZ")),
        ("de Saint-Exupéry", ("DESAINT", "EXUPERY")),
        ("de St Exupéry", ("DESAINT", "EXUPERY")),
        ("MARTIN DE", ("MARTIN", "DE")),  # a trailing particle stays a word
        ("Le", ("LE",)),
    ],
)
def test_surname_tokens_keep_compound_parts_apart_and_particles_attached(
    raw: str, tokens: tuple[str, ...]
) -> None:
    assert surname_tokens(raw) == tokens


def test_saint_abbreviations_compare_equal_to_the_full_word() -> None:
    assert comparable_surname("SAINT-JUST") == comparable_surname("St Just") == "SAINTJUST"
    assert comparable_surname("Sainte-Marie") == comparable_surname("STE MARIE")


def test_empty_or_missing_surname_gives_empty_forms() -> None:
    assert surname_tokens(None) == ()
    assert comparable_surname("") == ""
    assert given_name_tokens(None) == ()


def test_compound_first_names_give_the_same_tokens_with_hyphen_or_space() -> None:
    # Given FranceConnect and CAF spelling the same first names differently
    fc = "Jean-Philippe Marie"
    caf = "JEAN PHILIPPE MARIE"
    # Then the token forms agree, and the order of first names is kept
    assert given_name_tokens(fc) == given_name_tokens(caf) == ("JEAN", "PHILIPPE", "MARIE")
    assert comparable_given_names("Ève  Marie-Claire") == "EVE MARIE CLAIRE"


def test_different_names_stay_different_after_normalisation() -> None:
    assert comparable_surname("MARTIN") != comparable_surname("MARTINS")
    assert comparable_surname("LE GALL") != comparable_surname("GALL")
    assert given_name_tokens("JEAN") != given_name_tokens("JEANNE")


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("MARTIN", "MARXIN", True),  # one substitution
        ("MARTIN", "MRATIN", True),  # adjacent transposition
        ("DELAFONTAINE", "DELAFOXTAXNE", True),  # two edits on a long name
        ("DUPONT", "DUPONTEL", False),  # two edits on a short name
        ("LY", "LI", False),  # too short for a typo to be told from another name
        ("EVE", "EVA", False),
        ("MARTIN", "MARTIN", False),  # identical is not a typo
        ("BERNARD", "DURAND", False),
    ],
)
def test_is_typo_of_accepts_keying_mistakes_only(left: str, right: str, expected: bool) -> None:
    assert is_typo_of(left, right) is expected


def test_similarity_and_edit_distance_come_from_levenshtein() -> None:
    assert similarity("MARTIN", "MARTIN") == 1.0
    assert similarity("", "MARTIN") == 0.0
    assert 0.8 < similarity("MARTIN", "MARXIN") < 0.9
    assert edit_distance("MARTIN", "MARTINS") == 1
