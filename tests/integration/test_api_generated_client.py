"""A client generated from docs/openapi.json (openapi-python-client) works against the served API.

It proves the document is usable as published: every JSON operation gets typed return values, and a
generated client that signs its requests with SigV4 (an ``httpx.Auth``) talks to the API as is.
"""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest_api import api_runtime, next_siret  # noqa: F401

from qfbridge_local.runtime import LocalRuntime

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "qfbridge_generated_client"


class SigV4(httpx.Auth):
    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str) -> None:
        self.credentials, self.region = credentials, region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("connection", "accept-encoding")
        }
        signed = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        yield request


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    out = tmp_path_factory.mktemp("client")
    config = out / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(REPO / "docs" / "openapi.json"),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(out / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE), result.stdout + result.stderr
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generator_understands_every_schema(generated: tuple[Any, str]) -> None:
    _package, output = generated

    assert "Unable to process schema" not in output
    assert "Unable to parse" not in output
    # The generator has no image/* support: only the QR codes' responses may be left out.
    for line in output.splitlines():
        if line.startswith("WARNING parsing"):
            assert "/qr." in line, line


def test_the_generated_client_calls_the_api_with_typed_answers(
    generated: tuple[Any, str], api_runtime: LocalRuntime
) -> None:
    package, _output = generated
    models = importlib.import_module(f"{PACKAGE}.models")

    def operation(tag: str, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")

    siret = next_siret()
    signer = SigV4(Credentials("AKIDGENERATED", "generated-secret"), "eu-west-3")
    client = package.AuthenticatedClient(base_url=api_runtime.api_url, token="")
    client.set_httpx_client(httpx.Client(base_url=api_runtime.api_url, auth=signer, timeout=30))

    created = operation("tenants", "put_tenant").sync(
        siret, client=client, body=models.TenantBody(name="Commune générée", cog="04107")
    )
    patched = operation("tenants", "patch_tenant").sync(
        siret, client=client, body=models.TenantPatch(refresh_budget_rps=3.0)
    )
    fetched = operation("tenants", "get_tenant").sync(siret, client=client)
    page = operation("tenants", "list_tenants").sync(client=client, limit=100)
    missing = operation("families", "get_family").sync(siret, "nobody", client=client)

    assert isinstance(created, models.TenantView) and created.siret == siret
    assert isinstance(patched, models.TenantView) and patched.refresh_budget_rps == 3.0
    assert isinstance(fetched, models.TenantView) and fetched.name == "Commune générée"
    assert fetched.status == models.TenantViewStatus.AWAITING_CREDENTIALS
    assert isinstance(page, models.TenantList) and siret in [t.siret for t in page.items]
    assert isinstance(missing, models.Problem) and missing.code == "family_not_found"
