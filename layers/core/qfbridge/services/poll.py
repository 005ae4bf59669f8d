"""hubee_poll's use case: poll every distinct HubEE credential and queue each notification.

* Tenants are grouped by HubEE client id: an editor's delegated access may let several
  collectivités share one credential, which is then polled once.
* Credentials are polled concurrently, at most ``concurrency`` at a time (asyncio + httpx).
* Each notification becomes one SQS message (sent in batches of 10) carrying the credential's
  tenants, so that reconcile can check that the dossier's recipient is one of them.
* Nothing is deleted here: reconcile acknowledges each notification once it is handled.
* A failing credential (bad secret, HubEE 5xx) does not stop the others: it is reported through a
  metric, the tenants' ``hubee_status`` and (for an authentication failure) an event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from qfbridge.clock import Clock, utc_now
from qfbridge.hubee import AsyncHubeeClient, HubeeAuthError, HubeeConfig, HubeeCredentials, HubeeError
from qfbridge.hubee.models import FORMULAIRE_QF, Notification
from qfbridge.observability import logger
from qfbridge.store.events import EventPublisher
from qfbridge.store.secrets import SecretStore
from qfbridge.store.tenants import Tenant, TenantRepository


@dataclass(frozen=True)
class CredentialGroup:
    """The tenants polled with one HubEE credential; ``holder`` is the tenant whose secret is read."""

    client_id: str
    holder: str
    sirets: tuple[str, ...]


@dataclass
class PollReport:
    credentials: int = 0
    notifications: int = 0
    new_dossiers: int = 0
    events: int = 0
    failed_credentials: list[str] = field(default_factory=list)  # holders' SIRETs

    def as_dict(self) -> dict[str, Any]:
        return {
            "credentials": self.credentials,
            "notifications": self.notifications,
            "new_dossiers": self.new_dossiers,
            "events": self.events,
            "failed_credentials": len(self.failed_credentials),
        }


def group_by_credential(tenants: list[Tenant]) -> list[CredentialGroup]:
    groups: dict[str, list[str]] = defaultdict(list)
    for tenant in tenants:
        if tenant.has_credentials and tenant.hubee_client_id:
            groups[tenant.hubee_client_id].append(tenant.siret)
    return [
        CredentialGroup(client_id=client_id, holder=sorted(sirets)[0], sirets=tuple(sorted(sirets)))
        for client_id, sirets in sorted(groups.items())
    ]


def notification_message(notification: Notification, group: CredentialGroup) -> dict[str, Any]:
    return {
        "kind": "dossier" if notification.is_new_dossier else "event",
        "notification": notification.model_dump(mode="json", by_alias=True),
        "credential_holder": group.holder,
        "credential_tenants": list(group.sirets),
    }


@dataclass
class PollService:
    tenants: TenantRepository
    secrets: SecretStore
    events: EventPublisher
    sqs: Any
    dossiers_queue_url: str
    hubee: HubeeConfig
    concurrency: int = 20
    clock: Clock = utc_now

    def run(self) -> PollReport:
        return asyncio.run(self.poll_all())

    async def poll_all(self) -> PollReport:
        tenants = self.tenants.all()
        groups = group_by_credential(tenants)
        by_siret = {t.siret: t for t in tenants}
        report = PollReport(credentials=len(groups))
        concurrency = max(1, self.concurrency)
        semaphore = asyncio.Semaphore(concurrency)
        # One connection pool for the whole run: the credentials share HubEE's hosts.
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=self.hubee.timeout, limits=limits) as http:

            async def guarded(group: CredentialGroup) -> None:
                async with semaphore:
                    await self._poll_group(group, by_siret, report, http)

            await asyncio.gather(*(guarded(group) for group in groups))
        logger.info("hubee poll done", extra=report.as_dict())
        return report

    async def _poll_group(
        self, group: CredentialGroup, by_siret: dict[str, Tenant], report: PollReport, http: httpx.AsyncClient
    ) -> None:
        from qfbridge.observability import metrics

        try:
            secret = await asyncio.to_thread(self.secrets.read_tenant, group.holder)
            if not secret.hubee_client_id or secret.hubee_client_secret is None:
                raise HubeeAuthError("HubEE credentials are incomplete for this tenant.")
            credentials = HubeeCredentials(
                client_id=secret.hubee_client_id, client_secret=secret.hubee_client_secret.get_secret_value()
            )
            notifications: list[Notification] = []
            async with AsyncHubeeClient(self.hubee, credentials, http=http) as client:
                async for notification in client.iter_notifications(FORMULAIRE_QF, 25, True):
                    # Never touch another démarche's notifications (other consumers may share credentials).
                    if notification.process_code not in (None, FORMULAIRE_QF):
                        continue
                    notifications.append(notification)
            await asyncio.to_thread(self._enqueue, notifications, group)
        except HubeeError as exc:
            report.failed_credentials.append(group.holder)
            auth = isinstance(exc, HubeeAuthError)
            metrics.add_metric(name="HubeePollFailures", unit="Count", value=1)
            logger.warning(
                "hubee poll failed for a credential",
                extra={"tenants": list(group.sirets), "error_code": exc.code, "auth": auth},
            )
            await asyncio.to_thread(self._mark_failure, group, by_siret, auth, exc.code)
            return
        except Exception as exc:  # a tenant's misconfiguration must never stop the other tenants
            report.failed_credentials.append(group.holder)
            metrics.add_metric(name="HubeePollFailures", unit="Count", value=1)
            logger.warning(
                "hubee poll failed for a credential",
                extra={"tenants": list(group.sirets), "error_code": type(exc).__name__},
            )
            await asyncio.to_thread(self._mark_failure, group, by_siret, False, type(exc).__name__)
            return
        report.notifications += len(notifications)
        report.new_dossiers += sum(1 for n in notifications if n.is_new_dossier)
        report.events += sum(1 for n in notifications if not n.is_new_dossier)
        await asyncio.to_thread(self._mark_success, group, by_siret)

    def _enqueue(self, notifications: list[Notification], group: CredentialGroup) -> None:
        for start in range(0, len(notifications), 10):
            chunk = notifications[start : start + 10]
            response = self.sqs.send_message_batch(
                QueueUrl=self.dossiers_queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(notification_message(n, group), separators=(",", ":"))}
                    for i, n in enumerate(chunk)
                ],
            )
            if response.get("Failed"):
                # Not sent now, not deleted either: HubEE redelivers it at the next poll.
                raise HubeeError(f"{len(response['Failed'])} notification(s) could not be queued", code="enqueue_failed")

    def _mark_success(self, group: CredentialGroup, by_siret: dict[str, Tenant]) -> None:
        now = self.clock().isoformat()
        for siret in group.sirets:
            tenant = by_siret.get(siret)
            if tenant and (tenant.hubee_status != "ok" or tenant.hubee_failures):
                self.tenants.update(siret, hubee_status="ok", hubee_failures=0, hubee_checked_at=now)

    def _mark_failure(self, group: CredentialGroup, by_siret: dict[str, Tenant], auth: bool, code: str) -> None:
        status = "auth_failed" if auth else "error"
        now = self.clock()
        for siret in group.sirets:
            tenant = by_siret.get(siret)
            if tenant is None:
                continue
            self.tenants.update(
                siret, hubee_status=status, hubee_failures=tenant.hubee_failures + 1, hubee_checked_at=now.isoformat()
            )
            if auth and tenant.hubee_status != "auth_failed":
                self.events.publish(
                    "tenant.hubee_auth_failed",
                    {"tenant_siret": siret, "error_code": code, "detected_at": now.isoformat()},
                )


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
