"""Identity matching on the labelled set (tests/data/matching_cases.py) and its unit rules.

Precision of automatic links must be exactly 1.0: a wrong link puts one family's tariff on
another family's account. Recall is printed and held above the measured floor.
"""

from __future__ import annotations

import collections
import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from qfbridge.domain.identity import DirectoryChild, DirectoryParent, Family, Person, PivotIdentity
from qfbridge.matching import (
    NAME_KEY_LIMIT,
    DossierIdentity,
    MatchDecision,
    MatchPolicy,
    blocking_key_for_dossier,
    blocking_keys_for_dossier,
    blocking_keys_for_family,
    cross_check,
    decide,
    match,
    name_keys_for_dossier,
    score_candidate,
)

# Measured on the current set: recall 1.0 (every "linked" case links). The floors leave a little
# room for a deliberate precision trade-off, never for silent regressions.
RECALL_FLOOR = 0.95
AGREEMENT_FLOOR = 0.95
MINIMUM_CASES = 150


def _load_cases_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "data" / "matching_cases.py"
    spec = importlib.util.spec_from_file_location("qfbridge_matching_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cases_module = _load_cases_module()
CASES = cases_module.build_cases()


run_case = cases_module.run_case


# --- the labelled set ---------------------------------------------------------------------------


def test_labelled_set_is_large_and_covers_every_outcome() -> None:
    outcomes = collections.Counter(c.expected for c in CASES)
    assert len(CASES) >= MINIMUM_CASES
    assert outcomes["linked"] >= 50 and outcomes["needs_review"] >= 50 and outcomes["no_candidate"] >= 10
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_no_case_is_ever_linked_to_a_wrong_family(case) -> None:
    # Given a dossier and a directory / When matching runs
    decision = run_case(case)
    # Then a link, if any, is the labelled family (and only when a link is expected)
    if decision.outcome == "linked":
        assert case.expected == "linked", f"auto-linked a case labelled {case.expected}"
        assert decision.user_id == case.expected_user_id


def test_precision_is_one_and_recall_stays_above_its_floor() -> None:
    linked_right = linked_wrong = expected_links = agreements = 0
    misses: list[str] = []
    for case in CASES:
        decision = run_case(case)
        expected_links += case.expected == "linked"
        if decision.outcome == "linked":
            if case.expected == "linked" and decision.user_id == case.expected_user_id:
                linked_right += 1
            else:
                linked_wrong += 1
        if decision.outcome == case.expected and decision.user_id == case.expected_user_id:
            agreements += 1
        else:
            misses.append(f"{case.name}: expected {case.expected}, got {decision.outcome}")
    precision = linked_right / (linked_right + linked_wrong) if linked_right + linked_wrong else 1.0
    recall = linked_right / expected_links
    agreement = agreements / len(CASES)
    print(
        f"\nmatching labelled set: {len(CASES)} cases, precision={precision:.3f} "
        f"recall={recall:.3f} outcome agreement={agreement:.3f}"
    )
    for miss in misses:
        print("  miss:", miss)
    assert precision == 1.0
    assert recall >= RECALL_FLOOR
    assert agreement >= AGREEMENT_FLOOR


# --- unit rules ------------------------------------------------------------------------------------

PIVOT = PivotIdentity(
    family_name="Léouis",
    given_name="Alexia Marie",
    gender="female",
    birthdate=dt.date(1987, 4, 10),
    birthplace="26079",
    birthcountry="99100",
)
ALLOCATAIRES = [
    Person(
        nom_naissance="LÉOUIS",
        nom_usage="BERNARD",
        prenoms="ALEXIA MARIE",
        date_naissance=dt.date(1987, 4, 10),
        sexe="F",
    ),
    Person(nom_naissance="BERNARD", prenoms="HENRI", date_naissance=dt.date(1984, 11, 2), sexe="M"),
]
ENFANTS = [Person(nom_naissance="BERNARD", prenoms="MARCEL", date_naissance=dt.date(2012, 3, 2), sexe="M")]
IDENTITY = DossierIdentity.from_parts(PIVOT, ALLOCATAIRES, ENFANTS)


def _parent(**changes: object) -> DirectoryParent:
    base = DirectoryParent(
        nom_naissance="LEOUIS",
        nom_usage="BERNARD",
        prenoms="ALEXIA MARIE",
        sexe="F",
        date_naissance=dt.date(1987, 4, 10),
    )
    return base.model_copy(update=changes)


HENRI = DirectoryParent(
    nom_naissance="BERNARD", prenoms="HENRI", sexe="M", date_naissance=dt.date(1984, 11, 2)
)
MARCEL = DirectoryChild(nom="BERNARD", prenoms="MARCEL", date_naissance=dt.date(2012, 3, 2))


def test_from_parts_takes_the_nom_usage_from_the_allocataire_who_is_the_usager() -> None:
    assert IDENTITY.nom_usage == "BERNARD"
    assert IDENTITY.sexe == "F" and IDENTITY.code_cog_naissance == "26079"
    assert [c.prenoms for c in IDENTITY.conjoints] == ["HENRI"]
    assert len(IDENTITY.enfants) == 1


def test_from_parts_ignores_an_allocataire_who_is_not_the_usager() -> None:
    # Given the only allocataire is someone else (another birth date)
    identity = DossierIdentity.from_parts(PIVOT, [ALLOCATAIRES[1]], [])
    # Then no nom d'usage is borrowed from them, and they are the conjoint
    assert identity.nom_usage is None
    assert len(identity.conjoints) == 1


def test_from_parts_of_someone_born_abroad_has_no_birthplace_commune() -> None:
    pivot = PIVOT.model_copy(update={"birthplace": None, "birthcountry": "99341"})
    identity = DossierIdentity.from_parts(pivot, [], [])
    assert identity.code_cog_naissance is None and identity.code_pays_naissance == "99341"


def test_blocking_keys_are_household_birth_dates_and_parent_name_keys() -> None:
    family = Family(user_id="u1", parents=[_parent(), HENRI], enfants=[MARCEL])
    assert blocking_keys_for_family(family) == {
        "1987-04-10",
        "1984-11-02",
        "2012-03-02",
        "name:LEOUIS:ALEXIA",
        "name:BERNARD:ALEXIA",
        "name:BERNARD:HENRI",
    }
    assert blocking_key_for_dossier(IDENTITY) == "1987-04-10"
    # One Query per distinct birth date of the dossier's household: usager, conjoint, children.
    assert blocking_keys_for_dossier(IDENTITY) == {"1987-04-10", "1984-11-02", "2012-03-02"}
    assert name_keys_for_dossier(IDENTITY) == {"name:LEOUIS:ALEXIA", "name:BERNARD:ALEXIA"}


def test_the_dossier_reads_each_birth_date_once_and_at_most_six_children_dates() -> None:
    # Given twins (one date) and eight more children
    twins = [Person(nom_naissance="X", prenoms=n, date_naissance=dt.date(2010, 1, 1)) for n in ("A", "B")]
    others = [
        Person(nom_naissance="X", prenoms="C", date_naissance=dt.date(2011 + i, 2, 2)) for i in range(8)
    ]
    identity = DossierIdentity.from_parts(PIVOT, ALLOCATAIRES, [*twins, *others])
    keys = blocking_keys_for_dossier(identity)
    assert len(keys) == 2 + 6 and "2010-01-01" in keys


def test_score_names_every_piece_of_evidence_with_a_code() -> None:
    family = Family(user_id="u1", parents=[HENRI, _parent(code_cog_naissance="26079")], enfants=[MARCEL])
    scored = score_candidate(IDENTITY, family)
    codes = [r.code for r in scored.reasons]
    assert scored.matched_parent == 1
    assert codes == [
        "birthdate_exact",
        "sexe_match",
        "nom_naissance_exact",
        "prenoms_exact",
        "birthplace_match",
        "conjoint_match",
        "child_match",
        "household_designates",
    ]
    # Not capped: the household's evidence adds up above the usager's own 0.95.
    assert scored.score == pytest.approx(0.95 + 0.20 + 0.10)


def test_married_name_known_only_as_nom_usage_matches_through_the_allocataire() -> None:
    family = Family(user_id="u1", parents=[_parent(nom_naissance="BERNARD", nom_usage=None)])
    scored = score_candidate(IDENTITY, family)
    assert "nom_usage_match" in [r.code for r in scored.reasons]
    assert scored.score == pytest.approx(0.90)


def test_a_gate_failure_keeps_the_candidate_below_any_threshold() -> None:
    # Given everything agrees but the birthplace
    family = Family(user_id="u1", parents=[_parent(code_cog_naissance="75056"), HENRI], enfants=[MARCEL])
    scored = score_candidate(IDENTITY, family)
    codes = [r.code for r in scored.reasons]
    assert "birthplace_mismatch" in codes and "not_auto_linkable" in codes
    assert scored.score < MatchPolicy().threshold
    assert decide(IDENTITY, [family]).outcome == "needs_review"


def test_decide_links_a_single_confident_candidate_and_ranks_the_others() -> None:
    right = Family(user_id="right", parents=[_parent()], enfants=[MARCEL])
    other = Family(user_id="other", parents=[_parent(prenoms="CLEMENCE")])
    decision = decide(IDENTITY, [other, right])
    assert decision.outcome == "linked" and decision.user_id == "right"
    assert [c.user_id for c in decision.candidates] == ["right", "other"]


def test_decide_sends_two_equally_good_candidates_to_review() -> None:
    a = Family(user_id="a", parents=[_parent()])
    b = Family(user_id="b", parents=[_parent()])
    decision = decide(IDENTITY, [a, b])
    assert decision.outcome == "needs_review" and decision.user_id is None
    assert {c.user_id for c in decision.candidates} == {"a", "b"}


def test_decide_counts_a_family_returned_twice_by_blocking_once() -> None:
    # Given the same family found under two index keys (both parents born the same day)
    family = Family(user_id="u1", parents=[_parent()])
    decision = decide(IDENTITY, [family, family])
    assert decision.outcome == "linked" and len(decision.candidates) == 1


def test_decide_without_plausible_candidates_is_no_candidate() -> None:
    stranger = Family(
        user_id="x",
        parents=[
            DirectoryParent(
                nom_naissance="PETIT", prenoms="SYLVIE", sexe="F", date_naissance=dt.date(1987, 4, 10)
            )
        ],
    )
    assert decide(IDENTITY, [stranger]) == MatchDecision(outcome="no_candidate")
    assert decide(IDENTITY, []).outcome == "no_candidate"


def test_a_stricter_policy_can_turn_a_link_into_a_review() -> None:
    family = Family(user_id="u1", parents=[_parent()])
    assert decide(IDENTITY, [family]).outcome == "linked"
    assert decide(IDENTITY, [family], policy=MatchPolicy(threshold=0.95)).outcome == "needs_review"


def test_policy_rejects_thresholds_a_gated_candidate_could_reach() -> None:
    with pytest.raises(ValueError):
        MatchPolicy(threshold=0.6)
    with pytest.raises(ValueError):
        MatchPolicy(threshold=0.8, review_floor=0.8)


def test_reasons_carry_codes_and_numbers_only_never_personal_data() -> None:
    family = Family(user_id="u1", parents=[_parent(prenoms="ALEXXA"), HENRI], enfants=[MARCEL])
    decision = decide(IDENTITY, [family])
    dumped = json.dumps([c.model_dump(mode="json", exclude={"user_id"}) for c in decision.candidates])
    for personal in ("LEOUIS", "Léouis", "ALEX", "BERNARD", "HENRI", "MARCEL", "1987", "26079"):
        assert personal.lower() not in dumped.lower()


# --- cross_check (external_id path) -------------------------------------------------------------


def test_cross_check_accepts_the_usager_of_the_linked_family() -> None:
    family = Family(user_id="u1", parents=[_parent()], enfants=[MARCEL])
    check = cross_check(IDENTITY, family)
    assert check.strong_mismatch is False


def test_cross_check_accepts_the_other_parent_of_the_household() -> None:
    # Given the link was issued to the account of Henri, and Alexia (not in the directory) filled the form
    family = Family(user_id="u1", parents=[HENRI], enfants=[MARCEL])
    check = cross_check(IDENTITY, family)
    assert check.strong_mismatch is False
    assert "household_corroborates" in [r.code for r in check.reasons]


def test_cross_check_accepts_a_birth_date_typo_when_the_names_agree() -> None:
    family = Family(user_id="u1", parents=[_parent(date_naissance=dt.date(1987, 10, 4))])
    assert cross_check(IDENTITY, family).strong_mismatch is False


def test_cross_check_flags_a_different_person_in_a_different_household() -> None:
    stranger = DirectoryParent(
        nom_naissance="PETIT", prenoms="SYLVIE", sexe="F", date_naissance=dt.date(1990, 1, 1)
    )
    family = Family(
        user_id="u1",
        parents=[stranger],
        enfants=[DirectoryChild(nom="PETIT", prenoms="ARTHUR", date_naissance=dt.date(2013, 1, 1))],
    )
    check = cross_check(IDENTITY, family)
    assert check.strong_mismatch is True
    assert "identity_mismatch" in [r.code for r in check.reasons]


def test_cross_check_flags_other_birth_date_and_other_first_names_even_with_the_same_surname() -> None:
    relative = _parent(prenoms="CLEMENCE", date_naissance=dt.date(1984, 1, 1))
    assert cross_check(IDENTITY, Family(user_id="u1", parents=[relative])).strong_mismatch is True


def test_cross_check_flags_same_names_but_other_sex_and_birth_date() -> None:
    other = _parent(sexe="M", date_naissance=dt.date(1960, 4, 10))
    assert cross_check(IDENTITY, Family(user_id="u1", parents=[other])).strong_mismatch is True


# --- the household's evidence ---------------------------------------------------------------------

ALEXIA = _parent()
STRANGER = DirectoryParent(
    nom_naissance="FAURE", prenoms="ARMAND", sexe="M", date_naissance=dt.date(1979, 3, 9)
)
JULIE = DirectoryChild(nom="BERNARD", prenoms="JULIE", date_naissance=dt.date(2015, 6, 4))
TWO_CHILDREN = [
    *ENFANTS,
    Person(nom_naissance="BERNARD", prenoms="JULIE", date_naissance=dt.date(2015, 6, 4), sexe="F"),
]
HOUSEHOLD = DossierIdentity.from_parts(PIVOT, ALLOCATAIRES, TWO_CHILDREN)


def _codes(decision: MatchDecision, user_id: str) -> list[str]:
    return next([r.code for r in c.reasons] for c in decision.candidates if c.user_id == user_id)


def test_the_household_links_a_family_the_usager_is_absent_from() -> None:
    # Given only the conjoint and the children in the directory (the usager is a new partner)
    family = Family(user_id="home", parents=[HENRI], enfants=[MARCEL, JULIE])
    # When matching
    decision = decide(HOUSEHOLD, [family])
    # Then the household designates it: linked, and the reasons say what matched
    assert (decision.outcome, decision.user_id, decision.rule) == ("linked", "home", "household")
    codes = _codes(decision, "home")
    assert codes[0] == "usager_absent"
    assert {"conjoint_match", "child_match", "household_designates"} <= set(codes)


def test_a_birthdate_typo_on_the_usager_links_when_the_household_is_exact() -> None:
    family = Family(
        user_id="home", parents=[_parent(date_naissance=dt.date(1987, 4, 11)), HENRI], enfants=[MARCEL]
    )
    decision = decide(IDENTITY, [family])
    assert (decision.outcome, decision.rule) == ("linked", "household")
    assert "birthdate_close" in _codes(decision, "home")


def test_only_children_matching_goes_to_review() -> None:
    # Given the children registered with two other adults (grandparents)
    grandparents = Family(
        user_id="grand",
        parents=[STRANGER, STRANGER.model_copy(update={"prenoms": "MONIQUE", "sexe": "F"})],
        enfants=[MARCEL, JULIE],
    )
    decision = decide(HOUSEHOLD, [grandparents])
    assert decision.outcome == "needs_review"
    assert "children_only_match" in _codes(decision, "grand")


def test_the_household_in_two_families_goes_to_review() -> None:
    a = Family(user_id="a", parents=[HENRI], enfants=[MARCEL, JULIE])
    b = Family(user_id="b", parents=[HENRI], enfants=[MARCEL])
    decision = decide(HOUSEHOLD, [a, b])
    assert decision.outcome == "needs_review" and {c.user_id for c in decision.candidates} == {"a", "b"}


def test_a_conjoint_namesake_born_another_day_is_not_the_conjoint() -> None:
    namesake = HENRI.model_copy(update={"date_naissance": dt.date(1982, 11, 2)})
    decision = decide(HOUSEHOLD, [Family(user_id="n", parents=[namesake], enfants=[MARCEL, JULIE])])
    assert decision.outcome == "needs_review"
    assert "conjoint_match" not in _codes(decision, "n")


def test_a_decoy_whose_conjoint_and_children_contradict_loses_to_the_household() -> None:
    # Given two identical usagers (1 January namesakes): one family holds the dossier's conjoint and
    # children, the other another partner and another child
    right = Family(user_id="right", parents=[ALEXIA, HENRI], enfants=[MARCEL, JULIE])
    decoy = Family(
        user_id="decoy",
        parents=[ALEXIA, STRANGER],
        enfants=[DirectoryChild(nom="FAURE", prenoms="NOAH", date_naissance=dt.date(2014, 4, 14))],
    )
    decision = decide(HOUSEHOLD, [decoy, right])
    # Then the right one is linked, and the decoy lost points for what contradicts
    assert (decision.outcome, decision.user_id) == ("linked", "right")
    scored = {c.user_id: c for c in decision.candidates}
    decoy_codes = [r.code for r in scored["decoy"].reasons]
    assert "other_parent_mismatch" in decoy_codes and "children_contradict" in decoy_codes
    assert scored["decoy"].score == pytest.approx(0.90 - 0.20 - 0.10)
    assert scored["right"].score - scored["decoy"].score >= MatchPolicy().margin


def test_one_child_never_separates_two_identical_usagers() -> None:
    right = Family(user_id="right", parents=[ALEXIA], enfants=[MARCEL])
    other = Family(
        user_id="other",
        parents=[ALEXIA],
        enfants=[DirectoryChild(nom="FAURE", prenoms="NOAH", date_naissance=dt.date(2014, 4, 14))],
    )
    assert decide(IDENTITY, [right, other]).outcome == "needs_review"


def test_the_usager_alone_and_the_household_elsewhere_go_to_review() -> None:
    # Given the usager's own account (alone) and the conjoint's account with the children
    alone = Family(user_id="alone", parents=[ALEXIA])
    theirs = Family(user_id="theirs", parents=[HENRI], enfants=[MARCEL, JULIE])
    assert decide(HOUSEHOLD, [alone, theirs]).outcome == "needs_review"


# --- the review list: the name keys ---------------------------------------------------------------


def _counting_reader(directory: list[Family]):
    reads: list[tuple[tuple[str, ...], int | None]] = []
    inner = cases_module.directory_reader(directory)

    def read(keys, limit):
        reads.append((tuple(keys), limit))
        return inner(keys, limit)

    return read, reads


def test_a_namesake_born_another_day_is_listed_for_review() -> None:
    # Given the directory holds the usager's namesake (same names and sex) born another year
    namesake = Family(user_id="namesake", parents=[_parent(date_naissance=dt.date(1983, 4, 10))])
    read, reads = _counting_reader([namesake])
    # When matching the dossier
    decision = match(IDENTITY, read)
    # Then it is not linked, and the review lists that family, found by name
    assert decision.outcome == "needs_review"
    assert [c.user_id for c in decision.candidates] == ["namesake"]
    assert "found_by_name" in _codes(decision, "namesake")
    # And the reads: one Query per birth date of the household, then the bounded name keys
    assert reads == [
        (("1984-11-02", "1987-04-10", "2012-03-02"), None),
        (("name:BERNARD:ALEXIA", "name:LEOUIS:ALEXIA"), NAME_KEY_LIMIT),
    ]


def test_a_family_found_only_by_name_is_never_linked() -> None:
    # Given the usager's own record with a birth date typo, nothing else (no household)
    typo = Family(user_id="typo", parents=[_parent(date_naissance=dt.date(1987, 4, 11))])
    decision = match(IDENTITY, cases_module.directory_reader([typo]))
    assert decision.outcome == "needs_review" and decision.candidates[0].user_id == "typo"


def test_a_linked_dossier_reads_no_name_key() -> None:
    read, reads = _counting_reader([Family(user_id="u1", parents=[_parent(), HENRI], enfants=[MARCEL])])
    assert match(IDENTITY, read).outcome == "linked"
    assert len(reads) == 1


def test_the_labelled_set_has_every_kind_of_household_case_and_its_traps() -> None:
    by_scenario = collections.defaultdict(set)
    for case in CASES:
        by_scenario[case.scenario].add(case.expected)
    assert by_scenario["only_conjoint_in_directory"] == {"linked"}
    assert by_scenario["conjoint_and_children_with_another_partner"] == {"linked"}
    assert by_scenario["conjoint_in_a_former_family_too"] == {"linked"}
    assert by_scenario["parent_in_two_households_household_decides"] == {"linked"}
    assert "linked" in by_scenario["usager_birthdate_typo_household_exact"]
    assert by_scenario["january_first_namesakes"] == {"linked", "needs_review"}
    assert by_scenario["no_birth_commune_everything_else_exact"] == {"linked"}
    assert "linked" in by_scenario["no_birth_commune_weak_usager_household_exact"]
    for trap in (
        "household_in_two_families",
        "children_only_grandparents",
        "children_only_single_guardian",
        "conjoint_namesake_other_birthdate",
        "usager_with_another_partner_and_the_children",
        "conjoint_alone_in_another_family",
        "namesake_born_another_day_only",
    ):
        assert by_scenario[trap] == {"needs_review"}, trap


def test_every_review_of_the_labelled_set_shows_the_agent_a_family() -> None:
    empty = [c.name for c in CASES if c.expected == "needs_review" and not run_case(c).candidates]
    assert empty == []
