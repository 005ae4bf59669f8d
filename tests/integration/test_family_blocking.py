"""The directory's blocking reads on moto: what identity matching gets for a dossier's birth dates and names."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qfbridge.domain.identity import Family, PivotIdentity
from qfbridge.matching import (
    NAME_KEY_LIMIT,
    DossierIdentity,
    blocking_keys_for_family,
    candidate_of,
    is_name_key,
    match,
)
from qfbridge.matching.scoring import name_key
from qfbridge.store.families import (
    CROWDED_SHARDS,
    FamilyRepository,
    blocking_dates,
    bucket_sks,
    family_pk,
    family_sk,
    legacy_blocking_sk,
)
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
    # An item left without a family is deleted: its key may name someone (a name key)
    for key in keys:
        for sk in bucket_sks(key):
            item = families._table.get_item(Key={"pk": family_pk(SIRET), "sk": sk}).get("Item")
            assert item is None or household.family.user_id not in item.get("ids", set())
    name_items = [
        families._table.get_item(Key={"pk": family_pk(SIRET), "sk": sk}).get("Item")
        for key in keys
        if is_name_key(key)
        for sk in bucket_sks(key)
    ]
    assert name_items and all(item is None for item in name_items)


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
    attribute = f"f:{household.family.user_id}"
    for key in blocking_keys_for_family(household.family):
        stored = [
            families._table.get_item(Key={"pk": family_pk(SIRET), "sk": sk}).get("Item", {})
            for sk in bucket_sks(key)
        ]
        held = [item for item in stored if attribute in item]
        assert len(held) == 1
        sk, value = bench_matching.blocking_entry(key, household.family)
        assert (held[0]["sk"], held[0][attribute]) == (sk, value)


def test_a_blocking_entry_carries_what_scoring_reads(families: FamilyRepository) -> None:
    household = households(1, seed=79, id_prefix="compact")[0]
    families.upsert(SIRET, household.family)
    key = household.family.parents[0].date_naissance.isoformat()
    found = [c for c in families.candidates_on(SIRET, [key]) if c.user_id == household.family.user_id]
    assert found == [candidate_of(household.family)]


def test_a_crowded_1_january_is_spread_over_several_items_and_read_whole(families: FamilyRepository) -> None:
    base = households(1, seed=80, id_prefix="jan")[0].family.parents[0]
    born = dt.date(1971, 1, 1)
    crowd = [
        Family(user_id=f"jan-{i:03d}", parents=[base.model_copy(update={"date_naissance": born})])
        for i in range(3 * CROWDED_SHARDS)
    ]
    families.upsert_many(SIRET, crowd)
    holders = [
        families._table.get_item(Key={"pk": family_pk(SIRET), "sk": sk}).get("Item", {})
        for sk in bucket_sks(born.isoformat())
    ]
    assert len(bucket_sks(born.isoformat())) == CROWDED_SHARDS
    assert sum(1 for item in holders if any(name.startswith("f:") for name in item)) > 1
    found = families.candidates_on(SIRET, [born.isoformat()])
    assert {c.user_id for c in found} >= {f.user_id for f in crowd}


def test_a_family_in_the_former_layout_is_rewritten_by_reindex(families: FamilyRepository) -> None:
    # Given a family stored as the former layout wrote it: its item without a layout, one item per key
    household = households(1, seed=81, id_prefix="legacy")[0]
    family = household.family
    keys = sorted(blocking_dates(family))
    families._table.put_item(
        Item=to_dynamo(
            {
                "pk": family_pk(SIRET),
                "sk": family_sk(family.user_id),
                "family": family.model_dump(mode="json"),
                "blocking_dates": keys,
            }
        )
    )
    for key in keys:
        families._table.put_item(
            Item=to_dynamo(
                {
                    "pk": family_pk(SIRET),
                    "sk": legacy_blocking_sk(key, family.user_id),
                    "user_id": family.user_id,
                    "family": family.model_dump(mode="json"),
                }
            )
        )
    assert family.user_id not in [c.user_id for c in families.candidates_on(SIRET, keys)]
    # When the operator reindexes the tenant
    assert families.reindex(SIRET) >= 1
    # Then matching finds it, its former entries are gone, and a second run has nothing to do
    assert family.user_id in [c.user_id for c in families.candidates_on(SIRET, keys)]
    for key in keys:
        assert "Item" not in families._table.get_item(
            Key={"pk": family_pk(SIRET), "sk": legacy_blocking_sk(key, family.user_id)}
        )
    stored = families._table.get_item(Key={"pk": family_pk(SIRET), "sk": family_sk(family.user_id)})["Item"]
    assert plain(stored["blocking_format"]) == 2
    assert families.reindex(SIRET) == 0


def test_a_re_push_rewrites_a_family_of_the_former_layout(families: FamilyRepository) -> None:
    household = households(1, seed=82, id_prefix="repush")[0]
    family = household.family
    keys = sorted(blocking_dates(family))
    families._table.put_item(
        Item=to_dynamo(
            {
                "pk": family_pk(OTHER_SIRET),
                "sk": family_sk(family.user_id),
                "family": family.model_dump(mode="json"),
                "blocking_dates": keys,
            }
        )
    )
    families._table.put_item(
        Item=to_dynamo(
            {
                "pk": family_pk(OTHER_SIRET),
                "sk": legacy_blocking_sk(keys[0], family.user_id),
                "family": family.model_dump(mode="json"),
            }
        )
    )
    # The directory pushes the same identity again: the family is rewritten all the same
    families.upsert_many(OTHER_SIRET, [family])
    assert family.user_id in [c.user_id for c in families.candidates_on(OTHER_SIRET, keys)]
    assert "Item" not in families._table.get_item(
        Key={"pk": family_pk(OTHER_SIRET), "sk": legacy_blocking_sk(keys[0], family.user_id)}
    )
