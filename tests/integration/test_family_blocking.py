"""The directory's blocking reads on moto: what identity matching gets for a dossier's birth dates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from qfbridge.store.families import FamilyRepository
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
