"""DynamoDB attribute values: plain Python values in and out of qfbridge's client, as boto3's
resource gives them, without boto3."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from qfbridge.store.attribute_values import (
    BatchWriter,
    KeyCondition,
    _copy_params,
    deserialize,
    key,
    serialize,
)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, {"NULL": True}),
        (True, {"BOOL": True}),
        (False, {"BOOL": False}),
        (42, {"N": "42"}),
        (Decimal("812.50"), {"N": "812.50"}),
        ("21040107100019", {"S": "21040107100019"}),
        (b"\x00\x01", {"B": b"\x00\x01"}),
        ([1, "a", None], {"L": [{"N": "1"}, {"S": "a"}, {"NULL": True}]}),
        ({"qf": {"valeur": 812}}, {"M": {"qf": {"M": {"valeur": {"N": "812"}}}}}),
    ],
)
def test_values_serialise_as_dynamodb_types_and_come_back(value: Any, wire: dict[str, Any]) -> None:
    assert serialize(value) == wire
    back = deserialize(wire)
    assert back == value
    if isinstance(value, int) and not isinstance(value, bool):
        assert isinstance(back, Decimal)  # numbers come back as Decimal, as boto3 gives them


def test_sets_keep_their_kind() -> None:
    assert sorted(serialize({"b", "a"})["SS"]) == ["a", "b"]
    assert sorted(serialize({2, 1})["NS"]) == ["1", "2"]
    assert deserialize({"SS": ["a", "b"]}) == {"a", "b"}
    assert deserialize({"NS": ["1", "2.5"]}) == {Decimal(1), Decimal("2.5")}
    with pytest.raises(TypeError):
        serialize({"a", 1})


def test_floats_and_numbers_dynamodb_cannot_hold_are_refused() -> None:
    with pytest.raises(TypeError, match="Float"):
        serialize(1.5)
    with pytest.raises(ArithmeticError):
        serialize(Decimal("1." + "1" * 40))  # more than 38 significant digits: precision would be lost
    with pytest.raises(TypeError):
        serialize(Decimal("NaN"))
    with pytest.raises(TypeError):
        serialize(object())


def test_a_key_condition_becomes_an_expression_with_placeholders_of_its_own() -> None:
    condition = key("pk").eq("T#1") & key("sk").begins_with("F#") & key("at").lte("2026")
    assert isinstance(condition, KeyCondition)
    expression, names, values = condition.expression()
    assert expression == "#qk0 = :qk0 AND begins_with(#qk1, :qk1) AND #qk2 <= :qk2"
    assert names == {"#qk0": "pk", "#qk1": "sk", "#qk2": "at"}
    assert values == {":qk0": "T#1", ":qk1": "F#", ":qk2": "2026"}


def test_the_callers_parameters_are_copied_and_an_object_named_twice_is_copied_twice() -> None:
    shared = {"pk": "T#1"}
    params = {"TransactItems": [{"Delete": {"Key": shared}}, {"ConditionCheck": {"Key": shared}}]}
    copied = _copy_params(params)
    first, second = (item[next(iter(item))]["Key"] for item in copied["TransactItems"])
    assert first == second == shared
    assert first is not second and first is not shared


class FakeClient:
    def __init__(self, unprocessed_once: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.unprocessed_once = unprocessed_once

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        self.batches.append(requests)
        if self.unprocessed_once:
            left, self.unprocessed_once = requests[: self.unprocessed_once], 0
            return {"UnprocessedItems": {table: left}}
        return {"UnprocessedItems": {}}


def test_the_batch_writer_sends_25_per_request_and_the_rest_on_exit() -> None:
    client = FakeClient()
    with BatchWriter("t", client) as batch:
        for index in range(60):
            batch.put_item(Item={"pk": str(index)})
    assert [len(b) for b in client.batches] == [25, 25, 10]


def test_what_dynamodb_leaves_unprocessed_is_sent_again() -> None:
    client = FakeClient(unprocessed_once=3)
    with BatchWriter("t", client) as batch:
        for index in range(25):
            batch.put_item(Item={"pk": str(index)})
    sent = [r["PutRequest"]["Item"]["pk"] for b in client.batches for r in b]
    assert sorted(sent, key=int) == sorted([str(i) for i in range(25)] + ["0", "1", "2"], key=int)


def test_a_later_request_for_a_buffered_key_replaces_it_when_asked() -> None:
    client = FakeClient()
    with BatchWriter("t", client, overwrite_by_pkeys=["case_id"]) as batch:
        batch.put_item(Item={"case_id": "c1", "polls": 1})
        batch.put_item(Item={"case_id": "c2", "polls": 1})
        batch.put_item(Item={"case_id": "c1", "polls": 2})
        batch.delete_item(Key={"case_id": "c2"})
    assert client.batches == [
        [
            {"PutRequest": {"Item": {"case_id": "c1", "polls": 2}}},
            {"DeleteRequest": {"Key": {"case_id": "c2"}}},
        ]
    ]


def test_the_shapes_table_only_ever_holds_final_answers() -> None:
    """Threads converting their first requests at once read the table while others fill it: a shape
    must never be seen as carrying no AttributeValue because another thread is exploring it."""
    import botocore.session

    from qfbridge.store import attribute_values

    model = botocore.session.get_session().get_service_model("dynamodb")
    shapes = [model.shape_for(name) for name in model.shape_names]

    def truth(shape: Any, seen: frozenset[str] = frozenset()) -> bool:
        if shape.name == "AttributeValue":
            return True
        if shape.name in seen:
            return False
        seen = seen | {shape.name}
        children = (
            list(shape.members.values())
            if shape.type_name == "structure"
            else [shape.value]
            if shape.type_name == "map"
            else [shape.member]
            if shape.type_name == "list"
            else []
        )
        return any(truth(child, seen) for child in children)

    expected = {shape.name: truth(shape) for shape in shapes}

    class Checked(dict[str, bool]):
        def __setitem__(self, name: str, value: bool) -> None:
            assert value == expected[name], f"{name} stored as {value}"
            super().__setitem__(name, value)

    original = attribute_values._CARRIES
    attribute_values._CARRIES = Checked()
    try:
        for shape in reversed(shapes):
            assert attribute_values._carries(shape) == expected[shape.name]
    finally:
        attribute_values._CARRIES = original
