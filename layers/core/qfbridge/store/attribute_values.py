"""DynamoDB attribute values on the client itself: plain Python values in, plain Python values out.

What boto3's DynamoDB resource registers on its client (``boto3.dynamodb.transform``), written for
what qfbridge sends, so that no function imports boto3: importing any ``boto3.dynamodb`` module runs
boto3's package, which imports s3transfer and multiprocessing — ~15 ms of a cold request for
transformations of a few dozen lines (docs/performance.md, cold request). The same semantics:

* every ``AttributeValue`` of an operation's input and output, found by walking the operation's
  shapes, is serialised from / deserialised to Python values — ``None``, ``bool``, ``int`` and
  ``Decimal`` (numbers come back as ``Decimal``; a ``float`` is refused, as boto3 refuses it), ``str``,
  ``bytes``, sets of one of these, lists, mappings;
* the caller's parameters are copied first, never changed in place;
* a key condition built with :func:`key` (``eq``, ``lt``, ``lte``, ``gt``, ``gte``,
  ``begins_with``, joined with ``&``) becomes a ``KeyConditionExpression`` with placeholders of its
  own (``#qk0``, ``:qk0``…), merged into the request's.

:class:`BatchWriter` is boto3's batch writer: 25 requests per ``BatchWriteItem``, unprocessed ones
sent again, a buffered request for a key replaced by a later one for the same key when asked.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

NUMBER_CONTEXT = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])
"""DynamoDB's numbers: 38 significant digits; a value that would lose precision is refused."""

BATCH_WRITE_SIZE = 25


def _number(value: int | Decimal) -> str:
    text = str(NUMBER_CONTEXT.create_decimal(value))
    if text in ("Infinity", "NaN", "-Infinity", "sNaN"):
        raise TypeError("Infinity and NaN are not DynamoDB numbers")
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def serialize(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB ``AttributeValue``."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Set):
        if all(_is_number(item) for item in value):
            return {"NS": [_number(item) for item in value]}
        if all(isinstance(item, str) for item in value):
            return {"SS": list(value)}
        if all(isinstance(item, bytes | bytearray) for item in value):
            return {"BS": [bytes(item) for item in value]}
        raise TypeError("A set must hold numbers, strings or bytes only")
    if isinstance(value, Mapping):
        return {"M": {key: serialize(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(item) for item in value]}
    raise TypeError(f"Unsupported type {type(value).__name__} for a DynamoDB value")


def _deserialize_map(value: dict[str, Any]) -> dict[str, Any]:
    return {key: deserialize(item) for key, item in value.items()}


_DESERIALIZERS: dict[str, Any] = {
    "S": lambda value: value,
    "N": NUMBER_CONTEXT.create_decimal,
    "BOOL": lambda value: value,
    "NULL": lambda value: None,
    "B": bytes,
    "SS": set,
    "NS": lambda value: {NUMBER_CONTEXT.create_decimal(item) for item in value},
    "BS": lambda value: {bytes(item) for item in value},
    "L": lambda value: [deserialize(item) for item in value],
    "M": _deserialize_map,
}


def deserialize(value: Mapping[str, Any]) -> Any:
    """A DynamoDB ``AttributeValue`` as a Python value."""
    if len(value) != 1:
        raise TypeError("An AttributeValue has exactly one type")
    ((kind, item),) = value.items()
    try:
        return _DESERIALIZERS[kind](item)
    except KeyError:
        raise TypeError(f"DynamoDB type {kind} is not supported") from None


# ---------------------------------------------------------------------- walking the shapes
_CARRIES: dict[str, bool] = {}
"""Shape name → whether an AttributeValue can be found under it (a service's shapes are shared).
Only final answers are stored: threads converting their first requests at once read it (the poll's
workers, the directory's writers), and none may read a shape as empty while another explores it."""


def _carries(shape: Any) -> bool:
    name = shape.name
    if name == "AttributeValue":
        return True
    known = _CARRIES.get(name)
    if known is None:
        known = _CARRIES[name] = _reaches(shape, set())
    return known


def _reaches(shape: Any, visiting: set[str]) -> bool:
    """Whether an AttributeValue is under ``shape``; ``visiting``: the shapes on the current path
    (a recursive shape reaches nothing new by going round again)."""
    name = shape.name
    if name == "AttributeValue":
        return True
    known = _CARRIES.get(name)
    if known is not None:
        return known
    if name in visiting:
        return False
    visiting.add(name)
    kind = shape.type_name
    if kind == "structure":
        found = any(_reaches(member, visiting) for member in shape.members.values())
    elif kind == "map":
        found = _reaches(shape.value, visiting)
    elif kind == "list":
        found = _reaches(shape.member, visiting)
    else:
        found = False
    visiting.discard(name)
    return found


def _transform(value: Any, shape: Any, convert: Any) -> Any:
    if shape.name == "AttributeValue":
        return convert(value)
    if not _carries(shape):
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                value[name] = _transform(value[name], member, convert)
    elif kind == "map" and isinstance(value, dict):
        for key in value:
            value[key] = _transform(value[key], shape.value, convert)
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _transform(item, shape.member, convert)
    return value


# ---------------------------------------------------------------------- key conditions
_OPERATORS = {"eq": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


class KeyCondition:
    """Conditions on a Query's key attributes, joined with ``&``."""

    def __init__(self, parts: tuple[tuple[str, str, Any], ...]) -> None:
        self.parts = parts

    def __and__(self, other: KeyCondition) -> KeyCondition:
        return KeyCondition(self.parts + other.parts)

    def expression(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The expression, its attribute names and its values (placeholders ``#qkN``, ``:qkN``)."""
        clauses, names, values = [], {}, {}
        for index, (operator, attribute, operand) in enumerate(self.parts):
            name, placeholder = f"#qk{index}", f":qk{index}"
            names[name] = attribute
            values[placeholder] = operand
            if operator == "begins_with":
                clauses.append(f"begins_with({name}, {placeholder})")
            else:
                clauses.append(f"{name} {_OPERATORS[operator]} {placeholder}")
        return " AND ".join(clauses), names, values


class key:
    """A key attribute of a Query: ``key("pk").eq(value) & key("sk").begins_with("F#")``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _part(self, operator: str, value: Any) -> KeyCondition:
        return KeyCondition(((operator, self.name, value),))

    def eq(self, value: Any) -> KeyCondition:
        return self._part("eq", value)

    def lt(self, value: Any) -> KeyCondition:
        return self._part("lt", value)

    def lte(self, value: Any) -> KeyCondition:
        return self._part("lte", value)

    def gt(self, value: Any) -> KeyCondition:
        return self._part("gt", value)

    def gte(self, value: Any) -> KeyCondition:
        return self._part("gte", value)

    def begins_with(self, value: str) -> KeyCondition:
        return self._part("begins_with", value)


# ---------------------------------------------------------------------- the client's handlers
class _Forgetful(dict[int, Any]):
    """A ``deepcopy`` memo that remembers nothing: an object the parameters name twice is copied
    twice, so that converting one copy in place never converts the other (boto3 does the same)."""

    def __setitem__(self, key: int, value: Any) -> None:
        pass


def _copy_params(params: dict[str, Any], **_: Any) -> dict[str, Any]:
    return copy.deepcopy(params, memo=_Forgetful())


def _key_condition(params: dict[str, Any], **_: Any) -> None:
    condition = params.get("KeyConditionExpression")
    if not isinstance(condition, KeyCondition):
        return
    expression, names, values = condition.expression()
    params["KeyConditionExpression"] = expression
    params["ExpressionAttributeNames"] = {**params.get("ExpressionAttributeNames", {}), **names}
    params["ExpressionAttributeValues"] = {**params.get("ExpressionAttributeValues", {}), **values}


def _serialize_input(params: dict[str, Any], model: Any, **_: Any) -> None:
    _transform(params, model.input_shape, serialize)


def _deserialize_output(parsed: dict[str, Any], model: Any, **_: Any) -> None:
    if model.output_shape is not None:
        _transform(parsed, model.output_shape, deserialize)


def register(client: Any) -> Any:
    """Give a DynamoDB client plain Python values in and out, and key conditions; returns it."""
    events = client.meta.events
    events.register("provide-client-params.dynamodb", _copy_params, unique_id="qfbridge-dynamodb-copy")
    events.register("before-parameter-build.dynamodb", _key_condition, unique_id="qfbridge-dynamodb-key")
    events.register("before-parameter-build.dynamodb", _serialize_input, unique_id="qfbridge-dynamodb-in")
    events.register("after-call.dynamodb", _deserialize_output, unique_id="qfbridge-dynamodb-out")
    return client


# ---------------------------------------------------------------------- batch writes
class BatchWriter:
    """Puts and deletes of one table, sent 25 per ``BatchWriteItem``; what DynamoDB leaves
    unprocessed goes back into the buffer and is sent again; everything is sent on exit.

    With ``overwrite_by_pkeys``, a request for a key already buffered replaces the earlier one
    (DynamoDB refuses a batch naming one key twice)."""

    def __init__(self, table_name: str, client: Any, overwrite_by_pkeys: list[str] | None = None) -> None:
        self._table = table_name
        self._client = client
        self._pkeys = overwrite_by_pkeys or []
        self._buffer: list[dict[str, Any]] = []

    def put_item(self, Item: dict[str, Any]) -> None:
        self._add({"PutRequest": {"Item": Item}})

    def delete_item(self, Key: dict[str, Any]) -> None:
        self._add({"DeleteRequest": {"Key": Key}})

    def _key_of(self, request: dict[str, Any]) -> list[Any]:
        if "PutRequest" in request:
            return [request["PutRequest"]["Item"][name] for name in self._pkeys]
        return [request["DeleteRequest"]["Key"][name] for name in self._pkeys]

    def _add(self, request: dict[str, Any]) -> None:
        if self._pkeys:
            key_values = self._key_of(request)
            self._buffer = [r for r in self._buffer if self._key_of(r) != key_values]
        self._buffer.append(request)
        if len(self._buffer) >= BATCH_WRITE_SIZE:
            self._flush()

    def _flush(self) -> None:
        batch, self._buffer = self._buffer[:BATCH_WRITE_SIZE], self._buffer[BATCH_WRITE_SIZE:]
        response = self._client.batch_write_item(RequestItems={self._table: batch})
        self._buffer.extend((response.get("UnprocessedItems") or {}).get(self._table, []))

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        while self._buffer:
            self._flush()
