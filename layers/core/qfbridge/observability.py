"""Powertools Logger, Metrics and Tracer, created once per process (cold start) and shared.

Service name and namespace come from the standard Powertools environment variables set in the
template's Globals. Log lines carry technical identifiers only (SIRET, case id, reference,
user id) — never identities, QF values, secrets or tokens.

The Tracer is built on first use, not at import: ``Tracer()`` imports ``aws_xray_sdk`` (and
botocore with it) and, with tracing active, patches libraries — the largest single cost of a
handler's import (see docs/performance.md). ``tracer`` offers the decorators the handlers use;
they build the real Tracer when the decorated function first runs, which is before the handler
creates its AWS and HTTP clients, so the patched libraries are traced the same. It patches the two
libraries qfbridge calls out with, ``TRACED_LIBRARIES`` (botocore for AWS, httpx for HubEE and API
Particulier), not every library X-Ray supports: trying each of those (databases, requests,
aiobotocore…) cost a cold request ~20 ms of CPU and traced nothing more. httpx is patched once
qfbridge's HTTP clients are loaded (:func:`trace_http`): patching imports the library, and the API,
which calls neither HubEE nor API Particulier, would import httpx for the tracer alone.

No lock guards that first creation: Lambda runs one invocation at a time per execution
environment, and the traced functions (handlers, SQS record handlers) run on the invocation's
thread — the worker threads of hubee_poll run no traced function.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

F = TypeVar("F", bound=Callable[..., Any])

THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer")
TRACED_LIBRARIES = ("botocore", "httpx")
"""What X-Ray patches: every AWS request (botocore) and every HubEE and API Particulier call (httpx)."""
"""Libraries that log request URLs at INFO/DEBUG: API Particulier's carry the usager's identity
in the query string (names, birth date, birthplace), HubEE's the case ids."""


class _NoThirdPartyDetail(logging.Filter):
    """Drops records below WARNING from the third-party loggers, whatever level someone set on them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_FILTER = _NoThirdPartyDetail()


def quiet_third_party_loggers() -> None:
    """Silence the request logs of HTTP/AWS libraries (Lambda sets the root logger to INFO).

    With ``LogFormat: JSON`` Lambda configures the root logger at ``ApplicationLogLevel`` (INFO by
    default), and httpx then logs every URL it requests at INFO. Their level is raised to WARNING
    and a filter keeps anything below WARNING out even if the level is lowered again. Idempotent.
    """
    for name in THIRD_PARTY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.setLevel(logging.WARNING)
        if _FILTER not in library_logger.filters:
            library_logger.addFilter(_FILTER)


quiet_third_party_loggers()

logger = Logger()
metrics = Metrics()


class LazyTracer:
    """Powertools' ``Tracer`` behind decorators that defer its creation to the first call.

    Other attributes (``put_annotation``, ``provider``…) go to the real Tracer, created on access.
    """

    def __init__(self, factory: Callable[[], Tracer] | None = None) -> None:
        self._factory = factory
        self._tracer: Tracer | None = None

    @property
    def tracer(self) -> Tracer:
        if self._tracer is None:
            if self._factory is not None:
                self._tracer = self._factory()
            else:
                from aws_lambda_powertools import Tracer

                # httpx only once loaded: trace_http() patches it if it comes later.
                loaded = tuple(lib for lib in TRACED_LIBRARIES if lib != "httpx" or lib in sys.modules)
                self._tracer = Tracer(patch_modules=loaded)
        return self._tracer

    @property
    def created(self) -> bool:
        return self._tracer is not None

    def capture_lambda_handler(
        self,
        lambda_handler: F | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Any:
        if lambda_handler is None:
            return functools.partial(
                self.capture_lambda_handler, capture_response=capture_response, capture_error=capture_error
            )
        return self._deferred(
            lambda_handler,
            lambda: self.tracer.capture_lambda_handler(
                lambda_handler, capture_response=capture_response, capture_error=capture_error
            ),
        )

    def capture_method(
        self, method: F | None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> Any:
        if method is None:
            return functools.partial(
                self.capture_method, capture_response=capture_response, capture_error=capture_error
            )
        if not _plain_function(method):
            # Generators, context managers, coroutines: Powertools picks its wrapper from the
            # function's kind; build it now rather than re-implement that choice.
            return self.tracer.capture_method(capture_response=capture_response, capture_error=capture_error)(
                method
            )
        return self._deferred(
            method,
            lambda: self.tracer.capture_method(
                capture_response=capture_response, capture_error=capture_error
            )(method),
        )

    def _deferred(self, function: F, build: Callable[[], Callable[..., Any]]) -> F:
        traced: list[Callable[..., Any]] = []

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not traced:
                traced.append(build())
            return traced[0](*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.tracer, name)


def _plain_function(function: Callable[..., Any]) -> bool:
    return not (
        inspect.iscoroutinefunction(function)
        or inspect.isgeneratorfunction(function)
        or inspect.isasyncgenfunction(function)
        or hasattr(function, "__wrapped__")  # e.g. contextlib.contextmanager
    )


tracer = LazyTracer()


def trace_http() -> None:
    """Called by qfbridge's HTTP clients as they load: their httpx calls are traced from then on —
    patched now if the Tracer exists (patching a class's methods also traces clients already built),
    else when it is built."""
    if tracer.created:
        tracer.tracer.patch(["httpx"])
