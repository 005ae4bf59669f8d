"""Credentials never appear in any response, log line, audit record or message."""

# ruff: noqa: F811  (fixtures imported from conftest_api are test parameters by design)

from __future__ import annotations

import json

import pytest
from conftest_api import ApiHarness, api, api_runtime  # noqa: F401

from qfbridge.observability import logger

SECRET = "hubee-SECRET-7f3a9c"
TOKEN = "apipart-TOKEN-51e2b8"
CLIENT_ID = "hubee-client-0d41"


def test_credentials_never_appear_in_responses_logs_or_the_audit_trail(
    api: ApiHarness, capfd: pytest.CaptureFixture[str]
) -> None:
    siret = api.tenant()
    level = logger.log_level
    logger.setLevel("DEBUG")  # the most talkative the function can be
    try:
        responses = [
            api.http.put(
                f"/v1/tenants/{siret}/credentials",
                json={
                    "hubee_client_id": CLIENT_ID,
                    "hubee_client_secret": SECRET,
                    "api_particulier_token": TOKEN,
                },
            ),
            # refused bodies must not echo what they carried either
            api.http.put(
                f"/v1/tenants/{siret}/credentials",
                json={
                    "hubee_client_id": CLIENT_ID,
                    "hubee_client_secret": SECRET,
                    "api_particulier_token": TOKEN,
                    "extra": TOKEN,
                },
            ),
            api.http.put(
                f"/v1/tenants/{siret}/credentials",
                json={"hubee_client_id": [SECRET], "hubee_client_secret": {"v": TOKEN}},
            ),
            api.http.put(
                f"/v1/tenants/{siret}/credentials",
                content=f'{{"hubee_client_secret": "{SECRET}", '.encode(),
                headers={"Content-Type": "application/json"},
            ),
            api.http.put(
                "/v1/tenants/00000000000001/credentials",
                json={"hubee_client_id": CLIENT_ID, "hubee_client_secret": SECRET},
            ),
            api.http.get(f"/v1/tenants/{siret}"),
            api.http.get("/v1/tenants"),
        ]
    finally:
        logger.setLevel(level)
    captured = capfd.readouterr()

    assert [r.status_code for r in responses] == [204, 422, 422, 400, 400, 200, 200]
    everything = "".join(r.text + json.dumps(dict(r.headers)) for r in responses)
    everything += captured.out + captured.err + json.dumps(api.audit(tenant_siret=siret))
    assert SECRET not in everything and TOKEN not in everything
    assert CLIENT_ID not in everything  # the client id is write-only too
    prefix = api.runtime.environment["TENANT_SECRETS_PREFIX"]
    stored = api.runtime.client("secretsmanager").get_secret_value(SecretId=f"{prefix}{siret}")[
        "SecretString"
    ]
    assert json.loads(stored)["hubee_client_secret"] == SECRET  # the test can fail: the value is really there
