"""qf_refresh — SQS ``refresh``: refresh one family's QF per message from API Particulier.

A refresh to retry later (429 ``Retry-After``, 503 ``retry_in``, 502/504, maintenance) keeps its
message on the queue with its visibility pushed to the wait the server asked for, and is reported
as a batch item failure; after ``REFRESH_MAX_ATTEMPTS`` receptions SQS moves it to the DLQ.

Calls are paced per tenant (``qfbridge.store.pacing``): a record may wait up to a second for its
slot, so a record that would start too close to the function's timeout is handed back to the queue
instead (it would otherwise fail with the whole batch).
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field

from qfbridge.batch import process_partial_response
from qfbridge.observability import logger, metrics, tracer
from qfbridge.settings import BaseSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.batch import SqsRecord
    from qfbridge.services.refresh import RefreshService


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    event_bus_name: str
    tenant_secrets_prefix: str
    refresh_queue_url: str
    api_particulier_url: str
    audit_log_group: str
    refresh_max_attempts: int = Field(default=10, ge=2, le=50)
    refresh_retry_base_seconds: int = Field(default=30, ge=0, le=3600)


MIN_REMAINING_MS = 10_000
"""A record starts only with this much time left: a paced wait (≤ 1 s) plus a 5 s call, and margin."""


@cache
def settings() -> Settings:
    return Settings()  # type: ignore[call-arg]


@cache
def service() -> RefreshService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.api_particulier import ApiParticulierClient, ApiParticulierConfig
    from qfbridge.services.refresh import RefreshService
    from qfbridge.store.audit import AuditTrail
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.pacing import TenantPacer
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    config = settings()
    return RefreshService(
        tenants=TenantRepository(config.tenants_table),
        families=FamilyRepository(config.families_table),
        pacer=TenantPacer(config.tenants_table),
        secrets=SecretStore(config.tenant_secrets_prefix),
        events=EventPublisher(config.event_bus_name),
        client=ApiParticulierClient(ApiParticulierConfig(base_url=config.api_particulier_url)),
        max_attempts=config.refresh_max_attempts,
        retry_base_seconds=config.refresh_retry_base_seconds,
        audit=AuditTrail(config.audit_log_group),
    )


@cache
def sqs() -> Any:
    import boto3

    return boto3.client("sqs")


@tracer.capture_method(capture_response=False)
def record_handler(record: SqsRecord, lambda_context: LambdaContext) -> None:
    from qfbridge.services.refresh import RetryLater

    attempt = int(record.attributes.approximate_receive_count or "1")
    try:
        if lambda_context.get_remaining_time_in_millis() < MIN_REMAINING_MS:
            raise RetryLater("deadline", 0)
        result = service().refresh(json.loads(record.body), attempt=attempt, request_id=record.message_id)
    except RetryLater as retry:
        sqs().change_message_visibility(
            QueueUrl=settings().refresh_queue_url,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=retry.delay_seconds,
        )
        logger.info(
            "refresh delayed",
            extra={"kind": retry.kind, "delay_seconds": retry.delay_seconds, "attempt": attempt},
        )
        raise
    logger.info("refresh done", extra={"outcome": result.outcome, "changed": result.changed})


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event, record_handler, context)
