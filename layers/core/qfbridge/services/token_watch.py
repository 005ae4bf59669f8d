"""token_watch's use case: warn 90, 60, 30 and 15 days before a tenant's API Particulier token
expires, and on expiry (API Particulier tokens expire every 18 months and are prolonged in place).

The expiry date is tenant configuration (the token does not tell it reliably). Each threshold is
announced once (``token_alerts_sent``); a new expiry date set through the API resets them.

The same daily run expires the pivot identities of families no longer refreshed: a family still due
``PIVOT_RETENTION_DAYS`` after its due date (its tenant's refreshes stopped since, or its refreshes
keep failing before reaching API Particulier) loses its pivot identity and leaves the refresh cycle;
a new dossier brings both back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from qfbridge.clock import Clock, utc_now
from qfbridge.messages import TenantTokenExpired, TenantTokenExpiring
from qfbridge.observability import logger
from qfbridge.services.ports import EventSink, FamilyStore, TenantStore
from qfbridge.store.tenants import Tenant, TenantPatch

THRESHOLDS_DAYS = (90, 60, 30, 15)
PIVOT_RETENTION_DAYS = 180
"""A pivot identity unused by a refresh for this long (past its due date) is deleted."""
EXPIRY_PAGE = 100


@dataclass
class TokenWatchReport:
    checked: int = 0
    expiring: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    identities_expired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "expiring": len(self.expiring),
            "expired": len(self.expired),
            "identities_expired": self.identities_expired,
        }


def due_alert(tenant: Tenant, today: dt.date) -> tuple[str, int] | None:
    """The alert to send today, if any: ("expired", 0) or ("expiring", threshold)."""
    if tenant.token_expires_on is None:
        return None
    days_left = (tenant.token_expires_on - today).days
    if days_left <= 0:
        return None if "expired" in tenant.token_alerts_sent else ("expired", 0)
    crossed = [t for t in THRESHOLDS_DAYS if days_left <= t]
    if not crossed:
        return None
    threshold = min(crossed)
    return None if str(threshold) in tenant.token_alerts_sent else ("expiring", threshold)


@dataclass
class TokenWatchService:
    tenants: TenantStore
    events: EventSink
    clock: Clock = utc_now
    families: FamilyStore | None = None

    def run(self) -> TokenWatchReport:
        today = self.clock().date()
        report = TokenWatchReport()
        for tenant in self.tenants.all():
            report.checked += 1
            report.identities_expired += self._expire_identities(tenant.siret)
            alert = due_alert(tenant, today)
            if alert is None or tenant.token_expires_on is None:
                continue
            kind, threshold = alert
            expires_on = tenant.token_expires_on.isoformat()
            if kind == "expired":
                self.events.publish(
                    TenantTokenExpired(
                        tenant_siret=tenant.siret, expires_on=expires_on, detected_by="token_watch"
                    )
                )
                self.tenants.update(
                    tenant.siret, TenantPatch(token_alerts_sent=[*tenant.token_alerts_sent, "expired"])
                )
                report.expired.append(tenant.siret)
            else:
                days_left = (tenant.token_expires_on - today).days
                self.events.publish(
                    TenantTokenExpiring(
                        tenant_siret=tenant.siret,
                        expires_on=expires_on,
                        days_left=days_left,
                        threshold=threshold,
                    )
                )
                # Thresholds already passed are marked too: one event per day at most, never a burst.
                sent = {str(t) for t in THRESHOLDS_DAYS if t >= threshold} | set(tenant.token_alerts_sent)
                self.tenants.update(tenant.siret, TenantPatch(token_alerts_sent=sorted(sent)))
                report.expiring.append(tenant.siret)
        logger.info("token watch done", extra=report.as_dict())
        return report

    def _expire_identities(self, siret: str) -> int:
        """Delete the pivot identities of the tenant's families not refreshed for the retention period
        (still due since then): one Query on the due index, then one conditional UpdateItem each."""
        if self.families is None:
            return 0
        now = self.clock()
        cutoff = (now - dt.timedelta(days=PIVOT_RETENTION_DAYS)).isoformat()
        expired = 0
        while True:
            stale = self.families.due(siret, cutoff, EXPIRY_PAGE)
            for user_id in stale:
                expired += self.families.expire_identity(siret, user_id, cutoff, now.isoformat())
            if len(stale) < EXPIRY_PAGE:
                return expired
