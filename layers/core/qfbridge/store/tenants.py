"""The tenants (collectivités) table: one item per SIRET, listed through the ``by_kind`` index."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qfbridge.domain.errors import NotFoundError
from qfbridge.store.tables import decode_cursor, encode_cursor, key_condition, plain, table, to_dynamo

HubeeStatus = Literal["unknown", "ok", "auth_failed", "error"]
RefreshStatus = Literal["active", "token_expired", "forbidden", "no_token"]

DEFAULT_REFRESH_BUDGET_RPS = 4.0
MAX_REFRESH_BUDGET_RPS = 20.0


class Tenant(BaseModel):
    """A collectivité served by the editor."""

    model_config = ConfigDict(extra="ignore")

    siret: str
    name: str
    cog: str
    redirect_hosts: list[str] = Field(default_factory=list)
    token_expires_on: dt.date | None = None
    refresh_budget_rps: float = DEFAULT_REFRESH_BUDGET_RPS
    hubee_client_id: str | None = None
    has_credentials: bool = False
    hubee_status: HubeeStatus = "unknown"
    hubee_failures: int = 0
    hubee_stuck_notifications: int = 0
    """Notifications of the tenant's HubEE credential pending for longer than a few polls."""
    refresh_status: RefreshStatus = "no_token"
    credentials_version: str | None = None
    """The version of the tenant's secret the API last wrote (readers compare their cached copy's)."""
    token_alerts_sent: list[str] = Field(default_factory=list)
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def status(self) -> str:
        """One word for the editor: what needs attention first."""
        if not self.has_credentials:
            return "awaiting_credentials"
        if self.hubee_status == "auth_failed":
            return "hubee_auth_failed"
        if self.hubee_stuck_notifications:
            return "hubee_notifications_stuck"
        if self.refresh_status in ("token_expired", "forbidden"):
            return f"api_particulier_{self.refresh_status}"
        return "active"


class TenantPatch(BaseModel):
    """Some attributes of a tenant to set: only the fields given (or assigned) are written.

    A name that is not an attribute of ``Tenant`` is refused (by the type checker, and by pydantic
    when the patch is built or assigned): a misspelt attribute can never be written silently.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str | None = None
    cog: str | None = None
    redirect_hosts: list[str] | None = None
    token_expires_on: dt.date | None = None
    refresh_budget_rps: float | None = None
    hubee_client_id: str | None = None
    has_credentials: bool | None = None
    hubee_status: HubeeStatus | None = None
    hubee_failures: int | None = None
    hubee_stuck_notifications: int | None = None
    refresh_status: RefreshStatus | None = None
    credentials_version: str | None = None
    token_alerts_sent: list[str] | None = None
    updated_at: str | None = None
    hubee_checked_at: str | None = None
    """When a poll last reached HubEE with the tenant's credential (kept on the item, for operators)."""

    def fields(self) -> dict[str, Any]:
        """The attributes to write, JSON-ready (dates as ISO strings)."""
        return self.model_dump(mode="json", include=self.model_fields_set)

    def applied_to(self, tenant: Tenant) -> Tenant:
        """``tenant`` with the patch applied (what the stored item reads back as)."""
        return Tenant.model_validate({**tenant.model_dump(mode="json"), **self.fields()})


class TenantRepository:
    def __init__(self, table_name: str) -> None:
        self._table = table(table_name)

    def get(self, siret: str) -> Tenant | None:
        item = self._table.get_item(Key={"siret": siret}).get("Item")
        return Tenant.model_validate(plain(item)) if item else None

    def require(self, siret: str) -> Tenant:
        tenant = self.get(siret)
        if tenant is None:
            raise NotFoundError(f"Tenant {siret} is not registered.", code="tenant_not_found")
        return tenant

    def put(self, tenant: Tenant) -> None:
        item = tenant.model_dump(mode="json")
        item["kind"] = "tenant"
        self._table.put_item(Item=to_dynamo(item))

    def update(self, siret: str, patch: TenantPatch) -> None:
        """Set the patch's attributes on an existing tenant (never creates one)."""
        fields = patch.fields()
        if not fields:
            return
        names = {f"#f{i}": key for i, key in enumerate(fields)}
        values = {f":v{i}": to_dynamo(value) for i, value in enumerate(fields.values())}
        expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
        self._table.update_item(
            Key={"siret": siret},
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(siret)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def stop_refreshes(self, siret: str, status: RefreshStatus, stopped_at: str) -> bool:
        """Move ``refresh_status`` from "active" to ``status`` atomically.

        Returns False when the tenant was not active: concurrent refreshes that all met the same 401
        race here, and only the one that stopped the tenant announces it (one event, not five).
        """
        try:
            self._table.update_item(
                Key={"siret": siret},
                UpdateExpression="SET refresh_status = :status, refresh_stopped_at = :at",
                ConditionExpression="refresh_status = :active",
                ExpressionAttributeValues={":status": status, ":at": stopped_at, ":active": "active"},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> tuple[list[Tenant], str | None]:
        kwargs: dict[str, Any] = {
            "IndexName": "by_kind",
            "KeyConditionExpression": key_condition("kind").eq("tenant"),
            "Limit": limit,
        }
        start = decode_cursor(cursor, {"kind", "siret"})
        if start:
            kwargs["ExclusiveStartKey"] = start
        response = self._table.query(**kwargs)
        tenants = [Tenant.model_validate(plain(item)) for item in response.get("Items", [])]
        return tenants, encode_cursor(response.get("LastEvaluatedKey"))

    def all(self) -> list[Tenant]:
        """Every tenant, in as few Queries as DynamoDB allows (1 MB pages: a few thousand tenants each)."""
        tenants: list[Tenant] = []
        kwargs: dict[str, Any] = {
            "IndexName": "by_kind",
            "KeyConditionExpression": key_condition("kind").eq("tenant"),
        }
        while True:
            response = self._table.query(**kwargs)
            tenants.extend(Tenant.model_validate(plain(item)) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return tenants
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
