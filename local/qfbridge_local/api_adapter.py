"""Serve the api function over HTTP as API Gateway (REST, proxy integration, AWS_IAM auth) does.

Each request becomes a REST API proxy event (payload format 1.0) for the ``/{proxy+}`` resource of
the template; the function's answer becomes the HTTP response. AWS_IAM authorization is emulated:
a request must carry a SigV4 ``Authorization`` header (API Gateway answers 403 otherwise); the
access key it names becomes the calling principal in ``requestContext.identity``. Signatures are
not verified locally — the laptop runtime has no IAM.

What API Gateway applies is applied here, from the template's ``AWS::Serverless::Api``:
* a request body is base64-encoded (``isBase64Encoded``) only when its ``Content-Type`` matches one of
  the API's ``BinaryMediaTypes``; a base64 response is decoded only when the request's ``Accept``
  matches one — otherwise the client receives the base64 text, as from API Gateway;
* payloads: 10 MB at the gateway, 6 MB for the Lambda invocation (request event and response);
* the 29 s integration timeout (on the runtime's clock), then ``504``;
* gateway-generated errors use the template's ``GatewayResponses`` (status, headers, body template),
  else API Gateway's defaults.
Concurrent requests run in the api function's execution environments, one request per environment
at a time (``lambdas.py``), as Lambda runs them: never two requests in one resolver at once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .aws import LOOPBACK
from .clock import RuntimeClock
from .lambdas import FunctionTimeout, LocalFunction
from .template import LOCAL_ACCOUNT_ID, ApiSpec

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's hard limit
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024  # a synchronous invocation's request and response
INTEGRATION_TIMEOUT_S = 29  # API Gateway's default (and maximum by default) integration timeout

# API Gateway's own responses: type -> (status, message); DEFAULT_4XX / DEFAULT_5XX stand behind.
GATEWAY_DEFAULTS: dict[str, tuple[int, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (502, "Internal server error"),
}
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


def gateway_response(api: ApiSpec, response_type: str, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """A gateway-generated response: the template's customisation, else API Gateway's default."""
    status, message = GATEWAY_DEFAULTS[response_type]
    family = "DEFAULT_4XX" if status < 500 else "DEFAULT_5XX"
    custom = api.gateway_responses.get(response_type) or api.gateway_responses.get(family)
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": _error_type(response_type)}
    body = json.dumps({"message": message})
    if custom is not None:
        status = custom.status_code or status
        headers.update(custom.headers)
        template = custom.templates.get("application/json")
        if template is not None:
            body = (
                template.replace("$context.error.messageString", json.dumps(message))
                .replace("$context.error.message", message)
                .replace("$context.requestId", request_id)
                .replace("$context.error.responseType", response_type)
            )
    return status, headers, body.encode()


def _error_type(response_type: str) -> str:
    return {
        "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
        "REQUEST_TOO_LARGE": "RequestTooLargeException",
        "INTEGRATION_TIMEOUT": "InternalServerErrorException",
        "INTEGRATION_FAILURE": "InternalServerErrorException",
    }[response_type]


def first_media_type(header: str | None) -> str | None:
    if not header:
        return None
    return header.split(",", 1)[0].split(";", 1)[0].strip() or None


def build_event(
    method: str,
    raw_path: str,
    headers: dict[str, list[str]],
    body: bytes,
    stage: str,
    identity: dict[str, str],
    api: ApiSpec | None = None,
) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    text_body: str | None
    is_base64 = False
    content_type = headers["content-type"][-1] if headers.get("content-type") else None
    if not body:
        text_body = None
    elif api is not None and api.is_binary(content_type):
        text_body = base64.b64encode(body).decode()
        is_base64 = True
    else:
        # A media type that is not binary reaches the function as text (bytes that are not UTF-8
        # do not survive, as through API Gateway).
        text_body = body.decode("utf-8", errors="replace")
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

    def __init__(
        self,
        function: LocalFunction,
        *,
        stage: str = "local",
        port: int = 0,
        api: ApiSpec | None = None,
        clock: RuntimeClock | None = None,
    ) -> None:
        self.function = function
        self.stage = stage
        self.api = api or ApiSpec("none")
        self.clock = clock or function.clock
        # Threads that wait for the integration; the invocation itself runs in an environment.
        self._integrations = ThreadPoolExecutor(max_workers=32, thread_name_prefix="api-integration")
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _gateway(self, response_type: str, request_id: str) -> None:
                self._reply(*gateway_response(adapter.api, response_type, request_id))

            def _handle(self) -> None:
                request_id = str(uuid.uuid4())
                if self.command not in GATEWAY_METHODS:
                    # Outside what an ANY method covers: API Gateway matches no method and refuses.
                    self._gateway("MISSING_AUTHENTICATION_TOKEN", request_id)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_PAYLOAD_BYTES:
                    self._gateway("REQUEST_TOO_LARGE", request_id)
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                identity = principal_for(self.headers.get("Authorization"))
                if identity is None:
                    self._gateway("MISSING_AUTHENTICATION_TOKEN", request_id)
                    return
                event = build_event(
                    self.command, self.path, headers, body, adapter.stage, identity, adapter.api
                )
                event["requestContext"]["requestId"] = request_id
                if len(json.dumps(event).encode()) > LAMBDA_PAYLOAD_BYTES:
                    self._gateway("REQUEST_TOO_LARGE", request_id)  # Lambda refuses the invocation
                    return
                integration = adapter._integrations.submit(adapter.function.invoke, event)
                try:
                    result = integration.result(timeout=adapter.clock.real_seconds(INTEGRATION_TIMEOUT_S))
                except FutureTimeout:
                    self._gateway("INTEGRATION_TIMEOUT", request_id)
                    return
                except FunctionTimeout:
                    self._gateway("INTEGRATION_TIMEOUT", request_id)
                    return
                except Exception:
                    self._gateway("INTEGRATION_FAILURE", request_id)
                    return
                if not isinstance(result, dict) or len(json.dumps(result).encode()) > LAMBDA_PAYLOAD_BYTES:
                    self._gateway("INTEGRATION_FAILURE", request_id)  # malformed or too large
                    return
                status = int(result.get("statusCode", 200))
                out_headers = dict(result.get("headers") or {})
                for key, values in (result.get("multiValueHeaders") or {}).items():
                    out_headers[key] = values[-1] if isinstance(values, list) else values
                payload = result.get("body") or ""
                accept = first_media_type(self.headers.get("Accept"))
                if result.get("isBase64Encoded") and adapter.api.is_binary(accept):
                    data = base64.b64decode(payload)
                else:
                    data = str(payload).encode()
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
        self._integrations.shutdown(wait=False, cancel_futures=True)
