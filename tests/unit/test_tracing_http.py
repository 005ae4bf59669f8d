"""X-Ray traces the HTTP calls of qfbridge's clients however the tracer and the clients are loaded,
and a function that loads no HTTP client (the API) does not import httpx for its tracer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[2] / "layers" / "core"

_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from qfbridge.observability import tracer
order = sys.argv[2]
if order == "client_first":
    import qfbridge.hubee.client
tracer.tracer  # what a handler's first traced call builds
after_tracer = "httpx" in sys.modules
if order == "tracer_first":
    import qfbridge.api_particulier.client
from aws_xray_sdk.core.patcher import _PATCHED_MODULES
print(json.dumps({"httpx_at_tracer": after_tracer, "patched": sorted(_PATCHED_MODULES)}))
"""


def _probe(order: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "POWERTOOLS_TRACE_DISABLED"} | {
        "AWS_LAMBDA_FUNCTION_NAME": "probe",
        "LAMBDA_TASK_ROOT": str(LAYER),  # tracing on, as on Lambda
        "AWS_REGION": "eu-west-3",
    }
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, str(LAYER), order],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("order", ["client_first", "tracer_first"])
def test_httpx_is_traced_whether_the_tracer_or_the_client_loads_first(order: str) -> None:
    assert _probe(order)["patched"] == ["botocore", "httpx"]


def test_a_tracer_built_before_any_http_client_imports_no_httpx() -> None:
    assert _probe("none")["httpx_at_tracer"] is False
    assert _probe("none")["patched"] == ["botocore"]
