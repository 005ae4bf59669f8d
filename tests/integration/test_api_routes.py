"""Every route of the editor API over HTTP (laptop runtime), with its bad inputs and their 4xx."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from conftest_api import AUTHORIZATION, ApiHarness, api, api_runtime, directory_family, next_siret  # noqa: F401

from qfbridge.store.dossiers import DossierPatch, DossierRepository, Step
from qfbridge.store.families import FamilyRepository
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.tenants import TenantPatch, TenantRepository

NOT_A_LUHN_SIRET = "21040107100018"
LA_POSTE_SIRET = "35600000000048"


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"] == f"urn:qfbridge:problem:{code}"
    return body


# ---------------------------------------------------------------------- tenants
def test_put_tenant_creates_then_updates_and_get_returns_it(api: ApiHarness) -> None:
    siret = next_siret()
    body = {"name": "Mairie de Digne", "cog": "04070", "redirect_hosts": ["WWW.Digne.example"]}

    created = api.http.put(f"/v1/tenants/{siret}", json=body)
    updated = api.http.put(f"/v1/tenants/{siret}", json=body | {"refresh_budget_rps": 10})
    fetched = api.http.get(f"/v1/tenants/{siret}")

    assert created.status_code == 201 and updated.status_code == 200
    view = fetched.json()
    assert view["redirect_hosts"] == ["www.digne.example"]
    assert view["refresh_budget_rps"] == 10 and view["status"] == "awaiting_credentials"
    assert view["refresh_status"] == "no_token"


def test_la_poste_siret_is_accepted_and_a_bad_luhn_siret_is_400(api: ApiHarness) -> None:
    body = {"name": "Bureau", "cog": "75056"}

    assert api.http.put(f"/v1/tenants/{LA_POSTE_SIRET}", json=body).status_code in (200, 201)
    problem(api.http.put(f"/v1/tenants/{NOT_A_LUHN_SIRET}", json=body), 400, "invalid_siret")
    problem(api.http.get("/v1/tenants/12AB"), 400, "invalid_siret")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cog", "123"),
        ("cog", 4107),
        ("refresh_budget_rps", 21),
        ("refresh_budget_rps", 0),
        ("refresh_budget_rps", "fast"),
        ("redirect_hosts", ["https://with-scheme.example/"]),
        ("token_expires_on", "next year"),
        ("unknown_field", 1),
    ],
)
def test_put_tenant_with_a_bad_field_is_422_naming_the_field_not_the_value(
    api: ApiHarness, field: str, value: Any
) -> None:
    body = {"name": "Mairie", "cog": "04107"} | {field: value}

    response = api.http.put(f"/v1/tenants/{next_siret()}", json=body)

    details = problem(response, 422, "validation_failed")
    assert any(field in error["loc"] for error in details["errors"])
    assert json.dumps(value) not in response.text or json.dumps(value) in ("0", "21")


def test_get_unknown_tenant_is_404_and_the_list_pages_with_an_opaque_cursor(api: ApiHarness) -> None:
    first, second = api.tenant(), api.tenant()

    problem(api.http.get(f"/v1/tenants/{next_siret()}"), 404, "tenant_not_found")
    page = api.http.get("/v1/tenants", params={"limit": 1}).json()
    sirets: list[str] = [t["siret"] for t in page["items"]]
    cursor = page["next_cursor"]
    while cursor:
        page = api.http.get("/v1/tenants", params={"limit": 1, "cursor": cursor}).json()
        sirets += [t["siret"] for t in page["items"]]
        cursor = page["next_cursor"]

    assert {first, second} <= set(sirets) and len(sirets) == len(set(sirets))
    problem(api.http.get("/v1/tenants", params={"cursor": "not-ours"}), 400, "invalid_cursor")
    problem(api.http.get("/v1/tenants", params={"limit": 0}), 400, "invalid_limit")


def test_a_later_token_expiry_resumes_refreshes_stopped_by_an_expired_token(api: ApiHarness) -> None:
    siret = api.tenant(token_expires_on="2026-07-01")
    tenants = TenantRepository(api.runtime.environment["TENANTS_TABLE"])
    tenants.update(
        siret, TenantPatch(refresh_status="token_expired", token_alerts_sent=["90", "60", "expired"])
    )

    api.http.put(
        f"/v1/tenants/{siret}", json={"name": "Commune", "cog": "04107", "token_expires_on": "2028-01-01"}
    )

    tenant = tenants.require(siret)
    assert tenant.refresh_status == "active" and tenant.token_alerts_sent == []
    assert tenant.token_expires_on == dt.date(2028, 1, 1)


# ---------------------------------------------------------------------- credentials
def test_credentials_are_stored_in_secrets_manager_and_answer_204(api: ApiHarness) -> None:
    siret = api.tenant()
    body = {"hubee_client_id": "client-1", "hubee_client_secret": "s3cret", "api_particulier_token": "tok"}

    response = api.http.put(f"/v1/tenants/{siret}/credentials", json=body)

    assert response.status_code == 204 and response.content == b""
    prefix = api.runtime.environment["TENANT_SECRETS_PREFIX"]
    stored = json.loads(
        api.runtime.client("secretsmanager").get_secret_value(SecretId=f"{prefix}{siret}")["SecretString"]
    )
    version = stored.pop("version")
    assert stored == body
    # And the write's version is recorded on the tenant, for readers to compare with their cached copy
    assert (
        TenantRepository(api.runtime.environment["TENANTS_TABLE"]).require(siret).credentials_version
        == version
    )
    tenant = api.http.get(f"/v1/tenants/{siret}").json()
    assert tenant["has_credentials"] is True and tenant["refresh_status"] == "active"
    assert tenant["status"] == "active"


def test_credentials_put_replaces_the_set_and_without_token_refreshes_stay_off(api: ApiHarness) -> None:
    siret = api.tenant()
    api.http.put(
        f"/v1/tenants/{siret}/credentials",
        json={"hubee_client_id": "a", "hubee_client_secret": "b", "api_particulier_token": "t"},
    )

    api.http.put(
        f"/v1/tenants/{siret}/credentials", json={"hubee_client_id": "a2", "hubee_client_secret": "b2"}
    )

    prefix = api.runtime.environment["TENANT_SECRETS_PREFIX"]
    stored = json.loads(
        api.runtime.client("secretsmanager").get_secret_value(SecretId=f"{prefix}{siret}")["SecretString"]
    )
    assert stored.pop("version")
    assert stored == {"hubee_client_id": "a2", "hubee_client_secret": "b2"}
    assert api.http.get(f"/v1/tenants/{siret}").json()["refresh_status"] == "no_token"


def test_credentials_bad_inputs(api: ApiHarness) -> None:
    siret = api.tenant()

    problem(
        api.http.put(f"/v1/tenants/{siret}/credentials", json={"hubee_client_id": "only-id"}),
        422,
        "validation_failed",
    )
    problem(
        api.http.put(
            f"/v1/tenants/{siret}/credentials",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "invalid_json",
    )
    problem(
        api.http.put(
            f"/v1/tenants/{next_siret()}/credentials",
            json={"hubee_client_id": "a", "hubee_client_secret": "b"},
        ),
        404,
        "tenant_not_found",
    )


# ---------------------------------------------------------------------- form links
def test_form_link_is_signed_stored_with_ttl_and_its_qr_codes_render(api: ApiHarness) -> None:
    siret = api.tenant()

    response = api.http.post(
        f"/v1/tenants/{siret}/form-links",
        json={"user_id": "fam-1", "redirect_uri": "https://www.commune.example/retour"},
    )

    assert response.status_code == 201
    link = response.json()
    assert link["url"].startswith(
        f"https://quotient-familial.numerique.gouv.fr/collectivites/{siret}?external_id="
    )
    assert "redirect_uri=https%3A%2F%2Fwww.commune.example%2Fretour" in link["url"]
    expires = dt.datetime.fromisoformat(link["expires_at"])
    assert 59 <= (expires - dt.datetime.now(dt.UTC)).days <= 60
    family = FamilyRepository(api.runtime.environment["FAMILIES_TABLE"]).get(siret, "fam-1")
    assert family is not None and len(family.link_ids) == 1
    svg = api.http.get(f"/v1/tenants/{siret}/form-links/{link['external_id']}/qr.svg")
    # API Gateway returns the PNG's bytes only to a request whose Accept names a binary media type.
    png = api.http.get(
        f"/v1/tenants/{siret}/form-links/{link['external_id']}/qr.png",
        params={"scale": 4},
        headers={"Accept": "image/png"},
    )
    assert (
        svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_form_link_refuses_a_redirect_off_the_tenant_hosts_and_unknown_links(api: ApiHarness) -> None:
    siret = api.tenant()

    problem(
        api.http.post(
            f"/v1/tenants/{siret}/form-links",
            json={"user_id": "fam-1", "redirect_uri": "https://evil.example/"},
        ),
        422,
        "redirect_not_allowed",
    )
    problem(
        api.http.post(f"/v1/tenants/{siret}/form-links", json={"user_id": "has space"}),
        422,
        "validation_failed",
    )
    problem(
        api.http.get(
            f"/v1/tenants/{siret}/form-links/qfb1.k1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA/qr.svg"
        ),
        404,
        "form_link_not_found",
    )
    problem(
        api.http.get(f"/v1/tenants/{siret}/form-links/x/qr.png", params={"scale": 99}), 400, "invalid_scale"
    )


def test_another_tenants_form_link_is_404(api: ApiHarness) -> None:
    mine, theirs = api.tenant(), api.tenant()
    link = api.http.post(f"/v1/tenants/{theirs}/form-links", json={"user_id": "fam-9"}).json()

    problem(
        api.http.get(f"/v1/tenants/{mine}/form-links/{link['external_id']}/qr.svg"),
        404,
        "form_link_not_found",
    )


# ---------------------------------------------------------------------- poster
def test_poster_is_html_with_the_public_form_url_and_an_inline_qr(api: ApiHarness) -> None:
    siret = api.tenant(name="Ville <Test> & Co")

    response = api.http.get(f"/v1/tenants/{siret}/poster")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f"https://quotient-familial.numerique.gouv.fr/collectivites/{siret}</p>" in page
    assert "external_id" not in page and "<svg" in page and "<?xml" not in page
    assert "Ville &lt;Test&gt; &amp; Co" in page and "<Test>" not in page
    problem(api.http.get(f"/v1/tenants/{next_siret()}/poster"), 404, "tenant_not_found")


# ---------------------------------------------------------------------- families
def test_put_get_family_returns_qf_view_without_identity(api: ApiHarness) -> None:
    siret = api.tenant()
    family = directory_family("fam-1")
    body = {"parents": family["parents"], "enfants": family["enfants"]}

    created = api.http.put(f"/v1/tenants/{siret}/families/fam-1", json=body)
    replaced = api.http.put(f"/v1/tenants/{siret}/families/fam-1", json=body)
    fetched = api.http.get(f"/v1/tenants/{siret}/families/fam-1")

    assert created.status_code == 201 and replaced.status_code == 200
    view = fetched.json()
    assert view == {
        "user_id": "fam-1",
        "in_directory": True,
        "has_pivot_identity": False,
        "quotient_familial": None,
        "history": [],
        "refresh": {
            "status": "pending",
            "last_attempt_at": None,
            "last_outcome": None,
            "reason": None,
            "next_refresh_at": None,
        },
    }
    assert "DURAND" not in fetched.text


def test_family_bad_inputs(api: ApiHarness) -> None:
    siret = api.tenant()
    family = directory_family("x")
    good = {"parents": family["parents"]}

    problem(
        api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": []}), 422, "validation_failed"
    )
    problem(
        api.http.put(
            f"/v1/tenants/{siret}/families/fam-1",
            json={"parents": [{**family["parents"][0], "date_naissance": 19850203}]},
        ),
        422,
        "validation_failed",
    )
    problem(api.http.put(f"/v1/tenants/{siret}/families/bad%20id", json=good), 400, "invalid_user_id")
    problem(api.http.put(f"/v1/tenants/{next_siret()}/families/fam-1", json=good), 404, "tenant_not_found")
    problem(api.http.get(f"/v1/tenants/{siret}/families/nobody"), 404, "family_not_found")
    problem(api.http.delete(f"/v1/tenants/{siret}/families/nobody"), 404, "family_not_found")


def test_another_tenants_family_is_404(api: ApiHarness) -> None:
    mine, theirs = api.tenant(), api.tenant()
    api.http.put(f"/v1/tenants/{theirs}/families/fam-1", json={"parents": directory_family("x")["parents"]})

    problem(api.http.get(f"/v1/tenants/{mine}/families/fam-1"), 404, "family_not_found")
    problem(api.http.delete(f"/v1/tenants/{mine}/families/fam-1"), 404, "family_not_found")
    assert api.http.get(f"/v1/tenants/{theirs}/families/fam-1").status_code == 200


def test_batch_answers_row_by_row(api: ApiHarness) -> None:
    siret = api.tenant()
    api.http.put(f"/v1/tenants/{siret}/families/old", json={"parents": directory_family("x")["parents"]})
    rows = [
        directory_family("new"),
        directory_family("old"),
        {"user_id": "broken", "parents": "nope"},
        directory_family("new"),
        {"user_id": "extra", "parents": [], "colour": "blue"},
    ]

    response = api.http.post(f"/v1/tenants/{siret}/families:batch", json={"families": rows})

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["updated"], report["invalid"]) == (1, 1, 3)
    statuses = [(r["index"], r["status"], r["code"]) for r in report["results"]]
    assert statuses == [
        (0, "created", None),
        (1, "updated", None),
        (2, "invalid", "invalid_family"),
        (3, "invalid", "duplicate_user_id"),
        (4, "invalid", "invalid_family"),
    ]
    assert report["results"][2]["errors"][0]["loc"][0] == "parents" and "nope" not in response.text
    assert {tuple(e["loc"]) for e in report["results"][4]["errors"]} == {("parents",), ("colour",)}
    assert "blue" not in response.text


def test_batch_of_more_than_1000_is_413_and_empty_is_422(api: ApiHarness) -> None:
    siret = api.tenant()
    rows = [directory_family(f"f{i}") for i in range(1001)]

    problem(
        api.http.post(f"/v1/tenants/{siret}/families:batch", json={"families": rows}), 413, "batch_too_large"
    )
    problem(
        api.http.post(f"/v1/tenants/{siret}/families:batch", json={"families": []}), 422, "validation_failed"
    )
    problem(
        api.http.post(f"/v1/tenants/{siret}/families:batch", json={"families": "all"}),
        422,
        "validation_failed",
    )


def test_batch_of_1000_is_accepted(api: ApiHarness) -> None:
    siret = api.tenant()
    rows = [directory_family(f"f{i}") for i in range(1000)]

    # One UpdateItem per family (a push never overwrites what intake stored): DynamoDB serves them in
    # parallel, the laptop's moto one at a time, slowly on a busy machine.
    response = api.http.post(f"/v1/tenants/{siret}/families:batch", json={"families": rows}, timeout=120)

    assert response.status_code == 200 and response.json()["created"] == 1000


def test_delete_family_erases_family_links_and_dossier_personal_data(api: ApiHarness) -> None:
    siret = api.tenant()
    api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]})
    link = api.http.post(f"/v1/tenants/{siret}/form-links", json={"user_id": "fam-1"}).json()
    case_id, reference, _ = api.seed_dossier(siret)
    resolved = api.http.post(
        f"/v1/tenants/{siret}/dossiers/{reference}/resolve", json={"decision": "link", "user_id": "fam-1"}
    )
    assert resolved.status_code == 200, resolved.text

    response = api.http.delete(f"/v1/tenants/{siret}/families/fam-1")

    assert response.status_code == 200
    assert response.json() == {"user_id": "fam-1", "form_links_deleted": 1, "dossiers_erased": 1}
    problem(api.http.get(f"/v1/tenants/{siret}/families/fam-1"), 404, "family_not_found")
    problem(
        api.http.get(f"/v1/tenants/{siret}/form-links/{link['external_id']}/qr.svg"),
        404,
        "form_link_not_found",
    )
    item = api.runtime.client("dynamodb").get_item(
        TableName=api.runtime.environment["DOSSIERS_TABLE"], Key={"case_id": {"S": case_id}}
    )["Item"]
    assert "parsed" not in item and "user_id" not in item and item["erased"] == {"BOOL": True}
    families_table = api.runtime.environment["FAMILIES_TABLE"]
    remaining = api.runtime.client("dynamodb").query(
        TableName=families_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"T#{siret}"}},
    )["Items"]
    assert remaining == []


def test_refresh_now_queues_a_manual_refresh_or_409(api: ApiHarness) -> None:
    siret = api.tenant()
    api.http.put(
        f"/v1/tenants/{siret}/credentials",
        json={"hubee_client_id": "a", "hubee_client_secret": "b", "api_particulier_token": "t"},
    )
    api.http.put(f"/v1/tenants/{siret}/families/shell", json={"parents": directory_family("x")["parents"]})
    api.http.put(f"/v1/tenants/{siret}/families/fam-1", json={"parents": directory_family("x")["parents"]})
    _, reference, _ = api.seed_dossier(siret)
    api.http.post(
        f"/v1/tenants/{siret}/dossiers/{reference}/resolve", json={"decision": "link", "user_id": "fam-1"}
    )
    api.queued("RefreshQueue")

    problem(api.http.post(f"/v1/tenants/{siret}/families/shell/refresh"), 409, "no_pivot_identity")
    problem(api.http.post(f"/v1/tenants/{siret}/families/nobody/refresh"), 404, "family_not_found")
    queued = api.http.post(f"/v1/tenants/{siret}/families/fam-1/refresh")

    assert queued.status_code == 202 and queued.json() == {"user_id": "fam-1", "queued": True}
    assert api.queued("RefreshQueue") == [
        {"siret": siret, "user_id": "fam-1", "reason": "manual", "admitted": True}
    ]
    # When the tenant's budget is booked for longer than a queued refresh can wait (SQS's 15 minutes)
    tenants = TenantRepository(api.runtime.environment["TENANTS_TABLE"])
    TenantPacer(api.runtime.environment["TENANTS_TABLE"]).book(
        siret, 10_000, rate=1.0, now=time.time(), horizon=1_000
    )
    # Then a manual refresh is refused rather than queued beyond its patience
    problem(api.http.post(f"/v1/tenants/{siret}/families/fam-1/refresh"), 409, "refresh_budget_exhausted")
    assert api.queued("RefreshQueue") == []
    tenants.update(siret, TenantPatch(refresh_status="token_expired"))
    problem(api.http.post(f"/v1/tenants/{siret}/families/fam-1/refresh"), 409, "refresh_stopped")


# ---------------------------------------------------------------------- dossiers
def test_dossiers_list_filters_by_status_and_pages(api: ApiHarness) -> None:
    siret = api.tenant()
    review = [api.seed_dossier(siret)[1] for _ in range(3)]
    api.seed_dossier(siret, outcome="rejected")

    everything = api.http.get(f"/v1/tenants/{siret}/dossiers").json()
    first = api.http.get(
        f"/v1/tenants/{siret}/dossiers", params={"status": "needs_review", "limit": 2}
    ).json()
    rest = api.http.get(
        f"/v1/tenants/{siret}/dossiers",
        params={"status": "needs_review", "limit": 2, "cursor": first["next_cursor"]},
    ).json()

    assert len(everything["items"]) == 4
    seen = [d["reference"] for d in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(review) and all(d["status"] == "needs_review" for d in first["items"])
    problem(api.http.get(f"/v1/tenants/{siret}/dossiers", params={"status": "lost"}), 400, "invalid_status")
    problem(
        api.http.get(f"/v1/tenants/{siret}/dossiers", params={"cursor": first["next_cursor"]}),
        400,
        "invalid_cursor",
    )


def test_dossier_lookup_by_reference_in_both_forms(api: ApiHarness) -> None:
    siret = api.tenant()
    case_id, reference, _ = api.seed_dossier(siret)

    bare = api.http.get(f"/v1/tenants/{siret}/dossiers/{reference.lower()}")
    full = api.http.get(f"/v1/tenants/{siret}/dossiers/Formulaire-QF-{reference}-01")

    assert bare.status_code == full.status_code == 200
    assert bare.json()["case_id"] == full.json()["case_id"] == case_id
    assert bare.json()["dossier_data"]["quotient_familial"]["valeur"] == 650
    problem(api.http.get(f"/v1/tenants/{siret}/dossiers/NOT-A-REFERENCE-AT-ALL"), 400, "invalid_reference")
    problem(api.http.get(f"/v1/tenants/{siret}/dossiers/0000000000000"), 404, "dossier_not_found")


def test_another_tenants_dossier_is_404_like_an_unknown_one(api: ApiHarness) -> None:
    mine, theirs = api.tenant(), api.tenant()
    _, reference, _ = api.seed_dossier(theirs)

    foreign = api.http.get(f"/v1/tenants/{mine}/dossiers/{reference}")
    resolve = api.http.post(f"/v1/tenants/{mine}/dossiers/{reference}/resolve", json={"decision": "reject"})

    body = problem(foreign, 404, "dossier_not_found")
    problem(resolve, 404, "dossier_not_found")
    unknown = problem(api.http.get(f"/v1/tenants/{mine}/dossiers/0000000000001"), 404, "dossier_not_found")
    assert body["detail"].replace(reference, "X") == unknown["detail"].replace("0000000000001", "X")


def test_resolve_link_stores_the_qf_like_intake_and_hands_over_to_reconcile(api: ApiHarness) -> None:
    siret = api.tenant()
    case_id, reference, _ = api.seed_dossier(
        siret, candidates=[{"user_id": "fam-7", "score": 0.8, "reasons": ["birth_date"]}]
    )
    api.http.put(f"/v1/tenants/{siret}/families/fam-7", json={"parents": directory_family("x")["parents"]})
    api.queued("DossiersQueue")

    response = api.http.post(
        f"/v1/tenants/{siret}/dossiers/{reference}/resolve",
        json={"decision": "link", "user_id": "fam-7"},
        headers={"X-Agent-Id": "agent-42"},
    )

    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["status"], detail["user_id"], detail["link_method"]) == ("linked", "fam-7", "review")
    assert detail["resolved_by"].endswith("agent:agent-42") and detail["dossier_data"] is None
    family = api.http.get(f"/v1/tenants/{siret}/families/fam-7").json()
    assert family["has_pivot_identity"] is True
    assert family["quotient_familial"]["quotient_familial"] == 650
    assert family["quotient_familial"]["source"] == "review"
    assert api.queued("DossiersQueue") == [
        {"kind": "review_resolved", "case_id": case_id, "credential_holder": siret}
    ]


def test_resolve_reject_then_any_other_decision_is_409_but_a_repeat_is_accepted(api: ApiHarness) -> None:
    siret = api.tenant()
    _, reference, _ = api.seed_dossier(siret)
    url = f"/v1/tenants/{siret}/dossiers/{reference}/resolve"

    rejected = api.http.post(url, json={"decision": "reject", "reason": "not_our_usager"})
    repeated = api.http.post(url, json={"decision": "reject"})
    other = api.http.post(url, json={"decision": "link", "user_id": "fam-1"})

    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert rejected.json()["reason"] == "not_our_usager"
    assert repeated.status_code == 200
    problem(other, 409, "dossier_not_in_review")


def test_resolve_is_only_for_dossiers_in_review_and_validates_its_body(api: ApiHarness) -> None:
    siret = api.tenant()
    _, linked, _ = api.seed_dossier(siret, outcome="linked", user_id="fam-1")
    _, review, _ = api.seed_dossier(siret)

    problem(
        api.http.post(f"/v1/tenants/{siret}/dossiers/{linked}/resolve", json={"decision": "reject"}),
        409,
        "dossier_not_in_review",
    )
    for body in (
        {"decision": "maybe"},
        {"decision": "link"},
        {"decision": "reject", "reason": "Free text, names"},
        {"decision": "link", "user_id": 12},
    ):
        problem(
            api.http.post(f"/v1/tenants/{siret}/dossiers/{review}/resolve", json=body),
            422,
            "validation_failed",
        )


# ---------------------------------------------------------------------- gateway behaviour
def test_unknown_route_is_a_404_problem_and_unsigned_requests_never_reach_the_function(
    api: ApiHarness,
) -> None:
    problem(api.http.get("/v1/nowhere"), 404, "route_not_found")

    unsigned = api.http.get("/v1/tenants", headers={"Authorization": ""})

    assert unsigned.status_code == 403
    assert AUTHORIZATION.startswith("AWS4-HMAC-SHA256")


# ---------------------------------------------------------------------------- review decisions, erasure
def candidate(user_id: str, score: float = 0.8) -> dict[str, Any]:
    return {"user_id": user_id, "score": score, "reasons": ["birth_date"]}


def test_a_review_link_targets_a_candidate_or_a_directory_family_never_an_invented_one(
    api: ApiHarness,
) -> None:
    siret = api.tenant()
    _, reference, _ = api.seed_dossier(siret, candidates=[candidate("cand-1")])
    url = f"/v1/tenants/{siret}/dossiers/{reference}/resolve"

    problem(api.http.post(url, json={"decision": "link", "user_id": "nobody"}), 422, "unknown_family")
    problem(api.http.get(f"/v1/tenants/{siret}/families/nobody"), 404, "family_not_found")
    # A ranked candidate whose family no longer exists (erased since) is not recreated either.
    problem(api.http.post(url, json={"decision": "link", "user_id": "cand-1"}), 422, "unknown_family")
    problem(api.http.get(f"/v1/tenants/{siret}/families/cand-1"), 404, "family_not_found")
    assert api.http.get(f"/v1/tenants/{siret}/dossiers/{reference}").json()["status"] == "needs_review"

    # A family of the directory the matching did not rank is the agent's call.
    api.http.put(f"/v1/tenants/{siret}/families/fam-2", json={"parents": directory_family("x")["parents"]})
    linked = api.http.post(url, json={"decision": "link", "user_id": "fam-2"})
    assert linked.status_code == 200 and linked.json()["user_id"] == "fam-2"


def test_a_wrong_review_decision_is_reopened_and_relinked_without_erasing_the_family(api: ApiHarness) -> None:
    siret = api.tenant()
    for user_id in ("fam-a", "fam-b"):
        api.http.put(
            f"/v1/tenants/{siret}/families/{user_id}", json={"parents": directory_family("x")["parents"]}
        )
    case_id, reference, _ = api.seed_dossier(siret, candidates=[candidate("fam-a"), candidate("fam-b", 0.7)])
    url = f"/v1/tenants/{siret}/dossiers/{reference}/resolve"
    headers = {"X-Agent-Id": "agent-7"}
    assert (
        api.http.post(url, json={"decision": "link", "user_id": "fam-a"}, headers=headers).status_code == 200
    )
    assert api.http.get(f"/v1/tenants/{siret}/families/fam-a").json()["has_pivot_identity"] is True

    reopened = api.http.post(url, json={"decision": "reopen"}, headers=headers)

    assert reopened.status_code == 200, reopened.text
    detail = reopened.json()
    assert (detail["status"], detail["user_id"]) == ("needs_review", None)
    assert [(d["outcome"], d["user_id"], d["link_method"]) for d in detail["earlier_decisions"]] == [
        ("linked", "fam-a", "review")
    ]
    assert detail["earlier_decisions"][0]["reopened_by"].endswith("agent:agent-7")
    wrong = api.http.get(f"/v1/tenants/{siret}/families/fam-a")
    assert wrong.status_code == 200  # the family stays; only what the dossier brought leaves it
    assert wrong.json()["quotient_familial"] is None and wrong.json()["history"] == []
    assert wrong.json()["has_pivot_identity"] is False

    relinked = api.http.post(url, json={"decision": "link", "user_id": "fam-b"}, headers=headers)

    assert relinked.status_code == 200 and relinked.json()["user_id"] == "fam-b"
    assert api.http.get(f"/v1/tenants/{siret}/families/fam-b").json()["quotient_familial"] is not None
    assert len(relinked.json()["earlier_decisions"]) == 1
    trail = [r for r in api.audit(reference=reference) if r["action"] == "dossier.resolve"]
    assert [(r["user_id"], r["outcome"]) for r in trail] == [
        ("fam-a", "success"),
        ("fam-a", "success"),
        ("fam-b", "success"),
    ]
    problem(api.http.post(url, json={"decision": "link", "user_id": "fam-a"}), 409, "dossier_not_in_review")
    assert case_id


def test_erasure_reaches_dossiers_in_review_and_a_later_review_cannot_recreate_the_family(
    api: ApiHarness,
) -> None:
    siret = api.tenant()
    _, own_reference, snapshot = api.seed_dossier(siret, candidates=[candidate("usager"), candidate("other")])
    pivot = snapshot["pivot_identity"]
    parent = {
        "nom_naissance": pivot["family_name"],
        "prenoms": pivot["given_name"],
        "sexe": "F" if pivot["gender"] == "female" else "M",
        "date_naissance": pivot["birthdate"],
    }
    api.http.put(f"/v1/tenants/{siret}/families/usager", json={"parents": [parent]})
    api.http.put(f"/v1/tenants/{siret}/families/other", json={"parents": directory_family("x")["parents"]})
    # Another usager's dossier in review, which ranks the erased family among its candidates.
    stranger_case, stranger_reference, _ = api.seed_dossier(
        siret, candidates=[candidate("usager"), candidate("other", 0.5)]
    )
    stranger = dict(snapshot, pivot_identity=dict(pivot, family_name="AUTREMENT", birthdate="1970-01-01"))
    DossierRepository(api.runtime.environment["DOSSIERS_TABLE"]).mark(
        stranger_case, Step.PERSISTED, dt.datetime.now(dt.UTC), DossierPatch(parsed=stranger)
    )

    erased = api.http.delete(f"/v1/tenants/{siret}/families/usager")

    assert erased.status_code == 200 and erased.json()["dossiers_erased"] == 1
    own = api.http.get(f"/v1/tenants/{siret}/dossiers/{own_reference}").json()
    assert own["dossier_data"] is None and own["candidate_families"] == []
    other = api.http.get(f"/v1/tenants/{siret}/dossiers/{stranger_reference}").json()
    assert [c["user_id"] for c in other["candidate_families"]] == ["other"]
    assert other["dossier_data"] is not None
    problem(
        api.http.post(
            f"/v1/tenants/{siret}/dossiers/{stranger_reference}/resolve",
            json={"decision": "link", "user_id": "usager"},
        ),
        422,
        "unknown_family",
    )
    problem(api.http.get(f"/v1/tenants/{siret}/families/usager"), 404, "family_not_found")
