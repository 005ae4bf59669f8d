"""What the services need of the store and of API Particulier, as ``Protocol``s.

The services depend on these, not on the DynamoDB / SQS / Secrets Manager / EventBridge classes of
``qfbridge.store`` that implement them in production (``store.queues``, ``store.secrets``,
``store.events``…): unit tests hand them in-memory fakes (``tests/support/fakes.py``) that the type
checker holds to the same signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Annotations only: a service importing its ports loads none of these (a reconcile never reads
    # API Particulier's outcomes).
    from qfbridge.api_particulier.outcomes import RefreshOutcome
    from qfbridge.domain.identity import PivotIdentity
    from qfbridge.messages import BusEvent, DossierMessage, RefreshMessage
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
        known: FamilyRecord | None = None,
        lease_holder: str | None = None,
    ) -> bool: ...

    def expire_identity(self, siret: str, user_id: str, not_refreshed_since: str, now: str) -> bool: ...


class TenantSecrets(Protocol):
    """The tenants' credentials (``qfbridge.store.secrets.SecretStore``)."""

    def read_tenant(
        self, siret: str, *, force_fetch: bool = False, version: str | None = None
    ) -> TenantCredentials: ...


class CredentialReader(TenantSecrets, Protocol):
    """What the pipeline reads of Secrets Manager (hubee_poll, reconcile): the tenants' credentials,
    many at once, and the link-signing keys (``qfbridge.store.secrets.SecretStore``)."""

    def read_many(self, sirets: Sequence[str]) -> dict[str, TenantCredentials]:
        """The tenants' credentials found, past the cache; those missing are left to ``read_tenant``."""
        ...

    def read_link_keys(self, secret_id: str) -> tuple[dict[str, bytes], str]: ...


class EventSink(Protocol):
    """The editor's event bus (``qfbridge.store.events.EventPublisher``)."""

    def publish(self, event: BusEvent) -> None: ...

    def publish_many(self, events: Sequence[BusEvent]) -> None: ...


class DossierQueue(Protocol):
    """The dossiers queue, as its producers see it (``qfbridge.store.queues.SqsDossierQueue``):
    hubee_poll, reconcile's repoll, the API and the operator."""

    def send(self, message: DossierMessage, *, delay_seconds: int = 0) -> None: ...

    def send_batch(self, entries: Sequence[tuple[DossierMessage, int]]) -> set[int]:
        """Send at most ``SEND_BATCH`` (message, delay in seconds); the positions SQS refused."""
        ...


class RefreshQueue(Protocol):
    """The refresh queue (``qfbridge.store.queues.SqsRefreshQueue``): refresh_dispatch and the API
    send to it; qf_refresh delays a received message or sends it to the dead-letter queue."""

    def send(self, message: RefreshMessage, *, delay_seconds: int = 0) -> None: ...

    def send_batch(self, entries: Sequence[tuple[RefreshMessage, int]]) -> set[int]:
        """Send at most ``SEND_BATCH`` (message, delay in seconds); the positions SQS refused."""
        ...

    def delay(self, receipt: str, seconds: int) -> None:
        """Make a received message visible again ``seconds`` from now (its receipt handle)."""
        ...

    def dead_letter(self, message: RefreshMessage) -> None:
        """Send the message to the refresh dead-letter queue."""
        ...


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
