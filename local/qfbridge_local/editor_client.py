"""A client of the editor API that signs its requests with SigV4, as the editor's software must.

Used by the demo and ``local serve`` against the laptop runtime, and by the operator commands
against a deployed stack (standard AWS profile and region; service ``execute-api``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # httpx and botocore load on first use: the operator commands start fast
    import httpx
    from botocore.credentials import Credentials

LOCAL_REGION = "eu-west-3"
LOCAL_CREDENTIALS = ("testing", "testing")
"""What the laptop runtime accepts (any SigV4-signed request); the operator commands pass real ones.
Kept here rather than imported from the runtime: the operator commands must not load moto."""


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        code = body.get("code") if isinstance(body, dict) else None
        super().__init__(f"HTTP {status} {code or ''}".strip())
        self.status = status
        self.body = body


class EditorApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        region: str = LOCAL_REGION,
        agent_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        import httpx
        from botocore.credentials import Credentials

        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or Credentials(*LOCAL_CREDENTIALS)
        self.region = region
        self.agent_id = agent_id
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EditorApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        import httpx
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.base_url + path
        if params:
            query = str(httpx.QueryParams({k: v for k, v in params.items() if v is not None}))
            if query:
                url += "?" + query
        data = json.dumps(json_body).encode() if json_body is not None else b""
        all_headers = {"Content-Type": "application/json", "Host": urlsplit(url).netloc, **(headers or {})}
        if self.agent_id:
            all_headers["X-Agent-Id"] = self.agent_id
        request = AWSRequest(method=method, url=url, data=data, headers=all_headers)
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(request)
        return self.http.request(method, url, content=data or None, headers=dict(request.headers.items()))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise ApiError(response.status_code, body)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json") or response.headers.get(
            "content-type", ""
        ).startswith("application/problem+json"):
            return response.json()
        return response.content
