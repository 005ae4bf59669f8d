"""The refresh dispatcher (run by hubee_poll): enqueue due refreshes within each tenant's budget.

Each schedule interval, a tenant with a budget of ``b`` requests per second may have at most
``b × interval`` refreshes enqueued; message ``i`` of the tenant is delayed by ``i / b`` seconds
(SQS ``DelaySeconds``, whole seconds, at most 900), so that the refreshes of a tenant reach API
Particulier no faster than its budget. Enqueued families have their due date pushed by
``IN_FLIGHT_HOLD`` so the next dispatch does not enqueue them again; qf_refresh then sets the
real next date from the outcome (and a lost message is simply retried after the hold).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from qfbridge.clock import Clock, utc_now
from qfbridge.domain.schedule import in_maintenance
from qfbridge.observability import logger
from qfbridge.store.families import FamilyRepository
from qfbridge.store.tenants import MAX_REFRESH_BUDGET_RPS, Tenant, TenantRepository

IN_FLIGHT_HOLD = dt.timedelta(hours=6)
MAX_DELAY_SECONDS = 900


@dataclass
class DispatchReport:
    enqueued: int = 0
    tenants: int = 0
    skipped_maintenance: bool = False
    per_tenant: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"enqueued": self.enqueued, "tenants": self.tenants, "skipped_maintenance": self.skipped_maintenance}


def tenant_slots(tenant: Tenant, interval_seconds: int) -> tuple[float, int]:
    """(budget in requests per second, refreshes allowed this interval) for one tenant."""
    budget = min(max(tenant.refresh_budget_rps, 0.0), MAX_REFRESH_BUDGET_RPS)
    window = min(interval_seconds, MAX_DELAY_SECONDS)
    return budget, int(math.floor(budget * window))


def refresh_message(siret: str, user_id: str, reason: str) -> str:
    return json.dumps({"siret": siret, "user_id": user_id, "reason": reason}, separators=(",", ":"))


@dataclass
class RefreshDispatcher:
    tenants: TenantRepository
    families: FamilyRepository
    sqs: Any
    refresh_queue_url: str
    interval_seconds: int = 300
    clock: Clock = utc_now

    def run(self, tenants: list[Tenant] | None = None) -> DispatchReport:
        now = self.clock()
        report = DispatchReport()
        if in_maintenance(now):
            report.skipped_maintenance = True
            return report
        for tenant in tenants if tenants is not None else self.tenants.all():
            if tenant.refresh_status != "active":
                continue
            budget, slots = tenant_slots(tenant, self.interval_seconds)
            if slots <= 0:
                continue
            due = self.families.due(tenant.siret, now.isoformat(), slots)
            if not due:
                continue
            report.tenants += 1
            self._enqueue(tenant.siret, due, budget, now)
            report.per_tenant[tenant.siret] = len(due)
            report.enqueued += len(due)
        logger.info("refresh dispatch done", extra=report.as_dict())
        return report

    def _enqueue(self, siret: str, user_ids: list[str], budget: float, now: dt.datetime) -> None:
        hold = (now + IN_FLIGHT_HOLD).isoformat()
        for start in range(0, len(user_ids), 10):
            chunk = user_ids[start : start + 10]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": refresh_message(siret, user_id, "monthly"),
                    "DelaySeconds": min(MAX_DELAY_SECONDS, int((start + i) / budget)),
                }
                for i, user_id in enumerate(chunk)
            ]
            response = self.sqs.send_message_batch(QueueUrl=self.refresh_queue_url, Entries=entries)
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            for i, user_id in enumerate(chunk):
                if i not in failed:
                    self.families.defer(siret, user_id, hold)
