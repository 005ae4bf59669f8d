"""hubee_poll — scheduled: poll HubEE for every credential and queue the notifications for reconcile.

The QF refresh dispatch runs on its own schedule (refresh_dispatch): a slow HubEE cannot starve it.
"""

from __future__ import annotations

# First of all: no garbage collection until the first request is answered (qfbridge.startup).
from qfbridge import startup  # isort: skip

from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import Field

from qfbridge.observability import logger, metrics, tracer
from qfbridge.settings import BaseSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.services.poll import PollService


class Settings(BaseSettings):
    tenants_table: str
    dossiers_table: str
    event_bus_name: str
    tenant_secrets_prefix: str
    dossiers_queue_url: str
    hubee_api_url: str
    hubee_token_url: str
    poll_concurrency: int = Field(default=20, ge=1, le=200)
    dossiers_visibility_timeout_seconds: int = Field(default=360, ge=30, le=43200)
    poll_stuck_after_polls: int = Field(default=3, ge=1, le=1000)
    poll_repoll_delay_seconds: int = Field(default=2, ge=0, le=900)


@cache
def services() -> PollService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.hubee import HubeeConfig
    from qfbridge.services.poll import PollService
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.markers import MarkerRepository
    from qfbridge.store.queues import SqsDossierQueue
    from qfbridge.store.secrets import SecretStore
    from qfbridge.store.tenants import TenantRepository

    settings = Settings.from_environment()
    return PollService(
        tenants=TenantRepository(settings.tenants_table),
        secrets=SecretStore(settings.tenant_secrets_prefix),
        events=EventPublisher(settings.event_bus_name),
        queue=SqsDossierQueue(settings.dossiers_queue_url),
        hubee=HubeeConfig(api_url=settings.hubee_api_url, token_url=settings.hubee_token_url),
        concurrency=settings.poll_concurrency,
        markers=MarkerRepository(settings.dossiers_table),
        queued_for_s=settings.dossiers_visibility_timeout_seconds + 60,
        stuck_after_polls=settings.poll_stuck_after_polls,
        repoll_delay_s=settings.poll_repoll_delay_seconds,
    )


@startup.settled(services)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    poll = services()
    report = poll.run()
    metrics.add_metric(name="NotificationsQueued", unit="Count", value=report.notifications)
    metrics.add_metric(name="HubeeStuckNotifications", unit="Count", value=report.stuck)
    return {"poll": report.as_dict()}
