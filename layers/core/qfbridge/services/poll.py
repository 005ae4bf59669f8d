"""hubee_poll's use case: poll every distinct HubEE credential and queue each notification.

* Tenants are grouped by HubEE client id: an editor's delegated access may let several
  collectivités share one credential, which is then polled once.
* Credentials are polled concurrently, at most ``concurrency`` at a time (asyncio + httpx).
* Each notification becomes one SQS message (sent in batches of 10) carrying the credential's
  tenants, so that reconcile can check that the dossier's recipient is one of them.
* Nothing is deleted here: reconcile acknowledges each notification once it is handled.
* Each notification is queued once: a marker (``qfbridge.store.markers``) holds it "in flight" for
  the queue's visibility timeout plus a margin, so the next polls skip it while reconcile works on
  it; a notification still pending after ``stuck_after_polls`` polls is *stuck*: counted in the
  tenant's ``hubee_stuck_notifications`` and the ``HubeeStuckNotifications`` metric (alarmed).
* No head-of-line blocking: HubEE has no cursor and lists a pending notification until it is
  deleted, in no guaranteed order, so notifications left pending take places in every listing.
  Pages are of ``MAX_RESULT`` (100, as the form itself lists), read while they are full and bring
  news; when the last page was full, a ``repoll`` message (handled by reconcile, after the batch it
  follows) polls that credential again at once instead of at the next tick, until a page is short.
* A failing credential (bad secret, HubEE 5xx) does not stop the others: it is reported through a
  metric, the tenants' ``hubee_status`` and (for an authentication failure) an event.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from qfbridge.clock import Clock, epoch, utc_now
from qfbridge.hubee import AsyncHubeeClient, HubeeAuthError, HubeeConfig, HubeeCredentials, HubeeError
from qfbridge.hubee.models import FORMULAIRE_QF, Notification
from qfbridge.hubee.pager import NotificationPager
from qfbridge.messages import (
    DossierMessage,
    RepollMessage,
    TenantHubeeAuthFailed,
    notification_message,
)
from qfbridge.observability import logger
from qfbridge.services.ports import CredentialReader, DossierQueue, EventSink
from qfbridge.store.markers import Marker, MarkerRepository
from qfbridge.store.queues import SEND_BATCH
from qfbridge.store.secrets import SECRETS_PER_BATCH, TenantCredentials
from qfbridge.store.tenants import Tenant, TenantPatch, TenantRepository
from qfbridge.tls import tls_context

BLOCKING_WORKERS = 10
MAX_RESULT = 100
"""Notifications per listing (HubEE's default is 25; the form itself lists with 100)."""
MAX_PAGES_PER_POLL = 10
MAX_REPOLL_HOPS = 60
MAX_REPOLL_DELAY_S = 60


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
    in_flight: int = 0
    """Pending notifications seen but not queued again: already queued, reconcile works on them."""
    stuck: int = 0
    repolls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "credentials": self.credentials,
            "notifications": self.notifications,
            "new_dossiers": self.new_dossiers,
            "events": self.events,
            "failed_credentials": len(self.failed_credentials),
            "in_flight": self.in_flight,
            "stuck": self.stuck,
            "repolls": self.repolls,
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


@dataclass
class PollService:
    tenants: TenantRepository
    secrets: CredentialReader
    events: EventSink
    queue: DossierQueue
    hubee: HubeeConfig
    concurrency: int = 20
    clock: Clock = utc_now
    credentials_ttl_seconds: float = 3600.0
    monotonic: Callable[[], float] = time.monotonic
    markers: MarkerRepository | None = None
    """Without markers every poll queues every pending notification again (tests of the bare poll)."""
    queued_for_s: float = 420.0
    """How long a queued notification is left to reconcile: the queue's visibility timeout + margin."""
    stuck_after_polls: int = 3
    repoll_delay_s: int = 2
    wall_clock: Callable[[], float] = epoch
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

    def repoll(self, message: RepollMessage) -> PollReport:
        """A ``repoll`` message: poll one credential again now that its last batch was queued."""
        tenants = [t for t in (self.tenants.get(s) for s in message.credential_tenants) if t]
        return asyncio.run(self.poll_all(tenants, hop=message.hop, delay_s=message.delay_s))

    async def poll_all(
        self, tenants: list[Tenant] | None = None, *, hop: int = 0, delay_s: int | None = None
    ) -> PollReport:
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
        async with httpx.AsyncClient(timeout=self.hubee.timeout, limits=limits, verify=tls_context()) as http:

            async def guarded(group: CredentialGroup) -> None:
                async with semaphore:
                    await self._poll_group(
                        group, by_siret, report, http, prefetched.get(group.holder), hop=hop, delay_s=delay_s
                    )

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
        *,
        hop: int = 0,
        delay_s: int | None = None,
    ) -> None:
        from qfbridge.observability import metrics

        stuck = 0
        try:
            try:
                listed, full = await self._list_notifications(group, http, prefetched)
            except HubeeAuthError:
                if prefetched is None:
                    raise
                # A cached secret may have been replaced since (PUT …/credentials): read it again, once.
                self._credentials.pop(group.holder, None)
                listed, full = await self._list_notifications(group, http, None)
            notifications = listed
            if listed and self.markers is not None:
                notifications, in_flight, stuck = await asyncio.to_thread(self._claim, listed, group.holder)
                report.in_flight += in_flight
            repoll = None
            if full and hop < MAX_REPOLL_HOPS:
                # A full listing may hide newer notifications: poll again as soon as this batch is handled,
                # sooner when it brought news, later and later while it only shows notifications in flight.
                delay = self.repoll_delay_s if delay_s is None else delay_s
                delay = delay if notifications else min(MAX_REPOLL_DELAY_S, max(1, delay) * 2)
                repoll = RepollMessage(
                    credential_holder=group.holder,
                    credential_tenants=group.sirets,
                    hop=hop + 1,
                    delay_s=delay,
                )
                report.repolls += 1
            if notifications or repoll:  # most ticks bring nothing: no thread hop (it holds a slot)
                await asyncio.to_thread(self._enqueue, notifications, group, repoll)
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
        report.stuck += stuck
        if any(_needs_reset(by_siret.get(siret), stuck) for siret in group.sirets):
            await asyncio.to_thread(self._mark_success, group, by_siret, stuck)

    async def _list_notifications(
        self, group: CredentialGroup, http: httpx.AsyncClient, secret: TenantCredentials | None
    ) -> tuple[list[Notification], bool]:
        """The credential's pending FormulaireQF notifications, and whether the last page was full."""
        if secret is None:
            secret = await asyncio.to_thread(self.secrets.read_tenant, group.holder, force_fetch=True)
            self._credentials[group.holder] = (self.monotonic() + self.credentials_ttl_seconds, secret)
        if not secret.hubee_client_id or secret.hubee_client_secret is None:
            raise HubeeAuthError("HubEE credentials are incomplete for this tenant.")
        credentials = HubeeCredentials(
            client_id=secret.hubee_client_id, client_secret=secret.hubee_client_secret.get_secret_value()
        )
        notifications: list[Notification] = []
        full = False
        pager = NotificationPager(MAX_RESULT, MAX_PAGES_PER_POLL)
        async with AsyncHubeeClient(self.hubee, credentials, http=http) as client:
            while not pager.done:
                page = await client.list_notifications(FORMULAIRE_QF, MAX_RESULT, True)
                full = len(page) >= MAX_RESULT
                for notification in pager.accept(page):
                    # Never touch another démarche's notifications (other consumers may share credentials).
                    if notification.process_code not in (None, FORMULAIRE_QF):
                        continue
                    notifications.append(notification)
        return notifications, full

    def _claim(self, listed: list[Notification], holder: str) -> tuple[list[Notification], int, int]:
        """(to queue, seen in flight, stuck): queue what no earlier poll queued, or whose time ran out,
        or what another credential's reconcile left to ``holder``'s (its tenant's own credential)."""
        assert self.markers is not None
        now = self.wall_clock()
        known = self.markers.get_many(n.id for n in listed)
        to_queue: list[Notification] = []
        in_flight = stuck = 0
        writes: list[Marker] = []
        for notification in listed:
            marker = known.get(notification.id)
            polls = (marker.polls if marker else 0) + 1
            if polls > self.stuck_after_polls:
                stuck += 1
            left_by = None
            if marker is not None and marker.held_for(holder, now):
                in_flight += 1
                until = marker.queued_until
                left_by = marker.left_by
            else:
                to_queue.append(notification)
                until = now + self.queued_for_s
            writes.append(
                Marker(
                    notification_id=notification.id,
                    queued_until=until,
                    polls=polls,
                    first_seen=marker.first_seen if marker else now,
                    case_id=notification.case_id,
                    acked=marker.acked if marker else False,
                    deleted=marker.deleted if marker else False,
                    left_by=left_by,
                )
            )
        self.markers.put_many(writes)
        return to_queue, in_flight, stuck

    async def _prefetch_credentials(self, holders: list[str]) -> dict[str, TenantCredentials]:
        """The holders' secrets, 20 per BatchGetSecretValue call, instead of one GetSecretValue each.

        Every tick reads every credential's secret (the 300 s cache of a read does not outlive the
        5-minute interval): with 1,000 credentials that is 1,000 calls per tick, which dominated the
        poll cycle (docs/performance.md). A batch that fails (permission not granted, throttling)
        leaves its holders to the per-tenant read, which reports errors as before.
        """
        chunks = [holders[i : i + SECRETS_PER_BATCH] for i in range(0, len(holders), SECRETS_PER_BATCH)]
        found: dict[str, TenantCredentials] = {}
        for chunk_found in await asyncio.gather(
            *(asyncio.to_thread(self.secrets.read_many, c) for c in chunks)
        ):
            found.update(chunk_found)
        return found

    def _enqueue(
        self, notifications: list[Notification], group: CredentialGroup, repoll: RepollMessage | None = None
    ) -> None:
        entries: list[tuple[DossierMessage, int]] = [
            (notification_message(n, group.holder, group.sirets), 0) for n in notifications
        ]
        if repoll is not None:  # last: it follows the batch it polls after
            entries.append((repoll, repoll.delay_s))
        for start in range(0, len(entries), SEND_BATCH):
            failed = self.queue.send_batch(entries[start : start + SEND_BATCH])
            if failed:
                # Not sent now, not deleted either: HubEE redelivers it at the next poll.
                raise HubeeError(f"{len(failed)} notification(s) could not be queued", code="enqueue_failed")

    def _mark_success(self, group: CredentialGroup, by_siret: dict[str, Tenant], stuck: int = 0) -> None:
        now = self.clock().isoformat()
        for siret in group.sirets:
            tenant = by_siret.get(siret)
            if tenant and _needs_reset(tenant, stuck):
                self.tenants.update(
                    siret,
                    TenantPatch(
                        hubee_status="ok",
                        hubee_failures=0,
                        hubee_stuck_notifications=stuck,
                        hubee_checked_at=now,
                    ),
                )

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
                TenantPatch(
                    hubee_status=status,
                    hubee_failures=tenant.hubee_failures + 1,
                    hubee_checked_at=now.isoformat(),
                ),
            )
            if auth and tenant.hubee_status != "auth_failed":
                self.events.publish(
                    TenantHubeeAuthFailed(tenant_siret=siret, error_code=code, detected_at=now.isoformat())
                )


def _needs_reset(tenant: Tenant | None, stuck: int = 0) -> bool:
    """Whether a successful poll changes the tenant's HubEE status (else no write is needed)."""
    return tenant is not None and (
        tenant.hubee_status != "ok" or tenant.hubee_failures > 0 or tenant.hubee_stuck_notifications != stuck
    )
