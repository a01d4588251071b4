"""Tests for the HTTP endpoint: a real server on an ephemeral loopback port."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from daemon.http_server import MetricsServer

_health: dict[str, Any] = {"ok": True, "details": {"last_tick_s": 0.5}}


def _health_probe() -> tuple[bool, dict[str, Any]]:
    return _health["ok"], dict(_health["details"])


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("kernelwatch_test_total", "A test counter.", registry=registry).inc(3)
    return registry


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    _health.update(ok=True, details={"last_tick_s": 0.5})
    server = MetricsServer(registry, listen="127.0.0.1", port=0, health=_health_probe)
    server.start()
    yield server
    server.stop()


def _get(
    server: MetricsServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(server.listen, server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_metrics_serves_text_format(server: MetricsServer) -> None:
    """GET /metrics returns the registry in the Prometheus text format."""
    status, content_type, body = _get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"kernelwatch_test_total 3.0" in body


def test_metrics_honours_openmetrics_accept(server: MetricsServer) -> None:
    """A scraper asking for OpenMetrics gets OpenMetrics, ending in # EOF."""
    accept = "application/openmetrics-text; version=1.0.0"
    status, content_type, body = _get(server, "/metrics", {"Accept": accept})
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_healthz_ok(server: MetricsServer) -> None:
    """A healthy daemon answers 200 with status ok and its details."""
    status, content_type, body = _get(server, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "last_tick_s": 0.5}


def test_healthz_unhealthy(server: MetricsServer) -> None:
    """An unhealthy daemon answers 503 with the details."""
    _health.update(ok=False, details={"reason": "main loop stalled"})
    status, _, body = _get(server, "/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "unhealthy", "reason": "main loop stalled"}


def test_unknown_path_is_404(server: MetricsServer) -> None:
    """Any other path is not found."""
    status, _, _ = _get(server, "/admin")
    assert status == 404


def test_query_string_is_ignored(server: MetricsServer) -> None:
    """/metrics with a query string is still /metrics."""
    status, _, _ = _get(server, "/metrics?name[]=x")
    assert status == 200


def test_port_zero_binds_an_ephemeral_port(server: MetricsServer) -> None:
    """Port 0 gives a real bound port through the port property."""
    assert server.port > 0


def test_default_bind_is_loopback(registry: CollectorRegistry) -> None:
    """Without a listen address the server binds 127.0.0.1 only."""
    server = MetricsServer(registry, port=0, health=_health_probe)
    server.start()
    try:
        assert server.listen == "127.0.0.1"
        status, _, _ = _get(server, "/metrics")
        assert status == 200
    finally:
        server.stop()


def test_ipv6_listen_address(registry: CollectorRegistry) -> None:
    """An IPv6 listen address gets an IPv6 socket."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    server = MetricsServer(registry, listen="::1", port=0, health=_health_probe)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        status, _, _ = _get(server, "/metrics")
        assert status == 200
    finally:
        server.stop()


def test_stop_releases_the_port(registry: CollectorRegistry) -> None:
    """After stop the port can be bound again, and a second stop is harmless."""
    server = MetricsServer(registry, listen="127.0.0.1", port=0, health=_health_probe)
    server.start()
    port = server.port
    server.stop()
    server.stop()
    again = MetricsServer(registry, listen="127.0.0.1", port=port, health=_health_probe)
    again.start()
    again.stop()
