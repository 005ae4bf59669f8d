"""qf_refresh's use case: refresh one family's QF from API Particulier and act on the outcome.

Outcomes (docs/architecture.md, "The monthly refresh"):

* 200 → the QF is stored (one history entry per QF month: a redelivery adds nothing) and
  ``qf.updated`` is published when the value changed; next due date set.
* 404 → ``not_found``: retried next cycle, ``refresh.failed`` after ``NOT_FOUND_ALERT_AFTER`` in a row.
* 422 → identity rejected: the family leaves the monthly cycle, its refresh state says why (the API's
  error codes as ``reason``) and ``refresh.failed`` carries them (``detail_code``); a new dossier or a
  manual refresh brings it back. Names are sent in the form the API accepts (``api_particulier.names``),
  so a typographic apostrophe or a ligature no longer earns it.
* 401 → the secret is read again past the cache first (a token replaced through the API since it was
  cached gets one call of its own); then the tenant's token expired: the tenant's refreshes stop
  (``refresh_status``), event once;
  the family stays due, and so do the families whose messages arrive while the tenant is stopped,
  so prolonging the token through the API resumes them at the next dispatch.
* 403 → the tenant is forbidden: same, with ``forbidden``.
* 409/429/502/503/504/transport → retried: the message's visibility is pushed to the server's
  ``Retry-After`` (429) or ``meta.retry_in`` (503), else an exponential backoff, up to the queue's
  ``maxReceiveCount``; on the last attempt ``refresh.failed`` is published before the DLQ. A 429 or
  503 also holds the tenant's pacer: its other refreshes wait too instead of earning more 429s.
* Sunday 23:00–23:45 (maintenance): no call; the message waits for the end of the window
  (``maintenance_window``, which spends no attempt; a 503 answer does).
* A monthly message for a family refreshed successfully within ``IN_FLIGHT_HOLD`` (a manual refresh
  in the meantime, or SQS delivering the message again after it was handled) makes no call:
  ``skipped_recent``. A manual refresh always calls.

Every call first reserves the tenant's next slot on the pacer (``qfbridge.store.pacing``) and waits
for it: the budget holds whatever the SQS delivery timing. A refresh allowed to defer (``may_defer``:
qf_refresh has other records of its batch to run) whose slot is further than ``DEFER_AFTER_SECONDS``
away raises ``NotYet`` having only looked at its tenant, and runs again after them.

Waiting is not failing. A refresh that must wait without having called API Particulier (its
permit is more than a second away, the Sunday maintenance, another refresh of the same family in
flight) raises ``RetryLater(counts=False)``: qf_refresh sends a fresh copy of the message, delayed,
carrying the attempts already spent (``attempts_before``), so only the attempts that met a real
failure count towards ``max_attempts``. The last one records the family ``failed``, publishes
``refresh.failed`` and asks for the message to be dead-lettered (``dead_letter``).

One refresh of a family at a time: the family's lease (``qfbridge.store.leases``) is held from
before the call until the outcome is stored; a second refresh of the same family waits for it.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from qfbridge.api_particulier.outcomes import QfFound, RefreshOutcome
from qfbridge.clock import Clock, utc_now
from qfbridge.domain.schedule import maintenance_ends_at, next_refresh_date
from qfbridge.messages import RefreshFailed, RefreshMessage, TenantTokenExpired, qf_updated
from qfbridge.observability import logger, metrics
from qfbridge.services.dispatch import (
    IN_FLIGHT_HOLD,
    PACE_MARGIN_SECONDS,
    release_rate,
    tenant_pace_rule,
)
from qfbridge.services.ports import EventSink, FamilyStore, QfSource, TenantSecrets, TenantStore
from qfbridge.store.audit import SERVICE_PRINCIPAL, AuditRecord, AuditTrail
from qfbridge.store.families import FamilyRecord, QfEntry, RefreshState
from qfbridge.store.leases import FamilyRefreshLease
from qfbridge.store.pacing import Permit, TenantPacer
from qfbridge.store.queues import MAX_DELAY_SECONDS
from qfbridge.store.tenants import RefreshStatus, Tenant

NOT_FOUND_ALERT_AFTER = 3
SQS_VISIBILITY_LIMIT_SECONDS = 43_200
"""SQS refuses a visibility change that would end more than 12 h after the message was received."""
MAX_VISIBILITY_SECONDS = SQS_VISIBILITY_LIMIT_SECONDS - 900
"""The longest delay asked: the limit less the longest a Lambda invocation can have held the message
(15 minutes), so SQS accepts it whenever in the invocation it is asked."""
MAX_PACING_WAIT_SECONDS = 1.0
"""Longest a refresh waits in the function for its slot (it holds its batch meanwhile); further away,
the message goes back to the queue until then."""
RECHECK_AFTER_WAIT_SECONDS = 0.3
"""Before a wait this long ends, the tenant's status is read again: a 401 met meanwhile stops the call."""
RECHECK_LEAD_SECONDS = 0.15
"""How long before its slot a waiting call reads the tenant's status (the read must not make it late,
even when DynamoDB, or the machine, is slow)."""
BOOK_LEAD_SECONDS = 0.05
"""A permit free already is taken for this much later: the writes between the take and the call (the
take itself, the audit record) then fit before its instant instead of making the call late."""
LATE_TOLERANCE_SECONDS = 0.05
"""A call starting later than this after its slot gives the slot up (the pacer's margin is 80 ms)."""


def late_tolerance(window: float) -> float:
    """How late after taking its permit a call may still start.

    A permit's calls are ``window`` seconds apart when taken; a call started ``d`` late is at least
    ``window - d`` from the permit's next one, which must stay over one second (and the margin) of
    API Particulier's counter. With a 4 s window (0.25 req/s) a call may be almost 3 s late; giving
    the permit up for 50 ms there would waste a whole window of a small budget. A window of
    1.08 s (whole budgets) keeps the 50 ms.
    """
    return max(LATE_TOLERANCE_SECONDS, window - 1.0 - PACE_MARGIN_SECONDS)


DEFER_AFTER_SECONDS = 0.2
"""A refresh whose tenant's next permit frees further ahead than this lets the other records of its
batch go first when it may (``may_defer``): about the time one record's refresh takes."""
PACING_ATTEMPTS = 6
SERVER_TIMED_RETRIES = ("throttled", "maintenance")
"""Retries whose delay the server dictates; the others back off exponentially."""
WAITS = ("paced", "maintenance_window", "family_busy", "deadline")
"""Why a refresh may wait without having called API Particulier: these never spend an attempt."""
LEASE_SECONDS = 60.0
"""A family's refresh lease outlives any invocation holding it (the function's timeout is 30 s)."""
FAMILY_BUSY_WAIT_SECONDS = 5
"""How long a refresh waits for another refresh of the same family to finish."""


class RetryLater(Exception):
    """The refresh must be attempted again after ``delay_seconds``.

    ``counts``: the attempt met a real failure (it spends one of ``max_attempts``); otherwise it only
    waited (pacing, maintenance, the family busy) and the message goes back without spending one.
    ``dead_letter``: attempts are exhausted, the failure is recorded: the message goes to the DLQ.
    """

    def __init__(
        self,
        kind: str,
        delay_seconds: int,
        *,
        counts: bool = True,
        dead_letter: bool = False,
        admitted: bool = False,
    ) -> None:
        super().__init__(f"refresh to retry later ({kind})")
        self.kind = kind
        self.delay_seconds = delay_seconds
        self.counts = counts
        self.dead_letter = dead_letter
        self.admitted = admitted
        """The message's next copy has its release booked on the tenant's schedule."""


class NotYet(Exception):
    """The tenant's next permit frees at ``at`` (epoch seconds), more than ``DEFER_AFTER_SECONDS``
    away: the caller, which allowed it (``may_defer``), runs other refreshes first. Nothing was
    written: the refresh only looked at its tenant."""

    def __init__(self, at: float) -> None:
        super().__init__("the tenant's next permit is not free yet")
        self.at = at


@dataclass
class _Lease:
    """The family's refresh lease this refresh holds; ``released`` once the outcome's write gave it back."""

    holder: str
    released: bool = False


@dataclass
class RefreshResult:
    outcome: str
    changed: bool = False


def backoff_seconds(attempt: int, base: int) -> int:
    return int(min(MAX_VISIBILITY_SECONDS, base * (2 ** max(0, attempt - 1))))


def whole_seconds(wait: float) -> int:
    """A visibility delay that never wakes up early (and is at least one second)."""
    return int(min(MAX_VISIBILITY_SECONDS, max(1, math.ceil(wait))))


def next_due_at(now: dt.datetime) -> str:
    return dt.datetime.combine(next_refresh_date(now.date()), dt.time(6, 0), tzinfo=dt.UTC).isoformat()


def refreshed_since(state: RefreshState, since: dt.datetime) -> bool:
    """Whether the family's last refresh succeeded at or after ``since``."""
    if state.status != "ok" or state.last_attempt_at is None:
        return False
    at = dt.datetime.fromisoformat(state.last_attempt_at)
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)) >= since


def qf_changed(previous: QfEntry | None, entry: QfEntry) -> bool:
    """Whether the editor must hear of the new QF: a new value (or provider), not just a new month."""
    if previous is None:
        return True
    old, new = previous.quotient_familial, entry.quotient_familial
    return (old.valeur, old.fournisseur) != (new.valeur, new.fournisseur)


@dataclass
class RefreshService:
    tenants: TenantStore
    families: FamilyStore
    secrets: TenantSecrets
    events: EventSink
    client: QfSource
    pacer: TenantPacer | None = None
    leases: FamilyRefreshLease | None = None
    max_attempts: int = 10
    retry_base_seconds: int = 30
    clock: Clock = utc_now
    sleep: Callable[[float], None] = time.sleep
    audit: AuditTrail | None = None
    """Each call to API Particulier sends the family's pivot identity: one audit record per call."""

    def refresh(
        self,
        message: RefreshMessage,
        *,
        attempt: int = 1,
        request_id: str | None = None,
        may_defer: bool = False,
    ) -> RefreshResult:
        """Refresh one family. ``may_defer``: the caller has other refreshes to run meanwhile, so one
        whose permit frees more than ``DEFER_AFTER_SECONDS`` ahead raises ``NotYet`` instead of waiting."""
        siret, user_id = message.siret, message.user_id
        looked = self._look(siret)
        if looked is None:
            return RefreshResult("skipped_no_tenant")
        tenant, permit = looked
        if tenant.refresh_status != "active":
            return self._keep_due(siret, user_id)
        if permit is not None:
            wait = permit.free_at - self._epoch()
            if may_defer and wait > DEFER_AFTER_SECONDS:
                raise NotYet(permit.free_at)
            if message.admitted and wait > MAX_PACING_WAIT_SECONDS:
                # Back to the queue until shortly before the permit frees, before taking the family's
                # lease (_wait_for_permit would send it back all the same, after two writes).
                self._retry(siret, user_id, RefreshState(), "paced", math.floor(wait), self.clock(), attempt)
        now = self.clock()
        lease: _Lease | None = None
        if self.leases is None:
            family = self.families.get(siret, user_id)
        else:
            # The lease's write returns the family: no read of its own.
            holder = uuid.uuid4().hex
            taken = self.leases.acquire_family(
                siret, user_id, holder, now=now.timestamp(), seconds=LEASE_SECONDS
            )
            if taken == "missing":
                return RefreshResult("skipped_no_identity")
            if taken == "busy":  # another refresh of this family is in flight: wait for it, call nothing
                self._retry(
                    siret, user_id, RefreshState(), "family_busy", FAMILY_BUSY_WAIT_SECONDS, now, attempt
                )
            family, lease = taken, _Lease(holder)
        try:
            return self._checked(tenant, permit, family, lease, attempt, message, request_id, now)
        finally:
            if lease is not None and not lease.released:
                assert self.leases is not None
                self.leases.release(siret, user_id, lease.holder)

    def _checked(
        self,
        tenant: Tenant,
        permit: Permit | None,
        family: FamilyRecord | None,
        lease: _Lease | None,
        attempt: int,
        message: RefreshMessage,
        request_id: str | None,
        now: dt.datetime,
    ) -> RefreshResult:
        siret, user_id = message.siret, message.user_id
        if family is None or family.pivot_identity is None:
            return RefreshResult("skipped_no_identity")
        if message.reason == "monthly" and refreshed_since(family.refresh, now - IN_FLIGHT_HOLD):
            # Due again next month, whatever in-flight hold the dispatcher wrote meanwhile.
            self.families.defer(siret, user_id, next_due_at(now))
            return RefreshResult("skipped_recent")
        ends = maintenance_ends_at(now)
        if ends is not None:
            self._retry(
                siret,
                user_id,
                family.refresh,
                "maintenance_window",
                (ends - now).total_seconds(),
                now,
                attempt,
            )
        return self._refresh(tenant, permit, family, lease, attempt, message.admitted, message, request_id)

    def _refresh(
        self,
        tenant: Tenant,
        permit: Permit | None,
        family: FamilyRecord,
        lease: _Lease | None,
        attempt: int,
        admitted: bool,
        message: RefreshMessage,
        request_id: str | None,
    ) -> RefreshResult:
        siret, user_id = tenant.siret, family.user_id
        now = self.clock()
        assert family.pivot_identity is not None
        token = self.secrets.read_tenant(siret, version=tenant.credentials_version).api_particulier_token
        if token is None:
            self.tenants.stop_refreshes(siret, "no_token", now.isoformat())
            return self._keep_due(siret, user_id)
        audit = functools.partial(self._audit_read, siret, user_id, message.reason, request_id, attempt)
        if not self._wait_for_permit(tenant, permit, user_id, family.refresh, attempt, admitted, audit):
            return self._keep_due(siret, user_id)
        outcome = self.client.fetch_quotient_familial(
            family.pivot_identity, siret, token.get_secret_value(), no_cache=True
        )
        if outcome.kind == "token_expired":
            # Before declaring the token expired, read the secret once more past the cache: a token
            # replaced through the API since this container cached the old one gets its own call.
            fresh = self.secrets.read_tenant(siret, force_fetch=True).api_particulier_token
            if fresh is not None and fresh.get_secret_value() != token.get_secret_value():
                logger.info("tenant token replaced since it was cached", extra={"tenant_siret": siret})
                looked = self._look(siret)
                if looked is None or looked[0].refresh_status != "active":
                    return self._keep_due(siret, user_id)
                if not self._wait_for_permit(looked[0], looked[1], user_id, family.refresh, attempt, True):
                    return self._keep_due(siret, user_id)
                outcome = self.client.fetch_quotient_familial(
                    family.pivot_identity, siret, fresh.get_secret_value(), no_cache=True
                )
        metrics.add_metric(name=f"Refresh_{outcome.kind}", unit="Count", value=1)
        logger.info(
            "refresh answered",
            extra={"tenant_siret": siret, "user_id": user_id, "attempt": attempt, **outcome.log_fields()},
        )
        return self._apply(family, lease, outcome, self.clock(), attempt)

    def _audit_read(
        self, siret: str, user_id: str, reason: str, request_id: str | None, attempt: int
    ) -> None:
        """Record that the service reads the family's identity to call API Particulier (before the
        call: a read that cannot be traced is not made — the write failing retries the message).

        Written once the call's permit is taken, while waiting for its instant; in the rare case the
        call is then not made (the tenant stopped during the wait, or every permit reached late) the
        record stands for a read made for a call that did not leave, and a retry writes its own."""
        if self.audit is None:
            return
        self.audit.write(
            AuditRecord(
                request_id=f"{request_id or 'refresh'}:{attempt}",
                actor="service",
                principal=SERVICE_PRINCIPAL,
                tenant_siret=siret,
                route="pipeline:qf_refresh",
                action=f"family.identity_read.{reason}",
                user_id=user_id,
                outcome="success",
            )
        )

    # ------------------------------------------------------------------ pacing
    def _look(self, siret: str) -> tuple[Tenant, Permit | None] | None:
        """The tenant (and, when pacing, its permit free soonest): one read."""
        if self.pacer is None:
            tenant = self.tenants.get(siret)
            return None if tenant is None else (tenant, None)
        return self.pacer.look(siret, rule=tenant_pace_rule, now=self._epoch)

    def _wait_for_permit(
        self,
        tenant: Tenant,
        permit: Permit | None,
        user_id: str,
        state: RefreshState,
        attempt: int,
        admitted: bool = True,
        before_call: Callable[[], None] | None = None,
    ) -> bool:
        """Wait for one of the tenant's call permits and take it; False when the tenant was stopped meanwhile.

        ``before_call`` (the audit record's write) runs once, as soon as a permit is taken: within the
        wait for the permit's instant, and before the check that the call is not late, so that only the
        call itself remains between that check and API Particulier's counter.

        The permit is taken for the instant it frees (now, or at most a second ahead) before the wait,
        so the tenant's other waiting refreshes take the next ones rather than race for this one; if
        the process still reaches the call late (busy, descheduled), the permit is spent and another
        one sought: a late call could squeeze the calls after it into one of API Particulier's seconds.

        A message whose release was not booked (``admitted``) books its turn first, after the refreshes
        already queued for the tenant, and goes back to the queue until then if it is more than a
        second away: it does not take a permit ahead of them. A permit more than a second away sends
        an admitted message back to the queue until it frees. Neither spends an attempt.
        """
        if self.pacer is None or permit is None:
            if before_call is not None:
                before_call()
            return True
        tolerance = late_tolerance(tenant_pace_rule(tenant)[1])
        if not admitted:
            turn = self._turn(tenant)
            if turn > MAX_PACING_WAIT_SECONDS:
                raise RetryLater("paced", max(1, math.floor(turn)), counts=False, admitted=True)
        for _ in range(PACING_ATTEMPTS):
            started = self._epoch()
            wait = permit.free_at - started
            if wait > MAX_PACING_WAIT_SECONDS:  # back a little before the permit frees, then a short wait
                self._retry(tenant.siret, user_id, state, "paced", math.floor(wait), self.clock(), attempt)
            # Taken for the instant it frees, before the wait: the tenant's refreshes waiting in other
            # invocations see it used and wait for the next one, instead of all waiting for this one
            # and all but one of them waiting again.
            at = max(permit.free_at, started + BOOK_LEAD_SECONDS)
            if self.pacer.take(tenant.siret, permit, at=at):
                if before_call is not None:
                    before_call()
                    before_call = None
                if at - self._epoch() > RECHECK_AFTER_WAIT_SECONDS:
                    self.sleep(at - self._epoch() - RECHECK_LEAD_SECONDS)
                    current = self.tenants.get(tenant.siret)
                    if current is None or current.refresh_status != "active":
                        return False
                wait = at - self._epoch()
                if wait > 0:
                    self.sleep(wait)
                if self._epoch() - at <= tolerance:
                    return True
                # Reached late (busy, descheduled): the permit is spent, another one is sought.
            looked = self.pacer.look(tenant.siret, rule=tenant_pace_rule, now=self._epoch)
            if looked is None or looked[0].refresh_status != "active":
                return False
            permit = looked[1]
        now = self.clock()
        self._retry(tenant.siret, user_id, state, "paced", 1.0, now, attempt)

    def _turn(self, tenant: Tenant) -> float:
        """Book a release on the tenant's schedule (``TenantPacer.book``); seconds until it. When even
        SQS's longest delay is too short, the message comes back after that delay and books again."""
        assert self.pacer is not None
        offsets = self.pacer.book(
            tenant.siret, 1, rate=release_rate(tenant), now=self._epoch(), horizon=MAX_DELAY_SECONDS
        )
        return offsets[0] if offsets else float(MAX_DELAY_SECONDS)

    def _epoch(self) -> float:
        return self.clock().timestamp()

    def _keep_due(self, siret: str, user_id: str) -> RefreshResult:
        """The tenant's refreshes are stopped: the family stays due for when they resume."""
        self.families.defer(siret, user_id, self.clock().isoformat())
        return RefreshResult("skipped_tenant_stopped")

    # ------------------------------------------------------------------ outcomes
    def _store(self, family: FamilyRecord, lease: _Lease | None, **result: Any) -> bool:
        """Store the outcome (``FamilyStore.record_refresh``) on the family as read, giving the lease
        back with the same write."""
        stored = self.families.record_refresh(
            family.siret,
            family.user_id,
            known=family,
            lease_holder=lease.holder if lease is not None else None,
            **result,
        )
        if lease is not None:
            lease.released = True
        return stored

    def _apply(
        self,
        family: FamilyRecord,
        lease: _Lease | None,
        outcome: RefreshOutcome,
        now: dt.datetime,
        attempt: int,
    ) -> RefreshResult:
        siret, user_id, current, state = family.siret, family.user_id, family.qf, family.refresh
        next_due = next_due_at(now)
        base = {"last_attempt_at": now.isoformat(), "last_outcome": outcome.kind}
        if isinstance(outcome, QfFound):
            if outcome.quotient_familial is None:  # the token lacks the QF scope
                self._store(
                    family,
                    lease,
                    entry=None,
                    next_refresh_at=next_due,
                    state=RefreshState(status="failed", **base),
                )
                self._failed(siret, user_id, "qf_missing_in_answer", attempt)
                return RefreshResult("qf_missing")
            qf = outcome.quotient_familial
            entry = QfEntry(
                quotient_familial=qf,
                source="refresh",
                source_id=f"{qf.annee:04d}-{qf.mois:02d}",
                received_at=now.isoformat(),
            )
            stored = self._store(
                family, lease, entry=entry, next_refresh_at=next_due, state=RefreshState(status="ok", **base)
            )
            changed = stored and qf_changed(current, entry)
            if changed:
                previous = current.quotient_familial.valeur if current else None
                self.events.publish(qf_updated(siret, user_id, entry, previous))
            return RefreshResult("qf_found", changed=changed)
        if outcome.kind == "not_found":
            count = state.not_found_count + 1
            self._store(
                family,
                lease,
                entry=None,
                next_refresh_at=next_due,
                state=RefreshState(status="not_found", not_found_count=count, **base),
            )
            if count >= NOT_FOUND_ALERT_AFTER:
                self._failed(siret, user_id, "not_found", attempt, detail=f"{count}_in_a_row")
            return RefreshResult("not_found")
        if outcome.kind == "identity_rejected":
            # Out of the monthly cycle (the same identity earns the same 422), but in plain sight: the
            # status, the API's codes as the reason, an event. A new dossier brings a usable identity back.
            reason = ",".join(outcome.error_codes) or "unprocessable_identity"
            self._store(
                family,
                lease,
                entry=None,
                next_refresh_at=None,
                state=RefreshState(status="identity_rejected", reason=reason, **base),
                forget_identity=True,  # of no further use: a new dossier brings a usable one
            )
            self._failed(siret, user_id, "identity_rejected", attempt, detail=reason)
            logger.warning(
                "identity rejected by API Particulier",
                extra={"tenant_siret": siret, "user_id": user_id, "reason": reason},
            )
            return RefreshResult("identity_rejected")
        if outcome.kind in ("token_expired", "forbidden"):
            # The family did nothing wrong: it stays due (now) and is refreshed once the tenant resumes.
            self._store(
                family,
                lease,
                entry=None,
                next_refresh_at=now.isoformat(),
                state=RefreshState(status=outcome.kind, not_found_count=state.not_found_count, **base),
            )
            self._stop_tenant(siret, outcome.kind, now)
            return RefreshResult(outcome.kind)
        if outcome.retryable:
            if outcome.kind in SERVER_TIMED_RETRIES and outcome.retry_after_seconds is not None:
                wait = outcome.retry_after_seconds
                if self.pacer is not None:
                    self.pacer.hold(siret, until=now.timestamp() + wait)
            else:
                wait = backoff_seconds(attempt, self.retry_base_seconds)
            self._retry(siret, user_id, state, outcome.kind, wait, now, attempt)
        self._store(
            family,
            lease,
            entry=None,
            next_refresh_at=next_due,
            state=RefreshState(status="failed", not_found_count=state.not_found_count, **base),
        )
        self._failed(siret, user_id, outcome.kind, attempt)
        return RefreshResult(outcome.kind)

    def _retry(
        self,
        siret: str,
        user_id: str,
        state: RefreshState,
        kind: str,
        wait: float,
        now: dt.datetime,
        attempt: int,
    ) -> NoReturn:
        """Send the message back to the queue for ``wait`` seconds; the last attempt alerts first.

        A wait (``WAITS``: no call was made) never spends an attempt, whatever ``attempt`` is."""
        if kind in WAITS:
            raise RetryLater(kind, whole_seconds(wait), counts=False)
        if attempt >= self.max_attempts:
            self.families.record_refresh(
                siret,
                user_id,
                entry=None,
                next_refresh_at=next_due_at(now),
                state=RefreshState(
                    status="failed",
                    last_attempt_at=now.isoformat(),
                    last_outcome=kind,
                    not_found_count=state.not_found_count,
                ),
            )
            self._failed(siret, user_id, kind, attempt)
            raise RetryLater(kind, 0, dead_letter=True)
        delay = whole_seconds(wait) if wait > 0 else 0
        raise RetryLater(kind, delay)

    def _stop_tenant(self, siret: str, kind: str, now: dt.datetime) -> None:
        status: RefreshStatus = "token_expired" if kind == "token_expired" else "forbidden"
        if not self.tenants.stop_refreshes(siret, status, now.isoformat()):
            return  # already stopped (a concurrent refresh met the same answer): announced once
        if kind == "token_expired":
            tenant = self.tenants.get(siret)
            expires_on = tenant.token_expires_on if tenant else None
            self.events.publish(
                TenantTokenExpired(
                    tenant_siret=siret,
                    expires_on=expires_on.isoformat() if expires_on else None,
                    detected_by="api_particulier_401",
                )
            )
        else:
            self.events.publish(RefreshFailed(tenant_siret=siret, user_id=None, outcome="forbidden"))
        logger.warning("tenant refreshes stopped", extra={"tenant_siret": siret, "reason": kind})

    def _failed(
        self, siret: str, user_id: str, outcome: str, attempt: int, detail: str | None = None
    ) -> None:
        self.events.publish(
            RefreshFailed(
                tenant_siret=siret,
                user_id=user_id,
                outcome=outcome,
                attempts=attempt,
                detail_code=detail or None,
            )
        )
