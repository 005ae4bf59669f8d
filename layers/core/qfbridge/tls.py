"""One TLS context per execution environment, shared by every HTTP client qfbridge builds.

An ``httpx`` client built without one creates its own and loads the CA bundle into it: ~20 ms of CPU
each time (docs/performance.md, cold request). hubee_poll built one per tick (its async client lives
for one run), reconcile and qf_refresh one each on their first request. An ``ssl.SSLContext`` is safe
to share between clients and threads.

The roots it trusts are certifi's (the layer's lock), as httpx trusts by default, but read from
``qfbridge/ca_roots``: the same certificates one per file, named by their subject's hash, which
OpenSSL reads when a chain names one instead of parsing all ~120 of them up front (~17 ms of the
first request; ``make ca-roots`` writes the directory from certifi, a test checks it). Roots whose
subjects share a hash are in ``shared-subjects.pem``, loaded up front (OpenSSL reads a hash's files
one at a time: a concurrent handshake could see the first and not the second). As with httpx,
``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` replace them (a proxy's or a sandbox's own CA).
"""

from __future__ import annotations

import os
import ssl
from functools import cache
from pathlib import Path

ROOTS = Path(__file__).resolve().parent / "ca_roots"
SHARED = "shared-subjects.pem"


def roots_context(directory: Path = ROOTS) -> ssl.SSLContext:
    """A client context trusting the roots of ``directory`` (hashed names, plus its shared-subjects file)."""
    if not any(directory.glob("*.0")):
        # OpenSSL would accept an empty or missing directory and fail every handshake after.
        raise FileNotFoundError(f"no root certificate in {directory}")
    context = ssl.create_default_context(capath=str(directory))
    if (directory / SHARED).exists():
        context.load_verify_locations(cafile=str(directory / SHARED))
    return context


@cache
def tls_context() -> ssl.SSLContext:
    """This environment's TLS context (built on first use: a function that sends no HTTPS pays nothing)."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return roots_context()
