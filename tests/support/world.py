"""The world builder: collectivités onboarded on the laptop runtime the way the editor does.

A tenant is registered and given its HubEE credential through ``EditorService`` — the use cases
behind ``PUT /v1/tenants/{siret}`` and ``PUT /v1/tenants/{siret}/credentials`` — and its directory
is pushed through the directory upsert; the sandboxes are told about the same credentials. Tests
and benchmarks build their tenants here rather than writing tenant items and secrets by hand, so
a tenant always looks like one the API onboarded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from qfbridge.domain.identity import Family
from qfbridge.services.editor import MAX_BATCH_FAMILIES, EditorService, TenantConfig
from qfbridge.store.secrets import SecretStore, TenantCredentials
from qfbridge.store.tenants import DEFAULT_REFRESH_BUDGET_RPS, Tenant, TenantPatch
from qfbridge_local.population import Collectivite
from qfbridge_local.runtime import LocalRuntime
from qfbridge_local.sandboxes.api_particulier import ApiParticulierSandbox
from qfbridge_local.sandboxes.hubee import HubeeSandbox


def hubee_secret(client_id: str) -> str:
    """The secret the HubEE sandbox issues with ``client_id``."""
    return f"secret-{client_id}"


@dataclass
class World:
    runtime: LocalRuntime
    hubee: HubeeSandbox | None = None
    api_particulier: ApiParticulierSandbox | None = None
    editor: EditorService = field(init=False)

    def __post_init__(self) -> None:
        self.editor = self.runtime.editor_service()

    def collectivite(
        self,
        town: Collectivite,
        *,
        name: str | None = None,
        refresh_budget_rps: float = DEFAULT_REFRESH_BUDGET_RPS,
        token_expires_on: dt.date | None = None,
    ) -> Tenant:
        """Register ``town`` (``PUT /v1/tenants/{siret}``): no credentials yet."""
        config = TenantConfig(
            name=name or town.name,
            cog=town.cog,
            refresh_budget_rps=refresh_budget_rps,
            token_expires_on=token_expires_on,
        )
        tenant, _ = self.editor.put_tenant(town.siret, config)
        return tenant

    def hubee_credential(
        self,
        client_id: str,
        towns: Sequence[Collectivite],
        *,
        also_serves: Sequence[Collectivite] = (),
        secret: str | None = None,
        stored_secret: str | None = None,
        api_particulier_token: str | None = None,
    ) -> None:
        """Each of ``towns`` stores the HubEE credential ``client_id`` (``PUT …/credentials``; several
        towns sharing one credential is a delegation); the HubEE sandbox issues it with ``secret``
        (by default ``hubee_secret(client_id)``), subscribed to ``towns`` and to ``also_serves``
        (recipients it sees that qfbridge may not serve).

        ``stored_secret`` stores another secret than the one HubEE issued (a wrong credential).
        ``api_particulier_token`` is stored with the pair (the refreshes start) and, with an API
        Particulier sandbox, accepted by it for ``towns``.
        """
        issued = secret or hubee_secret(client_id)
        for town in towns:
            self.editor.store_credentials(
                town.siret,
                TenantCredentials(
                    hubee_client_id=client_id,
                    hubee_client_secret=SecretStr(stored_secret or issued),
                    api_particulier_token=SecretStr(api_particulier_token) if api_particulier_token else None,
                ),
            )
        if api_particulier_token and self.api_particulier is not None:
            self.api_particulier.add_token(api_particulier_token, {town.siret for town in towns})
        if self.hubee is not None:
            recipients = [(town.siret, town.cog) for town in (*towns, *also_serves)]
            self.hubee.add_subscription(client_id, issued, recipients)

    def onboard(
        self,
        town: Collectivite,
        client_id: str,
        *,
        name: str | None = None,
        also_serves: Sequence[Collectivite] = (),
        stored_secret: str | None = None,
    ) -> Tenant:
        """``town`` registered with its own HubEE credential: ready to receive dossiers (see
        ``hubee_credential`` for ``also_serves`` and ``stored_secret``)."""
        self.collectivite(town, name=name)
        self.hubee_credential(client_id, [town], also_serves=also_serves, stored_secret=stored_secret)
        return self.editor.get_tenant(town.siret)

    def refresh_token(
        self, town: Collectivite, token: str, *, rate_limit_per_second: int | None = None
    ) -> None:
        """``town`` (registered) refreshes with the API Particulier ``token``, which the sandbox
        accepts for it at ``rate_limit_per_second``; no HubEE credential.

        The API stores a token only with the HubEE pair, and a HubEE credential would make every
        hubee_poll of a refresh test poll HubEE: the token is written as an operator writes one
        (``SecretStore.write_tenant``), and the refreshes start as ``PUT …/credentials`` starts them.
        """
        secrets = SecretStore(self.runtime.environment["TENANT_SECRETS_PREFIX"])
        version = secrets.write_tenant(town.siret, TenantCredentials(api_particulier_token=SecretStr(token)))
        self.editor.tenants.update(
            town.siret, TenantPatch(refresh_status="active", credentials_version=version)
        )
        if self.api_particulier is not None:
            self.api_particulier.add_token(token, {town.siret}, rate_limit_per_second=rate_limit_per_second)

    def directory(self, town: Collectivite, families: Sequence[Family]) -> None:
        """The editor pushes ``families`` to ``town``'s directory (in batches, as the API takes them)."""
        for start in range(0, len(families), MAX_BATCH_FAMILIES):
            report = self.editor.batch_upsert(town.siret, list(families[start : start + MAX_BATCH_FAMILIES]))
            invalid = [row.index for row in report.rows if row.status == "invalid"]
            assert not invalid, f"directory rows refused: {invalid}"
