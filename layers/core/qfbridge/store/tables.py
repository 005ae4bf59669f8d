"""DynamoDB access shared by the repositories: one boto3 resource per process, plain-dict items."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from functools import cache
from typing import Any

from qfbridge.domain.errors import ValidationError


@cache
def dynamodb() -> Any:
    """The DynamoDB service resource (created lazily: a cold start that never touches it pays nothing)."""
    import boto3  # deferred: importing boto3 is most of a cold start

    return boto3.resource("dynamodb")


def key_condition(name: str) -> Any:
    """``boto3.dynamodb.conditions.Key``, imported on first use."""
    from boto3.dynamodb.conditions import Key

    return Key(name)


@cache
def table(name: str) -> Any:
    return dynamodb().Table(name)


def from_wire(item: dict[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's typed wire form (``{"S": ...}``) as the resource returns items: what a
    failed condition's ``ReturnValuesOnConditionCheckFailure`` gives back, even through the resource."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


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
