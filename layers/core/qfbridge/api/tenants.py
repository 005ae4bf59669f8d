"""Tenants (collectivités) and their write-only credentials."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router

from qfbridge.api.audit import audited
from qfbridge.api.dependencies import editor
from qfbridge.api.problems import errors, success
from qfbridge.api.schemas import (
    AgentIdHeader,
    CredentialsBody,
    CursorQuery,
    LimitQuery,
    SiretPath,
    TenantBody,
    TenantList,
    TenantPatch,
    TenantView,
)
from qfbridge.services.editor import TenantConfig
from qfbridge.store.secrets import TenantCredentials

router = Router()

TENANT_RESPONSES: dict[int, Any] = {
    200: {"description": "The tenant, updated", "content": {"application/json": {"model": TenantView}}},
    201: {"description": "The tenant, created", "content": {"application/json": {"model": TenantView}}},
}


@router.put(
    "/tenants/<siret>",
    summary="Register or reconfigure a collectivité",
    tags=["tenants"],
    responses=TENANT_RESPONSES | errors(400, 422),
)
@audited("tenant.write")
def put_tenant(siret: SiretPath, body: TenantBody, agent_id: AgentIdHeader = None) -> Response[TenantView]:
    tenant, created = editor().put_tenant(siret, TenantConfig(**body.model_dump()))
    return Response(201 if created else 200, content_types.APPLICATION_JSON, TenantView.of(tenant))


@router.patch(
    "/tenants/<siret>",
    summary="Change some settings of a collectivité (JSON merge patch)",
    description='Only the fields present change: e.g. {"token_expires_on": "2027-06-30"} records a '
    "prolonged API Particulier token and keeps redirect_hosts, name and budget. null clears "
    "token_expires_on (and is refused for the other fields). Content-Type application/merge-patch+json or application/json. A later token "
    "expiry resumes refreshes stopped by an expired token, as with PUT.",
    tags=["tenants"],
    responses=success(TenantView, "The tenant, updated") | errors(400, 404, 422),
)
@audited("tenant.update")
def patch_tenant(siret: SiretPath, body: TenantPatch, agent_id: AgentIdHeader = None) -> TenantView:
    existing = editor().get_tenant(siret)
    changes = body.model_dump(exclude_unset=True)
    config = TenantConfig(
        name=existing.name,
        cog=existing.cog,
        redirect_hosts=existing.redirect_hosts,
        token_expires_on=existing.token_expires_on,
        refresh_budget_rps=existing.refresh_budget_rps,
    ).model_copy(update=changes)
    tenant, _created = editor().put_tenant(siret, config)
    return TenantView.of(tenant)


@router.get(
    "/tenants/<siret>",
    summary="A collectivité, with its status",
    tags=["tenants"],
    responses=success(TenantView, "The tenant") | errors(400, 404),
)
def get_tenant(siret: SiretPath) -> TenantView:
    return TenantView.of(editor().get_tenant(siret))


@router.get(
    "/tenants",
    summary="The collectivités, a page at a time",
    tags=["tenants"],
    responses=success(TenantList, "A page of tenants; next_cursor is null on the last one") | errors(400),
)
def list_tenants(cursor: CursorQuery = None, limit: LimitQuery = 50) -> TenantList:
    tenants, next_cursor = editor().list_tenants(limit=limit, cursor=cursor)
    return TenantList(items=[TenantView.of(t) for t in tenants], next_cursor=next_cursor)


@router.put(
    "/tenants/<siret>/credentials",
    summary="Store the tenant's HubEE and API Particulier credentials",
    description="Write-only: replaces the stored set; never returned. Without an API Particulier token "
    "the monthly refreshes stay off (refresh_status no_token).",
    tags=["tenants"],
    responses={204: {"description": "Stored"}} | errors(400, 404, 422),
)
@audited("credentials.write")
def put_credentials(
    siret: SiretPath, body: CredentialsBody, agent_id: AgentIdHeader = None
) -> Response[None]:
    editor().store_credentials(
        siret,
        TenantCredentials(
            hubee_client_id=body.hubee_client_id,
            hubee_client_secret=body.hubee_client_secret,
            api_particulier_token=body.api_particulier_token,
        ),
    )
    return Response(204, None, None)
