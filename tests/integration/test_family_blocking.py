"""The directory's blocking reads on moto: what identity matching gets for a dossier's birth dates and names."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qfbridge.domain.identity import Family, PivotIdentity
from qfbridge.reconcile import NAME_KEY_LIMIT, DossierIdentity, blocking_keys_for_family, is_name_key, match
from qfbridge.reconcile.matching import name_key
from qfbridge.store.families import FamilyRepository, blocking_sk, family_pk
from qfbridge.store.tables import plain, to_dynamo
from qfbridge_local.population import households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions

SIRET = "21690123000012"
OTHER_SIRET = "21750056000019"


@pytest.fixture(scope="module")
def families() -> Iterator[FamilyRepository]:
    with LocalRuntime.start(RuntimeOptions(serve_api=False)) as rt:
        yield FamilyRepository(rt.environment["FAMILIES_TABLE"])


def test_a_family_found_on_both_parents_birth_dates_comes_back_once(families: FamilyRepository) -> None:
    household = next(h for h in households(30, seed=71) if len(h.family.parents) == 2)
    families.upsert(SIRET, household.family)
    dates = [p.date_naissance.isoformat() for p in household.family.parents]
    found = families.candidates_on(SIRET, [*dates, dates[0]])
    assert [f.user_id for f in found] == [household.family.user_id]


def test_the_conjoints_birth_date_finds_a_family_the_usagers_does_not(families: FamilyRepository) -> None:
    household = households(1, seed=72, id_prefix="conj")[0]
    families.upsert(SIRET, household.family)
    parent_date = household.family.parents[0].date_naissance
    stranger_date = parent_date + dt.timedelta(days=1)
    assert household.family.user_id not in [f.user_id for f in families.candidates(SIRET, stranger_date)]
    found = families.candidates_on(SIRET, [stranger_date.isoformat(), parent_date.isoformat()])
    assert household.family.user_id in [f.user_id for f in found]


def test_blocking_reads_never_cross_tenants(families: FamilyRepository) -> None:
    household = households(1, seed=73, id_prefix="iso")[0]
    families.upsert(OTHER_SIRET, household.family)
    dates = [p.date_naissance.isoformat() for p in household.family.parents]
    assert household.family.user_id not in [f.user_id for f in families.candidates_on(SIRET, dates)]
    assert household.family.user_id in [f.user_id for f in families.candidates_on(OTHER_SIRET, dates)]


def test_a_childs_birth_date_finds_the_family(families: FamilyRepository) -> None:
    household = households(1, seed=74, id_prefix="kid")[0]
    families.upsert(SIRET, household.family)
    child_date = household.family.enfants[0].date_naissance.isoformat()
    assert household.family.user_id in [f.user_id for f in families.candidates_on(SIRET, [child_date])]


def test_the_review_lists_a_namesake_born_another_day(families: FamilyRepository) -> None:
    # Given the directory holds a namesake of the usager (same names and sex) born another year
    household = households(1, seed=75, id_prefix="namesake")[0]
    parent = household.family.parents[0]
    namesake = household.family.model_copy(
        update={
            "parents": [
                parent.model_copy(update={"date_naissance": parent.date_naissance.replace(year=1961)})
            ],
            "enfants": [],
        }
    )
    families.upsert(SIRET, namesake)
    # When the usager's dossier (alone, no household) is matched through the repository
    pivot = PivotIdentity(
        family_name=parent.nom_naissance,
        given_name=parent.prenoms,
        gender="female" if parent.sexe == "F" else "male",
        birthdate=parent.date_naissance,
        birthplace=parent.code_cog_naissance,
        birthcountry=parent.code_pays_naissance or "99100",
    )
    identity = DossierIdentity.from_parts(pivot, [], [])
    reads: list[tuple[list[str], int | None]] = []

    def read(keys, limit):
        reads.append((list(keys), limit))
        return families.candidates_on(SIRET, keys, limit=limit)

    decision = match(identity, read)
    # Then it waits for an agent, who is shown that family, found by name
    assert decision.outcome == "needs_review"
    assert [c.user_id for c in decision.candidates] == [namesake.user_id]
    assert "found_by_name" in [r.code for r in decision.candidates[0].reasons]
    assert reads[0] == ([parent.date_naissance.isoformat()], None)
    assert reads[1][1] == NAME_KEY_LIMIT


def test_the_name_key_read_is_bounded(families: FamilyRepository) -> None:
    # Given more namesakes than the bound under one name key
    base = households(1, seed=76, id_prefix="many")[0].family
    parent = base.parents[0]
    for i in range(NAME_KEY_LIMIT + 5):
        born = parent.date_naissance.replace(year=1960 + i)
        families.upsert(
            SIRET,
            Family(user_id=f"many-{i:03d}", parents=[parent.model_copy(update={"date_naissance": born})]),
        )
    key = name_key(parent.nom_naissance, parent.prenoms)
    assert key is not None and key in blocking_keys_for_family(base)
    found = families.candidates_on(SIRET, [key], limit=NAME_KEY_LIMIT)
    assert len(found) == NAME_KEY_LIMIT


def test_erasing_a_family_removes_every_blocking_entry(families: FamilyRepository) -> None:
    household = households(1, seed=77, id_prefix="gone")[0]
    families.upsert(SIRET, household.family)
    keys = sorted(blocking_keys_for_family(household.family))
    assert any(is_name_key(k) for k in keys)
    families.erase(SIRET, household.family.user_id)
    assert families.candidates_on(SIRET, keys) == []


def test_the_matching_benchmark_writes_blocking_entries_as_the_repository_does(
    families: FamilyRepository,
) -> None:
    # bench/ is not an installed package: load bench.matching from its file, as ``python -m`` would.
    repo_root = str(Path(__file__).resolve().parents[2])
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    bench_matching = importlib.import_module("bench.matching")
    household = households(1, seed=78, id_prefix="shape")[0]
    families.upsert(SIRET, household.family)
    for key in blocking_keys_for_family(household.family):
        stored = families._table.get_item(
            Key={"pk": family_pk(SIRET), "sk": blocking_sk(key, household.family.user_id)}
        )["Item"]
        assert plain(stored) == plain(to_dynamo(bench_matching.blocking_entry(SIRET, key, household.family)))
