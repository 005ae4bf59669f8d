"""Skipping the families that share only a date with the dossier changes no decision.

Under a crowded birth date (1 January, parents born abroad) most families read share only the date
with the usager; ``decide`` does not score them. These tests compare its decisions with and without
that screen, on dossiers of a directory where a third of the parents are born on a 1 January: the
outcome, the family linked, the rule and every candidate shown (score and reasons) must agree.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from qfbridge.domain.dossier import parse_formulaire_qf_json
from qfbridge.domain.identity import Family
from qfbridge.matching import scoring as matching
from qfbridge.matching.scoring import (
    DossierIdentity,
    MatchPolicy,
    blocking_keys_for_dossier,
    blocking_keys_for_family,
    candidate_of,
    decide,
    decode_candidate,
    encode_candidate,
)
from qfbridge_local.population import formulaire_for, households


def _crowded_directory(size: int, seed: int) -> list[Family]:
    rng = random.Random(seed)
    directory = []
    for household in households(size, seed=seed, id_prefix="crowd"):
        parents = [
            p.model_copy(update={"date_naissance": p.date_naissance.replace(month=1, day=1)})
            if rng.random() < 0.35
            else p
            for p in household.family.parents
        ]
        directory.append(household.family.model_copy(update={"parents": parents}))
    return directory


def _identity(formulaire: dict) -> DossierIdentity:
    parsed = parse_formulaire_qf_json(json.dumps(formulaire).encode())
    return DossierIdentity.from_parts(parsed.pivot_identity, parsed.allocataires, parsed.enfants)


def _decisions(policy: MatchPolicy, monkeypatch: pytest.MonkeyPatch, screened: bool) -> list[dict]:
    directory = _crowded_directory(3000, seed=5)
    by_key: dict[str, list[Family]] = defaultdict(list)
    for family in directory:
        for key in blocking_keys_for_family(family):
            by_key[key].append(family)
    rng = random.Random(6)
    strangers = households(60, seed=7, id_prefix="stranger")
    if not screened:
        monkeypatch.setattr(matching._Screen, "applies", staticmethod(lambda policy: False))
    decisions = []
    for i in range(150):
        family = directory[rng.randrange(len(directory))]
        if i % 5 == 0:  # a stranger, or a household's other parent with a new partner
            formulaire = strangers[i // 5].formulaire()
        else:
            formulaire = formulaire_for(family, households(1, seed=i)[0].qf, parent=i % len(family.parents))
        identity = _identity(formulaire)
        found = {f.user_id: f for key in blocking_keys_for_dossier(identity) for f in by_key.get(key, [])}
        decisions.append(decide(identity, list(found.values()), policy=policy).model_dump())
    return decisions


@pytest.mark.parametrize("policy", [MatchPolicy(), MatchPolicy(threshold=0.9, margin=0.2, review_floor=0.3)])
def test_the_screen_changes_no_decision(policy: MatchPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    screened = _decisions(policy, monkeypatch, screened=True)
    assert matching._Screen.applies(policy)
    with monkeypatch.context() as patched:
        unscreened = _decisions(policy, patched, screened=False)
    assert screened == unscreened
    assert sum(d["outcome"] == "linked" for d in screened) > 50  # the comparison covers links too


def test_a_policy_the_screen_cannot_honour_scores_every_family() -> None:
    assert not matching._Screen.applies(MatchPolicy(review_floor=0.25))
    assert not matching._Screen.applies(MatchPolicy(margin=0.4))


def test_a_candidate_survives_its_encoding() -> None:
    for household in households(50, seed=8):
        family = household.family
        assert decode_candidate(family.user_id, encode_candidate(family)) == candidate_of(family)
