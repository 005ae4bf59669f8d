"""The HubEE protocol without I/O: what to send, and what an answer means.

The sync and the async clients only move bytes; every decision (headers, retry or not, which
error, how to decode) is taken here, once, so both clients behave identically.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from qfbridge.hubee.config import HubeeConfig, HubeeCredentials
from qfbridge.hubee.errors import (
    AttachmentTooLarge,
    HubeeAuthError,
    HubeeBadRequestError,
    HubeeError,
    HubeeForbiddenError,
    HubeeNotFoundError,
    HubeeOutcomeUnknown,
    HubeeProtocolError,
    HubeeServerError,
    HubeeTransportError,
)
from qfbridge.hubee.models import Download, Notification
from qfbridge.hubee.tokens import AccessToken, TokenKey, token_lifetime

logger = logging.getLogger("qfbridge.hubee")

GZIP_MAGIC = b"\x1f\x8b"
ERROR_BODY_LIMIT = 64 * 1024
TOKEN_TEMPLATE = "{token_url}"  # noqa: S105 - a path template, not a secret
_TOKEN_FORM = b"grant_type=client_credentials&scope=SI"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Transport failures that happen before a single byte of the request left: nothing took effect."""


@dataclass(frozen=True)
class Call:
    """One HubEE operation, described once and sent by either client."""

    method: str
    template: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] | None = None
    json_body: Any = None
    safe: bool = True
    """May be repeated without changing the outcome (GET, DELETE)."""
    kind: Literal["api", "token", "download"] = "api"

    @property
    def authenticated(self) -> bool:
        return self.kind != "token"

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


def list_notifications_call(process_code: str | None, max_result: int, event_details: bool) -> Call:
    if max_result < 1:
        raise ValueError("max_result must be at least 1")
    query = {"maxResult": str(max_result)}
    if process_code is not None:
        query["processCode"] = process_code
    if event_details:
        query["eventDetails"] = "true"
    return Call("GET", "/notifications", query=query)


def delete_notification_call(notification_id: str) -> Call:
    return Call("DELETE", "/notifications/{notificationId}", {"notificationId": notification_id})


def get_case_call(case_id: str) -> Call:
    return Call("GET", "/cases/{caseId}", {"caseId": case_id})


def patch_case_call(case_id: str, status: str) -> Call:
    return Call("PATCH", "/cases/{caseId}", {"caseId": case_id}, json_body={"status": status}, safe=False)


def download_call(case_id: str, attachment_id: str) -> Call:
    return Call(
        "GET",
        "/cases/{caseId}/attachments/{attachmentId}",
        {"caseId": case_id, "attachmentId": attachment_id},
        kind="download",
    )


def post_event_call(case_id: str, body: Mapping[str, Any]) -> Call:
    return Call("POST", "/cases/{caseId}/events", {"caseId": case_id}, json_body=dict(body), safe=False)


def get_event_call(case_id: str, event_id: str) -> Call:
    return Call("GET", "/cases/{caseId}/events/{eventId}", {"caseId": case_id, "eventId": event_id})


def patch_event_call(case_id: str, event_id: str, status: str) -> Call:
    return Call(
        "PATCH",
        "/cases/{caseId}/events/{eventId}",
        {"caseId": case_id, "eventId": event_id},
        json_body={"status": status},
        safe=False,
    )


TOKEN_CALL = Call("POST", TOKEN_TEMPLATE, kind="token", safe=True)
"""Asking for a token twice has no effect beyond a second token: safe to retry."""


_ERROR_BY_STATUS: dict[int, type[HubeeError]] = {
    400: HubeeBadRequestError,
    401: HubeeAuthError,
    403: HubeeForbiddenError,
    404: HubeeNotFoundError,
}


@dataclass(frozen=True)
class Verdict:
    kind: Literal["success", "renew_token", "retry"]
    delay_s: float = 0.0


SUCCESS = Verdict("success")
RENEW_TOKEN = Verdict("renew_token")


class BodyCollector:
    """Accumulates a streamed body and fails as soon as it grows beyond ``limit``."""

    def __init__(self, limit: int, too_large: HubeeError) -> None:
        self._limit = limit
        self._too_large = too_large
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise self._too_large
        self._chunks.append(chunk)

    def collected(self) -> bytes:
        return b"".join(self._chunks)


class HubeeProtocol:
    """Request building and answer interpretation shared by ``HubeeClient`` and ``AsyncHubeeClient``."""

    def __init__(self, config: HubeeConfig, credentials: HubeeCredentials, rng: random.Random) -> None:
        self.config = config
        self._credentials = credentials
        self._rng = rng

    @property
    def token_key(self) -> TokenKey:
        return (self.config.token_url, self._credentials.client_id)

    # -- requests ---------------------------------------------------------------------------

    def request_args(self, call: Call, token: str | None) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.build_request`` for ``call``."""
        if call.kind == "token":
            return self._token_request_args()
        if token is None:
            raise ValueError("an API call needs a token")
        params = {name: quote(value, safe="") for name, value in call.path_params.items()}
        if any(not value for value in params.values()):
            raise ValueError(f"empty identifier in {call.label}")
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/octet-stream, */*" if call.kind == "download" else "application/json",
            "Accept-Encoding": "gzip",
            "editorName": self.config.editor_name,
            "applicationName": self.config.application_name,
            "softwareVersion": self.config.software_version,
            "User-Agent": f"{self.config.application_name}/{self.config.software_version}",
        }
        args: dict[str, Any] = {
            "method": call.method,
            "url": self.config.api_root + call.template.format(**params),
            "headers": headers,
            "timeout": self.config.timeout,
        }
        if call.query is not None:
            args["params"] = dict(call.query)
        if call.json_body is not None:
            args["json"] = call.json_body
        return args

    def _token_request_args(self) -> dict[str, Any]:
        secret = self._credentials.client_secret.get_secret_value()
        basic = base64.b64encode(f"{self._credentials.client_id}:{secret}".encode()).decode("ascii")
        return {
            "method": "POST",
            "url": self.config.token_url,
            "headers": {
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": f"{self.config.application_name}/{self.config.software_version}",
            },
            "content": _TOKEN_FORM,
            "timeout": self.config.timeout,
        }

    # -- answers ----------------------------------------------------------------------------

    def judge(
        self, call: Call, response: httpx.Response, error_body: bytes, attempt: int, renewed: bool
    ) -> Verdict:
        """What to do with an answer to the ``attempt``-th try of ``call`` (raises when it is final)."""
        status = response.status_code
        if 200 <= status < 300:
            return SUCCESS
        if status == 401 and call.authenticated and not renewed:
            return RENEW_TOKEN
        retry_after = _retry_after_s(response)
        transient = status >= 500 or status == 429
        patient_enough = retry_after is None or retry_after <= self.config.backoff_max_s
        if transient and call.safe and attempt < self.config.retry_attempts and patient_enough:
            return Verdict("retry", max(self.backoff_s(attempt), retry_after or 0.0))
        raise self.error_for(call, status, _hubee_code(error_body), retry_after)

    def judge_transport(self, call: Call, exc: httpx.TransportError, attempt: int) -> float:
        """Delay before retrying after a transport failure, or the error to raise."""
        cause = type(exc).__name__
        if call.safe:
            if attempt < self.config.retry_attempts:
                return self.backoff_s(attempt)
            raise HubeeTransportError(
                f"HubEE unreachable ({cause}) after {attempt} attempts; call={call.label}",
                method=call.method,
                path_template=call.template,
            ) from exc
        if isinstance(exc, _NOT_SENT):
            raise HubeeTransportError(
                f"HubEE unreachable ({cause}), the request was not sent; call={call.label}",
                method=call.method,
                path_template=call.template,
            ) from exc
        raise HubeeOutcomeUnknown(
            f"HubEE did not answer ({cause}): the call may have taken effect; call={call.label}",
            method=call.method,
            path_template=call.template,
        ) from exc

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def error_for(
        self, call: Call, status: int, hubee_code: int | None, retry_after: float | None
    ) -> HubeeError:
        transient = status >= 500 or status == 429
        message = ""
        cls: type[HubeeError]
        if call.kind == "token" and status in (400, 401, 403):
            cls, message = HubeeAuthError, "HubEE token endpoint refused the client credentials"
        elif call.kind == "token" and not transient:
            cls = HubeeAuthError
        elif status >= 500 and not call.safe:
            cls = HubeeOutcomeUnknown
        elif transient:
            return HubeeServerError(
                retry_after_s=retry_after,
                status=status,
                hubee_code=hubee_code,
                method=call.method,
                path_template=call.template,
            )
        else:
            cls = _ERROR_BY_STATUS.get(status, HubeeError)
        return cls(
            message, status=status, hubee_code=hubee_code, method=call.method, path_template=call.template
        )

    def protocol_error(self, call: Call, detail: str, status: int | None = None) -> HubeeProtocolError:
        return HubeeProtocolError(
            f"HubEE answer breaks the contract ({detail}); call={call.label}; http_status={status}",
            status=status,
            method=call.method,
            path_template=call.template,
        )

    def json_collector(self, call: Call) -> BodyCollector:
        return BodyCollector(self.config.max_json_bytes, self.protocol_error(call, "JSON answer too large"))

    def decode_json(self, call: Call, body: bytes, status: int) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise self.protocol_error(call, "unparsable JSON", status) from None

    def parse_token(self, body: bytes, status: int, now: float) -> AccessToken:
        data = self.decode_json(TOKEN_CALL, body, status)
        if not isinstance(data, dict):
            raise self.protocol_error(TOKEN_CALL, "token answer is not an object", status)
        value = data.get("access_token")
        token_type = str(data.get("token_type", "Bearer")).lower()
        expires_in = data.get("expires_in", 3600)
        if not isinstance(value, str) or not value or token_type != "bearer":  # noqa: S105
            raise self.protocol_error(TOKEN_CALL, "no bearer access_token", status)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            raise self.protocol_error(TOKEN_CALL, "invalid expires_in", status) from None
        if lifetime <= 0:
            raise self.protocol_error(TOKEN_CALL, "invalid expires_in", status)
        return AccessToken(value, now + token_lifetime(lifetime, self.config.token_expiry_margin_s))

    def parse_notifications(self, call: Call, data: Any, status: int) -> list[Notification]:
        if not isinstance(data, list):
            raise self.protocol_error(call, "notification list is not an array", status)
        notifications: list[Notification] = []
        for item in data:
            try:
                notifications.append(Notification.model_validate(item))
            except ValidationError:
                # Skipped rather than blocking every later dossier; HubEE redelivers it anyway.
                logger.warning("hubee notification skipped: does not match the contract")
        return notifications

    # -- attachments ------------------------------------------------------------------------

    def download_collector(self, call: Call, max_bytes: int, response: httpx.Response) -> BodyCollector:
        """Caps the bytes read off the wire (a gzip body may be slightly larger than its content)."""
        limit = max_bytes + max_bytes // 64 + 1024
        too_large = AttachmentTooLarge(
            max_bytes=max_bytes, status=response.status_code, method=call.method, path_template=call.template
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        return BodyCollector(limit, too_large)

    def finish_download(self, call: Call, response: httpx.Response, raw: bytes, max_bytes: int) -> Download:
        """Decodes gzip (announced or not) within ``max_bytes`` and pairs the bytes with their digest."""
        too_large = AttachmentTooLarge(
            max_bytes=max_bytes, status=response.status_code, method=call.method, path_template=call.template
        )
        digest = response.headers.get("digest")
        declared = response.headers.get("content-encoding", "")
        encodings = [e.strip().lower() for e in declared.split(",") if e.strip()]
        if any(e not in ("gzip", "x-gzip", "identity") for e in encodings):
            raise self.protocol_error(call, "unsupported Content-Encoding", response.status_code)
        body = raw
        for _ in range(sum(e in ("gzip", "x-gzip") for e in encodings)):
            decoded = _gunzip_capped(body, max_bytes, too_large)
            if decoded is None:
                raise self.protocol_error(call, "invalid gzip body", response.status_code)
            body = decoded
        undecoded_sha256 = None
        if body.startswith(GZIP_MAGIC):
            decoded = _gunzip_capped(body, max_bytes, too_large)
            if decoded is not None:
                undecoded_sha256 = hashlib.sha256(body).digest()
                body = decoded
        if len(body) > max_bytes:
            raise too_large
        return Download(content=body, digest=digest, undecoded_sha256=undecoded_sha256)


def _gunzip_capped(data: bytes, limit: int, too_large: HubeeError) -> bytes | None:
    """Gunzips every member of ``data`` without ever holding more than ``limit + 1`` output bytes.

    ``None`` when ``data`` is not valid gzip. A decompression bomb stops at the cap.
    """
    out = bytearray()
    remaining = data
    try:
        while remaining:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += inflater.decompress(remaining, limit + 1 - len(out))
            if len(out) > limit:
                raise too_large
            if not inflater.eof:
                return None
            remaining = inflater.unused_data
            if remaining and not remaining.startswith(GZIP_MAGIC):
                break  # trailing padding after the last member
    except zlib.error:
        return None
    return bytes(out)


def _hubee_code(body: bytes) -> int | None:
    """The ``code`` of the first item of a swagger ``Error`` body, when there is one."""
    try:
        data = json.loads(body)
        code = data["errors"][0]["code"]
        return int(code)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError):
        return None


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
