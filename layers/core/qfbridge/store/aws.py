"""The AWS clients of an execution environment: one botocore session, on qfbridge's cut service models.

Every client qfbridge builds (DynamoDB, Secrets Manager, SQS, EventBridge, CloudWatch Logs) comes
from this session. Its data loader reads ``qfbridge/aws_models`` first: botocore's models of those
services cut to the operations qfbridge sends, without their documentation — creating a client
parses its model and builds a method per operation, ~2–3 ms each then against 4–11 ms with
botocore's whole models (docs/performance.md, cold request). Anything else (endpoint rules,
paginators, other services) still comes from botocore's own data. A call to an operation left out
fails with ``AttributeError`` — tests/unit/test_aws_models.py keeps the list and the code in step
(``qfbridge_local.aws_models``).

Only qfbridge's clients use this session: ``boto3.client`` elsewhere (the laptop runtime, an
operator's session) reads botocore's whole models, as before. It is botocore's, not boto3's: boto3's
package imports s3transfer and multiprocessing (~15 ms of a cold request), and qfbridge needs none
of what boto3 adds to a client (DynamoDB's values: ``qfbridge.store.attribute_values``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[1] / "aws_models"


@cache
def session() -> Any:
    """The environment's botocore session (region, credentials and endpoint from the environment,
    as ``boto3.client`` has them)."""
    import botocore.loaders
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", botocore.loaders.create_loader(str(MODELS)))
    return core


def client(service: str) -> Any:
    """A new client of the environment's session (each store module keeps its own, cached)."""
    return session().create_client(service)
