"""The editor API's resolver: routes, request validation, domain errors → problem+json, audit.

``app`` is the one ``APIGatewayRestResolver(enable_validation=True)``; the route modules declare
their routes on routers included here under ``/v1``. Errors raised in a route are turned into
problems by ``audit_middleware`` (which audits them); the handlers below cover what never reaches
a route: request validation failures, unknown routes, and (defensively) errors raised elsewhere.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFound
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from qfbridge.api import dossiers, families, form_links, poster, tenants
from qfbridge.api.audit import audit_middleware, audit_rejected_request, audit_unavailable
from qfbridge.api.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    problem,
    problem_of,
    problem_response,
    validation_problem,
)
from qfbridge.domain.errors import QfbridgeError

API_TITLE = "qfbridge editor API"
API_VERSION = "1.0.0"
API_PREFIX = "/v1"

MERGE_PATCH = "application/merge-patch+json"


class _Resolver(APIGatewayRestResolver):
    """Powertools' resolver, reading a JSON merge patch body (RFC 7396) as the JSON it is."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        for key in ("headers", "multiValueHeaders"):
            headers = event.get(key) or {}
            for name, value in list(headers.items()):
                if name.lower() != "content-type":
                    continue
                if isinstance(value, str) and value.lower().startswith(MERGE_PATCH):
                    headers[name] = "application/json" + value[len(MERGE_PATCH) :]
                elif isinstance(value, list):
                    headers[name] = [
                        "application/json" + v[len(MERGE_PATCH) :]
                        if isinstance(v, str) and v.lower().startswith(MERGE_PATCH)
                        else v
                        for v in value
                    ]
        return super().resolve(event, context)


app = _Resolver(enable_validation=True)
app.use([audit_middleware])
for _module in (tenants, form_links, poster, families, dossiers):
    app.include_router(_module.router, prefix=API_PREFIX)


@app.exception_handler(RequestValidationError)
def _request_invalid(exc: RequestValidationError) -> Response[Any]:
    return _refuse(validation_problem(list(exc.errors())))


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported_media_type(exc: RequestUnsupportedContentType) -> Response[Any]:
    return _refuse(problem(415, "unsupported_media_type", "The request body must be application/json."))


@app.exception_handler(ValueError)
def _unparseable_body(exc: ValueError) -> Response[Any]:
    # Only request parsing can raise here (a route's errors are handled by audit_middleware): e.g. a
    # multipart Content-Type without boundary. A client error, not a server one.
    return _refuse(problem(400, "invalid_body", "The request body cannot be parsed."))


def _refuse(value: Problem) -> Response[Any]:
    if not audit_rejected_request(app, value.status):
        return audit_unavailable()
    return problem_response(value)


@app.exception_handler(QfbridgeError)
def _domain_error(exc: QfbridgeError) -> Response[Any]:
    return problem_response(problem_of(exc))


@app.not_found
def _no_route(exc: RouteNotFound) -> Response[Any]:
    allowed = allowed_methods(app.current_event.path)
    if allowed:
        response = problem_response(
            problem(405, "method_not_allowed", f"This path answers {', '.join(allowed)} only.")
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return problem_response(problem(404, "route_not_found", "No such route."))


def allowed_methods(path: str) -> list[str]:
    """The methods the API has for ``path`` (empty when no route has that path)."""
    routes = app._static_routes + app._dynamic_routes
    return sorted({route.method.upper() for route in routes if route.rule.match(path)})


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API, as committed in ``docs/openapi.json``.

    Powertools documents request validation failures as its own 422 body; ours are problems, so
    that response is rewritten, and the AWS_IAM (SigV4) security scheme is declared.
    """
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            summary="The editor's interface to qfbridge (IAM-signed requests through API Gateway)",
            description=(
                "Tenants, write-only credentials, signed form links and QR codes, the counter poster, the "
                "families directory with the QF, refresh-now, dossiers and review. Errors are "
                "application/problem+json with a stable `code`. Requests are signed with SigV4 (AWS_IAM); "
                "routes that read or change a family, a dossier or credentials are audited and accept an "
                "`X-Agent-Id` header naming the agent. A method a path does not have is answered 405 "
                "`method_not_allowed` with an `Allow` header."
            ),
        )
    )
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = copy.deepcopy(
        schemas.get("Problem") or Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "The body does not satisfy the schema or a domain rule",
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
                }
            if "requestBody" in operation:
                responses["415"] = {
                    "description": "The body is not application/json",
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
                }
            _drop_default_success(responses)
            operation["security"] = [{"sigv4": []}]
            # The handler's name (Powertools appends the path and method): what generated clients call.
            operation["operationId"] = re.sub(r"_v1_.*$", "", operation["operationId"])
            content = operation.get("requestBody", {}).get("content", {})
            if operation.get("operationId", "").startswith("patch_") and "application/json" in content:
                content[MERGE_PATCH] = copy.deepcopy(content["application/json"])
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if '"#/components/schemas/ResponseValidationError"' not in json.dumps(document):
        schemas.pop("ResponseValidationError", None)  # Powertools' own, unused, refers to the one above
    components["securitySchemes"] = {
        "sigv4": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "x-amazon-apigateway-authtype": "awsSigv4",
            "description": "AWS Signature Version 4 (API Gateway AWS_IAM authorization): sign each "
            "request for the service execute-api in the stack's region with the credentials of an "
            "IAM principal allowed execute-api:Invoke on the API (see docs/integration.md).",
        },
    }
    document["security"] = [{"sigv4": []}]
    return document


def _drop_default_success(responses: dict[str, Any]) -> None:
    """Remove Powertools' generic 200 when the route documents its own 201/202/204 instead."""
    other_success = any(code in responses for code in ("201", "202", "204"))
    generic = responses.get("200", {}).get("description") == "Successful Response"
    if other_success and generic:
        responses.pop("200")
    if "204" in responses:
        responses["204"].pop("content", None)
