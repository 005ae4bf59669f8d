"""Load the real handlers the way Lambda does, and invoke them in execution environments.

An execution environment runs one invocation at a time, as Lambda's do; concurrency comes from
several environments. The function's ``Timeout`` (template) is enforced on the runtime's clock:
past it the invocation is abandoned and the caller gets ``FunctionTimeout`` (an SQS batch is then
failed and comes back after the queue's visibility timeout).

Two isolations:

* ``inline`` (the default, for tests): the handler module is imported once in this process, so a
  function has exactly one environment and its invocations run one after the other (in a thread,
  so that the timeout can be enforced). A timed-out invocation cannot be killed in-process: its
  thread is abandoned and runs on, as a handler that outlives its lease would.
* ``process``: each environment is a worker process that imports the handler (its own module
  state: Powertools resolver, batch processor, caches), several environments run concurrently, a
  timed-out invocation's worker is killed (``SIGKILL``: no ``finally`` runs, leases are not
  released) and a fresh environment takes its place — as Lambda resets a timed-out sandbox.
  ``kill()`` does the same on demand (the fault campaign's real crashes).

Environment hooks (``module:function`` or ``path/to/file.py:function``) run in each environment
after the handler module is imported: ``hook(function_logical_id, module)``. Tests use them to
instrument a worker the way they would patch the in-process module.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from qfbridge.clock import use_source

from .clock import RuntimeClock
from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, FunctionSpec

Isolation = Literal["inline", "process"]
INIT_TIMEOUT_S = 120.0  # real seconds a worker may take to import its handler (a loaded laptop)

# Workers fork from a server that has already imported the heavy dependencies: a new environment
# costs a fork, not a cold import of boto3 and Powertools.
_MP = multiprocessing.get_context("forkserver")
_MP.set_forkserver_preload(["boto3", "botocore.session", "aws_lambda_powertools", "pydantic", "httpx"])


_ENVIRONMENT_CLOCK: RuntimeClock | None = None


_INVOCATION: LambdaContext | None = None


def current_invocation() -> LambdaContext | None:
    """The context of the invocation this worker process (execution environment) is running, for
    environment hooks (e.g. a fault that must end before the invocation's timeout)."""
    return _INVOCATION


def environment_clock() -> RuntimeClock:
    """The runtime's clock, from inside an execution environment (hooks use it to put the
    handler's own time on the emulated clock)."""
    return _ENVIRONMENT_CLOCK or RuntimeClock()


class FunctionTimeout(Exception):
    """The invocation ran past the function's Timeout and was abandoned."""


class FunctionCrashed(Exception):
    """The execution environment died during the invocation (killed, out of memory, exit)."""


class FunctionError(Exception):
    """The handler raised in a worker process; ``error_type`` is the exception's class name."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


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
    speed: float = 1.0
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self._deadline:
            self._deadline = time.monotonic() + self.timeout_seconds / self.speed
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        """On the runtime's clock: emulated milliseconds before the timeout."""
        return max(0, int((self._deadline - time.monotonic()) * self.speed * 1000))


@dataclass
class Invocation:
    function: str
    duration_ms: float
    error: str | None


def load_handler_module(spec: FunctionSpec) -> ModuleType:
    """Import the function's handler module as Lambda does at a cold start (its own name, from its
    CodeUri), afresh: a new environment does not inherit a previous one's module state."""
    path = spec.module_path
    if not path.is_file():
        raise FileNotFoundError(f"{spec.logical_id}: handler module {path} does not exist")
    return _import_file(f"qfbridge_fn_{spec.code_uri.name}_{path.stem}", path)


def _import_file(name: str, path: Path) -> ModuleType:
    """Import the Python file ``path`` as the module ``name`` (registered in ``sys.modules``)."""
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def resolve_hook(reference: str) -> Callable[..., Any]:
    """``package.module:function`` or ``/path/to/file.py:function``."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise ValueError(f"environment hook {reference!r} is not 'module:function'")
    if target.endswith(".py"):
        path = Path(target)
        name = f"qfbridge_hook_{path.stem}"
        module = sys.modules.get(name) or _import_file(name, path)
    else:
        module = importlib.import_module(target)
    hook = getattr(module, attribute)
    if not callable(hook):
        raise TypeError(f"environment hook {reference!r} is not callable")
    return hook


def _handler_of(spec: FunctionSpec, module: ModuleType) -> Callable[[dict[str, Any], Any], Any]:
    handler = getattr(module, spec.handler_name)
    if not callable(handler):
        raise TypeError(f"{spec.logical_id}: {spec.handler} is not callable")
    return handler


# ---------------------------------------------------------------------------------- environments


class InlineEnvironment:
    """The handler module of this process: one environment, one invocation at a time."""

    def __init__(self, function: LocalFunction) -> None:
        self.function = function
        global _ENVIRONMENT_CLOCK
        _ENVIRONMENT_CLOCK = function.clock
        self.module = load_handler_module(function.spec)
        for hook in function.hooks:
            resolve_hook(hook)(function.spec.logical_id, self.module)
        self.alive = True

    def invoke(self, event: dict[str, Any], context: LambdaContext, timeout_real: float) -> Any:
        handler = _handler_of(self.function.spec, self.module)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = handler(event, context)
            except BaseException as exc:
                outcome["error"] = exc

        # The caller's context variables follow the invocation, as they would in a direct call.
        context_copy = contextvars.copy_context()
        thread = threading.Thread(
            target=context_copy.run, args=(run,), name=f"{self.function.name}-invocation", daemon=True
        )
        thread.start()
        thread.join(timeout_real)
        if thread.is_alive():
            # Cannot be killed in-process: the thread is abandoned and runs on.
            raise FunctionTimeout(f"{self.function.name}: task timed out after {context.timeout_seconds} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    def kill(self) -> None:
        raise RuntimeError("an inline environment cannot be killed: use isolation='process'")

    def close(self) -> None:
        return


def _environment_main(
    conn: Any,
    spec: FunctionSpec,
    environment: dict[str, str],
    clock: tuple[float, float, Any],
    hooks: Sequence[str],
) -> None:
    """A worker process: one execution environment of one function."""
    global _ENVIRONMENT_CLOCK
    os.environ.update(environment)
    _ENVIRONMENT_CLOCK = RuntimeClock(clock[0], origin=clock[1], offset=clock[2])
    use_source(_ENVIRONMENT_CLOCK.time)  # the handlers' leases, markers and journal times
    try:
        module = load_handler_module(spec)
        for hook in hooks:
            resolve_hook(hook)(spec.logical_id, module)
        handler = _handler_of(spec, module)
    except BaseException as exc:
        conn.send(("init_error", type(exc).__name__, str(exc)))
        return
    speed = clock[0]
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        event, request_id, deadline = message
        context = LambdaContext(
            function_name=spec.logical_id,
            memory_limit_in_mb=spec.memory_size,
            timeout_seconds=spec.timeout,
            aws_request_id=request_id,
            speed=speed,
            _deadline=deadline,
        )
        global _INVOCATION
        _INVOCATION = context
        try:
            result = handler(event, context)
        except Exception as exc:
            conn.send(("error", type(exc).__name__, str(exc)))
        else:
            conn.send(("ok", result))


class ProcessEnvironment:
    """A worker process running one function's handler, one invocation at a time."""

    def __init__(self, function: LocalFunction) -> None:
        self.function = function
        parent, child = _MP.Pipe()
        self._conn = parent
        self.process = _MP.Process(
            target=_environment_main,
            args=(child, function.spec, function.environment, function.clock.parameters(), function.hooks),
            name=f"{function.name}-environment",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.alive = True
        if not parent.poll(INIT_TIMEOUT_S):
            self.kill()
            raise FunctionCrashed(f"{function.name}: the environment did not initialise")
        try:
            status = parent.recv()
        except EOFError:
            self.alive = False
            raise FunctionCrashed(f"{function.name}: the environment died during its init") from None
        if status[0] != "ready":
            self.kill()
            raise FunctionError(status[1], f"{function.name} init: {status[2]}")
        self.pid: int = status[1]

    def invoke(self, event: dict[str, Any], context: LambdaContext, timeout_real: float) -> Any:
        self._conn.send((event, context.aws_request_id, context._deadline))
        if not self._conn.poll(timeout_real):
            self.kill()  # Lambda stops a timed-out sandbox: nothing of the invocation runs on
            raise FunctionTimeout(f"{self.function.name}: task timed out after {context.timeout_seconds} s")
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            self.alive = False
            self.process.join(5)
            raise FunctionCrashed(
                f"{self.function.name}: runtime exited (code {self.process.exitcode})"
            ) from None
        if reply[0] == "ok":
            return reply[1]
        raise FunctionError(reply[1], reply[2])

    def kill(self) -> None:
        """SIGKILL: the invocation stops mid-step, no ``finally`` runs."""
        self.alive = False
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(5)
        self._conn.close()

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self._conn.close()
            self.process.terminate()
            self.process.join(5)


Environment = InlineEnvironment | ProcessEnvironment


class LocalFunction:
    """One function of the template and its execution environments."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        clock: RuntimeClock | None = None,
        isolation: Isolation = "inline",
        max_environments: int = 1,
        environment: dict[str, str] | None = None,
        hooks: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        self.clock = clock or RuntimeClock()
        self.isolation: Isolation = isolation
        # One module per process: an inline function has exactly one environment.
        self.max_environments = max(1, max_environments) if isolation == "process" else 1
        self.environment = dict(environment or {})
        self.hooks = tuple(hooks)
        self._condition = threading.Condition()
        self._idle: list[Environment] = []
        self._busy: set[int] = set()
        self._environments: list[Environment] = []
        self.invocations: list[Invocation] = []
        self.environments_started = 0

    @property
    def name(self) -> str:
        return self.spec.logical_id

    @property
    def timeout_real_seconds(self) -> float:
        return self.clock.real_seconds(self.spec.timeout)

    def load(self) -> Callable[[dict[str, Any], Any], Any]:
        """The handler of the in-process module (inline isolation): tests patch its module."""
        if self.isolation != "inline":
            raise RuntimeError(
                f"{self.name} runs in worker processes: instrument it with an environment hook"
            )
        environment = self._acquire()
        try:
            assert isinstance(environment, InlineEnvironment)
            return _handler_of(self.spec, environment.module)
        finally:
            self._release(environment)

    def _new_environment(self) -> Environment:
        self.environments_started += 1
        if self.isolation == "process":
            return ProcessEnvironment(self)
        return InlineEnvironment(self)

    def _acquire(self) -> Environment:
        with self._condition:
            while True:
                if self._idle:
                    environment = self._idle.pop()
                    self._busy.add(id(environment))
                    return environment
                if len(self._environments) < self.max_environments:
                    break
                self._condition.wait()
            placeholder = object()
            self._environments.append(placeholder)  # type: ignore[arg-type]
        try:
            environment = self._new_environment()
        except BaseException:
            with self._condition:
                self._environments.remove(placeholder)  # type: ignore[arg-type]
                self._condition.notify()
            raise
        with self._condition:
            self._environments[self._environments.index(placeholder)] = environment  # type: ignore[arg-type]
            self._busy.add(id(environment))
        return environment

    def _release(self, environment: Environment) -> None:
        with self._condition:
            self._busy.discard(id(environment))
            if environment.alive or isinstance(environment, InlineEnvironment):
                self._idle.append(environment)
            else:
                self._environments.remove(environment)
            self._condition.notify()

    def busy_environments(self) -> list[Environment]:
        with self._condition:
            return [e for e in self._environments if id(e) in self._busy]

    @property
    def in_flight(self) -> int:
        with self._condition:
            return len(self._busy)

    def invoke(self, event: dict[str, Any], *, not_before: float | None = None) -> Any:
        """One synchronous invocation in a free environment (waits for one if all are busy).

        ``not_before`` (the runtime clock's time): the environment is taken now and the invocation
        starts then — a poller that got its batch early, holding an environment for it."""
        environment = self._acquire()
        if not_before is not None:
            try:
                self.clock.sleep(not_before - self.clock.time())
            except BaseException:
                self._release(environment)
                raise
        context = LambdaContext(
            function_name=self.name,
            memory_limit_in_mb=self.spec.memory_size,
            timeout_seconds=self.spec.timeout,
            speed=self.clock.speed,
        )
        started = time.perf_counter()
        error: str | None = None
        try:
            return environment.invoke(event, context, self.timeout_real_seconds)
        except FunctionError as exc:
            error = exc.error_type
            raise
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            self.invocations.append(Invocation(self.name, (time.perf_counter() - started) * 1000, error))
            self._release(environment)

    def kill_busy(self) -> int:
        """Kill every environment that is running an invocation (process isolation)."""
        victims = [e for e in self.busy_environments() if isinstance(e, ProcessEnvironment)]
        for environment in victims:
            environment.kill()
        return len(victims)

    def close(self) -> None:
        with self._condition:
            environments, self._environments, self._idle = list(self._environments), [], []
        for environment in environments:
            if isinstance(environment, InlineEnvironment | ProcessEnvironment):
                environment.close()
