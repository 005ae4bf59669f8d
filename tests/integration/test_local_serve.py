"""`qfbridge local serve`: starts, serves the API, polls a HubEE given by URL, stops on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qfbridge_local.editor_client import EditorApiClient
from qfbridge_local.population import collectivites
from qfbridge_local.sandboxes.hubee import HubeeSandbox

REPO = Path(__file__).resolve().parents[2]


def _start(config: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "qfbridge_local.cli", "local", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "POWERTOOLS_LOG_LEVEL": "ERROR"},
    )
    assert process.stdout is not None
    api_url = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"editor API\s+(http://127\.0\.0\.1:\d+)", line)
        if match:
            api_url = match.group(1)
        if "ready" in line:
            return process, api_url
    process.kill()
    raise AssertionError("local serve did not become ready")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_local_serve_serves_the_api_polls_the_configured_hubee_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    town = collectivites(1)[0]
    with HubeeSandbox(seed=5) as hubee:
        hubee.add_subscription("serve-client", "serve-secret", [(town.siret, town.cog)])
        # Given a configuration that points HubEE at a URL (here a sandbox we started ourselves)
        config = tmp_path / "local.toml"
        config.write_text(
            "[runtime]\napi_port = 0\nsandbox_console_port = 0\npoll_interval_seconds = 0.5\nqueue_poll_interval_seconds = 0.2\n"
            f'[hubee]\nmode = "remote"\napi_url = "{hubee.api_url}"\ntoken_url = "{hubee.token_url}"\n'
        )
        process, api_url = _start(config)
        try:
            # When the editor registers its collectivité and its credentials through the served API
            with EditorApiClient(api_url) as api:
                api.call("PUT", f"/v1/tenants/{town.siret}", json_body={"name": town.name, "cog": town.cog})
                api.call(
                    "PUT",
                    f"/v1/tenants/{town.siret}/credentials",
                    json_body={"hubee_client_id": "serve-client", "hubee_client_secret": "serve-secret"},
                )
                assert api.call("GET", f"/v1/tenants/{town.siret}")["status"] == "active"
            # Then the schedules poll that HubEE
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                route.endswith("/notifications") for _method, route in hubee.calls
            ):
                time.sleep(0.2)
            assert any(route.endswith("/notifications") for _method, route in hubee.calls)
            assert process.poll() is None
        finally:
            # And a signal stops it cleanly
            process.send_signal(stop_signal)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert code == 0


def test_the_example_configuration_is_valid() -> None:
    from qfbridge_local.serve import ServeConfig

    config = ServeConfig.load(REPO / "config/local.example.toml")
    assert config.hubee.mode == "sandbox" and config.runtime.api_port == 8787
