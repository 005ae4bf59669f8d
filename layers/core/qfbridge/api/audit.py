"""The per-route audit trail: one record per request to a route that reads or changes a
family, a dossier or a tenant's credentials — whatever its outcome.

A route opts in with ``@audited("family.read")`` under its route decorator. Two places then write
the record, so that every request is covered exactly once:

* ``audit_middleware`` (global): requests that passed validation — success, or a domain error
  it turns into a problem response itself (so it knows the status it audits);
* ``audit_rejected_request``: requests refused by request validation (called by the resolver's
  validation error handler), which never reach the middleware.

A record names who (IAM principal, ``X-Agent-Id``), when, the request id, tenant, route template,
action, family user id or dossier reference, outcome and status — never identity or QF values:
the subject ids come from the path (validated) or from what the handler declares with
``audit_subject`` (e.g. the user id of a form link, the user ids of a batch).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver, BaseRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from qfbridge.api.dependencies import dependencies
from qfbridge.api.problems import internal_error, problem, problem_of, problem_response
from qfbridge.domain.errors import QfbridgeError, ValidationError
from qfbridge.domain.reference import normalise_reference
from qfbridge.domain.siret import is_valid_siret
from qfbridge.observability import logger
from qfbridge.services.editor import ForeignResource
from qfbridge.store.audit import AuditRecord

AGENT_ID = re.compile(r"[A-Za-z0-9._@:-]{1,64}")
USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_ACTION_ATTRIBUTE = "__qfbridge_audit_action__"
_SUBJECT_KEY = "qfbridge_audit_subject"
_DENIED_KEY = "qfbridge_audit_denied"

F = TypeVar("F", bound=Callable[..., Any])


def audited(action: str) -> Callable[[F], F]:
    """Mark a route handler as audited under ``action`` (the function itself is returned unchanged)."""

    def mark(func: F) -> F:
        setattr(func, _ACTION_ATTRIBUTE, action)
        return func

    return mark


def audit_subject(
    app: BaseRouter,
    *,
    user_id: str | None = None,
    user_ids: list[str] | None = None,
    reference: str | None = None,
) -> None:
    """Name the audited subject when it is not in the path (ids only, never identity values)."""
    subject = dict(app.context.get(_SUBJECT_KEY) or {})
    if user_id is not None:
        subject["user_id"] = user_id
    if user_ids is not None:
        subject["user_ids"] = user_ids
    if reference is not None:
        subject["reference"] = reference
    app.append_context(**{_SUBJECT_KEY: subject})


def caller_principal(app: BaseRouter) -> str:
    """The calling IAM principal as API Gateway's AWS_IAM authorization identified it."""
    event = app.current_event
    if not isinstance(event, APIGatewayProxyEvent):
        return "unknown"
    identity = event.request_context.identity
    return identity.user_arn or identity.caller or "unknown"


def outcome_of(status: int, *, denied: bool = False) -> str:
    if denied:
        return "denied"
    if status < 400:
        return "success"
    if status == 404:
        return "not_found"
    if status == 403:
        return "denied"
    if status == 409:
        return "conflict"
    if status >= 500:
        return "error"
    return "invalid"


def _action(app: APIGatewayRestResolver) -> tuple[Any, str | None]:
    route = app.context.get("_route")
    return route, getattr(getattr(route, "func", None), _ACTION_ATTRIBUTE, None)


def _path_parameters(app: APIGatewayRestResolver, route: Any) -> dict[str, str]:
    match = route.rule.match(app.current_event.path) if route is not None else None
    return {k: v for k, v in match.groupdict().items() if isinstance(v, str)} if match else {}


def _template(route: Any) -> str:
    return re.sub(r"<(\w+)>", r"{\1}", str(route.path))


def _record(
    app: APIGatewayRestResolver, route: Any, action: str, status: int, *, denied: bool
) -> AuditRecord:
    event = app.current_event
    principal = caller_principal(app)
    agent = event.headers.get("x-agent-id")
    params = _path_parameters(app, route)
    siret = params.get("siret")
    user_id = params.get("user_id")
    reference: str | None = None
    if "reference" in params:
        try:
            reference = normalise_reference(params["reference"])
        except ValidationError:
            reference = None
    subject = app.context.get(_SUBJECT_KEY) or {}
    return AuditRecord(
        request_id=event.request_context.request_id or "unknown",
        actor="editor",
        principal=principal,
        agent_id=agent if agent and AGENT_ID.fullmatch(agent) else None,
        tenant_siret=siret if is_valid_siret(siret) else None,
        route=f"{route.method} {_template(route)}",
        action=action,
        user_id=subject.get("user_id") or (user_id if user_id and USER_ID.fullmatch(user_id) else None),
        user_ids=subject.get("user_ids"),
        reference=subject.get("reference") or reference,
        outcome=outcome_of(status, denied=denied),
        status_code=status,
    )


def _write(
    app: APIGatewayRestResolver, route: Any, action: str, status: int, *, denied: bool = False
) -> bool:
    """Write the record; False when the trail is unavailable (the caller then answers 500)."""
    record = _record(app, route, action, status, denied=denied)
    try:
        dependencies().audit.write(record)
    except Exception:
        logger.exception("audit record could not be written", extra={"route": record.route, "action": action})
        return False
    return True


def audit_unavailable() -> Response[Any]:
    return problem_response(problem(500, "audit_unavailable", "The access could not be traced; retry later."))


def audit_middleware(
    app: APIGatewayRestResolver, next_middleware: Callable[..., Response[Any]]
) -> Response[Any]:
    """Run the route; map domain errors to problems; audit the outcome of audited routes.

    Access that cannot be traced is not granted: when the record cannot be written, the answer is
    a 500 instead of the data (a change already made stays made, and is logged).
    """
    route, action = _action(app)
    denied = False
    try:
        response = next_middleware(app)
    except QfbridgeError as exc:
        denied = isinstance(exc, ForeignResource)
        response = problem_response(problem_of(exc))
        if response.status_code >= 500:
            logger.error("service misconfigured", extra={"code": exc.code})
    except Exception:
        logger.exception("unhandled error in route")
        response = problem_response(internal_error())
    if action is not None and not _write(app, route, action, response.status_code, denied=denied):
        return audit_unavailable()
    return response


def audit_rejected_request(app: APIGatewayRestResolver, status: int) -> bool:
    """Audit a request refused before the route ran (request validation); False if it could not be."""
    route, action = _action(app)
    if action is None:
        return True
    return _write(app, route, action, status)
