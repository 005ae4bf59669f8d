"""Every HTTP client qfbridge builds shares the environment's one TLS context (the CA bundle is loaded once)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from qfbridge.api_particulier import ApiParticulierClient, ApiParticulierConfig
from qfbridge.hubee import AsyncHubeeClient, HubeeClient, HubeeConfig, HubeeCredentials
from qfbridge.tls import tls_context


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ssl.SSLContext]]:
    built: list[ssl.SSLContext] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = original(*args, **kwargs)
        built.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting)
    tls_context.cache_clear()
    yield built
    tls_context.cache_clear()


def test_hubee_and_api_particulier_clients_load_the_ca_bundle_once(
    contexts_built: list[ssl.SSLContext],
) -> None:
    config = HubeeConfig(api_url="https://api.hubee.invalid", token_url="https://auth.hubee.invalid/token")
    credentials = HubeeCredentials(client_id="client-1", client_secret="s")
    clients = [HubeeClient(config, credentials) for _ in range(3)]
    api_particulier = ApiParticulierClient(ApiParticulierConfig(base_url="https://particulier.invalid"))

    async def async_clients() -> None:
        for _ in range(3):
            async with AsyncHubeeClient(config, credentials):
                pass

    asyncio.run(async_clients())
    for client in clients:
        client.close()
    api_particulier.close()
    assert len(contexts_built) == 1
    assert contexts_built[0] is tls_context()


def test_the_shared_context_verifies_certificates_and_host_names() -> None:
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
