"""The form links table: the mapping behind each signed external_id, with a TTL."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from qfbridge.store.tables import dynamodb, plain, table


class StoredLink(BaseModel):
    model_config = ConfigDict(extra="ignore")

    link_id: str
    tenant_siret: str
    user_id: str
    kid: str
    created_at: str
    expires_at: int
    redirect_uri: str | None = None  # validated against the tenant's hosts when issued; rebuilds the URL (QR)
    bound_identity: str | None = None  # identity key of the first usager whose dossier used the link


class LinkRepository:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = table(table_name)

    def put(self, link: StoredLink) -> None:
        self._table.put_item(Item=link.model_dump(), ConditionExpression="attribute_not_exists(link_id)")

    def put_with(self, link: StoredLink, family_update: dict[str, Any]) -> None:
        """Store the link and attach it to its family in one transaction (both or neither)."""
        put = {
            "Put": {
                "TableName": self.table_name,
                "Item": {k: v for k, v in link.model_dump().items() if v is not None},
                "ConditionExpression": "attribute_not_exists(link_id)",
            }
        }
        dynamodb().transact_write_items(TransactItems=[put, family_update])

    def bind(self, link_id: str, identity: str) -> bool:
        """Bind the link to the first identity that uses it; False when another identity holds it (or
        the link is gone). A form link is not a bearer token: it serves one usager."""
        try:
            self._table.update_item(
                Key={"link_id": link_id},
                UpdateExpression="SET bound_identity = if_not_exists(bound_identity, :k)",
                ConditionExpression="attribute_exists(link_id) AND "
                "(attribute_not_exists(bound_identity) OR bound_identity = :k)",
                ExpressionAttributeValues={":k": identity},
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, link_id: str) -> StoredLink | None:
        item: dict[str, Any] | None = self._table.get_item(Key={"link_id": link_id}).get("Item")
        return StoredLink.model_validate(plain(item)) if item else None

    def delete(self, link_id: str) -> None:
        self._table.delete_item(Key={"link_id": link_id})
