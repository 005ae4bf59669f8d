"""qfbridge's clients load botocore's service models cut to the operations qfbridge sends: the cut
covers every call and caught exception of the code, and the committed models are what botocore's
installed version gives (``make aws-models``)."""

from __future__ import annotations

import ast
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name

from qfbridge.store import aws
from qfbridge_local.aws_models import (
    MODELS,
    OPERATIONS,
    endpoint_prefixes,
    full_endpoints,
    full_model,
    generate,
)

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = [REPO / "layers" / "core" / "qfbridge", REPO / "functions"]


def _production_sources() -> list[Path]:
    return sorted(p for root in PRODUCTION for p in root.rglob("*.py"))


def _called_and_caught() -> tuple[set[str], set[str]]:
    """Every ``x.name(...)`` called, and every ``….exceptions.Name`` named, in the production code."""
    called: set[str] = set()
    caught: set[str] = set()
    for path in _production_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called.add(node.func.attr)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "exceptions"
            ):
                caught.add(node.attr)
    return called, caught


def test_every_operation_the_code_calls_is_in_the_cut_models() -> None:
    called, _ = _called_and_caught()
    missing = {
        f"{service}.{operation}"
        for service in OPERATIONS
        for operation in full_model(service)["operations"]
        if xform_name(operation) in called and operation not in OPERATIONS[service]
    }
    assert not missing, (
        f"add to qfbridge_local.aws_models.OPERATIONS, then `make aws-models`: {sorted(missing)}"
    )


def test_every_exception_the_code_catches_is_defined_by_the_cut_models() -> None:
    _, caught = _called_and_caught()
    defined = {
        name
        for service, operations in OPERATIONS.items()
        for operation in operations
        for name in (e["shape"] for e in full_model(service)["operations"][operation].get("errors", []))
    }
    assert caught, "the scan found no caught AWS exception: it no longer reads the code"
    assert caught <= defined, f"not an error of any kept operation: {sorted(caught - defined)}"


def test_the_committed_models_are_what_the_installed_botocore_gives() -> None:
    generated = generate()
    committed = {p.relative_to(MODELS): p.read_text(encoding="utf-8") for p in MODELS.rglob("*.json")}
    assert set(committed) == set(generated), "run `make aws-models`"
    for relative, text in generated.items():
        assert committed[relative] == text, f"{relative} is stale: run `make aws-models`"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Any:
    # An endpoint, a profile or a FIPS / dual-stack setting from the environment would make both
    # sides of the comparisons below agree whatever the data.
    for name in list(os.environ):
        if name.startswith(
            ("AWS_ENDPOINT_URL", "AWS_USE_", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_DATA_PATH")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return aws.session.__wrapped__()  # a session of its own: the process's stays as it was


def test_qfbridge_clients_offer_the_kept_operations_and_exceptions_and_nothing_else(session: Any) -> None:
    dynamodb = session.create_client("dynamodb")
    assert sorted(dynamodb.meta.service_model.operation_names) == sorted(OPERATIONS["dynamodb"])
    assert hasattr(dynamodb, "transact_write_items") and not hasattr(dynamodb, "scan")
    assert issubclass(dynamodb.exceptions.ConditionalCheckFailedException, Exception)
    secrets = session.create_client("secretsmanager")
    assert issubclass(secrets.exceptions.ResourceExistsException, Exception)
    # The endpoint rules still come from botocore's own data.
    assert dynamodb.meta.endpoint_url == "https://dynamodb.eu-west-3.amazonaws.com"


def _partition_regions() -> list[tuple[str, str]]:
    return [
        (partition["partition"], region)
        for partition in full_endpoints()["partitions"]
        for region in partition["regions"]
    ]


def _outcome(resolver: Any, service: str, region: str, partition: str, options: dict[str, bool]) -> Any:
    try:
        return resolver.construct_endpoint(service, region, partition, **options)
    except Exception as exc:  # a variant a partition does not offer: the same error either way
        return type(exc), str(exc)


def test_the_cut_endpoint_data_resolves_every_region_of_every_partition_as_botocores_whole() -> None:
    from botocore.regions import EndpointResolver

    cut = EndpointResolver(json.loads((MODELS / "endpoints.json").read_text(encoding="utf-8")), True)
    whole = EndpointResolver(full_endpoints(), True)
    checked = 0
    for service in endpoint_prefixes():
        for partition, region in _partition_regions():
            for fips, dualstack in itertools.product((False, True), repeat=2):
                options = {"use_fips_endpoint": fips, "use_dualstack_endpoint": dualstack}
                assert _outcome(cut, service, region, partition, options) == (
                    _outcome(whole, service, region, partition, options)
                ), (service, region, options)
                checked += 1
        assert cut.get_available_endpoints(service) == whole.get_available_endpoints(service)
    assert checked >= len(OPERATIONS) * 40 * 4


def test_qfbridge_clients_reach_the_endpoints_and_sign_as_botocores_whole_data(session: Any) -> None:
    import botocore.session
    from botocore.config import Config

    # botocore feeds a customer's own endpoints.json into the endpoint rules; the cut is its own data.
    loader = session.get_component("data_loader")
    _, path = loader.load_data_with_path("endpoints")
    assert Path(path).is_relative_to(MODELS) and loader.is_builtin_path(path)
    whole = botocore.session.get_session()
    regions = ["eu-west-3", "us-east-1", "cn-north-1", "us-gov-west-1", "eusc-de-east-1"]
    assert {region for _, region in _partition_regions()} >= set(regions)
    for service, region, fips, dualstack in itertools.product(
        OPERATIONS, regions, (False, True), (False, True)
    ):
        config = Config(region_name=region, use_fips_endpoint=fips, use_dualstack_endpoint=dualstack)
        ours: Any = session.create_client(service, config=config)
        theirs: Any = whole.create_client(service, config=config)
        assert ours.meta.endpoint_url == theirs.meta.endpoint_url, (service, region, fips, dualstack)
        assert ours.meta.region_name == theirs.meta.region_name
        assert ours._request_signer.signing_name == theirs._request_signer.signing_name
        assert ours._request_signer.region_name == theirs._request_signer.region_name


def test_qfbridge_builds_clients_of_the_cut_services_only() -> None:
    """Another service's endpoints are not in the cut data: its client would be built wrong."""
    for service in ("sts", "s3", "../aws_models/dynamodb", "dynamodb/2012-08-10"):
        with pytest.raises(ValueError, match="not one of the AWS services"):
            aws.client(service)


def test_an_unknown_service_still_fails_with_botocores_error_naming_them_all(session: Any) -> None:
    from botocore.exceptions import UnknownServiceError

    for name in ("no-such-service", "../aws_models/dynamodb"):
        with pytest.raises(UnknownServiceError) as error:
            session.create_client(name)
        assert "dynamodb" in str(error.value) and "sts" in str(error.value)
    services = session.get_available_services()
    assert "dynamodb" in services and len(services) > 400 and services[0] < services[-1]


def test_other_sessions_keep_botocores_whole_models(session: Any) -> None:
    import boto3

    assert hasattr(boto3.session.Session(region_name="eu-west-3").client("dynamodb"), "scan")


def test_qfbridge_builds_its_aws_clients_on_its_own_session_only() -> None:
    """A ``boto3.client(...)`` in the code would build a client on botocore's whole model (and a
    second session with it)."""
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in _production_sources()
        if path.name != "aws.py" or path.parent.name != "store"  # the session itself
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("client", "Session", "resource")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "boto3"
    ]
    assert offenders == []
