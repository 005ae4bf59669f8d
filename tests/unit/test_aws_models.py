"""qfbridge's clients load botocore's service models cut to the operations qfbridge sends: the cut
covers every call and caught exception of the code, and the committed models are what botocore's
installed version gives (``make aws-models``)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name

from qfbridge.store import aws
from qfbridge_local.aws_models import MODELS, OPERATIONS, full_model, generate

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
    committed = {p.relative_to(MODELS): p.read_text(encoding="utf-8") for p in MODELS.rglob("service-2.json")}
    assert set(committed) == set(generated), "run `make aws-models`"
    for relative, text in generated.items():
        assert committed[relative] == text, f"{relative} is stale: run `make aws-models`"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Any:
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
