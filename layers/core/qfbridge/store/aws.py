"""The AWS clients of an execution environment: one boto3 session, on qfbridge's cut service models.

Every client qfbridge builds (DynamoDB, Secrets Manager, SQS, EventBridge, CloudWatch Logs) comes
from this session. Its data loader reads ``qfbridge/aws_models`` first: botocore's models of those
services cut to the operations qfbridge sends, without their documentation — creating a client
parses its model and builds a method per operation, ~2–3 ms each then against 4–11 ms with
botocore's whole models (docs/performance.md, cold request). Anything else (endpoint rules,
paginators, other services) still comes from botocore's own data. A call to an operation left out
fails with ``AttributeError`` — tests/unit/test_aws_models.py keeps the list and the code in step
(``qfbridge_local.aws_models``).

Only qfbridge's clients use this session: ``boto3.client`` elsewhere (the laptop runtime, an
operator's session) reads botocore's whole models, as before.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[1] / "aws_models"


@cache
def session() -> Any:
    """The environment's boto3 session (region, credentials and endpoint from the environment, as
    ``boto3.client`` has them)."""
    import boto3
    import botocore.loaders
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", botocore.loaders.create_loader(str(MODELS)))
    return boto3.Session(botocore_session=core)


def client(service: str) -> Any:
    """A new client of the environment's session (each store module keeps its own, cached)."""
    return session().client(service)
