"""The laptop runtime: moto + the template's resources + the real handlers + triggers + sandboxes.

    with LocalRuntime.start() as rt:
        rt.api_url            # the editor API, as API Gateway would serve it
        rt.poll()             # fire hubee_poll's and refresh_dispatch's schedules
        rt.drain()            # run the SQS mappings until the queues are empty

Handlers reach moto through the standard AWS configuration (``AWS_ENDPOINT_URL`` and friends);
there is no "local mode" branch in Lambda code. Environment variables are those the template gives
the functions, with the local physical names, plus the overrides of the runtime configuration
(HubEE and API Particulier URLs pointing at the sandboxes, short retry delays).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qfbridge.clock import current_source, use_source

from .api_adapter import ApiAdapter
from .aws import MotoServer, aws_environment, client, provision
from .clock import RuntimeClock, install_sqs_clock
from .lambdas import Isolation, LocalFunction
from .template import DEFAULT_TEMPLATE, Stack, resolve_stack
from .triggers import DEFAULT_SQS_CONCURRENCY, TriggerEmulator
from .webhooks import WebhookDelivery, WebhookSettings

if TYPE_CHECKING:
    from qfbridge.services.editor import EditorService

API_FUNCTION = "ApiFunction"
POLL_FUNCTION = "HubeePollFunction"
REFRESH_DISPATCH_FUNCTION = "RefreshDispatchFunction"
TOKEN_WATCH_FUNCTION = "TokenWatchFunction"  # noqa: S105 - a function name, not a secret


@dataclass
class RuntimeOptions:
    template: Path = DEFAULT_TEMPLATE
    stage: str = "dev"
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    env_overrides: dict[str, str] = field(default_factory=dict)
    serve_api: bool = True
    api_port: int = 0
    webhook: WebhookSettings | None = (
        None  # deliver the events to this local URL, as the template's webhook rules do
    )
    # The clock of every emulated timer (clock.py): its speed, and whether ``drain`` may jump over
    # idle time (tests, the demo; ``local serve`` runs on the wall clock).
    clock_speed: float = 1.0
    skip_idle: bool = True
    # inline: handlers in this process, one environment per function (tests patch the modules);
    # process: each environment a worker process, several per function, killable (lambdas.py).
    isolation: Isolation = "inline"
    # Environments per function with process isolation: a mapping's MaximumConcurrency when the
    # template sets one, else this (also the API's concurrent requests).
    max_environments: int = DEFAULT_SQS_CONCURRENCY
    # ``module:function`` hooks run in each environment of a function after its import (lambdas.py).
    environment_hooks: dict[str, list[str]] = field(default_factory=dict)


def function_environment(stack: Stack) -> dict[str, str]:
    """The union of the functions' environments; the template must not give one name two values."""
    merged: dict[str, str] = {}
    for fn in stack.functions.values():
        for key, value in fn.environment.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"environment variable {key} differs between functions")
            merged[key] = value
    return merged


_SHARED_MOTO: MotoServer | None = None


def shared_moto() -> MotoServer:
    """One moto server per process, reset for each runtime.

    boto3 clients created by the handlers' modules are cached per process; keeping the endpoint
    stable keeps them valid from one runtime to the next (in tests, one runtime per test).
    """
    global _SHARED_MOTO
    if _SHARED_MOTO is None:
        _SHARED_MOTO = MotoServer().start()
    return _SHARED_MOTO


def _forget_cached_state() -> None:
    """Drop what a previous runtime left in process-wide caches (the secrets the handlers read)."""
    from qfbridge.store.secrets import clear_cache

    clear_cache()


def _observability_follows(environment: Mapping[str, str]) -> Callable[[], None]:
    """Give the template's metric namespace and service to the Powertools ``Metrics`` this process
    already built; what undoes it.

    Lambda imports a handler with its environment set, so ``qfbridge.observability``'s ``Metrics()``
    reads the template's ``POWERTOOLS_METRICS_NAMESPACE``. Inline environments share this process's
    module, which a harness may have imported before any runtime applied that environment: built
    without a namespace, its metric set — never flushed while metrics are disabled — raised
    Powertools' ``SchemaValidationError`` on the 100th value of one metric, failing a record or a
    tick that would have run on Lambda. A module imported after this point reads the environment
    itself; worker processes import theirs with it set.
    """
    observability = sys.modules.get("qfbridge.observability")
    if observability is None:
        return lambda: None
    metrics = observability.metrics
    saved = (metrics.namespace, metrics.service)
    metrics.namespace = environment.get("POWERTOOLS_METRICS_NAMESPACE") or metrics.namespace
    metrics.service = environment.get("POWERTOOLS_SERVICE_NAME") or metrics.service

    def restore() -> None:
        metrics.namespace, metrics.service = saved

    return restore


class LocalRuntime:
    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()
        self._exit = ExitStack()
        self.moto: MotoServer | None = None
        self.stack: Stack | None = None
        self.functions: dict[str, LocalFunction] = {}
        self.triggers: TriggerEmulator | None = None
        self.api: ApiAdapter | None = None
        self.queue_urls: dict[str, str] = {}
        self.environment: dict[str, str] = {}
        self.webhooks: WebhookDelivery | None = None
        self.clock = RuntimeClock(self.options.clock_speed)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, options: RuntimeOptions | None = None) -> LocalRuntime:
        runtime = cls(options)
        try:
            runtime._start()
        except BaseException:
            runtime.stop()
            raise
        return runtime

    def _start(self) -> None:
        self.moto = shared_moto()
        self.moto.reset()
        install_sqs_clock(self.clock)
        # Lambda code's timers (leases, markers, journal times) read the runtime's clock too: in this
        # process (inline environments, the editor service of tests) and in every worker process.
        self._exit.callback(use_source, current_source())  # another runtime of this process may run on
        use_source(self.clock.time)
        _forget_cached_state()
        endpoint = self.moto.endpoint
        overrides = {"Stage": self.options.stage, **self.options.parameter_overrides}
        if self.options.webhook is not None:
            overrides |= self.options.webhook.parameter_overrides(self.options.stage)
        self.stack = resolve_stack(
            endpoint=endpoint, template_path=self.options.template, parameter_overrides=overrides
        )
        resources = provision(self.stack, endpoint)
        self.queue_urls = resources["queue_urls"]
        env = {
            **function_environment(self.stack),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "false"),
            "AWS_LAMBDA_FUNCTION_NAME": "qfbridge-local",
            **self.options.env_overrides,
        }
        self.environment = self._exit.enter_context(aws_environment(endpoint, env))
        self._exit.callback(_observability_follows(self.environment))
        self.functions = {
            lid: LocalFunction(
                spec,
                clock=self.clock,
                isolation=self.options.isolation,
                max_environments=self._environments_for(spec),
                environment=self.environment,
                hooks=self.options.environment_hooks.get(lid, ()),
            )
            for lid, spec in self.stack.functions.items()
        }
        for fn in self.functions.values():
            self._exit.callback(fn.close)
        self.triggers = TriggerEmulator(
            self.stack,
            self.functions,
            endpoint,
            self.queue_urls,
            clock=self.clock,
            skip_idle=self.options.skip_idle,
        )
        if self.options.webhook is not None:
            self.webhooks = WebhookDelivery.start(self.stack, endpoint, self.queue_urls, self.options.webhook)
            self._exit.callback(self.webhooks.stop)
        self._exit.callback(self.triggers.close)
        if self.options.serve_api and API_FUNCTION in self.functions:
            self.api = ApiAdapter(
                self.functions[API_FUNCTION],
                stage=self.stack.stage,
                port=self.options.api_port,
                api=self.stack.api,
                clock=self.clock,
            ).start()
            self._exit.callback(self.api.stop)

    def _environments_for(self, spec: Any) -> int:
        bounds = [m.maximum_concurrency for m in spec.sqs_mappings if m.maximum_concurrency]
        wanted = max(bounds) if bounds else self.options.max_environments
        # Reserved concurrency caps the function's environments, whatever asks for more.
        return min(wanted, spec.reserved_concurrency) if spec.reserved_concurrency else wanted

    def stop(self) -> None:
        self._exit.close()

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ conveniences
    @property
    def endpoint(self) -> str:
        assert self.moto is not None
        return self.moto.endpoint

    @property
    def api_url(self) -> str:
        assert self.api is not None
        return self.api.url

    def client(self, service: str) -> Any:
        return client(service, self.endpoint)

    def poll(self) -> Any:
        """One tick of ``PollIntervalMinutes``: hubee_poll's schedule, then refresh_dispatch's
        (two schedules on AWS, firing together); their results merged (``poll`` and ``refresh``).

        The dispatch fires even when the poll fails, as its own schedule does on AWS.
        """
        assert self.triggers is not None
        try:
            polled = self.triggers.fire_schedule(POLL_FUNCTION)
        finally:
            dispatched = self.dispatch_refreshes()
        return {**polled, **dispatched}

    def dispatch_refreshes(self) -> Any:
        assert self.triggers is not None
        return self.triggers.fire_schedule(REFRESH_DISPATCH_FUNCTION)

    def token_watch(self) -> Any:
        assert self.triggers is not None
        return self.triggers.fire_schedule(TOKEN_WATCH_FUNCTION)

    def drain(self, timeout: float = 600.0) -> int:
        """Run the SQS mappings until the queues are empty; ``timeout`` (real seconds) guards
        against a hang, not a slow machine: failed records now wait their visibility timeout."""
        assert self.triggers is not None
        return self.triggers.drain(timeout=timeout)

    def editor_service(self) -> EditorService:
        """The api function's EditorService, wired from this runtime's environment: acting as the
        editor's software in-process, without HTTP or SigV4 (tests, the fault campaign)."""
        from qfbridge.services.editor import EditorService
        from qfbridge.store.dossiers import DossierRepository
        from qfbridge.store.families import FamilyRepository
        from qfbridge.store.links import LinkRepository
        from qfbridge.store.pacing import TenantPacer
        from qfbridge.store.queues import SqsDossierQueue, SqsRefreshQueue
        from qfbridge.store.secrets import SecretStore
        from qfbridge.store.tenants import TenantRepository

        env = self.environment
        sqs = self.client("sqs")
        return EditorService(
            tenants=TenantRepository(env["TENANTS_TABLE"]),
            families=FamilyRepository(env["FAMILIES_TABLE"]),
            dossiers=DossierRepository(env["DOSSIERS_TABLE"]),
            links=LinkRepository(env["FORM_LINKS_TABLE"]),
            secrets=SecretStore(env["TENANT_SECRETS_PREFIX"]),
            refresh_queue=SqsRefreshQueue(env["REFRESH_QUEUE_URL"], client=sqs),
            dossier_queue=SqsDossierQueue(env["DOSSIERS_QUEUE_URL"], client=sqs),
            link_signing_secret_id=env["LINK_SIGNING_SECRET_ID"],
            form_base_url=env["FORM_BASE_URL"],
            form_link_ttl_days=int(env.get("FORM_LINK_TTL_DAYS", "60")),
            pacer=TenantPacer(env["TENANTS_TABLE"]),
        )

    def invoke(self, function_logical_id: str, event: Mapping[str, Any]) -> Any:
        return self.functions[function_logical_id].invoke(dict(event))

    def table_name(self, logical_id: str) -> str:
        assert self.stack is not None
        return self.stack.table_name(logical_id)

    def queue_url(self, logical_id: str) -> str:
        return self.queue_urls[logical_id]

    def queue_depth(self, logical_id: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(logical_id),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())
