"""Serve the api function over HTTP as API Gateway (REST, proxy integration, AWS_IAM auth) does.

Each request becomes a REST API proxy event (payload format 1.0) for the ``/{proxy+}`` resource of
the template; the function's answer becomes the HTTP response. AWS_IAM authorization is emulated:
a request must carry a SigV4 ``Authorization`` header (API Gateway answers 403 otherwise); the
access key it names becomes the calling principal in ``requestContext.identity``. Signatures are
not verified locally — the laptop runtime has no IAM.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .aws import LOOPBACK
from .lambdas import LocalFunction
from .template import LOCAL_ACCOUNT_ID

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's hard limit
GATEWAY_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})  # what ANY covers
_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=([A-Z0-9a-z]+)/")


def principal_for(authorization: str | None) -> dict[str, str] | None:
    if not authorization:
        return None
    match = _SIGV4.match(authorization)
    if not match:
        return None
    access_key = match.group(1)
    user = f"editor-{access_key.lower()}"
    return {
        "accessKey": access_key,
        "accountId": LOCAL_ACCOUNT_ID,
        "caller": access_key,
        "user": access_key,
        "userArn": f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:user/{user}",
    }


def build_event(
    method: str,
    raw_path: str,
    headers: dict[str, list[str]],
    body: bytes,
    stage: str,
    identity: dict[str, str],
) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    text_body: str | None
    is_base64 = False
    if not body:
        text_body = None
    else:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text_body = base64.b64encode(body).decode()
            is_base64 = True
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "resourceId": "local",
            "httpMethod": method,
            "path": f"/{stage}{parts.path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": str(uuid.uuid4()),
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "domainName": LOCAL_ACCOUNT_ID,
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {
                **identity,
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", [""])[-1],
            },
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


class ApiAdapter:
    """A ThreadingHTTPServer on 127.0.0.1 in front of the api function."""

    def __init__(self, function: LocalFunction, *, stage: str = "local", port: int = 0) -> None:
        self.function = function
        self.stage = stage
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                if self.command not in GATEWAY_METHODS:
                    # Outside what an ANY method covers: API Gateway matches no method and refuses.
                    self._reply(
                        403,
                        {
                            "Content-Type": "application/json",
                            "x-amzn-ErrorType": "MissingAuthenticationTokenException",
                        },
                        json.dumps({"message": "Missing Authentication Token"}).encode(),
                    )
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_PAYLOAD_BYTES:
                    self._reply(
                        413,
                        {"Content-Type": "application/json"},
                        json.dumps({"message": "Request Too Long"}).encode(),
                    )
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                identity = principal_for(self.headers.get("Authorization"))
                if identity is None:
                    self._reply(
                        403,
                        {
                            "Content-Type": "application/json",
                            "x-amzn-ErrorType": "MissingAuthenticationTokenException",
                        },
                        json.dumps({"message": "Missing Authentication Token"}).encode(),
                    )
                    return
                event = build_event(self.command, self.path, headers, body, adapter.stage, identity)
                try:
                    result = adapter.function.invoke(event)
                except Exception:
                    self._reply(
                        502,
                        {"Content-Type": "application/json"},
                        json.dumps({"message": "Internal server error"}).encode(),
                    )
                    return
                status = int(result.get("statusCode", 200))
                out_headers = dict(result.get("headers") or {})
                for key, values in (result.get("multiValueHeaders") or {}).items():
                    out_headers[key] = values[-1] if isinstance(values, list) else values
                payload = result.get("body") or ""
                data = base64.b64decode(payload) if result.get("isBase64Encoded") else str(payload).encode()
                self._reply(status, out_headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, str(value))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, QUERY…) reaches _handle too, which refuses it as API Gateway does.
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

        self._server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-adapter", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.bound_address
        return f"http://{host}:{port}"

    @property
    def bound_address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> ApiAdapter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
