"""The bench's cost model: write units on item sizes and index writes, and the fixed monthly costs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench import costs
from bench.aws_calls import RequestCounter, item_size
from qfbridge_local.template import DEFAULT_TEMPLATE, load_template

BIG = "x" * 2_900  # an item of about 3 KB: 3 write units


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="eu-west-3")
        yield dynamodb.create_table(
            TableName="dossiers",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "case_id", "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": "case_id", "AttributeType": "S"},
                {"AttributeName": "tenant", "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by_tenant",
                    "KeySchema": [{"AttributeName": "tenant", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )


def written(counter: RequestCounter) -> float:
    return sum(counter.tally.write_units.values())


def test_an_update_is_billed_on_the_item_and_its_index_not_on_the_values_it_sets(table: Any) -> None:
    with RequestCounter() as counter:
        table.put_item(Item={"case_id": "c1", "tenant": "t1", "body": BIG})
        assert written(counter) == 3 + 3  # the item, and its copy in the ALL-projection index
        counter.reset()
        # A one-character change: the old model priced it on ":v" alone (1 unit)
        table.update_item(
            Key={"case_id": "c1"}, UpdateExpression="SET step = :v", ExpressionAttributeValues={":v": "x"}
        )
        assert written(counter) == 3 + 3
        counter.reset()
        # The index key changes: the index deletes the old entry and puts the new one
        table.update_item(
            Key={"case_id": "c1"}, UpdateExpression="SET tenant = :t", ExpressionAttributeValues={":t": "t2"}
        )
        assert written(counter) == 3 + 3 + 3
        counter.reset()
        table.delete_item(Key={"case_id": "c1"})
        assert written(counter) == 3 + 3


def test_an_item_outside_the_index_writes_only_the_table(table: Any) -> None:
    with RequestCounter() as counter:
        table.put_item(Item={"case_id": "c2", "body": BIG})
        table.update_item(
            Key={"case_id": "c2"}, UpdateExpression="SET step = :v", ExpressionAttributeValues={":v": "x"}
        )
        assert written(counter) == 3 + 3


def test_the_caller_gets_the_response_it_asked_for(table: Any) -> None:
    with RequestCounter():
        response = table.update_item(
            Key={"case_id": "c3"}, UpdateExpression="SET step = :v", ExpressionAttributeValues={":v": "x"}
        )
        assert "Attributes" not in response
        returned = table.update_item(
            Key={"case_id": "c3"},
            UpdateExpression="SET step = :v",
            ExpressionAttributeValues={":v": "y"},
            ReturnValues="UPDATED_NEW",
        )
        assert returned["Attributes"] == {"step": "y"}


def test_item_size_counts_names_and_values() -> None:
    assert item_size({"ab": "xyz"}) == 5
    assert item_size({"ab": {"S": "xyz"}}) == 5


def test_the_fixed_monthly_costs_count_what_the_template_declares() -> None:
    fixed = costs.fixed_monthly(
        load_template(DEFAULT_TEMPLATE), tenants=10, api_requests=0, log_gb=0, retained_log_gb=0
    )
    assert fixed["quantities"]["kms_keys"] == ["AlertsKey", "AuditLogKey", "LogsKey"]
    assert fixed["usd"]["kms_keys"] == 3.0
    assert fixed["quantities"]["secrets"] == 11  # one per tenant, and the link-signing keys
    assert fixed["quantities"]["cloudwatch_alarms"] >= 8
    assert fixed["usd"]["api_gateway_requests"] == 0


def test_writes_of_qfbridges_own_clients_are_priced_though_they_cannot_describe_a_table(table: Any) -> None:
    """qfbridge's clients load service models cut to the operations qfbridge sends: the counter
    reads a table's key schema and indexes with a client of its own."""
    from qfbridge.store import aws
    from qfbridge.store.attribute_values import register

    client = register(aws.session.__wrapped__().create_client("dynamodb", region_name="eu-west-3"))
    assert not hasattr(client, "describe_table")
    with RequestCounter() as counter:
        client.put_item(TableName="dossiers", Item={"case_id": "c1", "tenant": "t1", "body": BIG})
        assert written(counter) == 3 + 3
