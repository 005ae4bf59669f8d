"""The API's published contracts: the committed OpenAPI, the event schemas, the audit log group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from qfbridge.api import openapi_document
from qfbridge.api.__main__ import render
from qfbridge.messages import EVENT_MODELS, parse_event, qf_updated
from qfbridge.store.events import EVENT_TYPES
from qfbridge.store.families import QfEntry
from qfbridge_local.apidoc import render_event_schemas
from qfbridge_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
OPENAPI = REPO / "docs" / "openapi.json"
EVENTS = REPO / "docs" / "events"
SIRET = "21040107100019"


def test_committed_openapi_equals_the_generated_one() -> None:
    committed = OPENAPI.read_text(encoding="utf-8")

    assert committed == render(), (
        "docs/openapi.json is stale: run python -m qfbridge.api --write docs/openapi.json"
    )


def test_openapi_documents_every_route_of_issue_6_with_problem_errors() -> None:
    document = openapi_document()

    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("PUT", "/v1/tenants/{siret}"),
        ("PATCH", "/v1/tenants/{siret}"),
        ("GET", "/v1/tenants/{siret}"),
        ("GET", "/v1/tenants"),
        ("PUT", "/v1/tenants/{siret}/credentials"),
        ("POST", "/v1/tenants/{siret}/form-links"),
        ("GET", "/v1/tenants/{siret}/form-links/{external_id}/qr.svg"),
        ("GET", "/v1/tenants/{siret}/form-links/{external_id}/qr.png"),
        ("GET", "/v1/tenants/{siret}/poster"),
        ("PUT", "/v1/tenants/{siret}/families/{user_id}"),
        ("GET", "/v1/tenants/{siret}/families/{user_id}"),
        ("DELETE", "/v1/tenants/{siret}/families/{user_id}"),
        ("POST", "/v1/tenants/{siret}/families:batch"),
        ("POST", "/v1/tenants/{siret}/families/{user_id}/refresh"),
        ("GET", "/v1/tenants/{siret}/dossiers"),
        ("GET", "/v1/tenants/{siret}/dossiers/{reference}"),
        ("POST", "/v1/tenants/{siret}/dossiers/{reference}/resolve"),
    }
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["security"] == [{"sigv4": []}]
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert "application/problem+json" in response["content"], (
                        operation["operationId"],
                        status,
                    )
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["security"] == [{"sigv4": []}]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    credentials = document["components"]["schemas"]["CredentialsBody"]["properties"]
    assert credentials["hubee_client_secret"]["writeOnly"] is True


def success_schemas(document: dict[str, Any]) -> dict[str, list[str]]:
    """operationId -> what is missing from its success answer (empty when it is complete)."""
    missing: dict[str, list[str]] = {}
    for item in document["paths"].values():
        for operation in item.values():
            problems: list[str] = []
            successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
            if not successes:
                problems.append("no 2xx response")
            for status, response in successes.items():
                if status == "204":
                    continue
                content = response.get("content") or {}
                if not content or not all(media.get("schema") for media in content.values()):
                    problems.append(f"{status} without a schema")
            missing[operation["operationId"]] = problems
    return missing


def test_every_operation_documents_its_success_answer_with_a_schema() -> None:
    document = openapi_document()

    incomplete = {op: problems for op, problems in success_schemas(document).items() if problems}

    assert incomplete == {}
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and "get_tenant" in ids  # the handler's name: what clients call


def test_the_completeness_check_catches_an_operation_without_a_success_schema() -> None:
    document = openapi_document()
    operation = document["paths"]["/v1/tenants/{siret}"]["get"]
    operation["responses"]["200"]["content"]["application/json"].pop("schema")

    assert success_schemas(document)["get_tenant"] == ["200 without a schema"]


def test_enums_and_patterns_are_in_the_markdown_reference() -> None:
    markdown = (REPO / "docs" / "api.md").read_text(encoding="utf-8")

    assert "pattern `^[0-9]{14}$`" in markdown
    assert "one of `received`, `linked`, `needs_review`, `rejected`" in markdown
    assert "one of `awaiting_credentials`, `hubee_auth_failed`" in markdown


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_each_event_type_has_a_valid_schema_naming_its_envelope(name: str) -> None:
    schema = json.loads((EVENTS / f"{name}.schema.json").read_text(encoding="utf-8"))

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-eventbridge"] == {"source": "qfbridge", "detail-type": name}
    assert sorted(p.name for p in EVENTS.glob("*.schema.json")) == sorted(
        f"{t}.schema.json" for t in EVENT_TYPES
    )


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_the_committed_event_schemas_are_generated_from_the_event_models(name: str) -> None:
    committed = (EVENTS / f"{name}.schema.json").read_text(encoding="utf-8")

    assert committed == render_event_schemas()[name], (
        f"docs/events/{name}.schema.json is stale: run make openapi"
    )


def test_the_schema_drift_check_sees_a_field_added_to_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from qfbridge import messages

    class Widened(messages.TenantHubeeAuthFailed):
        detail_type = "tenant.hubee_auth_failed"
        attempts: int = 0

    monkeypatch.setattr(
        messages,
        "EVENTS",
        tuple(Widened if e is messages.TenantHubeeAuthFailed else e for e in messages.EVENTS),
    )
    committed = (EVENTS / "tenant.hubee_auth_failed.schema.json").read_text(encoding="utf-8")

    assert committed != render_event_schemas()["tenant.hubee_auth_failed"]


def validate(name: str, detail: dict[str, Any]) -> None:
    """Valid for the committed schema (what subscribers read) and for the model (what is published)."""
    schema = json.loads((EVENTS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(detail)
    assert parse_event(name, detail).detail() == detail


def test_qf_updated_schema_accepts_what_intake_and_refresh_publish() -> None:
    entry = QfEntry.model_validate(
        {
            "quotient_familial": {"fournisseur": "MSA", "valeur": 812, "annee": 2026, "mois": 6},
            "source": "refresh",
            "source_id": "2026-06",
            "received_at": "2026-06-08T06:00:00+00:00",
        }
    )

    validate("qf.updated", qf_updated(SIRET, "fam-1", entry).detail())
    validate("qf.updated", qf_updated(SIRET, "fam-1", entry, previous=650).detail())


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        (
            "dossier.needs_review",
            {
                "tenant_siret": SIRET,
                "case_id": "c1",
                "reference": "0A1B2C3D4E5F6",
                "outcome": "needs_review",
                "candidates": 2,
                "external_id_status": "absent",
            },
        ),
        (
            "dossier.rejected",
            {
                "tenant_siret": SIRET,
                "case_id": "c1",
                "reference": None,
                "outcome": "rejected",
                "reason": "bad_reference",
            },
        ),
        (
            "refresh.failed",
            {"tenant_siret": SIRET, "user_id": "fam-1", "outcome": "not_found", "attempts": 3},
        ),
        ("refresh.failed", {"tenant_siret": SIRET, "user_id": None, "outcome": "forbidden"}),
        (
            "tenant.token_expiring",
            {"tenant_siret": SIRET, "expires_on": "2026-09-01", "days_left": 59, "threshold": 60},
        ),
        (
            "tenant.token_expired",
            {"tenant_siret": SIRET, "expires_on": None, "detected_by": "api_particulier_401"},
        ),
        (
            "tenant.hubee_auth_failed",
            {"tenant_siret": SIRET, "error_code": "hubee_auth", "detected_at": "2026-06-01T09:00:00+00:00"},
        ),
    ],
)
def test_event_schemas_accept_the_documented_details(name: str, detail: dict[str, Any]) -> None:
    validate(name, detail)


def test_event_schemas_and_models_refuse_identity_fields() -> None:
    detail = {
        "tenant_siret": SIRET,
        "case_id": "c",
        "reference": None,
        "outcome": "linked",
        "user_id": "u",
        "link_method": "review",
        "nom_naissance": "DURAND",
    }
    with pytest.raises(jsonschema.ValidationError):
        validate("dossier.linked", detail)
    with pytest.raises(ValidationError):
        EVENT_MODELS["dossier.linked"].model_validate(detail)


def test_template_declares_the_audit_log_group_encrypted_with_36_months_retention() -> None:
    resources = load_template()["Resources"]

    group = resources["AuditLogGroup"]["Properties"]
    assert group["RetentionInDays"] >= 1096
    assert group["KmsKeyId"] == {"Fn::GetAtt": ["AuditLogKey", "Arn"]}
    api = resources["ApiFunction"]["Properties"]
    assert api["Environment"]["Variables"]["DOSSIERS_QUEUE_URL"] == {"Ref": "DossiersQueue"}
    role = resources[api["Role"]["Fn::GetAtt"][0]]["Properties"]
    statements = {s["Sid"]: s for s in role["Policies"][0]["PolicyDocument"]["Statement"]}
    assert statements["WriteAuditTrail"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
