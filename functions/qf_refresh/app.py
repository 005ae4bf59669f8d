"""qf_refresh — SQS ``refresh``: refresh one family's QF per message from API Particulier.

A refresh to retry after a real failure (429 ``Retry-After``, 503 ``retry_in``, 502/504, a transport
error) keeps its message on the queue with its visibility pushed to the wait the server asked for,
and is reported as a batch item failure: that reception spent an attempt.

A refresh that only has to wait without having called API Particulier (its pacing permit further
than a second away, the Sunday maintenance, another refresh of the family in flight, too little time
left in this invocation) spends none: a fresh copy of the message is sent, delayed (at most SQS's
900 s; a longer wait takes several copies), carrying the attempts spent so far
(``attempts_before``), and this record succeeds. An attempt's number is therefore
``attempts_before`` + the copy's receive count; at ``REFRESH_MAX_ATTEMPTS`` the service records the
failure and the message is sent to the DLQ (as it arrived, so a redrive starts over), where SQS's
own ``maxReceiveCount`` catches the receptions that crashed.

Calls are paced per tenant (``qfbridge.store.pacing``): a record may wait up to a second for its
slot, so a record that would start too close to the function's timeout is handed back to the queue
instead (it would otherwise fail with the whole batch). A record whose slot is further away than
another record's work lets the batch's other records go first (``may_defer``), so one tenant's wait
does not make the other tenants' records behind it miss their slots.
"""

from __future__ import annotations

# First of all: no garbage collection until the first request is answered (qfbridge.startup).
from qfbridge import startup  # isort: skip

from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field

from qfbridge.batch import process_partial_response
from qfbridge.observability import logger, metrics, tracer
from qfbridge.settings import BaseSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.batch import SqsRecord
    from qfbridge.messages import RefreshMessage
    from qfbridge.services.refresh import RefreshService
    from qfbridge.store.queues import SqsRefreshQueue


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    event_bus_name: str
    tenant_secrets_prefix: str
    refresh_queue_url: str
    refresh_dead_letter_queue_url: str
    api_particulier_url: str
    audit_log_group: str
    refresh_max_attempts: int = Field(default=10, ge=2, le=50)
    refresh_retry_base_seconds: int = Field(default=30, ge=0, le=3600)


MIN_REMAINING_MS = 10_000
"""A record starts only with this much time left: a paced wait (≤ 1 s) plus a 5 s call, and margin."""


@cache
def settings() -> Settings:
    return Settings.from_environment()


@cache
def service() -> RefreshService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.api_particulier import ApiParticulierClient, ApiParticulierConfig
    from qfbridge.services.refresh import RefreshService
    from qfbridge.store.audit import AuditTrail
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.leases import FamilyRefreshLease
    from qfbridge.store.pacing import TenantPacer
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    config = settings()
    return RefreshService(
        tenants=TenantRepository(config.tenants_table),
        families=FamilyRepository(config.families_table),
        pacer=TenantPacer(config.tenants_table),
        leases=FamilyRefreshLease(config.families_table),
        secrets=SecretStore(config.tenant_secrets_prefix),
        events=EventPublisher(config.event_bus_name),
        client=ApiParticulierClient(ApiParticulierConfig(base_url=config.api_particulier_url)),
        max_attempts=config.refresh_max_attempts,
        retry_base_seconds=config.refresh_retry_base_seconds,
        audit=AuditTrail(config.audit_log_group),
    )


@cache
def queue() -> SqsRefreshQueue:
    from qfbridge.store.queues import SqsRefreshQueue

    config = settings()
    return SqsRefreshQueue(config.refresh_queue_url, dead_letter_url=config.refresh_dead_letter_queue_url)


def attempt_of(message: RefreshMessage, receive_count: int) -> int:
    """The attempt this reception is: the attempts earlier copies spent, plus this copy's receptions."""
    return message.attempts_before + max(1, receive_count)


@tracer.capture_method(capture_response=False)
def record_handler(record: SqsRecord, lambda_context: LambdaContext, may_defer: bool = False) -> None:
    from qfbridge.batch import Later
    from qfbridge.messages import parse_refresh_message
    from qfbridge.services.refresh import NotYet, RetryLater

    message = parse_refresh_message(record.body)
    attempt = attempt_of(message, int(record.attributes.approximate_receive_count or "1"))
    try:
        if lambda_context.get_remaining_time_in_millis() < MIN_REMAINING_MS:
            raise RetryLater("deadline", 0, counts=False)
        result = service().refresh(
            message, attempt=attempt, request_id=record.message_id, may_defer=may_defer
        )
    except NotYet as not_yet:  # its tenant's permit is further than the batch's other records
        raise Later(not_yet.at) from None
    except RetryLater as retry:
        log = {"kind": retry.kind, "delay_seconds": retry.delay_seconds, "attempt": attempt}
        if retry.dead_letter:
            # As it was first sent (its alarm fires; a redrive starts over).
            queue().dead_letter(message.model_copy(update={"attempts_before": 0}))
            logger.warning("refresh dead-lettered", extra=log)
            return
        if not retry.counts:  # a wait, not a failure: this reception spends no attempt
            # A fresh copy (its receive count starts over), delayed, with the attempts spent.
            update: dict[str, Any] = {"attempts_before": attempt - 1}
            if retry.admitted:
                update["admitted"] = True
            queue().send(message.model_copy(update=update), delay_seconds=retry.delay_seconds)
            logger.info("refresh waits", extra=log)
            return
        queue().delay(record.receipt_handle, retry.delay_seconds)
        logger.info("refresh delayed", extra=log)
        raise
    logger.info("refresh done", extra={"outcome": result.outcome, "changed": result.changed})


@startup.settled(settings, service, queue)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from qfbridge.services.refresh import DEFER_AFTER_SECONDS

    # A record whose tenant's next permit is further away than a record's work goes after the
    # others of its batch, which it would otherwise hold up while it waits (process_partial_response).
    return process_partial_response(
        event,
        record_handler,
        context,
        now=lambda: service().clock().timestamp(),
        later_lead_seconds=DEFER_AFTER_SECONDS,
    )
