"""Every audited route writes exactly one record — principal, agent, outcome — and no
identity or QF value ever lands in the trail."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest_api import PRINCIPAL, ApiHarness, api, api_runtime, directory_family, next_siret  # noqa: F401

AGENT = "agent.dupont@mairie:42"


def only_record(api: ApiHarness, request_id: str) -> dict[str, Any]:
    records = [r for r in api.audit() if r["request_id"] == request_id]
    assert len(records) == 1, records
    return records[0]


def request_id_of(api: ApiHarness, before: set[str]) -> str:
    new = [r["request_id"] for r in api.audit() if r["request_id"] not in before]
    assert len(new) == 1, new
    return new[0]


def seen(api: ApiHarness) -> set[str]:
    return {r["request_id"] for r in api.audit()}


# (action, route template, call) for every audited route; calls get (api, siret, reference, external_id).
Call = Callable[[ApiHarness, str, str, str], Any]
AUDITED: list[tuple[str, str, Call]] = [
    (
        "tenant.write",
        "PUT /v1/tenants/{siret}",
        lambda a, s, r, e: a.http.put(
            f"/v1/tenants/{s}",
            headers={"X-Agent-Id": AGENT},
            json={"name": "Commune de Test", "cog": "04107", "redirect_hosts": ["evil.example"]},
        ),
    ),
    (
        "credentials.write",
        "PUT /v1/tenants/{siret}/credentials",
        lambda a, s, r, e: a.http.put(
            f"/v1/tenants/{s}/credentials",
            headers={"X-Agent-Id": AGENT},
            json={"hubee_client_id": "i", "hubee_client_secret": "s"},
        ),
    ),
    (
        "form_link.issue",
        "POST /v1/tenants/{siret}/form-links",
        lambda a, s, r, e: a.http.post(
            f"/v1/tenants/{s}/form-links", headers={"X-Agent-Id": AGENT}, json={"user_id": "fam-1"}
        ),
    ),
    (
        "form_link.qr",
        "GET /v1/tenants/{siret}/form-links/{external_id}/qr.svg",
        lambda a, s, r, e: a.http.get(
            f"/v1/tenants/{s}/form-links/{e}/qr.svg", headers={"X-Agent-Id": AGENT}
        ),
    ),
    (
        "form_link.qr",
        "GET /v1/tenants/{siret}/form-links/{external_id}/qr.png",
        lambda a, s, r, e: a.http.get(
            f"/v1/tenants/{s}/form-links/{e}/qr.png", headers={"X-Agent-Id": AGENT}
        ),
    ),
    (
        "family.write",
        "PUT /v1/tenants/{siret}/families/{user_id}",
        lambda a, s, r, e: a.http.put(
            f"/v1/tenants/{s}/families/fam-1",
            headers={"X-Agent-Id": AGENT},
            json={"parents": directory_family("x")["parents"]},
        ),
    ),
    (
        "family.read",
        "GET /v1/tenants/{siret}/families/{user_id}",
        lambda a, s, r, e: a.http.get(f"/v1/tenants/{s}/families/fam-1", headers={"X-Agent-Id": AGENT}),
    ),
    (
        "family.batch_write",
        "POST /v1/tenants/{siret}/families:batch",
        lambda a, s, r, e: a.http.post(
            f"/v1/tenants/{s}/families:batch",
            headers={"X-Agent-Id": AGENT},
            json={"families": [directory_family("fam-2"), directory_family("fam-3")]},
        ),
    ),
    (
        "family.refresh",
        "POST /v1/tenants/{siret}/families/{user_id}/refresh",
        lambda a, s, r, e: a.http.post(
            f"/v1/tenants/{s}/families/fam-1/refresh", headers={"X-Agent-Id": AGENT}
        ),
    ),
    (
        "dossier.list",
        "GET /v1/tenants/{siret}/dossiers",
        lambda a, s, r, e: a.http.get(f"/v1/tenants/{s}/dossiers", headers={"X-Agent-Id": AGENT}),
    ),
    (
        "dossier.read",
        "GET /v1/tenants/{siret}/dossiers/{reference}",
        lambda a, s, r, e: a.http.get(f"/v1/tenants/{s}/dossiers/{r}", headers={"X-Agent-Id": AGENT}),
    ),
    (
        "dossier.resolve",
        "POST /v1/tenants/{siret}/dossiers/{reference}/resolve",
        lambda a, s, r, e: a.http.post(
            f"/v1/tenants/{s}/dossiers/{r}/resolve",
            headers={"X-Agent-Id": AGENT},
            json={"decision": "link", "user_id": "fam-1"},
        ),
    ),
    (
        "family.erase",
        "DELETE /v1/tenants/{siret}/families/{user_id}",
        lambda a, s, r, e: a.http.delete(f"/v1/tenants/{s}/families/fam-1", headers={"X-Agent-Id": AGENT}),
    ),
]


@pytest.fixture
def scene(api: ApiHarness) -> tuple[str, str, str]:
    """A tenant with a family, a form link and a dossier in review."""
    siret = api.tenant()
    api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]})
    external_id = api.http.post(f"/v1/tenants/{siret}/form-links", json={"user_id": "fam-1"}).json()[
        "external_id"
    ]
    _, reference, _ = api.seed_dossier(siret)
    return siret, reference, external_id


@pytest.mark.parametrize(("action", "route", "call"), AUDITED, ids=[f"{a}:{r}" for a, r, _ in AUDITED])
def test_each_audited_route_writes_exactly_one_record_with_principal_and_agent(
    api: ApiHarness, scene: tuple[str, str, str], action: str, route: str, call: Call
) -> None:
    siret, reference, external_id = scene
    before = seen(api)

    response = call(api, siret, reference, external_id)

    record = only_record(api, request_id_of(api, before))
    assert record["action"] == action and record["route"] == route
    assert record["principal"] == PRINCIPAL and record["agent_id"] == AGENT and record["actor"] == "editor"
    assert record["tenant_siret"] == siret and record["status_code"] == response.status_code
    # The scene's family has no pivot identity yet: refresh-now is refused, and audited as such.
    expected = ("conflict", 409) if action == "family.refresh" else ("success", response.status_code)
    assert (record["outcome"], record["status_code"]) == expected and response.status_code < 500
    if "{user_id}" in route or action.startswith("form_link"):
        assert record["user_id"] == "fam-1"
    if "{reference}" in route:
        assert record["reference"] == reference
    if action == "family.batch_write":
        assert record["user_ids"] == ["fam-2", "fam-3"]


def test_routes_not_touching_families_dossiers_or_credentials_are_not_audited(api: ApiHarness) -> None:
    siret = api.tenant()  # configuring a tenant (who may redirect parents after the form) is audited
    before = seen(api)

    api.http.get(f"/v1/tenants/{siret}")
    api.http.get("/v1/tenants")
    api.http.get(f"/v1/tenants/{siret}/poster")

    assert seen(api) == before


@pytest.mark.parametrize(
    ("make_request", "outcome", "status"),
    [
        (lambda a, s: a.http.get(f"/v1/tenants/{s}/families/nobody"), "not_found", 404),
        (lambda a, s: a.http.get(f"/v1/tenants/{next_siret()}/families/fam-1"), "not_found", 404),
        (lambda a, s: a.http.put(f"/v1/tenants/{s}/families/fam-1", json={"parents": "x"}), "invalid", 422),
        (lambda a, s: a.http.get(f"/v1/tenants/{s}/dossiers/zz"), "invalid", 400),
        (lambda a, s: a.http.post(f"/v1/tenants/{s}/families/fam-1/refresh"), "conflict", 409),
        (
            lambda a, s: a.http.post(
                f"/v1/tenants/{s}/families:batch",
                json={"families": [directory_family(f"f{i}") for i in range(1001)]},
            ),
            "invalid",
            413,
        ),
    ],
    ids=["unknown-family", "unknown-tenant", "bad-body", "bad-reference", "conflict", "oversized-batch"],
)
def test_refused_and_failed_requests_are_audited_with_their_outcome(
    api: ApiHarness, make_request: Callable[[ApiHarness, str], Any], outcome: str, status: int
) -> None:
    siret = api.tenant()
    api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]})
    before = seen(api)

    response = make_request(api, siret)

    assert response.status_code == status
    record = only_record(api, request_id_of(api, before))
    assert (record["outcome"], record["status_code"]) == (outcome, status)


def test_another_tenants_dossier_is_audited_as_denied_but_answered_404(api: ApiHarness) -> None:
    mine, theirs = api.tenant(), api.tenant()
    _, reference, _ = api.seed_dossier(theirs)
    before = seen(api)

    response = api.http.get(f"/v1/tenants/{mine}/dossiers/{reference}")

    assert response.status_code == 404
    record = only_record(api, request_id_of(api, before))
    assert (record["outcome"], record["tenant_siret"], record["reference"]) == ("denied", mine, reference)


def test_an_invalid_agent_id_is_400_and_audited_without_it(api: ApiHarness) -> None:
    siret = api.tenant()
    before = seen(api)

    response = api.http.get(f"/v1/tenants/{siret}/families/fam-1", headers={"X-Agent-Id": "a" * 65})
    spaced = api.http.get(f"/v1/tenants/{siret}/families/fam-1", headers={"X-Agent-Id": "bob <script>"})

    assert response.status_code == spaced.status_code == 400
    assert response.json()["code"] == "invalid_x_agent_id"
    records = [r for r in api.audit() if r["request_id"] not in before]
    assert len(records) == 2
    assert all(r["outcome"] == "invalid" and "agent_id" not in r for r in records)


def test_no_identity_or_qf_value_appears_in_any_audit_record(
    api: ApiHarness, scene: tuple[str, str, str]
) -> None:
    siret, reference, external_id = scene
    _, other_reference, snapshot = api.seed_dossier(siret)
    family = directory_family("fam-9", nom="ZYGOMAR", prenoms="QUENTINE", date_naissance="1979-12-31")
    for _, _, call in AUDITED:
        call(api, siret, reference, external_id)
    api.http.put(f"/v1/tenants/{siret}/families/fam-9", json={"parents": family["parents"]})
    api.http.get(f"/v1/tenants/{siret}/dossiers/{other_reference}")
    api.http.post(
        f"/v1/tenants/{siret}/dossiers/{other_reference}/resolve",
        json={"decision": "link", "user_id": "fam-9"},
    )
    api.http.get(f"/v1/tenants/{siret}/families/fam-9")

    records = api.audit(tenant_siret=siret)
    trail = json.dumps(records)

    pivot = snapshot["pivot_identity"]
    forbidden = [
        pivot["family_name"],
        pivot["given_name"],
        pivot["birthdate"],
        "ZYGOMAR",
        "QUENTINE",
        "1979-12-31",
        "BERNARD",
        "MARCEL",
        "valeur",
        "quotient_familial",
    ]
    assert [value for value in forbidden if value.lower() in trail.lower()] == []
    numbers = {key for record in records for key, value in record.items() if isinstance(value, int | float)}
    assert numbers == {"status_code"}  # no QF value can hide in a number
    assert len(api.audit(tenant_siret=siret, user_id="fam-9")) >= 3


def test_the_trail_is_queryable_per_tenant_and_per_family(api: ApiHarness) -> None:
    first, second = api.tenant(), api.tenant()
    for siret in (first, second):
        api.http.put(
            f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]}
        )
        api.http.get(f"/v1/tenants/{siret}/families/fam-1")
    api.http.post(f"/v1/tenants/{first}/families:batch", json={"families": [directory_family("fam-1")]})

    per_family = api.audit(tenant_siret=first, user_id="fam-1")

    assert [r["action"] for r in per_family] == ["family.write", "family.read", "family.batch_write"]
    assert all(r["tenant_siret"] == first for r in per_family)
