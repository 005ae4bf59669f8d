"""``qfbridge local serve --config FILE``: keep the laptop runtime running.

The editor API is served on 127.0.0.1; hubee_poll and token_watch fire at the configured pace;
the SQS mappings run continuously. HubEE and API Particulier are the sandboxes, or the real test
environments ("bas", staging) when the configuration says ``mode = "remote"``. SIGINT and SIGTERM
stop everything cleanly.

At start it prints its endpoints: the editor API, the AWS emulator (moto), the sandboxes and the
sandbox console (``qfbridge local credentials`` / ``deposit``, see ``qfbridge_local.rehearsal``),
and the environment under which the operator commands work against it: the emulator holds a
CloudFormation stack ``qfbridge-<stage>`` whose outputs are the deployed template's (ApiUrl, the
queues, the audit log group…), so ``qfbridge tenants list`` finds the API as it would on AWS.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import tomllib
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .runtime import LocalRuntime, RuntimeOptions

HUBEE_URLS = {
    "bas": (
        "https://api.bas.hubee.numerique.gouv.fr",
        "https://auth.bas.hubee.numerique.gouv.fr/oauth2/token",
    ),
    "prod": ("https://api.hubee.numerique.gouv.fr", "https://auth.hubee.numerique.gouv.fr/oauth2/token"),
}
API_PARTICULIER_URLS = {
    "staging": "https://staging.particulier.api.gouv.fr",
    "prod": "https://particulier.api.gouv.fr",
}


class RuntimeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["dev", "staging", "prod"] = "dev"
    api_port: int = Field(default=8787, ge=0, le=65535)
    poll_interval_seconds: float = Field(default=60, gt=0)
    token_watch_interval_seconds: float = Field(default=3600, gt=0)
    queue_poll_interval_seconds: float = Field(default=0.5, gt=0)
    sandbox_console_port: int = Field(default=8788, ge=0, le=65535)


class HubeeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["sandbox", "remote"] = "sandbox"
    environment: Literal["bas", "prod"] = "bas"
    api_url: str | None = None
    token_url: str | None = None


class ApiParticulierSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["sandbox", "remote"] = "sandbox"
    environment: Literal["staging", "prod"] = "staging"
    base_url: str | None = None


class SandboxSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 1


class WebhookSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    api_key: str = "local-webhook-key"
    retry_base_seconds: float = Field(default=1.0, gt=0)


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    hubee: HubeeSection = Field(default_factory=HubeeSection)
    api_particulier: ApiParticulierSection = Field(default_factory=ApiParticulierSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    webhook: WebhookSection = Field(default_factory=WebhookSection)

    @classmethod
    def load(cls, path: str | Path) -> ServeConfig:
        return cls.model_validate(tomllib.loads(Path(path).read_text(encoding="utf-8")))


class Server:
    """The runtime, its sandboxes and the loops that play the schedules and the SQS mappings."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self._exit = ExitStack()
        self.runtime: LocalRuntime | None = None
        self.hubee: Any = None
        self.particulier: Any = None
        self.console: Any = None
        self.stack_name = f"qfbridge-{config.runtime.stage}"

    def start(self) -> Server:
        env: dict[str, str] = {}
        hubee = self.config.hubee
        if hubee.mode == "sandbox" and not hubee.api_url:
            from .sandboxes.hubee import HubeeSandbox

            self.hubee = self._exit.enter_context(HubeeSandbox(seed=self.config.sandbox.seed))
            env |= {"HUBEE_API_URL": self.hubee.api_url, "HUBEE_TOKEN_URL": self.hubee.token_url}
        else:
            api_url, token_url = HUBEE_URLS[hubee.environment]
            env |= {
                "HUBEE_API_URL": hubee.api_url or api_url,
                "HUBEE_TOKEN_URL": hubee.token_url or token_url,
            }
        particulier = self.config.api_particulier
        if particulier.mode == "sandbox" and not particulier.base_url:
            from .sandboxes.api_particulier import ApiParticulierSandbox

            self.particulier = self._exit.enter_context(ApiParticulierSandbox(seed=self.config.sandbox.seed))
            env["API_PARTICULIER_URL"] = self.particulier.url
        else:
            env["API_PARTICULIER_URL"] = particulier.base_url or API_PARTICULIER_URLS[particulier.environment]
        self.runtime = self._exit.enter_context(
            LocalRuntime.start(
                RuntimeOptions(
                    stage=self.config.runtime.stage,
                    env_overrides=env,
                    api_port=self.config.runtime.api_port,
                    webhook=self._webhook(),
                    skip_idle=False,
                )
            )
        )
        from .rehearsal import SandboxConsole

        self.console = SandboxConsole(
            self.hubee,
            self.particulier,
            self.runtime.environment,
            port=self.config.runtime.sandbox_console_port,
        ).start()
        self._exit.callback(self.console.stop)
        describe_stack(self.runtime, self.stack_name)
        return self

    def _webhook(self) -> Any:
        section = self.config.webhook
        if not section.url:
            return None
        from .webhooks import WebhookSettings

        return WebhookSettings(
            url=section.url, api_key=section.api_key, retry_base_seconds=section.retry_base_seconds
        )

    def run(self) -> None:
        """Play the schedules and the SQS mappings until ``stop_event`` is set."""
        assert self.runtime is not None and self.runtime.triggers is not None
        cfg = self.config.runtime
        next_poll = next_watch = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._safely(self.runtime.poll)
                next_poll = now + cfg.poll_interval_seconds
            if now >= next_watch:
                self._safely(self.runtime.token_watch)
                next_watch = now + cfg.token_watch_interval_seconds
            for source in self.runtime.triggers.sources:
                self._safely(source.poll_once)
            self.stop_event.wait(cfg.queue_poll_interval_seconds)

    @staticmethod
    def _safely(action: Any) -> None:
        try:
            action()
        except Exception as exc:  # a failing invocation is Lambda's problem to report, not the loop's
            print(f"invocation failed: {type(exc).__name__}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.stop_event.set()
        self._exit.close()


def describe_stack(runtime: LocalRuntime, stack_name: str) -> dict[str, str]:
    """A CloudFormation stack in the emulator whose outputs are the template's, with local values."""
    import json
    import warnings

    env = runtime.environment
    outputs = {
        "ApiUrl": runtime.api_url,
        "EventBusName": env["EVENT_BUS_NAME"],
        "TenantsTableName": env["TENANTS_TABLE"],
        "FamiliesTableName": env["FAMILIES_TABLE"],
        "DossiersTableName": env["DOSSIERS_TABLE"],
        "FormLinksTableName": env["FORM_LINKS_TABLE"],
        "DossiersQueueUrl": runtime.queue_url("DossiersQueue"),
        "DossiersDeadLetterQueueUrl": runtime.queue_url("DossiersDeadLetterQueue"),
        "RefreshQueueUrl": runtime.queue_url("RefreshQueue"),
        "RefreshDeadLetterQueueUrl": runtime.queue_url("RefreshDeadLetterQueue"),
        "AuditLogGroupName": env["AUDIT_LOG_GROUP"],
    }
    template = {
        "Description": "qfbridge local serve: the resources live in the emulator; this stack describes them",
        "Resources": {"Description": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moto only records the placeholder resource
        runtime.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    return outputs


def endpoints(server: Server) -> list[str]:
    """What ``local serve`` prints at start: where everything is, and how to point commands at it."""
    assert server.runtime is not None
    runtime = server.runtime
    env = runtime.environment
    lines = [
        f"editor API               {runtime.api_url}  (SigV4-signed requests, see docs/integration.md)",
        f"AWS emulator (moto)      {runtime.endpoint}  (stack {server.stack_name}, region {env.get('AWS_REGION')})",
    ]
    if server.hubee is not None:
        lines.append(f"HubEE sandbox            {server.hubee.api_url}")
    if server.particulier is not None:
        lines.append(f"API Particulier sandbox  {server.particulier.url}")
    if runtime.webhooks is not None:
        lines.append(f"events as webhooks to    {runtime.webhooks.url}")
    if server.console is not None:
        lines.append(
            f"sandbox console          {server.console.url}  (qfbridge local credentials | deposit --sandbox-url)"
        )
    lines.append(
        f"operator commands        export AWS_ENDPOINT_URL={runtime.endpoint} "
        f"AWS_ACCESS_KEY_ID={env.get('AWS_ACCESS_KEY_ID')} AWS_SECRET_ACCESS_KEY={env.get('AWS_SECRET_ACCESS_KEY')} "
        f"AWS_REGION={env.get('AWS_REGION')}"
    )
    return lines


def serve(config_path: str) -> int:
    import warnings

    from .operator import OperatorError

    # Powertools notes each invocation that published no metric; on the laptop that is noise.
    warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

    try:
        config = ServeConfig.load(config_path)
    except OSError as exc:
        raise OperatorError(
            f"cannot read {config_path}: {exc.strerror}", "see config/local.example.toml"
        ) from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise OperatorError(
            f"{config_path} is not a valid configuration: {str(exc).splitlines()[0]}",
            "see config/local.example.toml",
        ) from None
    try:
        server = Server(config).start()
    except OSError as exc:
        raise OperatorError(
            f"local serve could not start: {exc.strerror or exc}",
            "a port is taken? set [runtime] api_port / sandbox_console_port to free ones (0: any)",
        ) from None
    assert server.runtime is not None

    def on_signal(signum: int, _frame: Any) -> None:
        server.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for line in endpoints(server):
        print(f"qfbridge local: {line}", flush=True)
    print("qfbridge local: ready (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    finally:
        server.stop()
        print("qfbridge local: stopped", flush=True)
    return 0
