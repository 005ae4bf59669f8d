"""One change to moto for the benchmarks: transactions snapshot the items they touch, not the tables.

moto's ``TransactWriteItems`` deep-copies every table a transaction names before applying it, so
that it can roll back. Its cost grows with the table — with 2,000 families in the directory, each
linking transaction (dossier record + family QF) copied ~5,000 items — and it made the intake
benchmark measure moto's copying instead of the pipeline (DynamoDB's transactions cost the same
whatever the table's size). The replacement keeps moto's transaction code and its semantics: it
snapshots the items the transaction names (the only ones it can change), lets moto's own code run
with a table "copy" that is the table itself, and on any failure restores those items.

Applied only by ``python -m bench``, never by the laptop runtime or the tests; docs/performance.md
states it.
"""

from __future__ import annotations

import contextlib
import copy
import types
from typing import Any

_APPLIED = False


def _item_key(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any | None] | None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    source = op.get("Item") if op_type == "Put" else op.get("Key")
    if not source or table.hash_key_attr not in source:
        return None
    hash_value = DynamoType(source[table.hash_key_attr])
    range_value = None
    if table.range_key_attr is not None:
        if table.range_key_attr not in source:
            return None
        range_value = DynamoType(source[table.range_key_attr])
    return hash_value, range_value


def apply() -> None:
    """Install the item-level snapshot for ``TransactWriteItems`` (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    real_copy = copy

    def deepcopy(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            return value  # the transaction's own snapshot below replaces the whole-table copy
        return real_copy.deepcopy(value, memo)

    # moto's module refers to ``copy.deepcopy``: give it a ``copy`` whose deepcopy spares tables.
    shim = types.SimpleNamespace(deepcopy=deepcopy, copy=real_copy.copy)
    dynamodb_models.copy = shim  # type: ignore[assignment]
    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshot: list[tuple[Any, Any, Any | None, Any | None]] = []
        for entry in transact_items:
            if len(entry) != 1:
                continue  # moto rejects it before changing anything
            op_type, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = _item_key(table, op_type, op)
            if key is None:
                continue
            hash_value, range_value = key
            current = table.get_item(hash_value, range_value)
            snapshot.append((table, hash_value, range_value, real_copy.deepcopy(current)))
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_value, range_value, item in reversed(snapshot):
                if item is None:
                    with contextlib.suppress(KeyError):
                        table.delete_item(hash_value, range_value)
                elif range_value is not None:
                    table.items[hash_value][range_value] = item
                else:
                    table.items[hash_value] = item
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _APPLIED = True
