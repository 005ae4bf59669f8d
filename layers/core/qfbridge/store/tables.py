"""DynamoDB access shared by the repositories: one client per process, plain-dict items.

The client takes and returns plain Python values (``str``, ``Decimal``, ``set``…), as boto3's
resource layer does, through the transformations of ``qfbridge.store.attribute_values`` (values
serialised in and out, key conditions): neither boto3's resource layer (its model and the classes it
builds cost a cold request twice a client's creation) nor boto3 itself (its package imports
s3transfer and multiprocessing) is imported (docs/performance.md, cold request).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from functools import cache
from typing import Any

from qfbridge.domain.errors import ValidationError


@cache
def dynamodb() -> Any:
    """The DynamoDB client, plain values in and out (created lazily: a cold start that never
    touches it pays nothing)."""
    from qfbridge.store import aws
    from qfbridge.store.attribute_values import register

    return register(aws.client("dynamodb"))


def key_condition(name: str) -> Any:
    """A key attribute of a Query, conditions joined with ``&`` (``qfbridge.store.attribute_values.key``)."""
    from qfbridge.store.attribute_values import key

    return key(name)


class _Meta:
    def __init__(self, client: Any) -> None:
        self.client = client


class Table:
    """One table's operations on the shared client, named as boto3's ``Table`` names them."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.meta = _Meta(client)

    def get_item(self, **kwargs: Any) -> Any:
        return self.meta.client.get_item(TableName=self.name, **kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        return self.meta.client.put_item(TableName=self.name, **kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        return self.meta.client.update_item(TableName=self.name, **kwargs)

    def delete_item(self, **kwargs: Any) -> Any:
        return self.meta.client.delete_item(TableName=self.name, **kwargs)

    def query(self, **kwargs: Any) -> Any:
        return self.meta.client.query(TableName=self.name, **kwargs)

    def batch_writer(self, overwrite_by_pkeys: list[str] | None = None) -> Any:
        """25 items per ``BatchWriteItem``, unprocessed items sent again (as boto3's batch writer)."""
        from qfbridge.store.attribute_values import BatchWriter

        return BatchWriter(self.name, self.meta.client, overwrite_by_pkeys=overwrite_by_pkeys)


@cache
def table(name: str) -> Table:
    return Table(name, dynamodb())


def from_wire(item: dict[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's typed wire form (``{"S": ...}``) as the resource returns items: what a
    failed condition's ``ReturnValuesOnConditionCheckFailure`` gives back, even through the resource."""
    from qfbridge.store.attribute_values import deserialize

    return {name: deserialize(value) for name, value in item.items()}


def plain(value: Any) -> Any:
    """DynamoDB's Decimals and sets back into JSON-friendly Python values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return sorted(plain(v) for v in value)
    return value


def to_dynamo(value: Any) -> Any:
    """JSON-friendly values into what DynamoDB accepts (floats as Decimal, no empty strings in keys)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dynamo(v) for v in value]
    return value


def encode_cursor(last_evaluated_key: dict[str, Any] | None) -> str | None:
    """An opaque pagination cursor (the editor must not build or parse it)."""
    if not last_evaluated_key:
        return None
    raw = json.dumps(plain(last_evaluated_key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, expected_keys: set[str]) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise ValidationError("The cursor is not one this API issued.", code="invalid_cursor") from exc
    if (
        not isinstance(value, dict)
        or set(value) != expected_keys
        or not all(isinstance(v, str) for v in value.values())
    ):
        raise ValidationError("The cursor is not one this API issued.", code="invalid_cursor")
    return value
