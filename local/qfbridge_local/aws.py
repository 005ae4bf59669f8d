"""moto's server on 127.0.0.1 and the provisioning of the template's resources into it."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from .template import LOCAL_REGION, Stack

LOOPBACK = "127.0.0.1"

# Credentials moto accepts; real ones are never needed (nor read) by the laptop runtime.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_DYNAMODB_LOCK = threading.RLock()


def _serialise_dynamodb_requests() -> None:
    """moto's DynamoDB backend is not thread-safe (a transaction deep-copies the tables while other
    requests write them). DynamoDB itself is; the laptop runtime serialises moto's DynamoDB requests
    so that concurrent Lambda invocations behave as they would on AWS."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_qfbridge_serialised", False):
        return
    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _DYNAMODB_LOCK:
            return original(self)

    call_action._qfbridge_serialised = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


class MotoServer:
    """moto in server mode, bound to the loopback interface only."""

    def __init__(self, port: int | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto request is noise
        _serialise_dynamodb_requests()
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Empty every backend (moto's reset API)."""
        import httpx

        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()


@contextmanager
def aws_environment(endpoint: str, extra: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Point every boto3 client of this process at ``endpoint`` via the standard configuration."""
    values = {**LOCAL_AWS_ENV, "AWS_ENDPOINT_URL": endpoint, **(extra or {})}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_AWS_ENV["AWS_SESSION_TOKEN"],
    )


def provision(stack: Stack, endpoint: str) -> dict[str, Any]:
    """Create in moto every table, queue, bus, secret and log group the template declares."""
    dynamodb = client("dynamodb", endpoint)
    sqs = client("sqs", endpoint)
    events = client("events", endpoint)
    secretsmanager = client("secretsmanager", endpoint)
    logs = client("logs", endpoint)

    for table in stack.tables.values():
        kwargs: dict[str, Any] = {
            "TableName": table.name,
            "KeySchema": table.key_schema,
            "AttributeDefinitions": table.attribute_definitions,
            "BillingMode": table.billing_mode,
            "SSESpecification": {"Enabled": table.sse},
        }
        if table.global_secondary_indexes:
            kwargs["GlobalSecondaryIndexes"] = table.global_secondary_indexes
        dynamodb.create_table(**kwargs)
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=table.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        if table.pitr:
            dynamodb.update_continuous_backups(
                TableName=table.name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    queue_urls: dict[str, str] = {}
    # Dead-letter queues first: redrive policies point at them.
    ordered = sorted(stack.queues.values(), key=lambda q: q.dead_letter_logical_id is not None)
    for queue in ordered:
        attributes = dict(queue.attributes)
        if queue.dead_letter_logical_id:
            dlq_url = queue_urls[queue.dead_letter_logical_id]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count}
            )
        queue_urls[queue.logical_id] = sqs.create_queue(QueueName=queue.name, Attributes=attributes)[
            "QueueUrl"
        ]

    for bus in stack.buses.values():
        events.create_event_bus(Name=bus)

    for spec in stack.secrets.values():
        generate = spec.get("GenerateSecretString")
        if generate:
            document = json.loads(generate.get("SecretStringTemplate") or "{}")
            document[generate["GenerateStringKey"]] = secrets.token_urlsafe(48)
            value = json.dumps(document)
        else:
            value = str(spec.get("SecretString", ""))
        secretsmanager.create_secret(Name=spec["name"], SecretString=value)

    for group in stack.log_groups.values():
        logs.create_log_group(logGroupName=group["name"])
        if "RetentionInDays" in group:
            logs.put_retention_policy(
                logGroupName=group["name"], retentionInDays=int(group["RetentionInDays"])
            )

    return {"queue_urls": queue_urls}


def describe_local_stack(endpoint: str) -> dict[str, Any]:
    """What moto holds, in the template's vocabulary: used to prove the two agree."""
    dynamodb = client("dynamodb", endpoint)
    sqs = client("sqs", endpoint)
    tables: dict[str, Any] = {}
    for name in dynamodb.list_tables()["TableNames"]:
        desc = dynamodb.describe_table(TableName=name)["Table"]
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        tables[name] = {
            "key_schema": desc["KeySchema"],
            "indexes": sorted(
                (gsi["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]))
                for gsi in desc.get("GlobalSecondaryIndexes", [])
            ),
            "ttl_attribute": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None,
        }
    queues: dict[str, Any] = {}
    for url in sqs.list_queues().get("QueueUrls", []):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"]) if "RedrivePolicy" in attrs else None
        queues[url.rsplit("/", 1)[1]] = {
            "visibility_timeout": int(attrs["VisibilityTimeout"]),
            "dead_letter_queue": redrive["deadLetterTargetArn"].rsplit(":", 1)[1] if redrive else None,
            "max_receive_count": int(redrive["maxReceiveCount"]) if redrive else None,
        }
    return {"tables": tables, "queues": queues}
