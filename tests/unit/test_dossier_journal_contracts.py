"""The dossier journal's typed contracts: steps, outcomes, reasons and the patch every write takes."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from qfbridge.domain.errors import DossierError
from qfbridge.store.dossiers import (
    REJECTION_REASONS,
    DossierPatch,
    DossierRecord,
    Step,
    _step_update,
    rejection_reason,
)

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


def test_a_misspelt_attribute_fails_instead_of_being_stored() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        DossierPatch(outcom="linked")  # type: ignore[call-arg]


def test_an_unknown_outcome_or_link_method_fails() -> None:
    with pytest.raises(ValidationError):
        DossierPatch(outcome="linkd")
    with pytest.raises(ValidationError):
        DossierPatch(link_method="magic")
    with pytest.raises(ValidationError):
        DossierPatch(external_id_status="valide")


def test_a_patch_writes_exactly_the_attributes_it_was_given_and_a_none_clears_one() -> None:
    names, values, expression = _step_update(
        (Step.VERIFIED,), NOW, DossierPatch(reference="R-1", reason=None)
    )
    written = {names[f"#a{i}"]: values[f":a{i}"] for i in range(2)}
    assert written == {"reference": "R-1", "reason": None}
    assert names["#s0"] == "verified" and expression.count("=") == 3


def test_an_outcome_moves_with_its_tenant_keys() -> None:
    names, values, _ = _step_update(
        (Step.PERSISTED, Step.PARSED), NOW, DossierPatch(tenant_siret="21750001600019", outcome="linked")
    )
    assert values[":to"] == "21750001600019#linked" and values[":t"] == "21750001600019"
    assert [names["#s0"], names["#s1"]] == ["persisted", "parsed"]
    with pytest.raises(ValueError, match="tenant"):
        _step_update((Step.PERSISTED,), NOW, DossierPatch(outcome="linked"))


def test_a_later_patch_wins_and_keeps_what_it_does_not_set() -> None:
    merged = DossierPatch(reference="R-1", outcome="received").merged(DossierPatch(outcome="rejected"))
    assert merged.fields() == {"reference": "R-1", "outcome": "rejected"}


def test_every_dossier_error_code_is_a_listed_rejection_reason_or_falls_back_on_unusable() -> None:
    assert rejection_reason("digest_mismatch") == "digest_mismatch"
    assert rejection_reason(DossierError.code) == "dossier_unusable"
    assert rejection_reason("a_code_nobody_listed") == "dossier_unusable"
    assert {"foreign_recipient", "foreign_process_code", "unprocessable"} <= REJECTION_REASONS


def test_a_draft_is_not_stored_and_what_a_write_applies_is_the_record_it_stores() -> None:
    draft = DossierRecord.draft("case-1", "21750001600019", "notif-1", NOW, 300)
    assert not draft.stored and draft.attempts == 1 and draft.lease_until == NOW.timestamp() + 300
    after = draft.applied((Step.PERSISTED,), NOW, DossierPatch(outcome="needs_review"))
    assert after.stored and after.done(Step.PERSISTED) and after.outcome == "needs_review"
    assert draft.steps == {}
