"""Errors as problem+json (RFC 9457) bodies with a stable ``code``.

The mapping, in one place:

* ``NotFoundError`` (and ``ForeignResource``: another tenant's resource) → 404;
* ``ConflictError`` → 409; ``BatchTooLarge`` → 413;
* ``ValidationError`` (a bad SIRET, reference, cursor…) → 400;
  ``LinkError`` (e.g. a redirect_uri off the tenant's hosts) and ``RuleViolation`` (e.g. a review
  decision linking to no known family) → 422;
* request validation: a bad path, query or header parameter → 400 (``invalid_<parameter>``),
  a body that is not JSON → 400 ``invalid_json``, a body that breaks the schema → 422
  ``validation_failed`` with the field paths, more than 1000 families in a batch → 413;
* anything else → 500 ``internal_error`` (logged, never detailed to the caller).

No problem body ever repeats a submitted value: details are the domain errors' messages (which
never carry input by contract) and validation errors are reduced to ``loc`` + ``type``.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response
from pydantic import BaseModel, Field

from qfbridge.domain.errors import (
    ConflictError,
    LinkError,
    NotFoundError,
    QfbridgeError,
    RuleViolation,
    ValidationError,
)
from qfbridge.services.editor import BatchTooLarge, ServiceMisconfigured

PROBLEM_CONTENT_TYPE = "application/problem+json"
_NAME = re.compile(r"[^a-z0-9]+")


class FieldErrorView(BaseModel):
    loc: list[str | int]
    type: str


class Problem(BaseModel):
    type: str = Field(description="urn:qfbridge:problem:<code>")
    title: str
    status: int
    code: str = Field(description="Stable machine-readable code")
    detail: str
    errors: list[FieldErrorView] | None = None


def problem(status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> Problem:
    return Problem(
        type=f"urn:qfbridge:problem:{code}",
        title=HTTPStatus(status).phrase,
        status=status,
        code=code,
        detail=detail,
        errors=[FieldErrorView(**e) for e in errors] if errors is not None else None,
    )


def status_of(exc: QfbridgeError) -> int:
    if isinstance(exc, BatchTooLarge):
        return 413
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, LinkError | RuleViolation):
        return 422
    if isinstance(exc, ServiceMisconfigured):
        return 500
    return 400


def problem_of(exc: QfbridgeError) -> Problem:
    return problem(status_of(exc), exc.code, exc.message)


def internal_error() -> Problem:
    return problem(500, "internal_error", "The request could not be processed; it has been logged.")


def validation_problem(errors: list[dict[str, Any]]) -> Problem:
    """A request validation failure (Powertools' ``RequestValidationError.errors()``) as a problem."""
    cleaned = [
        {
            "loc": [part[:64] if isinstance(part, str) else part for part in e.get("loc", ())],
            "type": str(e.get("type")),
        }
        for e in errors
    ]
    for error in cleaned:
        loc = error["loc"]
        if loc and loc[0] in ("path", "query", "header") and len(loc) > 1:
            name = _NAME.sub("_", str(loc[1]).lower()).strip("_") or "parameter"
            return problem(400, f"invalid_{name}", f"The {loc[0]} parameter {name} is not valid.", cleaned)
    for error in cleaned:
        if error["type"] == "json_invalid":
            return problem(400, "invalid_json", "The request body is not valid JSON.", cleaned)
        if error["loc"] == ["body", "families"] and error["type"] == "too_long":
            return problem(413, "batch_too_large", "A batch carries at most 1000 families.", cleaned)
    return problem(422, "validation_failed", "The request body does not satisfy the schema.", cleaned)


_DESCRIPTIONS = {
    400: "Malformed parameter or body (problem+json, code names the parameter)",
    404: "Unknown tenant or resource, or one of another tenant",
    405: "The path exists but not with this method (the Allow header lists those it has)",
    409: "The resource is not in a state that allows the operation",
    413: "Too many rows in one call",
    415: "The body is not application/json",
    422: "The body does not satisfy the schema or a domain rule",
}


def success(model: type[BaseModel], description: str, status: int = 200) -> dict[int, Any]:
    """The OpenAPI ``responses`` entry of a route's JSON success answer."""
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


def errors(*statuses: int) -> dict[int, Any]:
    """OpenAPI ``responses`` entries for the problem answers a route may give."""
    return {
        status: {"description": _DESCRIPTIONS[status], "content": {PROBLEM_CONTENT_TYPE: {"model": Problem}}}
        for status in statuses
    }


def problem_response(value: Problem) -> Response[str]:
    return Response(
        status_code=value.status,
        content_type=PROBLEM_CONTENT_TYPE,
        body=value.model_dump_json(exclude_none=True),
    )
