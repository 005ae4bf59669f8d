"""The AWS clients of an execution environment: one botocore session, on qfbridge's cut service models.

Every client qfbridge builds (DynamoDB, Secrets Manager, SQS, EventBridge, CloudWatch Logs) comes
from this session. Its data loader reads ``qfbridge/aws_models`` first: botocore's models of those
services cut to the operations qfbridge sends, without their documentation — creating a client
parses its model and builds a method per operation, ~2–3 ms each then against 4–11 ms with
botocore's whole models — and botocore's endpoint data (``endpoints.json``) cut to those services:
1.2 MB of JSON, ~20 ms to parse at the first client, for 8 partitions × 305 services
(docs/performance.md, cold request). The endpoint rules, the partitions, the retry and default
configuration files still come from botocore's own data. ``client`` builds the five services only
(another service's endpoints are not in the cut); a call to an operation left out fails with
``AttributeError`` — tests/unit/test_aws_models.py keeps the list and the code in step, and checks
that every endpoint resolves as with botocore's whole data (``qfbridge_local.aws_models``).

Only qfbridge's clients use this session: ``boto3.client`` elsewhere (the laptop runtime, an
operator's session) reads botocore's whole models, as before. It is botocore's, not boto3's: boto3's
package imports s3transfer and multiprocessing (~15 ms of a cold request), and qfbridge needs none
of what boto3 adds to a client (DynamoDB's values: ``qfbridge.store.attribute_values``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[1] / "aws_models"


_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class _KnownServices(Sequence[str]):
    """The services of one data type (``service-2``, ``endpoint-rule-set-1``…) that a loader has,
    answered service by service. botocore lists them all to check that a client's service exists —
    a walk of its 455 service directories, ~7 ms per data type at the first client; asking for the
    one service's versions gives the same answer (and botocore asks for them next anyway)."""

    def __init__(self, loader: Any, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, service_name: object) -> bool:
        from botocore.exceptions import DataNotFoundError

        if not isinstance(service_name, str) or not _SERVICE_NAME.fullmatch(service_name):
            return False  # a name, not a path
        try:
            return bool(self._loader.list_api_versions(service_name, self._type_name))
        except DataNotFoundError:
            return False

    def _all(self) -> list[str]:
        """Every one of them (botocore names them all in an unknown service's error)."""
        return self._loader.walk_available_services(self._type_name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]


def _loader() -> Any:
    import botocore.loaders

    class CutLoader(botocore.loaders.Loader):
        """botocore's loader, reading ``MODELS`` first, without the walk of every service."""

        def list_available_services(self, type_name: str) -> Any:
            return _KnownServices(self, type_name)

        def walk_available_services(self, type_name: str) -> list[str]:
            return list(super().list_available_services(type_name))

        def is_builtin_path(self, path: str) -> bool:
            # The cut endpoint data is botocore's own: botocore treats a customer's endpoints.json
            # differently (its legacy endpoints feed the endpoint rules).
            return bool(super().is_builtin_path(path)) or Path(path).resolve().is_relative_to(MODELS)

    return CutLoader(extra_search_paths=[str(MODELS)])


@cache
def session() -> Any:
    """The environment's botocore session (region, credentials and endpoint from the environment,
    as ``boto3.client`` has them)."""
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    return core


def client(service: str) -> Any:
    """A new client of the environment's session (each store module keeps its own, cached), of one
    of the services the cut models and endpoint data cover."""
    if not _SERVICE_NAME.fullmatch(service) or not (MODELS / service).is_dir():
        raise ValueError(
            f"{service!r} is not one of the AWS services qfbridge's session covers "
            "(add it to qfbridge_local.aws_models.OPERATIONS, then run `make aws-models`)"
        )
    return session().create_client(service)
