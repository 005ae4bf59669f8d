"""token_watch — daily: events as API Particulier tokens approach their expiry date."""

from __future__ import annotations

# First of all: no garbage collection until the first request is answered (qfbridge.startup).
from qfbridge import startup  # isort: skip

from functools import cache
from typing import TYPE_CHECKING, Any

from qfbridge.observability import logger, metrics, tracer
from qfbridge.settings import BaseSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from qfbridge.services.token_watch import TokenWatchService


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    event_bus_name: str


@cache
def service() -> TokenWatchService:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.services.token_watch import TokenWatchService
    from qfbridge.store.events import EventPublisher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.tenants import TenantRepository

    settings = Settings.from_environment()
    return TokenWatchService(
        TenantRepository(settings.tenants_table),
        EventPublisher(settings.event_bus_name),
        families=FamilyRepository(settings.families_table),
    )


@startup.settled(service)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = service().run()
    metrics.add_metric(name="TokensExpiring", unit="Count", value=len(report.expiring))
    metrics.add_metric(name="TokensExpired", unit="Count", value=len(report.expired))
    return report.as_dict()
