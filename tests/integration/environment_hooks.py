"""Environment hooks for the runtime's tests: they run inside each execution environment (a worker
process with ``isolation="process"``) right after the handler module is imported, and replace the
handler by a probe. Each probe reports to files named by environment variables, so the test reads
what happened from a record the runtime did not write."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _append(variable: str, record: dict[str, Any]) -> None:
    with open(os.environ[variable], "a", encoding="utf-8") as fh:  # small appends are atomic
        fh.write(json.dumps(record) + "\n")


def record_and_sleep(function: str, module: ModuleType) -> None:
    """Each invocation: note (pid, start, end, records) and hold the environment for a while."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.monotonic()
        time.sleep(float(os.environ.get("PROBE_SLEEP_S", "0.3")))
        _append(
            "PROBE_LOG",
            {
                "function": function,
                "pid": os.getpid(),
                "start": started,
                "end": time.monotonic(),
                "records": [r["messageId"] for r in event.get("Records", [])],
            },
        )
        return {"batchItemFailures": []}

    module.lambda_handler = handler  # type: ignore[attr-defined]


def killed_once_mid_step(function: str, module: ModuleType) -> None:
    """The first invocation (across environments) is SIGKILLed mid-step; ``finally`` would leave a trace."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        marker = Path(os.environ["PROBE_MARKER"])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            _append("PROBE_LOG", {"pid": os.getpid(), "outcome": "handled"})
            return {"batchItemFailures": []}
        os.close(fd)
        try:
            _append("PROBE_LOG", {"pid": os.getpid(), "outcome": "killing"})
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(5)
        finally:
            _append("PROBE_LOG", {"pid": os.getpid(), "outcome": "finally ran"})
        return {"batchItemFailures": []}

    module.lambda_handler = handler  # type: ignore[attr-defined]
