"""HubEE clients (SI side): a sync one for the Lambda handlers, an async one for the poller.

Retry policy, stated once (decisions live in ``protocol.py``):
* safe calls (GET, DELETE) are retried with exponential backoff and jitter on connection errors,
  timeouts, 5xx and 429;
* a 401 renews the token and repeats the call once, whatever its method (HubEE rejected it
  before acting on it);
* non-idempotent calls (POST an event, PATCH a status) are never repeated: when HubEE may have
  acted without us knowing, ``HubeeOutcomeUnknown`` tells the caller to read the case first.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Self, TypeVar

import httpx

from qfbridge.hubee import protocol
from qfbridge.hubee.config import HubeeConfig, HubeeCredentials
from qfbridge.hubee.errors import HubeeNotFoundError, HubeeTransitionRefused
from qfbridge.hubee.models import FORMULAIRE_QF, Case, Download, Event, EventStatus, Notification
from qfbridge.hubee.pager import NotificationPager
from qfbridge.hubee.protocol import Call, HubeeProtocol
from qfbridge.hubee.statuses import SET_BY_SI, transition_allowed
from qfbridge.hubee.tokens import PROCESS_TOKEN_CACHE, TokenCache
from qfbridge.observability import trace_http
from qfbridge.tls import tls_context

trace_http()  # this module sends with httpx: X-Ray traces its calls (qfbridge.observability)

T = TypeVar("T")


def _status_event_body(
    current_status: str, new_status: str, message: str, author: str, notification: bool
) -> dict[str, Any]:
    return {
        "actionType": "STATUS_UPDATE",
        "author": author,
        "notification": notification,
        "caseCurrentStatus": str(current_status),
        "caseNewStatus": str(new_status),
        "message": message,
    }


class HubeeClient:
    """Synchronous HubEE client for one subscription (one client id/secret)."""

    def __init__(
        self,
        config: HubeeConfig,
        credentials: HubeeCredentials,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        token_cache: TokenCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._protocol = HubeeProtocol(config, credentials, rng or random.Random())
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=config.timeout, verify=tls_context())
        self._sleep = sleep
        self._clock = clock
        self._tokens = token_cache if token_cache is not None else PROCESS_TOKEN_CACHE

    @property
    def config(self) -> HubeeConfig:
        return self._protocol.config

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- notifications ----------------------------------------------------------------------

    def list_notifications(
        self, process_code: str | None = FORMULAIRE_QF, max_result: int = 25, event_details: bool = True
    ) -> list[Notification]:
        """One page of pending notifications (order not guaranteed; redelivered until deleted)."""
        call = protocol.list_notifications_call(process_code, max_result, event_details)
        data = self._json(call)
        return self._protocol.parse_notifications(call, data, 200)

    def iter_notifications(
        self,
        process_code: str | None = FORMULAIRE_QF,
        max_result: int = 25,
        event_details: bool = True,
        max_pages: int | None = None,
    ) -> Iterator[Notification]:
        """Every pending notification once, page after page while pages are full and bring news."""
        pager = NotificationPager(max_result, max_pages or self.config.max_pages)
        while not pager.done:
            yield from pager.accept(self.list_notifications(process_code, max_result, event_details))

    def delete_notification(self, notification_id: str) -> bool:
        """Acknowledge a notification; ``False`` when it was already gone (404)."""
        try:
            self._exchange(protocol.delete_notification_call(notification_id), lambda _: None)
        except HubeeNotFoundError:
            return False
        return True

    # -- cases ------------------------------------------------------------------------------

    def get_case(self, case_id: str) -> Case:
        call = protocol.get_case_call(case_id)
        return self._model(call, Case, self._json(call))

    def download_attachment(self, case_id: str, attachment_id: str, max_bytes: int | None = None) -> Download:
        """The attachment's bytes, streamed and capped (``AttachmentTooLarge``), gunzipped if needed."""
        call = protocol.download_call(case_id, attachment_id)
        cap = max_bytes if max_bytes is not None else self.config.max_attachment_bytes

        def consume(response: httpx.Response) -> Download:
            collector = self._protocol.download_collector(call, cap, response)
            for chunk in response.iter_raw():
                collector.feed(chunk)
            return self._protocol.finish_download(call, response, collector.collected(), cap)

        return self._exchange(call, consume)

    def post_status_event(
        self,
        case_id: str,
        current_status: str,
        new_status: str,
        message: str,
        author: str | None = None,
        *,
        notification: bool = True,
    ) -> Event | None:
        """Post a STATUS_UPDATE event (what notifies the form). Never retried: not idempotent.

        Returns the created event, or ``None`` if HubEE acknowledged (201) without a readable body.
        Raises ``HubeeOutcomeUnknown`` when it may have been recorded: read the case, then decide.
        Raises ``HubeeTransitionRefused`` without calling HubEE when its status table forbids the
        transition (a repeated status included: HubEE would accept it and duplicate the history).
        """
        if not transition_allowed(str(current_status), str(new_status)):
            raise HubeeTransitionRefused(
                f"transition {current_status} -> {new_status} is not in HubEE's status table",
                method="POST",
                path_template="/cases/{caseId}/events",
            )
        body = _status_event_body(
            current_status, new_status, message, author or self.config.editor_name, notification
        )
        call = protocol.post_event_call(case_id, body)

        def consume(response: httpx.Response) -> Event | None:
            raw = response.read()
            try:
                return Event.model_validate_json(raw) if raw else None
            except ValueError:
                return None

        return self._exchange(call, consume)

    def patch_case_status(self, case_id: str, status: str) -> None:
        if str(status) not in SET_BY_SI:
            raise HubeeTransitionRefused(
                f"status {status} cannot be set by an SI", method="PATCH", path_template="/cases/{caseId}"
            )
        self._exchange(protocol.patch_case_call(case_id, str(status)), lambda _: None)

    def get_event(self, case_id: str, event_id: str) -> Event:
        call = protocol.get_event_call(case_id, event_id)
        return self._model(call, Event, self._json(call))

    def patch_event_status(self, case_id: str, event_id: str, status: str = EventStatus.RECEIVED) -> None:
        """Acknowledge an event of the form (e.g. its CLOSED)."""
        self._exchange(protocol.patch_event_call(case_id, event_id, str(status)), lambda _: None)

    # -- plumbing ---------------------------------------------------------------------------

    def _model(self, call: Call, model: Any, data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValueError:
            raise self._protocol.protocol_error(call, f"not a {model.__name__}", 200) from None

    def _json(self, call: Call) -> Any:
        def consume(response: httpx.Response) -> Any:
            collector = self._protocol.json_collector(call)
            try:
                for chunk in response.iter_bytes():
                    collector.feed(chunk)
            except httpx.DecodingError:
                raise self._protocol.protocol_error(call, "undecodable body", response.status_code) from None
            return self._protocol.decode_json(call, collector.collected(), response.status_code)

        return self._exchange(call, consume)

    def _token(self) -> str:
        key = self._protocol.token_key
        token = self._tokens.get(key, self._clock())
        if token is not None:
            return token
        with self._tokens.fetch_lock(key):
            token = self._tokens.get(key, self._clock())
            if token is not None:
                return token

            def consume(response: httpx.Response) -> protocol.AccessToken:
                return self._protocol.parse_token(response.read(), response.status_code, self._clock())

            fetched = self._exchange(protocol.TOKEN_CALL, consume)
            self._tokens.put(key, fetched)
            return fetched.value

    def _exchange(self, call: Call, consume: Callable[[httpx.Response], T]) -> T:
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            token = self._token() if call.authenticated else None
            request = self._http.build_request(**self._protocol.request_args(call, token))
            try:
                response = self._http.send(request, stream=True)
                try:
                    error_body = _read_error_body(response) if response.status_code >= 400 else b""
                    verdict = self._protocol.judge(call, response, error_body, attempt, renewed)
                    if verdict is protocol.SUCCESS:
                        return consume(response)
                finally:
                    response.close()
            except httpx.TransportError as exc:
                self._sleep(self._protocol.judge_transport(call, exc, attempt))
                continue
            if verdict is protocol.RENEW_TOKEN:
                self._tokens.invalidate(self._protocol.token_key, token)
                renewed = True
                attempt -= 1
                continue
            self._sleep(verdict.delay_s)


class AsyncHubeeClient:
    """Asynchronous HubEE client, for the poller that reads many subscriptions concurrently."""

    def __init__(
        self,
        config: HubeeConfig,
        credentials: HubeeCredentials,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        token_cache: TokenCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._protocol = HubeeProtocol(config, credentials, rng or random.Random())
        self._owns_http = http is None
        self._http = (
            http if http is not None else httpx.AsyncClient(timeout=config.timeout, verify=tls_context())
        )
        self._sleep = sleep
        self._clock = clock
        self._tokens = token_cache if token_cache is not None else PROCESS_TOKEN_CACHE
        self._fetch_lock: asyncio.Lock | None = None

    @property
    def config(self) -> HubeeConfig:
        return self._protocol.config

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def list_notifications(
        self, process_code: str | None = FORMULAIRE_QF, max_result: int = 25, event_details: bool = True
    ) -> list[Notification]:
        call = protocol.list_notifications_call(process_code, max_result, event_details)
        data = await self._json(call)
        return self._protocol.parse_notifications(call, data, 200)

    async def iter_notifications(
        self,
        process_code: str | None = FORMULAIRE_QF,
        max_result: int = 25,
        event_details: bool = True,
        max_pages: int | None = None,
    ) -> AsyncIterator[Notification]:
        pager = NotificationPager(max_result, max_pages or self.config.max_pages)
        while not pager.done:
            page = await self.list_notifications(process_code, max_result, event_details)
            for notification in pager.accept(page):
                yield notification

    async def delete_notification(self, notification_id: str) -> bool:
        async def consume(_: httpx.Response) -> None:
            return None

        try:
            await self._exchange(protocol.delete_notification_call(notification_id), consume)
        except HubeeNotFoundError:
            return False
        return True

    async def get_case(self, case_id: str) -> Case:
        call = protocol.get_case_call(case_id)
        data = await self._json(call)
        try:
            return Case.model_validate(data)
        except ValueError:
            raise self._protocol.protocol_error(call, "not a Case", 200) from None

    async def _json(self, call: Call) -> Any:
        async def consume(response: httpx.Response) -> Any:
            collector = self._protocol.json_collector(call)
            try:
                async for chunk in response.aiter_bytes():
                    collector.feed(chunk)
            except httpx.DecodingError:
                raise self._protocol.protocol_error(call, "undecodable body", response.status_code) from None
            return self._protocol.decode_json(call, collector.collected(), response.status_code)

        return await self._exchange(call, consume)

    async def _token(self) -> str:
        key = self._protocol.token_key
        token = self._tokens.get(key, self._clock())
        if token is not None:
            return token
        if self._fetch_lock is None:
            self._fetch_lock = asyncio.Lock()
        async with self._fetch_lock:
            token = self._tokens.get(key, self._clock())
            if token is not None:
                return token

            async def consume(response: httpx.Response) -> protocol.AccessToken:
                return self._protocol.parse_token(await response.aread(), response.status_code, self._clock())

            fetched = await self._exchange(protocol.TOKEN_CALL, consume)
            self._tokens.put(key, fetched)
            return fetched.value

    async def _exchange(self, call: Call, consume: Callable[[httpx.Response], Awaitable[T]]) -> T:
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            token = await self._token() if call.authenticated else None
            request = self._http.build_request(**self._protocol.request_args(call, token))
            try:
                response = await self._http.send(request, stream=True)
                try:
                    error_body = await _aread_error_body(response) if response.status_code >= 400 else b""
                    verdict = self._protocol.judge(call, response, error_body, attempt, renewed)
                    if verdict is protocol.SUCCESS:
                        return await consume(response)
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                await self._sleep(self._protocol.judge_transport(call, exc, attempt))
                continue
            if verdict is protocol.RENEW_TOKEN:
                self._tokens.invalidate(self._protocol.token_key, token)
                renewed = True
                attempt -= 1
                continue
            await self._sleep(verdict.delay_s)


def _read_error_body(response: httpx.Response) -> bytes:
    """At most ``ERROR_BODY_LIMIT`` bytes of an error answer (only its error code is used)."""
    collected = bytearray()
    try:
        for chunk in response.iter_bytes():
            collected += chunk
            if len(collected) >= protocol.ERROR_BODY_LIMIT:
                break
    except httpx.DecodingError:
        return b""
    return bytes(collected)


async def _aread_error_body(response: httpx.Response) -> bytes:
    collected = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            collected += chunk
            if len(collected) >= protocol.ERROR_BODY_LIMIT:
                break
    except httpx.DecodingError:
        return b""
    return bytes(collected)
