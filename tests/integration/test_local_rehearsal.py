"""The integrator's path on the laptop, with ``qfbridge local serve`` and only documented commands.

docs/integration.md's signing examples run against it; docs/onboarding.md's walk goes from a
collectivité's onboarding to a resolved review: the operator commands find the API through the
stack description local serve keeps in its AWS emulator, the sandboxes issue the credentials, the
form deposits dossiers, the editor watches them become linked or needs_review and resolves one.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from qfbridge.domain.siret import complete_siret

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


@dataclass
class Served:
    process: subprocess.Popen[str]
    lines: list[str]
    api_url: str
    console_url: str
    env: dict[str, str]  # the environment of a shell where the printed exports were run

    def qfbridge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "qfbridge_local.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def curl(self, method: str, path: str, body: Any = None) -> Any:
        """As docs/onboarding.md writes it: curl --aws-sigv4 with the exported credentials."""
        command = [
            "curl",
            "--fail-with-body",
            "--silent",
            "--show-error",
            "--aws-sigv4",
            f"aws:amz:{self.env['AWS_REGION']}:execute-api",
            "--user",
            f"{self.env['AWS_ACCESS_KEY_ID']}:{self.env['AWS_SECRET_ACCESS_KEY']}",
            "-X",
            method,
            f"{self.api_url}{path}",
        ]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("serve") / "local.toml"
    config.write_text(
        "[runtime]\napi_port = 0\nsandbox_console_port = 0\npoll_interval_seconds = 0.5\n"
        "queue_poll_interval_seconds = 0.2\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "qfbridge_local.cli", "local", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**clean, "POWERTOOLS_LOG_LEVEL": "ERROR"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if "ready" in line:
            break
    else:
        process.kill()
    assert lines and "ready" in lines[-1], lines
    text = "\n".join(lines)
    api_url = re.search(r"editor API\s+(http://127\.0\.0\.1:\d+)", text)
    console_url = re.search(r"sandbox console\s+(http://127\.0\.0\.1:\d+)", text)
    exports = re.search(r"operator commands\s+export (.+)$", text, re.MULTILINE)
    assert api_url and console_url and exports, text
    env = {**clean, **dict(item.split("=", 1) for item in exports.group(1).split())}
    try:
        yield Served(process, lines, api_url.group(1), console_url.group(1), env)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _siret(n: int) -> str:
    return complete_siret(f"2104011{n:06d}")


# ---------------------------------------------------------------------- docs/integration.md
def test_local_serve_prints_its_endpoints(served: Served) -> None:
    text = "\n".join(served.lines)

    for name in (
        "editor API",
        "AWS emulator (moto)",
        "HubEE sandbox",
        "API Particulier sandbox",
        "sandbox console",
    ):
        assert re.search(rf"{re.escape(name)}\s+http://127\.0\.0\.1:\d+", text), name
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:" in text


def _example_env(served: Served) -> dict[str, str]:
    return {**served.env, "QFBRIDGE_API_URL": served.api_url}


def test_the_curl_example_runs_against_local_serve(served: Served) -> None:
    assert shutil.which("curl")
    result = subprocess.run(
        ["bash", str(EXAMPLES / "sigv4_curl.sh"), _siret(1)],
        env=_example_env(served),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    created, patched, dossiers = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
    assert created["siret"] == _siret(1) and created["redirect_hosts"] == ["portail.example.fr"]
    assert patched["token_expires_on"] == "2027-06-30" and patched["redirect_hosts"] == ["portail.example.fr"]
    assert dossiers == {"items": [], "next_cursor": None}


def test_the_python_example_runs_against_local_serve(served: Served) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "sigv4_call.py"), _siret(2)],
        env=_example_env(served),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "201 awaiting_credentials",
        "201 famille-0001 True",
        "404 family_not_found",
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (>= 18) on PATH")
def test_the_node_example_runs_against_local_serve(served: Served) -> None:
    result = subprocess.run(
        ["node", str(EXAMPLES / "sigv4_call.mjs"), _siret(3)],
        env=_example_env(served),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["201 awaiting_credentials", "200 true"]


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        answer = b'{"status": "active", "items": []}'
        self.send_response(201 if self.command == "PUT" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = _record


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (>= 18) on PATH")
def test_the_node_example_signs_as_botocore_does() -> None:
    """local serve does not verify signatures: the Node signer is checked against botocore's here."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    key, secret, token = "AKIDNODEEXAMPLE", "node-secret-key", "node-session-token"
    try:
        result = subprocess.run(
            ["node", str(EXAMPLES / "sigv4_call.mjs"), _siret(4)],
            env={
                **os.environ,
                "QFBRIDGE_API_URL": f"http://127.0.0.1:{server.server_address[1]}",
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_SESSION_TOKEN": token,
                "AWS_REGION": "eu-west-3",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert len(_Recorder.seen) == 2  # a PUT with a body, a GET with a query string
    for method, path, headers, body in _Recorder.seen:
        authorization = headers["authorization"]
        signed = re.search(r"SignedHeaders=([^,]+)", authorization)
        assert signed is not None
        names = signed.group(1).split(";")
        assert {"host", "x-amz-date", "x-amz-security-token"} <= set(names)
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{path}",
            data=body,
            headers={n: headers[n] for n in names},
        )
        auth = SigV4Auth(Credentials(key, secret, token), "execute-api", "eu-west-3")
        request.context["timestamp"] = headers["x-amz-date"]
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        assert authorization.endswith(f"Signature={expected}"), (method, path)


def test_integration_md_shows_the_examples_the_tests_run() -> None:
    document = (REPO / "docs" / "integration.md").read_text(encoding="utf-8")

    for example in ("sigv4_curl.sh", "sigv4_call.py", "sigv4_call.mjs"):
        assert (EXAMPLES / example).read_text(encoding="utf-8").rstrip() in document, example
    assert "execute-api:Invoke" in document and "/v1/tenants/21040107100019/*" in document


# ---------------------------------------------------------------------- docs/onboarding.md
FAMILIES_CSV = (
    "user_id;parent1_nom_naissance;parent1_prenoms;parent1_sexe;parent1_date_naissance;"
    "enfant1_prenoms;enfant1_nom;enfant1_date_naissance\n"
    "famille-1;MARTIN;Camille;F;03/02/1985;Louis;MARTIN;01/09/2016\n"
    "famille-2;BERNARD;Paul;M;12/11/1979;Jeanne;BERNARD;15/05/2014\n"
)
STRANGER = {
    "parents": [{"nom_naissance": "PETIT", "prenoms": "Nadia", "sexe": "F", "date_naissance": "1990-07-14"}],
    "enfants": [{"nom": "PETIT", "prenoms": "Ines", "date_naissance": "2019-03-02"}],
}


def test_onboarding_md_describes_the_walk_the_test_runs() -> None:
    document = (REPO / "docs" / "onboarding.md").read_text(encoding="utf-8")
    walk = document[document.index("## Rehearsing intake on the laptop") :]
    siret = _siret(10)

    for line in FAMILIES_CSV.splitlines():
        assert line in walk, line
    flat = " ".join(walk.split())
    assert json.dumps(STRANGER["parents"][0]) in flat
    for step in (
        "qfbridge local serve --config config/local.example.toml",
        f"{siret};Commune de Forcalquier;04088",
        "qfbridge tenants onboard tenants.csv",
        f"qfbridge local credentials {siret} --cog 04088 --json",
        f"/v1/tenants/{siret}/credentials --data @credentials.json",
        f"qfbridge directory import {siret} families.csv",
        """/form-links --data '{"user_id": "famille-1"}'""",
        f"qfbridge local deposit {siret} --external-id",
        "--qf 640",
        f"qfbridge local deposit {siret} --family stranger.json --qf 910",
        f"qfbridge dossiers review {siret}",
        """--data '{"decision": "link", "user_id": "famille-2"}'""",
        f"/v1/tenants/{siret}/families/famille-2",
    ):
        assert step in flat, step


def test_walk_from_onboarding_to_a_resolved_review(served: Served, tmp_path: Path) -> None:
    siret = _siret(10)
    # 1. The collectivité, from a CSV file as an office exports it (; separated, UTF-8 with BOM),
    #    by an operator command that finds the API in the stack local serve describes.
    tenants = tmp_path / "tenants.csv"
    tenants.write_bytes(codecs.BOM_UTF8 + f"siret;name;cog\n{siret};Commune de Forcalquier;04088\n".encode())
    served.qfbridge("tenants", "onboard", str(tenants))
    # 2. Its credentials: issued by the sandboxes, stored through the API.
    credentials = json.loads(
        served.qfbridge(
            "local", "credentials", siret, "--cog", "04088", "--sandbox-url", served.console_url, "--json"
        ).stdout
    )
    assert served.curl("PUT", f"/v1/tenants/{siret}/credentials", credentials) is None
    assert served.curl("GET", f"/v1/tenants/{siret}")["status"] == "active"
    # 3. The directory: two families.
    directory = tmp_path / "families.csv"
    directory.write_text(FAMILIES_CSV, encoding="cp1252")
    served.qfbridge("directory", "import", siret, str(directory))
    # 4. A parent comes through the editor's portal with a form link; a stranger through the counter.
    link = served.curl("POST", f"/v1/tenants/{siret}/form-links", {"user_id": "famille-1"})
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps(STRANGER))
    linked = json.loads(
        served.qfbridge(
            "local", "deposit", siret, "--external-id", link["external_id"], "--qf", "640",
            "--sandbox-url", served.console_url, "--json",
        ).stdout
    )  # fmt: skip
    review = json.loads(
        served.qfbridge(
            "local", "deposit", siret, "--family", str(stranger), "--qf", "910",
            "--sandbox-url", served.console_url, "--json",
        ).stdout
    )  # fmt: skip
    # 5. The schedules poll the HubEE sandbox; the editor watches the outcomes.
    deadline = time.monotonic() + 90
    waiting: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        waiting = json.loads(served.qfbridge("dossiers", "review", siret, "--json").stdout)
        first = served.curl("GET", f"/v1/tenants/{siret}/dossiers")["items"]
        if waiting and any(d["reference"] == linked["reference"] and d["status"] == "linked" for d in first):
            break
        time.sleep(1)
    assert [d["reference"] for d in waiting] == [review["reference"]]
    by_link = served.curl("GET", f"/v1/tenants/{siret}/dossiers/{linked['reference']}")
    assert by_link["status"] == "linked" and by_link["link_method"] == "external_id"
    assert by_link["user_id"] == "famille-1"
    # 6. An agent looks at the dossier in review and links it to the family it belongs to.
    detail = served.curl("GET", f"/v1/tenants/{siret}/dossiers/{review['reference']}")
    assert detail["status"] == "needs_review" and detail["dossier_data"] is not None
    resolved = served.curl(
        "POST",
        f"/v1/tenants/{siret}/dossiers/{review['reference']}/resolve",
        {"decision": "link", "user_id": "famille-2"},
    )
    assert resolved["status"] == "linked" and resolved["user_id"] == "famille-2"
    family = served.curl("GET", f"/v1/tenants/{siret}/families/famille-2")
    assert family["quotient_familial"]["quotient_familial"] == 910
    assert (
        served.curl("GET", f"/v1/tenants/{siret}/families/famille-1")["quotient_familial"][
            "quotient_familial"
        ]
        == 640
    )
    assert json.loads(served.qfbridge("dossiers", "review", siret, "--json").stdout) == []
