"""Dossiers: listing, the support lookup by reference (90-day retention) and review decisions."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from qfbridge.api.audit import audit_subject, audited, caller_principal
from qfbridge.api.dependencies import editor
from qfbridge.api.problems import errors, success
from qfbridge.api.schemas import (
    AgentIdHeader,
    CursorQuery,
    DossierDetail,
    DossierList,
    DossierSummary,
    LimitQuery,
    ReferencePath,
    ResolveBody,
    ResolveLink,
    ResolveReopen,
    SiretPath,
)
from qfbridge.services.editor import ReviewDecision

router = Router()

StatusQuery = Annotated[
    Literal["received", "linked", "needs_review", "rejected", "awaiting_onboarding"] | None,
    Query(description="Only the dossiers with this outcome"),
]


@router.get(
    "/tenants/<siret>/dossiers",
    summary="The tenant's dossiers, newest first",
    tags=["dossiers"],
    responses=success(DossierList, "A page of dossiers; next_cursor is null on the last one")
    | errors(400, 404),
)
@audited("dossier.list")
def list_dossiers(
    siret: SiretPath,
    status: StatusQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
    agent_id: AgentIdHeader = None,
) -> DossierList:
    records, next_cursor = editor().list_dossiers(siret, status=status, limit=limit, cursor=cursor)
    return DossierList(items=[DossierSummary.of(r) for r in records], next_cursor=next_cursor)


@router.get(
    "/tenants/<siret>/dossiers/<reference>",
    summary="Support lookup by the usager's reference",
    tags=["dossiers"],
    responses=success(DossierDetail, "The dossier") | errors(400, 404),
)
@audited("dossier.read")
def get_dossier(siret: SiretPath, reference: ReferencePath, agent_id: AgentIdHeader = None) -> DossierDetail:
    record = editor().get_dossier(siret, reference)
    if record.user_id:
        audit_subject(router, user_id=record.user_id)
    return DossierDetail.detail(record)


@router.post(
    "/tenants/<siret>/dossiers/<reference>/resolve",
    summary="Record the review decision on a dossier",
    description="link and reject: only for a dossier in review (409 otherwise). link: the dossier's QF is "
    "stored on the family — one of the dossier's candidates or a family of the directory (422 otherwise) — "
    "HubEE gets DONE; reject: HubEE gets REFUSED. Events follow. reopen: a resolved dossier goes back to "
    "review (a wrong decision); its QF leaves the family it was linked to, the family stays, the earlier "
    "decision is kept in earlier_decisions.",
    tags=["dossiers"],
    responses=success(DossierDetail, "The dossier with the decision recorded") | errors(400, 404, 409, 422),
)
@audited("dossier.resolve")
def resolve_dossier(
    siret: SiretPath,
    reference: ReferencePath,
    body: Annotated[ResolveBody, Body()],
    agent_id: AgentIdHeader = None,
) -> DossierDetail:
    principal = caller_principal(router)
    by = f"{principal} agent:{agent_id}" if agent_id else principal
    if isinstance(body, ResolveReopen):
        before = editor().get_dossier(siret, reference)
        if before.user_id:
            audit_subject(router, user_id=before.user_id)
        return DossierDetail.detail(editor().reopen_review(siret, reference, reopened_by=by))
    if isinstance(body, ResolveLink):
        audit_subject(router, user_id=body.user_id)
        decision = ReviewDecision("link", user_id=body.user_id)
    else:
        decision = ReviewDecision("reject", reason=body.reason)
    record = editor().resolve_review(siret, reference, decision, resolved_by=by)
    return DossierDetail.detail(record)
