"""Schemathesis against the committed docs/openapi.json, over the laptop
runtime's HTTP adapter — no request, valid or not, gets a server error."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from conftest_api import AUTHORIZATION, ApiHarness, api, api_runtime  # noqa: F401
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from qfbridge_local.runtime import LocalRuntime

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES_PER_OPERATION = 8

schema = schemathesis.openapi.from_path(str(OPENAPI))


EXAMPLE_SIRET = "21040107100019"  # the SIRET example the OpenAPI gives: generated cases reach real data


@pytest.fixture(scope="module")
def base_url(api_runtime: LocalRuntime) -> str:
    url = str(api_runtime.api_url)
    with httpx.Client(base_url=url, headers={"Authorization": AUTHORIZATION}) as http:
        assert http.put(f"/v1/tenants/{EXAMPLE_SIRET}", json={"name": "Exemple", "cog": "04107"}).is_success
        assert http.put(
            f"/v1/tenants/{EXAMPLE_SIRET}/families/0",
            json={
                "parents": [
                    {"nom_naissance": "A", "prenoms": "B", "sexe": "F", "date_naissance": "1980-01-01"}
                ]
            },
        ).is_success
    return url


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error(case: schemathesis.Case, base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": AUTHORIZATION})

    case.validate_response(response, checks=[not_a_server_error])
