"""moto in its own process, for the benchmarks that time the functions against AWS.

Why: the laptop runtime runs moto in the handlers' process, so every AWS request the functions
make also costs them moto's CPU time under the same GIL — as if DynamoDB ran inside the Lambda.
The benchmarks give moto the machine's other core, as AWS would run elsewhere. The server is the
laptop runtime's own ``MotoServer`` (127.0.0.1, DynamoDB requests serialised) with
``bench.moto_speedups`` applied.

    python -m bench.moto_process PORT     # serves until stdin closes or SIGTERM
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from qfbridge_local.aws import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[1]


class ExternalMoto:
    """The interface of ``qfbridge_local.aws.MotoServer``, served by a child process."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> ExternalMoto:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.moto_process", str(self.port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("the moto process exited at start")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError("the moto process did not answer")

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=30
        ).read()

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None


def use_external_moto() -> ExternalMoto:
    """Make the laptop runtime of this process use a moto process (call before the first runtime)."""
    from qfbridge_local import runtime

    moto = ExternalMoto().start()
    runtime._SHARED_MOTO = moto  # type: ignore[assignment]
    return moto


def main() -> None:
    from bench import moto_speedups
    from qfbridge_local.aws import MotoServer

    moto_speedups.apply()
    server = MotoServer(port=int(sys.argv[1])).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
