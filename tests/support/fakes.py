"""In-memory implementations of the services' ports (``qfbridge.services.ports``).

Each fake keeps what it was asked to do in plain attributes for the test to assert on. The services
take their ports as ``Protocol``s, so the type checker holds each fake to the production signatures
wherever a test hands it to a service: a port that changes breaks its fake at lint time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from qfbridge.api_particulier.outcomes import QfFound, RefreshOutcome
from qfbridge.domain.identity import PivotIdentity
from qfbridge.domain.qf import QuotientFamilial
from qfbridge.messages import BusEvent
from qfbridge.store.families import FamilyRecord, QfEntry, RefreshState
from qfbridge.store.secrets import TenantCredentials
from qfbridge.store.tenants import RefreshStatus, Tenant, TenantPatch


class Monotonic:
    """A monotonic clock frozen until the test advances it (``now``): no real sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeTenants:
    """The tenants table as a dict by SIRET."""

    items: dict[str, Tenant] = field(default_factory=dict)

    @classmethod
    def of(cls, *tenants: Tenant) -> FakeTenants:
        return cls({tenant.siret: tenant for tenant in tenants})

    def get(self, siret: str) -> Tenant | None:
        return self.items.get(siret)

    def all(self) -> list[Tenant]:
        return list(self.items.values())

    def update(self, siret: str, patch: TenantPatch) -> None:
        self.items[siret] = patch.applied_to(self.items[siret])

    def stop_refreshes(self, siret: str, status: RefreshStatus, stopped_at: str) -> bool:
        tenant = self.items[siret]
        if tenant.refresh_status != "active":
            return False
        self.items[siret] = tenant.model_copy(update={"refresh_status": status})
        return True


@dataclass
class FakeFamilies:
    """Families that were all linked with ``pivot`` and are in refresh state ``state``.

    ``due`` answers ``due_ids``; the writes are kept: ``deferred`` (user id → next due date),
    ``recorded`` (the keyword arguments of each ``record_refresh``), ``expired`` (user ids).
    """

    pivot: PivotIdentity | None = None
    state: RefreshState = field(default_factory=RefreshState)
    due_ids: list[str] = field(default_factory=list)
    deferred: dict[str, str] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    def get(self, siret: str, user_id: str) -> FamilyRecord | None:
        return FamilyRecord(siret=siret, user_id=user_id, pivot_identity=self.pivot, refresh=self.state)

    def due(self, siret: str, until: str, limit: int) -> list[str]:
        return self.due_ids[:limit]

    def defer(self, siret: str, user_id: str, next_refresh_at: str) -> None:
        self.deferred[user_id] = next_refresh_at

    def record_refresh(
        self,
        siret: str,
        user_id: str,
        *,
        entry: QfEntry | None,
        state: RefreshState,
        next_refresh_at: str | None,
        forget_identity: bool = False,
        known: FamilyRecord | None = None,
        lease_holder: str | None = None,
    ) -> bool:
        self.recorded.append(
            {
                "entry": entry,
                "state": state,
                "next_refresh_at": next_refresh_at,
                "forget_identity": forget_identity,
            }
        )
        return True

    def expire_identity(self, siret: str, user_id: str, not_refreshed_since: str, now: str) -> bool:
        self.expired.append(user_id)
        return True


@dataclass
class FakeSecrets:
    """Every tenant holds the same credentials."""

    credentials: TenantCredentials = field(
        default_factory=lambda: TenantCredentials(api_particulier_token=SecretStr("token"))
    )

    def read_tenant(
        self, siret: str, *, force_fetch: bool = False, version: str | None = None
    ) -> TenantCredentials:
        return self.credentials


@dataclass
class RecordingEvents:
    """The bus: what was published, in order, as (detail-type, detail) — the detail as it goes on the bus."""

    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, event: BusEvent) -> None:
        self.published.append((event.detail_type, event.detail()))

    def publish_many(self, events: Sequence[BusEvent]) -> None:
        for event in events:
            self.publish(event)


@dataclass
class AnsweringQfSource:
    """API Particulier answering ``outcome`` to every call, counted in ``calls``."""

    outcome: RefreshOutcome
    calls: int = 0

    @classmethod
    def found(cls, qf: QuotientFamilial) -> AnsweringQfSource:
        return cls(QfFound(status=200, quotient_familial=qf))

    def fetch_quotient_familial(
        self,
        identity: PivotIdentity,
        recipient_siret: str,
        token: str,
        *,
        no_cache: bool = True,
        annee: int | None = None,
        mois: int | None = None,
        nom_usage: str | None = None,
    ) -> RefreshOutcome:
        self.calls += 1
        return self.outcome
