"""api — the editor API behind API Gateway (REST, AWS_IAM): one resolver, routes in ``qfbridge.api``."""

from __future__ import annotations

# First of all: no garbage collection until the first request is answered (qfbridge.startup).
from qfbridge import startup  # isort: skip

from functools import cache
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from qfbridge.api.dependencies import ApiDependencies, configure
from qfbridge.api.resolver import app
from qfbridge.observability import logger, metrics, tracer
from qfbridge.services.editor import EditorService
from qfbridge.settings import BaseSettings
from qfbridge.store.audit import AuditTrail
from qfbridge.store.dossiers import DossierRepository
from qfbridge.store.families import FamilyRepository
from qfbridge.store.links import LinkRepository
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.queues import SqsDossierQueue, SqsRefreshQueue
from qfbridge.store.secrets import SecretStore
from qfbridge.store.tenants import TenantRepository


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    dossiers_table: str
    form_links_table: str
    audit_log_group: str
    tenant_secrets_prefix: str
    link_signing_secret_id: str
    refresh_queue_url: str
    dossiers_queue_url: str
    form_base_url: str
    form_link_ttl_days: int = Field(default=60, ge=1, le=365)


@cache
def wire() -> None:
    """Build the service once per execution environment (cold start) and hand it to the resolver."""
    settings = Settings.from_environment()
    configure(
        ApiDependencies(
            service=EditorService(
                tenants=TenantRepository(settings.tenants_table),
                families=FamilyRepository(settings.families_table),
                dossiers=DossierRepository(settings.dossiers_table),
                links=LinkRepository(settings.form_links_table),
                secrets=SecretStore(settings.tenant_secrets_prefix),
                refresh_queue=SqsRefreshQueue(settings.refresh_queue_url),
                dossier_queue=SqsDossierQueue(settings.dossiers_queue_url),
                link_signing_secret_id=settings.link_signing_secret_id,
                form_base_url=settings.form_base_url,
                form_link_ttl_days=settings.form_link_ttl_days,
                pacer=TenantPacer(settings.tenants_table),
            ),
            audit=AuditTrail(settings.audit_log_group),
        )
    )


@startup.settled(wire)
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    wire()
    return app.resolve(event, context)
