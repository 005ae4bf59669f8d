"""refresh_dispatch — scheduled: queue the QF refreshes that are due, within each tenant's budget.

Its own schedule and function, apart from hubee_poll: a slow HubEE must not starve the refreshes.
It stops queueing with ``STOP_WITH_REMAINING_MS`` left, so a long dispatch ends with what it held
sent; the families it did not reach stay due for the next tick.
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

    from qfbridge.services.dispatch import RefreshDispatcher


STOP_WITH_REMAINING_MS = 20_000
"""Time kept for the batch in flight (ten holds, one send, the holds given back if it fails)."""


class Settings(BaseSettings):
    tenants_table: str
    families_table: str
    refresh_queue_url: str
    poll_interval_minutes: int = Field(default=5, ge=1, le=60)


@cache
def dispatcher() -> RefreshDispatcher:
    # Imported here, not at module level: a cold start's init only pays for what the handler's
    # decorators need (docs/performance.md, cold-start proxy).
    from qfbridge.services.dispatch import RefreshDispatcher
    from qfbridge.store.families import FamilyRepository
    from qfbridge.store.pacing import TenantPacer
    from qfbridge.store.queues import SqsRefreshQueue
    from qfbridge.store.tenants import TenantRepository

    settings = Settings.from_environment()
    return RefreshDispatcher(
        tenants=TenantRepository(settings.tenants_table),
        families=FamilyRepository(settings.families_table),
        queue=SqsRefreshQueue(settings.refresh_queue_url),
        interval_seconds=settings.poll_interval_minutes * 60,
        pacer=TenantPacer(settings.tenants_table),
    )


@startup.settled(dispatcher)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = dispatcher().run(
        should_stop=lambda: context.get_remaining_time_in_millis() < STOP_WITH_REMAINING_MS
    )
    metrics.add_metric(name="RefreshesQueued", unit="Count", value=report.enqueued)
    if report.stopped_early:
        metrics.add_metric(name="RefreshDispatchStoppedEarly", unit="Count", value=1)
    return {"refresh": report.as_dict()}
