"""The HTTP side of the HubEE sandbox: a threaded stdlib server that hands each request to the app.

Kept apart from the HubEE rules so that those read as the contract, not as socket handling.
Binds 127.0.0.1 on a free port; handler threads are daemons and a deep listen queue lets a
benchmark open a thousand connections at once.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_REQUEST_BODY = 2 * 1024 * 1024


@dataclass(frozen=True)
class SandboxRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def header(self, name: str) -> str:
        return str(self.headers.get(name, "") or "")


@dataclass
class SandboxReply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Hang this long before answering (an injected timeout)."""
    drop: bool = False
    """Close the connection without answering (after ``delay_s``)."""
    compressible: bool = True
    """May be gzip-encoded for a client that accepts it."""


Handle = Callable[[SandboxRequest], SandboxReply]


class SandboxHttpServer:
    """Serves ``handle`` on 127.0.0.1 until ``stop()``."""

    def __init__(self, handle: Handle, *, request_queue_size: int = 1024) -> None:
        self._handle = handle
        self._queue_size = request_queue_size
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._server is not None:
            return
        self.stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler, self._queue_size)
        server.handle = self._handle
        server.stopping = self.stopping
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hubee-sandbox", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    handle: Handle
    stopping: threading.Event

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], queue_size: int
    ) -> None:
        self.request_queue_size = queue_size
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its read timeout, a killed environment) is no server error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        """As ``HTTPServer.server_bind`` minus its reverse DNS lookup (``getfqdn``), slow on some hosts."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HubEE-sandbox"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after a minute
    disable_nagle_algorithm = True  # headers and body leave in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: requests carry tokens and personal data."""

    def _serve(self) -> None:
        length = self.headers.get("Content-Length", "0") or "0"
        if not length.isdigit() or int(length) > MAX_REQUEST_BODY:
            self._write(SandboxReply(413, b'{"errors":[{"code":413,"message":"Payload too large"}]}'))
            self.close_connection = True
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        split = urlsplit(self.path)
        request = SandboxRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        try:
            reply = self.server.handle(request)
        except Exception:  # a sandbox bug must look like a HubEE 500, not a dropped connection
            reply = SandboxReply(500, b'{"errors":[{"code":500,"message":"Internal server"}]}')
        if reply.delay_s > 0 and self.server.stopping.wait(reply.delay_s):
            reply.drop = True
        if reply.drop:
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply: SandboxReply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)
