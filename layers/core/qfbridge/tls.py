"""One TLS context per execution environment, shared by every HTTP client qfbridge builds.

An ``httpx`` client built without one creates its own and loads the CA bundle into it: ~20 ms of CPU
each time (docs/performance.md, cold request). hubee_poll built one per tick (its async client lives
for one run), reconcile and qf_refresh one each on their first request. An ``ssl.SSLContext`` is safe
to share between clients and threads; this one is what httpx itself builds by default
(``httpx.create_ssl_context()``: certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


@cache
def tls_context() -> ssl.SSLContext:
    """This environment's TLS context (built on first use: a function that sends no HTTPS pays nothing)."""
    import httpx

    return httpx.create_ssl_context()
