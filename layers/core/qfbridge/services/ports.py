"""What the scheduled services need of the store and of API Particulier, as ``Protocol``s.

``RefreshService``, ``RefreshDispatcher`` and ``TokenWatchService`` depend on these, not on the
DynamoDB / Secrets Manager / EventBridge classes of ``qfbridge.store`` that implement them in
production: unit tests hand them in-memory fakes (``tests/support/fakes.py``) that the type
checker holds to the same signatures.
"""

from __future__ import annotations

from typing import Any, Protocol

from qfbridge.api_particulier.outcomes import RefreshOutcome
from qfbridge.domain.identity import PivotIdentity
from qfbridge.store.families import FamilyRecord, QfEntry, RefreshState
from qfbridge.store.secrets import TenantCredentials
from qfbridge.store.tenants import RefreshStatus, Tenant, TenantPatch


class TenantStore(Protocol):
    """The tenants table (``qfbridge.store.tenants.TenantRepository``)."""

    def get(self, siret: str) -> Tenant | None: ...

    def all(self) -> list[Tenant]: ...

    def update(self, siret: str, patch: TenantPatch) -> None: ...

    def stop_refreshes(self, siret: str, status: RefreshStatus, stopped_at: str) -> bool: ...


class FamilyStore(Protocol):
    """The families table, as the refresh cycle uses it (``qfbridge.store.families.FamilyRepository``)."""

    def get(self, siret: str, user_id: str) -> FamilyRecord | None: ...

    def due(self, siret: str, until: str, limit: int) -> list[str]: ...

    def defer(self, siret: str, user_id: str, next_refresh_at: str) -> None: ...

    def record_refresh(
        self,
        siret: str,
        user_id: str,
        *,
        entry: QfEntry | None,
        state: RefreshState,
        next_refresh_at: str | None,
        forget_identity: bool = False,
    ) -> bool: ...

    def expire_identity(self, siret: str, user_id: str, not_refreshed_since: str, now: str) -> bool: ...


class TenantSecrets(Protocol):
    """The tenants' credentials (``qfbridge.store.secrets.SecretStore``)."""

    def read_tenant(
        self, siret: str, *, force_fetch: bool = False, version: str | None = None
    ) -> TenantCredentials: ...


class EventSink(Protocol):
    """The editor's event bus (``qfbridge.store.events.EventPublisher``)."""

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


class QfSource(Protocol):
    """API Particulier's QF endpoint (``qfbridge.api_particulier.ApiParticulierClient``)."""

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
    ) -> RefreshOutcome: ...
