"""Call the editor API (qfbridge) signing with SigV4 (botocore), from the editor's software.

    QFBRIDGE_API_URL=https://abc123.execute-api.eu-west-3.amazonaws.com/prod \
    AWS_REGION=eu-west-3 python sigv4_call.py 21040107100019

Credentials come from the standard chain: environment, profile, SSO, the instance's or task's role.
Only botocore and the standard library are needed (pip install botocore).
"""

import json
import os
import sys
import urllib.error
import urllib.request

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

API_URL = os.environ["QFBRIDGE_API_URL"].rstrip("/")
session = botocore.session.get_session()
REGION = os.environ.get("AWS_REGION") or session.get_config_variable("region") or "eu-west-3"


def call(method, path, body=None, agent_id=None):
    """One signed request; returns (HTTP status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if agent_id:
        headers["X-Agent-Id"] = agent_id  # the agent acting in your software: kept in the audit trail
    request = AWSRequest(method=method, url=API_URL + path, data=data, headers=headers)
    credentials = session.get_credentials().get_frozen_credentials()  # refreshed when they rotate
    SigV4Auth(credentials, "execute-api", REGION).add_auth(request)
    signed = urllib.request.Request(request.url, data=data, method=method, headers=dict(request.headers))
    try:
        with urllib.request.urlopen(signed, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:  # 4xx/5xx: an application/problem+json body with a `code`
        return error.code, json.loads(error.read() or b"null")


if __name__ == "__main__":
    siret = sys.argv[1]
    status, tenant = call(
        "PUT", f"/v1/tenants/{siret}", {"name": "Commune de Digne-les-Bains", "cog": "04070"}, "agent-42"
    )
    print(status, tenant["status"])
    status, family = call(
        "PUT",
        f"/v1/tenants/{siret}/families/famille-0001",
        {
            "parents": [
                {"nom_naissance": "MARTIN", "prenoms": "Camille", "sexe": "F", "date_naissance": "1985-02-03"}
            ],
            "enfants": [{"nom": "MARTIN", "prenoms": "Louis", "date_naissance": "2016-09-01"}],
        },
        "agent-42",
    )
    print(status, family["user_id"], family["in_directory"])
    status, problem = call("GET", f"/v1/tenants/{siret}/families/nobody")
    print(status, problem["code"])
