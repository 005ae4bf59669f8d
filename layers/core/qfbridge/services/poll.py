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
import json
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx

from qfbridge.clock import Clock, utc_now
from qfbridge.hubee import AsyncHubeeClient, HubeeAuthError, HubeeConfig, HubeeCredentials, HubeeError
from qfbridge.hubee.models import FORMULAIRE_QF, Notification
from qfbridge.observability import logger
from qfbridge.store.events import EventPublisher
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import Tenant, TenantRepository

BLOCKING_WORKERS = 10
SECRETS_PER_BATCH = 20  # BatchGetSecretValue's maximum


@cache
def _secretsmanager() -> Any:
    import boto3

    return boto3.client("secretsmanager")


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
    credentials_ttl_seconds: float = 3600.0
    monotonic: Callable[[], float] = time.monotonic
    _credentials: dict[str, tuple[float, TenantCredentials]] = field(default_factory=dict, repr=False)
    """Credentials read in earlier ticks of this execution environment: HubEE secrets change rarely,
    and a refused one is read again at once (``_poll_group``), so a tick reads only new holders'."""

    def run(self, tenants: list[Tenant] | None = None) -> PollReport:
        """Poll every credential; ``tenants`` spares listing them again when the caller has them."""
        return asyncio.run(self._poll_all_with_workers(tenants))

    async def _poll_all_with_workers(self, tenants: list[Tenant] | None) -> PollReport:
        # The blocking AWS calls (secret read, enqueue, status update) go through asyncio.to_thread,
        # i.e. the loop's default executor: min(32, CPUs + 4) threads, 6 on Lambda's 2 vCPUs — fewer
        # than the credentials polled at once, which then queue for a thread. Give the executor one
        # thread per concurrent credential, up to botocore's default pool of 10 connections per client
        # (docs/performance.md, poll cycle).
        workers = max(1, min(self.concurrency, BLOCKING_WORKERS))
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hubee-poll")
        )
        return await self.poll_all(tenants)

    async def poll_all(self, tenants: list[Tenant] | None = None) -> PollReport:
        if tenants is None:
            tenants = self.tenants.all()
        groups = group_by_credential(tenants)
        by_siret = {t.siret: t for t in tenants}
        report = PollReport(credentials=len(groups))
        now = self.monotonic()
        prefetched = {
            holder: secret for holder, (expires, secret) in self._credentials.items() if expires > now
        }
        missing = [group.holder for group in groups if group.holder not in prefetched]
        fresh = await self._prefetch_credentials(missing)
        self._credentials.update({h: (now + self.credentials_ttl_seconds, s) for h, s in fresh.items()})
        prefetched.update(fresh)
        concurrency = max(1, self.concurrency)
        semaphore = asyncio.Semaphore(concurrency)
        # One connection pool for the whole run: the credentials share HubEE's hosts.
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=self.hubee.timeout, limits=limits) as http:

            async def guarded(group: CredentialGroup) -> None:
                async with semaphore:
                    await self._poll_group(group, by_siret, report, http, prefetched.get(group.holder))

            await asyncio.gather(*(guarded(group) for group in groups))
        logger.info("hubee poll done", extra=report.as_dict())
        return report

    async def _poll_group(
        self,
        group: CredentialGroup,
        by_siret: dict[str, Tenant],
        report: PollReport,
        http: httpx.AsyncClient,
        prefetched: TenantCredentials | None = None,
    ) -> None:
        from qfbridge.observability import metrics

        try:
            try:
                notifications = await self._list_notifications(group, http, prefetched)
            except HubeeAuthError:
                if prefetched is None:
                    raise
                # A cached secret may have been replaced since (PUT …/credentials): read it again, once.
                self._credentials.pop(group.holder, None)
                notifications = await self._list_notifications(group, http, None)
            if notifications:  # most ticks bring nothing: no thread hop (it would hold a concurrency slot)
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
        if any(_needs_reset(by_siret.get(siret)) for siret in group.sirets):
            await asyncio.to_thread(self._mark_success, group, by_siret)

    async def _list_notifications(
        self, group: CredentialGroup, http: httpx.AsyncClient, secret: TenantCredentials | None
    ) -> list[Notification]:
        if secret is None:
            secret = await asyncio.to_thread(self.secrets.read_tenant, group.holder, force_fetch=True)
            self._credentials[group.holder] = (self.monotonic() + self.credentials_ttl_seconds, secret)
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
        return notifications

    async def _prefetch_credentials(self, holders: list[str]) -> dict[str, TenantCredentials]:
        """The holders' secrets, 20 per BatchGetSecretValue call, instead of one GetSecretValue each.

        Every tick reads every credential's secret (the 300 s cache of a read does not outlive the
        5-minute interval): with 1,000 credentials that is 1,000 calls per tick, which dominated the
        poll cycle (docs/performance.md). A batch that fails (permission not granted, throttling)
        leaves its holders to the per-tenant read, which reports errors as before.
        """
        chunks = [holders[i : i + SECRETS_PER_BATCH] for i in range(0, len(holders), SECRETS_PER_BATCH)]
        found: dict[str, TenantCredentials] = {}
        for chunk_found in await asyncio.gather(*(asyncio.to_thread(self._read_secrets, c) for c in chunks)):
            found.update(chunk_found)
        return found

    def _read_secrets(self, holders: list[str]) -> dict[str, TenantCredentials]:
        names = {self.secrets.tenant_secret_name(siret): siret for siret in holders}
        try:
            response = _secretsmanager().batch_get_secret_value(SecretIdList=list(names))
        except Exception as exc:  # the per-tenant read takes over and reports real errors
            logger.info("batch secret read unavailable", extra={"error_code": type(exc).__name__})
            return {}
        found: dict[str, TenantCredentials] = {}
        for value in response.get("SecretValues", []):
            siret = names.get(str(value.get("Name")))
            if siret is None or "SecretString" not in value:
                continue
            try:
                found[siret] = TenantCredentials.model_validate(json.loads(value["SecretString"]))
            except ValueError:
                continue
        return found

    def _enqueue(self, notifications: list[Notification], group: CredentialGroup) -> None:
        for start in range(0, len(notifications), 10):
            chunk = notifications[start : start + 10]
            response = self.sqs.send_message_batch(
                QueueUrl=self.dossiers_queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "MessageBody": json.dumps(notification_message(n, group), separators=(",", ":")),
                    }
                    for i, n in enumerate(chunk)
                ],
            )
            if response.get("Failed"):
                # Not sent now, not deleted either: HubEE redelivers it at the next poll.
                raise HubeeError(
                    f"{len(response['Failed'])} notification(s) could not be queued", code="enqueue_failed"
                )

    def _mark_success(self, group: CredentialGroup, by_siret: dict[str, Tenant]) -> None:
        now = self.clock().isoformat()
        for siret in group.sirets:
            tenant = by_siret.get(siret)
            if tenant and (tenant.hubee_status != "ok" or tenant.hubee_failures):
                self.tenants.update(siret, hubee_status="ok", hubee_failures=0, hubee_checked_at=now)

    def _mark_failure(
        self, group: CredentialGroup, by_siret: dict[str, Tenant], auth: bool, code: str
    ) -> None:
        status = "auth_failed" if auth else "error"
        now = self.clock()
        for siret in group.sirets:
            tenant = by_siret.get(siret)
            if tenant is None:
                continue
            self.tenants.update(
                siret,
                hubee_status=status,
                hubee_failures=tenant.hubee_failures + 1,
                hubee_checked_at=now.isoformat(),
            )
            if auth and tenant.hubee_status != "auth_failed":
                self.events.publish(
                    "tenant.hubee_auth_failed",
                    {"tenant_siret": siret, "error_code": code, "detected_at": now.isoformat()},
                )


def _needs_reset(tenant: Tenant | None) -> bool:
    """Whether a successful poll changes the tenant's HubEE status (else no write is needed)."""
    return tenant is not None and (tenant.hubee_status != "ok" or tenant.hubee_failures > 0)
