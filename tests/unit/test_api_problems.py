"""Domain errors and request validation failures → problem+json: status, stable code, no echo."""

from __future__ import annotations

import json

import pytest

from qfbridge.api.audit import outcome_of
from qfbridge.api.problems import problem_of, problem_response, validation_problem
from qfbridge.domain.errors import ConflictError, DossierError, NotFoundError, ValidationError
from qfbridge.links.urls import RedirectNotAllowed
from qfbridge.services.editor import BatchTooLarge, ForeignResource, ServiceMisconfigured


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotFoundError("x", code="family_not_found"), 404, "family_not_found"),
        (ForeignResource("x", code="dossier_not_found"), 404, "dossier_not_found"),
        (ConflictError("x", code="no_pivot_identity"), 409, "no_pivot_identity"),
        (BatchTooLarge("x"), 413, "batch_too_large"),
        (ValidationError("x", code="invalid_siret"), 400, "invalid_siret"),
        (RedirectNotAllowed("x"), 422, "redirect_not_allowed"),
        (ServiceMisconfigured("x", code="link_keys_unavailable"), 500, "link_keys_unavailable"),
        (DossierError("x"), 400, "dossier_unusable"),
    ],
)
def test_domain_errors_map_to_a_status_and_keep_their_code(error: Exception, status: int, code: str) -> None:
    problem = problem_of(error)  # type: ignore[arg-type]

    assert (problem.status, problem.code, problem.type) == (status, code, f"urn:qfbridge:problem:{code}")


def test_problem_response_is_problem_json_without_empty_fields() -> None:
    response = problem_response(problem_of(NotFoundError("No such family.", code="family_not_found")))

    assert response.status_code == 404 and response.content_type == "application/problem+json"
    assert json.loads(str(response.body)) == {
        "type": "urn:qfbridge:problem:family_not_found",
        "title": "Not Found",
        "status": 404,
        "code": "family_not_found",
        "detail": "No such family.",
    }


@pytest.mark.parametrize(
    ("errors", "status", "code"),
    [
        (
            [{"loc": ("path", "siret"), "type": "string_pattern_mismatch", "input": "123"}],
            400,
            "invalid_siret",
        ),
        (
            [{"loc": ("header", "x-agent-id"), "type": "string_too_long", "input": "a" * 80}],
            400,
            "invalid_x_agent_id",
        ),
        ([{"loc": ("query", "limit"), "type": "greater_than_equal", "input": 0}], 400, "invalid_limit"),
        ([{"loc": ("body", 1), "type": "json_invalid", "input": "{"}], 400, "invalid_json"),
        ([{"loc": ("body", "families"), "type": "too_long", "input": []}], 413, "batch_too_large"),
        ([{"loc": ("body", "cog"), "type": "value_error", "input": "9999"}], 422, "validation_failed"),
    ],
)
def test_validation_failures_map_parameters_to_400_and_bodies_to_422(
    errors: list[dict[str, object]], status: int, code: str
) -> None:
    problem = validation_problem(errors)

    assert (problem.status, problem.code) == (status, code)
    assert problem.errors is not None and "input" not in problem.model_dump_json()
    assert "9999" not in problem.model_dump_json() and "aaaa" not in problem.model_dump_json()


@pytest.mark.parametrize(
    ("status", "denied", "outcome"),
    [
        (200, False, "success"),
        (204, False, "success"),
        (404, False, "not_found"),
        (404, True, "denied"),
        (400, False, "invalid"),
        (413, False, "invalid"),
        (422, False, "invalid"),
        (409, False, "conflict"),
        (500, False, "error"),
    ],
)
def test_audit_outcome_of_a_status(status: int, denied: bool, outcome: str) -> None:
    assert outcome_of(status, denied=denied) == outcome
