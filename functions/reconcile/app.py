"""reconcile — SQS ``dossiers``: verify, reconcile and acknowledge each HubEE notification.

Partial batch failures: a record that fails is retried alone (then lands in the DLQ); the
others of the batch are acknowledged. Before each record the handler checks the time left: a
record it could not finish (``RECORD_BUDGET_S``) is not started and goes back to the queue, so a
batch never times out as a whole. Every failed record is logged with its message id and the
error's code — never the message body, which names the usager's case.
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
    from qfbridge.hubee import HubeeConfig
    from qfbridge.services.poll import PollService
    from qfbridge.services.reconcile import ReconcileService


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
    hubee_connect_timeout_s: float = Field(default=3.0, gt=0)
    hubee_read_timeout_s: float = Field(default=10.0, gt=0)
    hubee_retry_attempts: int = Field(default=2, ge=1, le=5)
    dossiers_queue_url: str | None = None
    dossiers_visibility_timeout_seconds: int = Field(default=360, ge=30, le=43200)
    poll_stuck_after_polls: int = Field(default=3, ge=1, le=1000)
    poll_repoll_delay_seconds: int = Field(default=2, ge=0, le=900)
    dossiers_max_receive_count: int = Field(default=5, ge=1, le=1000)

    def hubee_config(self) -> HubeeConfig:
        from qfbridge.hubee import HubeeConfig

        return HubeeConfig(
            api_url=self.hubee_api_url,
            token_url=self.hubee_token_url,
            connect_timeout_s=self.hubee_connect_timeout_s,
            read_timeout_s=self.hubee_read_timeout_s,
            retry_attempts=self.hubee_retry_attempts,
            backoff_max_s=2.0,
        )


class NotStarted(Exception):
    """Too little time left in the invocation to handle this record: it goes back to the queue."""


def record_budget_s(config: HubeeConfig) -> float:
    """Time a record must have left to start: two worst-case HubEE calls (a dossier makes up to 8)."""
    return 2 * config.worst_case_call_s


@cache
def service() -> ReconcileService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.services.reconcile import ReconcileService
    from qfbridge.store.audit import AuditTrail
    from qfbridge.store.dossiers import DossierRepository
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.links import LinkRepository
    from qfbridge.store.markers import MarkerRepository
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    settings = Settings.from_environment()
    return ReconcileService(
        tenants=TenantRepository(settings.tenants_table),
        families=FamilyRepository(settings.families_table),
        dossiers=DossierRepository(settings.dossiers_table),
        links=LinkRepository(settings.form_links_table),
        secrets=SecretStore(settings.tenant_secrets_prefix),
        events=EventPublisher(settings.event_bus_name),
        audit=AuditTrail(settings.audit_log_group),
        hubee=settings.hubee_config(),
        link_signing_secret_id=settings.link_signing_secret_id,
        lease_seconds=settings.dossier_lease_seconds,
        markers=MarkerRepository(settings.dossiers_table),
    )


@cache
def poller() -> PollService:
    """The poll of one credential, for ``repoll`` messages (queued by hubee_poll after a full listing)."""
    from qfbridge.services.poll import PollService
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.markers import MarkerRepository
    from qfbridge.store.queues import SqsDossierQueue
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    settings = Settings.from_environment()
    if not settings.dossiers_queue_url:
        raise RuntimeError("DOSSIERS_QUEUE_URL is not set: reconcile cannot poll again")
    return PollService(
        tenants=TenantRepository(settings.tenants_table),
        secrets=SecretStore(settings.tenant_secrets_prefix),
        events=EventPublisher(settings.event_bus_name),
        queue=SqsDossierQueue(settings.dossiers_queue_url),
        hubee=settings.hubee_config(),
        concurrency=1,
        markers=MarkerRepository(settings.dossiers_table),
        queued_for_s=settings.dossiers_visibility_timeout_seconds + 60,
        stuck_after_polls=settings.poll_stuck_after_polls,
        repoll_delay_s=settings.poll_repoll_delay_seconds,
    )


def log_failure(record: SqsRecord, exc: Exception) -> None:
    """A failed record, left to the queue: logged (message id and error code only), counted, and
    its notification's marker released when this was its last receive."""
    code = getattr(exc, "code", None)
    level = logger.info if isinstance(exc, NotStarted) else logger.warning
    level(
        "record failed, left to the queue",
        extra={
            "message_id": record.message_id,
            "error_code": code if isinstance(code, str) else type(exc).__name__,
        },
    )
    if not isinstance(exc, NotStarted):
        metrics.add_metric(name="ReconcileRecordFailures", unit="Count", value=1)
    _release_if_leaving(record)


def _release_if_leaving(record: SqsRecord) -> None:
    """A message failing its last receive goes to the DLQ: the next poll may queue its notification again."""
    try:
        receives = _receive_count(record)
        if receives is None or receives < Settings.from_environment().dossiers_max_receive_count:
            return
        from qfbridge.messages import NotificationMessage, parse_dossier_message

        message = parse_dossier_message(record.body)
        markers = service().markers
        if isinstance(message, NotificationMessage) and markers is not None:
            markers.release(message.notification.id)
    except Exception as exc:  # the DLQ and its alarm still hold the message
        logger.warning(
            "could not release the notification's marker", extra={"error_code": type(exc).__name__}
        )


def _receive_count(record: SqsRecord) -> int | None:
    count = record.attributes.approximate_receive_count
    try:
        return None if count is None else int(count)
    except ValueError:
        return None


@tracer.capture_method(capture_response=False)
def record_handler(record: SqsRecord, lambda_context: LambdaContext | None = None) -> None:
    # qfbridge.batch hands the invocation's context only to a parameter named ``lambda_context``.
    intake = service()
    if (
        lambda_context is not None
        and lambda_context.get_remaining_time_in_millis() < record_budget_s(intake.hubee) * 1000
    ):
        raise NotStarted("too little time left in this invocation")
    from qfbridge.messages import NewDossierMessage, RepollMessage, parse_dossier_message

    message = parse_dossier_message(record.body)
    if isinstance(message, RepollMessage):
        report = poller().repoll(message)
        logger.info("credential polled again", extra={"hop": message.hop, **report.as_dict()})
        return
    if isinstance(message, NewDossierMessage):
        # A first delivery writes nothing before its first durable step (ReconcileService).
        message = message.model_copy(update={"receive_count": _receive_count(record)})
    result = intake.handle(message)
    logger.info(
        "notification handled",
        extra={
            "kind": result.kind,
            "outcome": result.outcome,
            "case_id": result.case_id,
            "resumed": result.resumed,
        },
    )


@startup.settled(service)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, context=context, on_failure=log_failure
    )
