"""The receiver examples of docs/events.md run, accept qfbridge's envelopes once each, refuse a bad key."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qfbridge.store.events import EVENT_TYPES
from qfbridge_local.webhooks import local_rules, send_samples

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs/events.md").read_text(encoding="utf-8")
KEY = "example-receiver-key"


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1, f"expected one {language} receiver in docs/events.md"
    return blocks[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["python", "javascript"])
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    if request.param == "python":
        path, command = tmp_path / "receiver.py", [sys.executable]
    else:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is needed to check the JavaScript receiver example")
        path, command = tmp_path / "receiver.mjs", [node]
    path.write_text(_block(request.param), encoding="utf-8")
    port = _free_port()
    process = subprocess.Popen(
        [*command, str(path)],
        env={"WEBHOOK_KEY": KEY, "PORT": str(port), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/events"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"the {request.param} example did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.1)
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_documented_receivers_accept_each_envelope_once_and_refuse_a_wrong_key(
    example: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = example
    rules, headers = local_rules(url, KEY)

    first = list(send_samples(rules, url, headers, max_seconds=5))
    wrong = list(send_samples(rules, url, {"X-Qfbridge-Webhook-Key": "not-the-key"}, max_seconds=0))
    rule = next(r for r in rules if r.matches({"source": "qfbridge", "detail-type": "qf.updated"}))
    repeated = httpx.post(
        url,
        content=rule.envelope_body(
            {
                "id": first[0].envelope_id,
                "detail-type": "qf.updated",
                "time": "2026-06-08T06:00:03Z",
                "detail": {"tenant_siret": "21040107100019"},
            }
        ),
        headers=headers,
    )

    assert [r.outcome for r in first] == ["delivered"] * len(EVENT_TYPES)
    assert all(r.last == "HTTP 401" for r in wrong)  # refused (and retried until our bound)
    assert repeated.status_code == 204
    process.terminate()
    out, _ = process.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines() if line.startswith("event ")]
    assert [line[3] for line in lines] == [r.envelope_id for r in first]  # the repeat processed nothing
    assert [line[1] for line in lines] == list(EVENT_TYPES)
