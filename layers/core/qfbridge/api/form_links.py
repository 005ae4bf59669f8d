"""Signed form links for one family, and their QR codes."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from qfbridge.api.audit import audit_subject, audited
from qfbridge.api.dependencies import editor
from qfbridge.api.problems import errors
from qfbridge.api.schemas import AgentIdHeader, ExternalIdPath, FormLinkBody, FormLinkView, SiretPath
from qfbridge.links.qr import qr_png, qr_svg

router = Router()


def _binary(media_type: str, description: str) -> dict[int, Any]:
    return {
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


@router.post(
    "/tenants/<siret>/form-links",
    summary="Issue a signed form link for a family",
    tags=["form links"],
    responses={201: {"description": "The link", "content": {"application/json": {"model": FormLinkView}}}}
    | errors(400, 404, 422),
)
@audited("form_link.issue")
def issue_form_link(
    siret: SiretPath, body: FormLinkBody, agent_id: AgentIdHeader = None
) -> Response[FormLinkView]:
    audit_subject(router, user_id=body.user_id)
    link = editor().issue_form_link(siret, body.user_id, body.redirect_uri)
    return Response(
        201,
        content_types.APPLICATION_JSON,
        FormLinkView(url=link.url, external_id=link.external_id, expires_at=link.expires_at),
    )


@router.get(
    "/tenants/<siret>/form-links/<external_id>/qr.svg",
    summary="QR code of a form link (SVG)",
    tags=["form links"],
    responses=_binary("image/svg+xml", "The QR code") | errors(400, 404),
)
@audited("form_link.qr")
def form_link_qr_svg(
    siret: SiretPath, external_id: ExternalIdPath, agent_id: AgentIdHeader = None
):  # no return annotation: images must pass unserialized
    stored, url = editor().form_link(siret, external_id)
    audit_subject(router, user_id=stored.user_id)
    return Response(200, "image/svg+xml", qr_svg(url).decode("utf-8"), headers={"Cache-Control": "no-store"})


@router.get(
    "/tenants/<siret>/form-links/<external_id>/qr.png",
    summary="QR code of a form link (PNG)",
    tags=["form links"],
    responses=_binary("image/png", "The QR code") | errors(400, 404),
)
@audited("form_link.qr")
def form_link_qr_png(
    siret: SiretPath,
    external_id: ExternalIdPath,
    scale: Annotated[int, Query(ge=1, le=40, description="Pixels per module")] = 8,
    agent_id: AgentIdHeader = None,
):  # no return annotation: images must pass unserialized
    stored, url = editor().form_link(siret, external_id)
    audit_subject(router, user_id=stored.user_id)
    return Response(200, "image/png", qr_png(url, scale=scale), headers={"Cache-Control": "no-store"})
