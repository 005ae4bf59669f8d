"""Process-wide cache of HubEE access tokens.

A Lambda container lives for many invocations: caching the 1-hour token per subscription at
module level saves one token call per invocation and per tenant. The cache is thread-safe, on
Lambda too: within one invocation hubee_poll reaches HubEE from several worker threads
(``asyncio.to_thread`` and its thread pool). It is keyed by ``(token_url, client_id)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

TokenKey = tuple[str, str]


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float
    """Deadline on the clock of the client that fetched it, margin already deducted."""


class TokenCache:
    """Tokens by subscription, valid until shortly before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[TokenKey, AccessToken] = {}
        self._fetch_locks: dict[TokenKey, threading.Lock] = {}

    def get(self, key: TokenKey, now: float) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if now >= token.expires_at:
                del self._tokens[key]
                return None
            return token.value

    def put(self, key: TokenKey, token: AccessToken) -> None:
        with self._lock:
            self._tokens[key] = token

    def invalidate(self, key: TokenKey, value: str | None = None) -> None:
        """Forget the token of ``key`` — only if it is still ``value`` when given.

        Another thread may already have replaced a rejected token with a fresh one; that one stays.
        """
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and (value is None or current.value == value):
                del self._tokens[key]

    def fetch_lock(self, key: TokenKey) -> threading.Lock:
        """A lock per subscription so concurrent threads fetch one token, not one each."""
        with self._lock:
            return self._fetch_locks.setdefault(key, threading.Lock())

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


PROCESS_TOKEN_CACHE = TokenCache()
"""The cache every client uses unless given another one (tests)."""


def token_lifetime(expires_in: float, margin: float) -> float:
    """Seconds a token is used: ``expires_in`` minus the margin, but never under half its life."""
    return max(expires_in - margin, expires_in / 2)
