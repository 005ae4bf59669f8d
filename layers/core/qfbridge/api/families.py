"""The directory: families of the editor's software, their QF, refresh-now and erasure (RGPD)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router

from qfbridge.api.audit import audit_subject, audited
from qfbridge.api.dependencies import editor
from qfbridge.api.problems import errors, success
from qfbridge.api.schemas import (
    AgentIdHeader,
    BatchRowView,
    BatchView,
    ErasureView,
    FamiliesBatchBody,
    FamilyBody,
    FamilyView,
    FieldError,
    RefreshQueuedView,
    SiretPath,
    UserIdPath,
)
from qfbridge.domain.identity import Family

router = Router()

FAMILY_RESPONSES: dict[int, Any] = {
    200: {"description": "The family, updated", "content": {"application/json": {"model": FamilyView}}},
    201: {"description": "The family, created", "content": {"application/json": {"model": FamilyView}}},
}


@router.put(
    "/tenants/<siret>/families/<user_id>",
    summary="Create or replace a family of the directory",
    tags=["families"],
    responses=FAMILY_RESPONSES | errors(400, 404, 422),
)
@audited("family.write")
def put_family(
    siret: SiretPath, user_id: UserIdPath, body: FamilyBody, agent_id: AgentIdHeader = None
) -> Response[FamilyView]:
    family = Family(user_id=user_id, parents=body.parents, enfants=body.enfants)
    record, created = editor().put_family(siret, family)
    return Response(201 if created else 200, content_types.APPLICATION_JSON, FamilyView.of(record))


@router.get(
    "/tenants/<siret>/families/<user_id>",
    summary="A family's current QF, its history and refresh status",
    tags=["families"],
    responses=success(FamilyView, "The family") | errors(400, 404),
)
@audited("family.read")
def get_family(siret: SiretPath, user_id: UserIdPath, agent_id: AgentIdHeader = None) -> FamilyView:
    return FamilyView.of(editor().get_family(siret, user_id))


@router.delete(
    "/tenants/<siret>/families/<user_id>",
    summary="Erase a family's personal data everywhere (RGPD)",
    tags=["families"],
    responses=success(ErasureView, "Erased: what was deleted") | errors(400, 404),
)
@audited("family.erase")
def erase_family(siret: SiretPath, user_id: UserIdPath, agent_id: AgentIdHeader = None) -> ErasureView:
    erasure = editor().erase_family(siret, user_id)
    return ErasureView(
        user_id=erasure.user_id, form_links_deleted=erasure.form_links, dossiers_erased=erasure.dossiers
    )


@router.post(
    "/tenants/<siret>/families:batch",
    summary="Create or replace up to 1000 families",
    tags=["families"],
    responses=success(BatchView, "Row by row: created, updated or invalid (with the field paths)")
    | errors(400, 404, 413, 422),
)
@audited("family.batch_write")
def batch_families(siret: SiretPath, body: FamiliesBatchBody, agent_id: AgentIdHeader = None) -> BatchView:
    report = editor().batch_upsert(siret, body.families)
    audit_subject(router, user_ids=report.changed_user_ids)
    return BatchView(
        created=report.count("created"),
        updated=report.count("updated"),
        invalid=report.count("invalid"),
        results=[
            BatchRowView(
                index=row.index,
                user_id=row.user_id,
                status=row.status,
                code=row.code,
                errors=[FieldError(**e) for e in row.errors],
            )
            for row in report.rows
        ],
    )


@router.post(
    "/tenants/<siret>/families/<user_id>/refresh",
    summary="Refresh a family's QF now",
    tags=["families"],
    responses={202: {"description": "Queued", "content": {"application/json": {"model": RefreshQueuedView}}}}
    | errors(400, 404, 409),
)
@audited("family.refresh")
def refresh_family(
    siret: SiretPath, user_id: UserIdPath, agent_id: AgentIdHeader = None
) -> Response[RefreshQueuedView]:
    editor().refresh_now(siret, user_id)
    return Response(202, content_types.APPLICATION_JSON, RefreshQueuedView(user_id=user_id))
