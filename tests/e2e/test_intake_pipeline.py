"""The whole intake on the laptop runtime: HubEE sandbox → hubee_poll → SQS → reconcile → DynamoDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qfbridge.store.dossiers import DossierRepository
from qfbridge.store.families import FamilyRepository
from qfbridge_local.population import collectivites, households
from qfbridge_local.runtime import LocalRuntime, RuntimeOptions
from qfbridge_local.sandboxes.hubee import HubeeSandbox
from tests.support.world import World


@pytest.fixture
def hubee() -> Iterator[HubeeSandbox]:
    with HubeeSandbox(seed=3) as sandbox:
        yield sandbox


@pytest.fixture
def runtime(hubee: HubeeSandbox) -> Iterator[LocalRuntime]:
    options = RuntimeOptions(
        serve_api=False,
        env_overrides={
            "HUBEE_API_URL": hubee.api_url,
            "HUBEE_TOKEN_URL": hubee.token_url,
            "DOSSIER_LEASE_SECONDS": "0",
        },
    )
    with LocalRuntime.start(options) as rt:
        yield rt


def test_a_new_dossier_is_linked_by_identity_and_acknowledged(
    runtime: LocalRuntime, hubee: HubeeSandbox
) -> None:
    # Given a tenant whose directory holds a family, and that family's parent filling the form
    town = collectivites(1)[0]
    world = World(runtime, hubee=hubee)
    world.onboard(town, "client-a")
    household = households(1)[0]
    world.directory(town, [household.family])
    deposited = hubee.deposit_formulaire_qf(town.siret, town.cog, household.formulaire())
    # When the poll runs and the queues drain
    runtime.poll()
    runtime.drain()
    # Then the dossier is linked, the family holds the QF, HubEE got SI_RECEIVED then DONE, the
    # notification is deleted, and the form's CLOSED event was acknowledged at the next poll
    record = DossierRepository(runtime.environment["DOSSIERS_TABLE"]).get(deposited.case_id)
    assert record is not None and record.outcome == "linked" and record.link_method == "identity"
    family = FamilyRepository(runtime.environment["FAMILIES_TABLE"]).get(town.siret, household.family.user_id)
    assert family is not None and family.qf is not None
    assert family.qf.quotient_familial.valeur == household.qf.valeur
    assert hubee.status_events(deposited.case_id) == ["SI_RECEIVED", "DONE"]
    runtime.poll()
    runtime.drain()
    assert hubee.pending_notification_ids() == []
    calls = sum(hubee.calls_by_case(deposited.case_id).values())
    assert calls <= 5 + 3


def test_a_dossier_for_an_unknown_family_waits_for_review(runtime: LocalRuntime, hubee: HubeeSandbox) -> None:
    town = collectivites(1)[0]
    World(runtime, hubee=hubee).onboard(town, "client-a")
    stranger = households(1, seed=99)[0]
    deposited = hubee.deposit_formulaire_qf(town.siret, town.cog, stranger.formulaire())
    runtime.poll()
    runtime.drain()
    record = DossierRepository(runtime.environment["DOSSIERS_TABLE"]).get(deposited.case_id)
    assert record is not None and record.outcome == "needs_review"
    assert hubee.status_events(deposited.case_id) == ["SI_RECEIVED"]
    assert hubee.pending_notification_ids() == []
