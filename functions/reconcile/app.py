"""reconcile — SQS ``dossiers``: verify, reconcile and acknowledge each HubEE notification.

Partial batch failures: a record that fails is retried alone (then lands in the DLQ); the
others of the batch are acknowledged.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from pydantic import Field
from pydantic_settings import BaseSettings

from qfbridge.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.services.intake import IntakeService


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    dossiers_table: str
    form_links_table: str
    event_bus_name: str
    audit_log_group: str
    tenant_secrets_prefix: str
    link_signing_secret_id: str
    hubee_api_url: str
    hubee_token_url: str
    dossier_lease_seconds: int = Field(default=300, ge=0, le=900)


@cache
def service() -> IntakeService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.hubee import HubeeConfig
    from qfbridge.services.intake import IntakeService
    from qfbridge.store.audit import AuditTrail
    from qfbridge.store.dossiers import DossierRepository
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.links import LinkRepository
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    settings = Settings()  # type: ignore[call-arg]
    return IntakeService(
        tenants=TenantRepository(settings.tenants_table),
        families=FamilyRepository(settings.families_table),
        dossiers=DossierRepository(settings.dossiers_table),
        links=LinkRepository(settings.form_links_table),
        secrets=SecretStore(settings.tenant_secrets_prefix),
        events=EventPublisher(settings.event_bus_name),
        audit=AuditTrail(settings.audit_log_group),
        hubee=HubeeConfig(api_url=settings.hubee_api_url, token_url=settings.hubee_token_url),
        link_signing_secret_id=settings.link_signing_secret_id,
        lease_seconds=settings.dossier_lease_seconds,
    )


@tracer.capture_method(capture_response=False)
def record_handler(record: SQSRecord) -> None:
    result = service().handle(json.loads(record.body))
    logger.info(
        "notification handled",
        extra={
            "kind": result.kind,
            "outcome": result.outcome,
            "case_id": result.case_id,
            "resumed": result.resumed,
        },
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # One processor per invocation: it holds the batch's state, and invocations must not share it.
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
