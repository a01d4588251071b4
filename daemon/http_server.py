"""The HTTP endpoint: ``/metrics`` for Prometheus and ``/healthz`` for supervisors, in a thread.

A ``ThreadingHTTPServer`` runs in a daemon thread so a slow scrape never blocks the daemon's
main loop. The listen address comes from config (default loopback, ``127.0.0.1``); an IPv6
address gets an IPv6 socket. Requests are logged through structlog at debug level, never to
stderr, so journald sees only the daemon's own JSON lines.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, final
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = structlog.get_logger("kernelwatch.http")

Health = Callable[[], tuple[bool, dict[str, Any]]]


class _Server(ThreadingHTTPServer):
    """The socket server, carrying what the handler needs."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, health: Health):
        self.registry: Final = registry
        self.health: Final = health
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a reverse DNS lookup that can hang
        # on a badly configured network); we never use it, so bind without it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


@final
class _Handler(BaseHTTPRequestHandler):
    server_version = "kernelwatch"

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics(self.server.registry)
        elif path == "/healthz":
            self._healthz(self.server.health)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _metrics(self, registry: CollectorRegistry) -> None:
        # OpenMetrics when the scraper asks for it, else the 0.0.4 text format.
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(registry)
        except Exception as exc:  # a broken collector must give a 500, not a dead thread
            log.error("metrics_render_failed", error=repr(exc), exc_info=True)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"render failed\n", "text/plain")
            return
        self._send(HTTPStatus.OK, body, content_type)

    def _healthz(self, health: Health) -> None:
        try:
            ok, details = health()
        except Exception as exc:  # an exception in the probe is itself unhealthy
            log.error("health_check_failed", error=repr(exc), exc_info=True)
            ok, details = False, {"error": repr(exc)}
        payload = {"status": "ok" if ok else "unhealthy", **details}
        body = json.dumps(payload, default=str, sort_keys=True).encode() + b"\n"
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", client=self.client_address[0], message=format % args)


@final
class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` from ``registry`` and ``health`` until stopped."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        listen: str = "127.0.0.1",
        port: int,
        health: Health,
    ) -> None:
        self._registry: Final = registry
        self._listen: Final = listen
        self._port = port
        self._health: Final = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        return self._port

    @property
    def listen(self) -> str:
        return self._listen

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises ``OSError`` if the address is taken."""
        if self._server is not None:
            raise RuntimeError("MetricsServer already started")
        version = ipaddress.ip_address(self._listen).version
        server_cls = _Server6 if version == 6 else _Server
        server = server_cls((self._listen, self._port), self._registry, self._health)
        self._server = server
        self._port = server.server_port
        # A short poll interval keeps stop() (and so daemon shutdown) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="kernelwatch-http", daemon=True
        )
        self._thread.start()
        log.info("http_listening", listen=self._listen, port=self._port)

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or before ``start``."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        log.info("http_stopped", listen=self._listen, port=self._port)


__all__ = ["Health", "MetricsServer"]
