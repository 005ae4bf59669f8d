"""hubee_poll — scheduled: poll HubEE for every credential, then dispatch the QF refreshes that are due."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings

from qfbridge.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.services.dispatch import RefreshDispatcher
    from qfbridge.services.poll import PollService


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    event_bus_name: str
    tenant_secrets_prefix: str
    dossiers_queue_url: str
    refresh_queue_url: str
    hubee_api_url: str
    hubee_token_url: str
    poll_concurrency: int = Field(default=20, ge=1, le=200)
    poll_interval_minutes: int = Field(default=5, ge=1, le=60)


@cache
def services() -> tuple[PollService, RefreshDispatcher]:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    import boto3

    from qfbridge.hubee import HubeeConfig
    from qfbridge.services.dispatch import RefreshDispatcher
    from qfbridge.services.poll import PollService
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    settings = Settings()  # type: ignore[call-arg]
    sqs = boto3.client("sqs")
    tenants = TenantRepository(settings.tenants_table)
    poll = PollService(
        tenants=tenants,
        secrets=SecretStore(settings.tenant_secrets_prefix),
        events=EventPublisher(settings.event_bus_name),
        sqs=sqs,
        dossiers_queue_url=settings.dossiers_queue_url,
        hubee=HubeeConfig(api_url=settings.hubee_api_url, token_url=settings.hubee_token_url),
        concurrency=settings.poll_concurrency,
    )
    dispatcher = RefreshDispatcher(
        tenants=tenants,
        families=FamilyRepository(settings.families_table),
        sqs=sqs,
        refresh_queue_url=settings.refresh_queue_url,
        interval_seconds=settings.poll_interval_minutes * 60,
    )
    return poll, dispatcher


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    poll, dispatcher = services()
    tenants = poll.tenants.all()  # listed once for the poll and the dispatch
    report = poll.run(tenants)
    metrics.add_metric(name="NotificationsQueued", unit="Count", value=report.notifications)
    dispatched = dispatcher.run(tenants)
    return {"poll": report.as_dict(), "refresh": dispatched.as_dict()}
