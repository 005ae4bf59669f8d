"""The typed patch of a tenant: a misspelt attribute fails, only what was given is written."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic
import pytest

from qfbridge.store.tenants import Tenant, TenantPatch


def test_a_misspelt_attribute_is_refused_when_the_patch_is_built() -> None:
    misspelt: dict[str, Any] = {"refresh_stauts": "active"}
    with pytest.raises(pydantic.ValidationError, match="refresh_stauts"):
        TenantPatch(**misspelt)


def test_a_misspelt_attribute_is_refused_when_assigned() -> None:
    patch = TenantPatch()
    with pytest.raises(ValueError, match="hubee_stauts"):
        setattr(patch, "hubee_stauts", "ok")  # noqa: B010 - the attribute name is the point of the test


def test_a_value_outside_the_attributes_type_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="refresh_status"):
        TenantPatch.model_validate({"refresh_status": "paused"})
    patch = TenantPatch()
    with pytest.raises(pydantic.ValidationError, match="hubee_status"):
        patch.hubee_status = "fine"  # type: ignore[assignment]


def test_only_the_given_or_assigned_attributes_are_written_an_explicit_none_included() -> None:
    patch = TenantPatch(name="Commune", token_expires_on=None)
    patch.token_alerts_sent = []
    assert patch.fields() == {"name": "Commune", "token_expires_on": None, "token_alerts_sent": []}
    later = TenantPatch(token_expires_on=dt.date(2027, 6, 30), refresh_budget_rps=2.5)
    assert later.fields() == {"token_expires_on": "2027-06-30", "refresh_budget_rps": 2.5}
    assert TenantPatch().fields() == {}


def test_applied_to_a_tenant_changes_only_the_patched_attributes() -> None:
    tenant = Tenant(siret="21690123000012", name="Commune", cog="69123", token_alerts_sent=["90"])
    patched = TenantPatch(refresh_status="active", token_alerts_sent=[]).applied_to(tenant)
    assert patched == tenant.model_copy(update={"refresh_status": "active", "token_alerts_sent": []})
