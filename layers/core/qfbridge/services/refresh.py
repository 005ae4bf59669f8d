"""qf_refresh's use case: refresh one family's QF from API Particulier and act on the outcome.

Outcomes (ARCHITECTURE.md §Refresh outcomes):

* 200 → the QF is stored (one history entry per QF month: a redelivery adds nothing) and
  ``qf.updated`` is published when the value changed; next due date set.
* 404 → ``not_found``: retried next cycle, ``refresh.failed`` after ``NOT_FOUND_ALERT_AFTER`` in a row.
* 422 → identity rejected: the family leaves the refresh cycle (a new dossier is needed), event.
* 401 → the tenant's token expired: the tenant's refreshes stop (``refresh_status``), event once;
  prolonging the token through the API resumes them (the family stays due).
* 403 → the tenant is forbidden: same, with ``forbidden``.
* 409/429/502/503/504/transport → retried: the message's visibility is pushed to the server's
  ``Retry-After`` / ``retry_in`` (or an exponential backoff), up to the queue's
  ``maxReceiveCount``; on the last attempt ``refresh.failed`` is published before the DLQ.
* Sunday 23:00–23:45 (maintenance): no call; the message waits for the end of the window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from qfbridge.api_particulier import ApiParticulierClient
from qfbridge.api_particulier.outcomes import QfFound, RefreshOutcome
from qfbridge.clock import Clock, utc_now
from qfbridge.domain.schedule import maintenance_ends_at, next_refresh_date
from qfbridge.observability import logger, metrics
from qfbridge.services.intake import qf_event_detail
from qfbridge.store.events import EventPublisher
from qfbridge.store.families import FamilyRepository, QfEntry, RefreshState
from qfbridge.store.secrets import SecretStore
from qfbridge.store.tenants import TenantRepository

NOT_FOUND_ALERT_AFTER = 3
MAX_VISIBILITY_SECONDS = 43_200


class RetryLater(Exception):  # noqa: N818 - a signal to the handler, not an error of the domain
    """The refresh must be attempted again after ``delay_seconds`` (the message stays on the queue)."""

    def __init__(self, kind: str, delay_seconds: int) -> None:
        super().__init__(f"refresh to retry later ({kind})")
        self.kind = kind
        self.delay_seconds = delay_seconds


@dataclass
class RefreshResult:
    outcome: str
    changed: bool = False


def backoff_seconds(attempt: int, base: int) -> int:
    return int(min(MAX_VISIBILITY_SECONDS, base * (2 ** max(0, attempt - 1))))


@dataclass
class RefreshService:
    tenants: TenantRepository
    families: FamilyRepository
    secrets: SecretStore
    events: EventPublisher
    client: ApiParticulierClient
    max_attempts: int = 10
    retry_base_seconds: int = 30
    clock: Clock = utc_now

    def refresh(self, message: dict[str, Any], *, attempt: int = 1) -> RefreshResult:
        siret, user_id = str(message["siret"]), str(message["user_id"])
        tenant = self.tenants.get(siret)
        if tenant is None or tenant.refresh_status != "active":
            return RefreshResult("skipped_tenant_stopped")
        family = self.families.get(siret, user_id)
        if family is None or family.pivot_identity is None:
            return RefreshResult("skipped_no_identity")
        now = self.clock()
        ends = maintenance_ends_at(now)
        if ends is not None:
            raise RetryLater("maintenance", max(1, int((ends - now).total_seconds()) + 1))

        token = self.secrets.read_tenant(siret).api_particulier_token
        if token is None:
            self.tenants.update(siret, refresh_status="no_token")
            return RefreshResult("skipped_no_token")
        outcome = self.client.fetch_quotient_familial(
            family.pivot_identity, siret, token.get_secret_value(), no_cache=True
        )
        metrics.add_metric(name=f"Refresh_{outcome.kind}", unit="Count", value=1)
        logger.info("refresh answered", extra={"tenant_siret": siret, "user_id": user_id,
                                               "outcome": outcome.kind,
                                               "request_id": getattr(outcome, "request_id", None)})
        return self._apply(siret, user_id, family.qf, family.refresh, outcome, now, attempt)

    def _apply(self, siret: str, user_id: str, current: QfEntry | None, state: RefreshState,
               outcome: RefreshOutcome, now: dt.datetime, attempt: int) -> RefreshResult:
        next_due = dt.datetime.combine(next_refresh_date(now.date()), dt.time(6, 0), tzinfo=dt.UTC).isoformat()
        base = {"last_attempt_at": now.isoformat(), "last_outcome": outcome.kind}
        if isinstance(outcome, QfFound):
            if outcome.quotient_familial is None:  # the token lacks the QF scope
                self.families.record_refresh(siret, user_id, entry=None, next_refresh_at=next_due,
                                             state=RefreshState(status="failed", **base))
                self._failed(siret, user_id, "qf_missing_in_answer", attempt)
                return RefreshResult("qf_missing")
            qf = outcome.quotient_familial
            entry = QfEntry(quotient_familial=qf, source="refresh", source_id=f"{qf.annee:04d}-{qf.mois:02d}",
                            received_at=now.isoformat())
            self.families.record_refresh(siret, user_id, entry=entry, next_refresh_at=next_due,
                                         state=RefreshState(status="ok", **base))
            previous = current.quotient_familial if current else None
            changed = previous is None or previous.model_dump() != qf.model_dump()
            if changed:
                self.events.publish("qf.updated", qf_event_detail(
                    siret, user_id, entry, previous.valeur if previous else None))
            return RefreshResult("qf_found", changed=changed)
        if outcome.kind == "not_found":
            count = state.not_found_count + 1
            self.families.record_refresh(siret, user_id, entry=None, next_refresh_at=next_due,
                                         state=RefreshState(status="not_found", not_found_count=count, **base))
            if count >= NOT_FOUND_ALERT_AFTER:
                self._failed(siret, user_id, "not_found", attempt, detail=f"{count}_in_a_row")
            return RefreshResult("not_found")
        if outcome.kind == "identity_rejected":
            self.families.record_refresh(siret, user_id, entry=None, next_refresh_at=None,
                                         state=RefreshState(status="identity_rejected", **base))
            self._failed(siret, user_id, "identity_rejected", attempt)
            return RefreshResult("identity_rejected")
        if outcome.kind in ("token_expired", "forbidden"):
            self._stop_tenant(siret, outcome.kind, now)
            return RefreshResult(outcome.kind)
        if outcome.retryable:
            if attempt >= self.max_attempts:
                self.families.record_refresh(siret, user_id, entry=None, next_refresh_at=next_due,
                                             state=RefreshState(status="failed", **base))
                self._failed(siret, user_id, outcome.kind, attempt)
                raise RetryLater(outcome.kind, 0)  # last attempt: let SQS move it to the DLQ
            wait = outcome.retry_after_seconds
            delay = int(wait) + 1 if wait is not None else backoff_seconds(attempt, self.retry_base_seconds)
            raise RetryLater(outcome.kind, min(delay, MAX_VISIBILITY_SECONDS))
        self.families.record_refresh(siret, user_id, entry=None, next_refresh_at=next_due,
                                     state=RefreshState(status="failed", **base))
        self._failed(siret, user_id, outcome.kind, attempt)
        return RefreshResult(outcome.kind)

    def _stop_tenant(self, siret: str, kind: str, now: dt.datetime) -> None:
        tenant = self.tenants.get(siret)
        if tenant is None or tenant.refresh_status == kind:
            return
        self.tenants.update(siret, refresh_status=kind, refresh_stopped_at=now.isoformat())
        if kind == "token_expired":
            self.events.publish("tenant.token_expired", {
                "tenant_siret": siret,
                "expires_on": tenant.token_expires_on.isoformat() if tenant.token_expires_on else None,
                "detected_by": "api_particulier_401",
            })
        else:
            self.events.publish("refresh.failed", {"tenant_siret": siret, "user_id": None, "outcome": "forbidden"})
        logger.warning("tenant refreshes stopped", extra={"tenant_siret": siret, "reason": kind})

    def _failed(self, siret: str, user_id: str, outcome: str, attempt: int, detail: str | None = None) -> None:
        body: dict[str, Any] = {"tenant_siret": siret, "user_id": user_id, "outcome": outcome, "attempts": attempt}
        if detail:
            body["detail_code"] = detail
        self.events.publish("refresh.failed", body)
