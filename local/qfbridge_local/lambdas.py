"""Load the real handlers the way Lambda does, and invoke them with a Lambda context."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, FunctionSpec


@dataclass
class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    function: str
    duration_ms: float
    error: str | None


class LocalFunction:
    """One function of the template, its module imported once (a warm container)."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self._module: ModuleType | None = None
        self._lock = threading.Lock()
        self.invocations: list[Invocation] = []

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def load(self) -> Callable[[dict[str, Any], Any], Any]:
        with self._lock:
            if self._module is None:
                path = self.spec.module_path
                if not path.is_file():
                    raise FileNotFoundError(f"{self.name}: handler module {path} does not exist")
                module_name = f"qfbridge_fn_{self.spec.code_uri.name}_{path.stem}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
                self._module = module
            handler = getattr(self._module, self.spec.handler_name)
        if not callable(handler):
            raise TypeError(f"{self.name}: {self.spec.handler} is not callable")
        return handler

    def invoke(self, event: dict[str, Any]) -> Any:
        handler = self.load()
        context = LambdaContext(
            function_name=self.name,
            memory_limit_in_mb=self.spec.memory_size,
            timeout_seconds=self.spec.timeout,
        )
        started = time.perf_counter()
        error: str | None = None
        try:
            return handler(event, context)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self.invocations.append(Invocation(self.name, (time.perf_counter() - started) * 1000, error))
