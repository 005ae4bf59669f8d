"""PATCH /v1/tenants/{siret} (JSON merge patch) and 405 for a method a path does not have."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import json
from typing import Any

from conftest_api import ApiHarness, api, api_runtime, next_siret  # noqa: F401

from qfbridge.store.tenants import TenantPatch, TenantRepository


def _patch(api: ApiHarness, siret: str, body: Any, content_type: str = "application/merge-patch+json") -> Any:
    return api.http.patch(
        f"/v1/tenants/{siret}",
        content=json.dumps(body),
        headers={"Content-Type": content_type, "X-Agent-Id": "agent-7"},
    )


def test_patch_changes_only_the_fields_it_carries(api: ApiHarness) -> None:
    siret = api.tenant(
        name="Commune de Riez",
        redirect_hosts=["portail.riez.example", "www.riez.example"],
        token_expires_on="2026-07-01",
        refresh_budget_rps=6,
    )

    response = _patch(api, siret, {"token_expires_on": "2027-06-30"})

    assert response.status_code == 200, response.text
    view = api.http.get(f"/v1/tenants/{siret}").json()
    assert view["token_expires_on"] == "2027-06-30"
    assert view["redirect_hosts"] == ["portail.riez.example", "www.riez.example"]
    assert view["name"] == "Commune de Riez" and view["refresh_budget_rps"] == 6
    assert response.json() == view


def test_patch_sets_hosts_and_budget_and_null_clears_the_expiry(api: ApiHarness) -> None:
    siret = api.tenant(token_expires_on="2026-07-01")

    first = _patch(api, siret, {"redirect_hosts": ["WWW.Other.example"], "refresh_budget_rps": 2.5})
    second = _patch(api, siret, {"token_expires_on": None}, content_type="application/json")

    assert first.status_code == 200 and second.status_code == 200
    view = second.json()
    assert view["redirect_hosts"] == ["www.other.example"]
    assert view["refresh_budget_rps"] == 2.5 and view["token_expires_on"] is None


def test_a_prolonged_token_by_patch_resumes_refreshes_stopped_by_an_expired_token(api: ApiHarness) -> None:
    siret = api.tenant(token_expires_on="2026-07-01")
    tenants = TenantRepository(api.runtime.environment["TENANTS_TABLE"])
    tenants.update(
        siret, TenantPatch(refresh_status="token_expired", token_alerts_sent=["90", "60", "expired"])
    )

    assert _patch(api, siret, {"token_expires_on": "2028-01-01"}).status_code == 200

    tenant = tenants.require(siret)
    assert tenant.refresh_status == "active" and tenant.token_alerts_sent == []
    assert tenant.redirect_hosts == ["www.commune.example"]


def test_patch_refuses_unknown_tenants_unknown_fields_and_clearing_required_ones(api: ApiHarness) -> None:
    siret = api.tenant()

    unknown = _patch(api, next_siret(), {"name": "x"})
    extra = _patch(api, siret, {"colour": "blue"})
    cleared = _patch(api, siret, {"redirect_hosts": None})
    bad_budget = _patch(api, siret, {"refresh_budget_rps": 50})
    tiny_budget = _patch(api, siret, {"refresh_budget_rps": 5e-324})
    tiny_by_put = api.http.put(
        f"/v1/tenants/{siret}", json={"name": "x", "cog": "04107", "refresh_budget_rps": 5e-324}
    )

    assert unknown.status_code == 404 and unknown.json()["code"] == "tenant_not_found"
    for response, field in (
        (extra, "colour"),
        (cleared, "redirect_hosts"),
        (bad_budget, "refresh_budget_rps"),
        (tiny_budget, "refresh_budget_rps"),
        (tiny_by_put, "refresh_budget_rps"),
    ):
        assert response.status_code == 422, response.text
        assert ["body", field] in [e["loc"] for e in response.json()["errors"]]
    assert api.http.get(f"/v1/tenants/{siret}").json()["redirect_hosts"] == ["www.commune.example"]


def test_patch_is_audited_with_the_agent(api: ApiHarness) -> None:
    siret = api.tenant()

    _patch(api, siret, {"refresh_budget_rps": 3})

    records = [r for r in api.audit(tenant_siret=siret) if r["action"] == "tenant.update"]
    assert len(records) == 1
    assert records[0]["route"] == "PATCH /v1/tenants/{siret}" and records[0]["agent_id"] == "agent-7"
    assert records[0]["outcome"] == "success"


def test_a_method_the_path_does_not_have_is_405_with_allow(api: ApiHarness) -> None:
    siret = api.tenant()

    response = api.http.delete(f"/v1/tenants/{siret}")
    on_collection = api.http.post("/v1/tenants", json={})

    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET, PATCH, PUT"
    assert response.json()["code"] == "method_not_allowed"
    assert on_collection.status_code == 405 and on_collection.headers["allow"] == "GET"
    assert api.http.get("/v1/nowhere").status_code == 404
