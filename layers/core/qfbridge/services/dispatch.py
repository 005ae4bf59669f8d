"""The refresh dispatcher (run by refresh_dispatch, on its own schedule): enqueue due refreshes within each tenant's budget.

Rate governance has two levels:

* here, the coarse one: each schedule interval a tenant gets at most ``rate × interval`` refreshes,
  message ``i`` delayed by ``floor(i / rate)`` seconds (SQS ``DelaySeconds``: whole seconds, at most
  900), ``rate`` being a little under the pacer's (``DISPATCH_HEADROOM``), itself at most the budget;
* in qf_refresh, the exact one: every call reserves a slot on the tenant's sliding window
  (``pace_rule(b)``, ``qfbridge.store.pacing``), because whole-second releases handled by concurrent
  invocations would otherwise meet in one sliding second of API Particulier's counter.

The dispatcher runs a little slower than the pacer so the pacer never builds a backlog: waits stay
under a second and the achieved rate stays close to the budget.

Admission: the dispatcher and the manual refresh route book their releases on the tenant's item
(``TenantPacer.book``): a tenant's monthly releases start after the manual refreshes already queued,
and only as many are enqueued as the budget serves before the interval ends. A small budget (0.25
req/s serves 72 refreshes per 5-minute interval) therefore spreads a month's refreshes over as many
intervals as it takes, instead of queueing messages that would wait for a permit beyond their patience.

Families have their due date pushed by ``IN_FLIGHT_HOLD`` just before their message is sent, so the
next dispatch does not enqueue them again; qf_refresh then sets the real next date from the outcome
(a lost message is simply retried after the hold; one that could not be sent is due again at once). Nothing is released into the Sunday maintenance window.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qfbridge.clock import Clock, utc_now
from qfbridge.domain.schedule import in_maintenance, next_maintenance_starts_at
from qfbridge.messages import RefreshMessage
from qfbridge.observability import logger
from qfbridge.services.ports import FamilyStore, RefreshQueue, TenantStore
from qfbridge.store.pacing import TenantPacer
from qfbridge.store.queues import MAX_DELAY_SECONDS, SEND_BATCH
from qfbridge.store.tenants import MAX_REFRESH_BUDGET_RPS, Tenant

IN_FLIGHT_HOLD = dt.timedelta(hours=6)

PACE_MARGIN_SECONDS = 0.08
"""No pacing window is shorter than 1.08 s: the margin absorbs the jitter between taking a permit
and the call reaching API Particulier's one-second counter (integer budgets run at b / 1.08)."""
DISPATCH_HEADROOM = 0.97
"""The dispatcher's release rate as a share of the pacer's: a little under it, so the pacer does not
build a backlog, its waits stay short, and it catches up after a slow moment."""


@dataclass
class DispatchReport:
    enqueued: int = 0
    tenants: int = 0
    failed_tenants: int = 0
    skipped_maintenance: bool = False
    stopped_early: bool = False
    per_tenant: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enqueued": self.enqueued,
            "tenants": self.tenants,
            "failed_tenants": self.failed_tenants,
            "skipped_maintenance": self.skipped_maintenance,
            "stopped_early": self.stopped_early,
        }


def tenant_budget(tenant: Tenant) -> float:
    """The tenant's budget in requests per second, within the API's limit."""
    return min(max(tenant.refresh_budget_rps, 0.0), MAX_REFRESH_BUDGET_RPS)


def pace_rule(budget: float) -> tuple[int, float]:
    """(calls, seconds): qf_refresh's pacer lets a tenant start at most that many calls in any such window.

    ``ceil(budget)`` calls per ``ceil(budget) / budget`` seconds, and never less than one second and
    the margin: the budget on average, never more than ``ceil(budget)`` calls in any second
    (2.5 req/s: 3 calls per 1.2 s; 4 req/s: 4 calls per 1.08 s).
    """
    permits = max(1, math.ceil(budget))
    return permits, max(permits / budget, 1.0 + PACE_MARGIN_SECONDS)


MIN_PACE_BUDGET = 0.1
"""A tenant without a budget still gets its manual refreshes through, one per ~11 s."""


def tenant_pace_rule(tenant: Tenant) -> tuple[int, float]:
    return pace_rule(max(tenant_budget(tenant), MIN_PACE_BUDGET))


def tenant_slots(tenant: Tenant, horizon_seconds: float) -> tuple[float, int]:
    """(release rate in refreshes per second, refreshes to enqueue) for one tenant and one interval:
    every release (``release_delays``) falls strictly within the horizon."""
    budget = tenant_budget(tenant)
    if budget <= 0:
        return 0.0, 0
    permits, window = pace_rule(budget)
    rate = DISPATCH_HEADROOM * permits / window
    last_delay = math.ceil(min(horizon_seconds, MAX_DELAY_SECONDS + 1)) - 1  # whole seconds, < horizon
    if last_delay < 0:
        return rate, 0
    return rate, math.ceil(rate * (last_delay + 1))  # the i with floor(i / rate) <= last_delay


def release_delays(count: int, rate: float) -> list[int]:
    """``DelaySeconds`` of a tenant's ``count`` messages released at ``rate`` per second.

    Rounded down: message ``i`` is released less than a second before ``i / rate``, so the pacer
    never waits long for it and never idles for lack of it; no second releases more than
    ``ceil(rate)`` messages.
    """
    return [min(MAX_DELAY_SECONDS, math.floor(i / rate)) for i in range(count)]


def release_rate(tenant: Tenant) -> float:
    """Refreshes per second the tenant's releases are booked at (manual and monthly alike)."""
    permits, window = tenant_pace_rule(tenant)
    return DISPATCH_HEADROOM * permits / window


@dataclass
class RefreshDispatcher:
    tenants: TenantStore
    families: FamilyStore
    queue: RefreshQueue
    interval_seconds: int = 300
    clock: Clock = utc_now
    pacer: TenantPacer | None = None
    """Books the releases on the tenant's item (after the manual refreshes already queued); without
    it the dispatcher assumes nothing else is queued."""

    def horizon_seconds(self, now: dt.datetime) -> float:
        """How far ahead this dispatch may release refreshes: its interval, never into the maintenance."""
        until_maintenance = (next_maintenance_starts_at(now) - now).total_seconds()
        return min(float(self.interval_seconds), until_maintenance)

    def run(
        self, tenants: list[Tenant] | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> DispatchReport:
        """``should_stop`` is asked before each tenant and each batch: once it says so, what is not
        held yet stays due for the next dispatch (the function's deadline, not a timeout mid-batch)."""
        now = self.clock()
        report = DispatchReport()
        if in_maintenance(now):
            report.skipped_maintenance = True
            logger.info("refresh dispatch skipped (maintenance)")
            return report
        horizon = self.horizon_seconds(now)
        releases: list[tuple[int, int, str, str]] = []  # (delay, tenant order, siret, user_id)
        for order, tenant in enumerate(tenants if tenants is not None else self.tenants.all()):
            if tenant.refresh_status != "active":
                continue
            if should_stop():
                report.stopped_early = True
                break
            rate, slots = tenant_slots(tenant, horizon)
            if slots <= 0:
                continue
            try:
                if self.pacer is None:
                    due = self.families.due(tenant.siret, now.isoformat(), slots)
                    delays = release_delays(len(due), rate)
                else:
                    due, delays = self._booked(tenant, rate, slots, now, horizon)
            except Exception:  # one tenant's trouble must not starve the others
                report.failed_tenants += 1
                logger.exception("refresh dispatch failed for a tenant", extra={"tenant_siret": tenant.siret})
                continue
            releases += [
                (delay, order, tenant.siret, user_id) for delay, user_id in zip(delays, due, strict=True)
            ]
        # Sent in release order, tenants interleaved: each second's release reaches the queue (and then
        # a batch of qf_refresh) as a mix of tenants, not one tenant's run that would wait on its pacer.
        releases.sort(key=lambda release: (release[0], release[1]))
        self._enqueue(releases, now, report, should_stop)
        report.tenants = len(report.per_tenant)
        logger.info("refresh dispatch done", extra=report.as_dict())
        return report

    def _booked(
        self, tenant: Tenant, rate: float, slots: int, now: dt.datetime, horizon: float
    ) -> tuple[list[str], list[int]]:
        """The due families that fit after what is already booked for the tenant, and their delays."""
        assert self.pacer is not None
        epoch = now.timestamp()
        free = self.pacer.booked_until(tenant.siret, now=epoch)
        fits = min(slots, max(0, math.floor((epoch + horizon - free) * rate + 1e-9)))
        if fits <= 0:
            return [], []
        due = self.families.due(tenant.siret, now.isoformat(), fits)
        offsets = self.pacer.book(tenant.siret, len(due), rate=rate, now=epoch, horizon=horizon)
        delays = [min(MAX_DELAY_SECONDS, math.floor(offset)) for offset in offsets]
        return due[: len(delays)], delays

    def _enqueue(
        self,
        releases: list[tuple[int, int, str, str]],
        now: dt.datetime,
        report: DispatchReport,
        should_stop: Callable[[], bool],
    ) -> None:
        """Hold each family, then send its message; a message that could not be sent gives its hold back.

        The hold comes first because qf_refresh may take a message the instant it is sent (delay 0)
        and write the family's real next date: a hold written after it would overwrite that date
        (a stopped tenant's families would no longer be due, a refreshed one would be called again).
        """
        hold = (now + IN_FLIGHT_HOLD).isoformat()
        due_again = now.isoformat()
        for start in range(0, len(releases), SEND_BATCH):
            if should_stop():
                report.stopped_early = True
                return
            chunk = releases[start : start + SEND_BATCH]
            for _, _, siret, user_id in chunk:
                self.families.defer(siret, user_id, hold)
            entries = [
                (
                    RefreshMessage(
                        siret=siret, user_id=user_id, reason="monthly", admitted=self.pacer is not None
                    ),
                    delay,
                )
                for delay, _, siret, user_id in chunk
            ]
            try:
                failed = self.queue.send_batch(entries)
            except Exception:
                for _, _, siret, user_id in chunk:
                    self.families.defer(siret, user_id, due_again)
                raise
            for i, (_, _, siret, user_id) in enumerate(chunk):
                if i in failed:
                    self.families.defer(siret, user_id, due_again)
                    continue
                report.per_tenant[siret] = report.per_tenant.get(siret, 0) + 1
                report.enqueued += 1
