"""Secrets are read through the environment's one Secrets Manager client, cached five minutes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from qfbridge.domain.errors import NotFoundError
from qfbridge.store import secrets
from qfbridge.store.secrets import CACHE_SECONDS, SecretStore, read_secret
from tests.support.fakes import Monotonic


class ResourceNotFoundException(Exception):
    pass


class InvalidRequestException(Exception):
    pass


class ThrottlingException(Exception):
    pass


class FakeSecretsManager:
    class exceptions:
        ResourceNotFoundException = ResourceNotFoundException
        InvalidRequestException = InvalidRequestException

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads: list[str] = []
        self.fail_with: Exception | None = None

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.reads.append(SecretId)
        if self.fail_with is not None:
            raise self.fail_with
        if SecretId not in self.values:
            raise ResourceNotFoundException(f"Secrets Manager can't find {SecretId}")
        return {"Name": SecretId, "SecretString": self.values[SecretId]}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSecretsManager]:
    fake = FakeSecretsManager()
    monkeypatch.setattr(secrets, "_client", lambda: fake)
    secrets.clear_cache()
    yield fake
    secrets.clear_cache()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(secrets.time, "monotonic", clock)
    return clock


def test_a_secret_read_twice_within_the_cache_age_is_fetched_once(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    client.values["s"] = "v1"
    assert read_secret("s") == "v1"
    client.values["s"] = "v2"
    clock.now += CACHE_SECONDS - 1
    assert read_secret("s") == "v1"
    assert client.reads == ["s"]


def test_a_cached_secret_is_fetched_again_once_its_age_is_reached(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    client.values["s"] = "v1"
    read_secret("s")
    client.values["s"] = "v2"
    clock.now += CACHE_SECONDS
    assert read_secret("s") == "v2"
    assert client.reads == ["s", "s"]


def test_force_fetch_bypasses_the_cache_and_refreshes_it(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    client.values["s"] = "v1"
    read_secret("s")
    client.values["s"] = "v2"
    assert read_secret("s", force_fetch=True) == "v2"
    assert read_secret("s") == "v2"
    assert client.reads == ["s", "s"]


@pytest.mark.parametrize("error", [ResourceNotFoundException("gone"), InvalidRequestException("deleted")])
def test_a_missing_or_deleted_secret_is_not_found_and_forgotten(
    client: FakeSecretsManager, clock: Monotonic, error: Exception
) -> None:
    client.values["s"] = "v1"
    read_secret("s")
    client.fail_with = error
    with pytest.raises(NotFoundError) as raised:
        read_secret("s", force_fetch=True)
    assert raised.value.code == "secret_missing"
    client.fail_with = None
    client.values["s"] = "v3"
    assert read_secret("s") == "v3"


def test_any_other_error_propagates_to_be_retried_and_keeps_the_cached_copy(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    client.values["s"] = "v1"
    read_secret("s")
    client.fail_with = ThrottlingException("Rate exceeded")
    with pytest.raises(ThrottlingException):
        read_secret("s", force_fetch=True)
    client.fail_with = None
    assert read_secret("s") == "v1"


def test_a_tenant_without_a_secret_has_its_credentials_missing_and_the_error_names_no_secret(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    with pytest.raises(NotFoundError) as raised:
        SecretStore("qfbridge/test/tenants/").read_tenant("21040107100019")
    assert raised.value.code == "credentials_missing"
    client.values["qfbridge/test/tenants/21040107100019"] = json.dumps(
        {"hubee_client_id": "id", "hubee_client_secret": "hubee-secret-value", "version": "a"}
    )
    credentials = SecretStore("qfbridge/test/tenants/").read_tenant("21040107100019")
    assert credentials.hubee_client_secret is not None
    assert "hubee-secret-value" not in repr(credentials)


def test_a_tenant_secret_of_another_version_than_expected_is_read_again(
    client: FakeSecretsManager, clock: Monotonic
) -> None:
    name = "qfbridge/test/tenants/21040107100019"
    client.values[name] = json.dumps({"api_particulier_token": "old", "version": "a"})
    store = SecretStore("qfbridge/test/tenants/")
    store.read_tenant("21040107100019")
    client.values[name] = json.dumps({"api_particulier_token": "new", "version": "b"})
    token = store.read_tenant("21040107100019", version="b").api_particulier_token
    assert token is not None and token.get_secret_value() == "new"
    assert client.reads == [name, name]
