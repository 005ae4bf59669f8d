"""The form links table: the mapping behind each signed external_id, with a TTL."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from qfbridge.store.tables import plain, table


class StoredLink(BaseModel):
    model_config = ConfigDict(extra="ignore")

    link_id: str
    tenant_siret: str
    user_id: str
    kid: str
    created_at: str
    expires_at: int
    redirect_uri: str | None = None  # validated against the tenant's hosts when issued; rebuilds the URL (QR)


class LinkRepository:
    def __init__(self, table_name: str) -> None:
        self._table = table(table_name)

    def put(self, link: StoredLink) -> None:
        self._table.put_item(Item=link.model_dump(), ConditionExpression="attribute_not_exists(link_id)")

    def get(self, link_id: str) -> StoredLink | None:
        item: dict[str, Any] | None = self._table.get_item(Key={"link_id": link_id}).get("Item")
        return StoredLink.model_validate(plain(item)) if item else None

    def delete(self, link_id: str) -> None:
        self._table.delete_item(Key={"link_id": link_id})
