"""End to end: a drill-injected fault fires the shipped alert, and Alertmanager delivers it."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.ops._support import (
    REPO,
    RULES,
    Processes,
    daemon_env,
    free_port,
    http_get,
    kernelwatch_script,
    start_prometheus,
    wait_until,
)
from tests.real_programs import require_program

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALERT = "KernelwatchTierCritical"

# Small inputs keep the event-driven weekly and monthly runs quick; recovery is off so the
# injected fault stays until the alert has been delivered (the recovery e2e tests cover repair).
DAEMON_CONFIG = """\
[http]
listen = "127.0.0.1"
port = {port}

[checks.geometry.options]
rounds = 2
kernels = ["octahedron"]

[checks.coherence.options]
sizes = [16]
batch = 4
kernels = ["quantum"]

[recovery]
enabled = false
"""


class Webhook(BaseHTTPRequestHandler):
    """Records every Alertmanager notification POSTed to it."""

    received: ClassVar[list[dict[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP receiver on a free loopback port; yields its URL and the notifications it got."""
    Webhook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", Webhook.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real programs started by the test, all stopped at teardown."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def start_alertmanager(processes: Processes, tmp_path: Path, webhook_url: str) -> str:
    """Start a real Alertmanager (no clustering) routing kernelwatch alerts to the webhook."""
    binary = require_program("prometheus-alertmanager", package="prometheus-alertmanager")
    port = free_port()
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "instance"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {"receiver": "null", "matchers": ['alertname = "KernelwatchHeartbeat"']},
            ],
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url}]},
            {"name": "null"},
        ],
    }
    config_path = tmp_path / "alertmanager.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    process = processes.start(
        "alertmanager",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(
        "Alertmanager to become ready",
        lambda: process.popen.poll() is None and http_get(f"{url}/-/ready") is not None,
        timeout_s=30,
        diagnostics=processes.logs,
    )
    return f"127.0.0.1:{port}"


def start_daemon(processes: Processes, tmp_path: Path) -> tuple[str, list[str]]:
    """Start a daemon with the default checks; return host:port and its state options."""
    port = free_port()
    config = tmp_path / "daemon.toml"
    config.write_text(DAEMON_CONFIG.format(port=port), encoding="utf-8")
    state = ["--config", str(config), "--state-dir", str(tmp_path / "state")]
    processes.start(
        "daemon", [str(kernelwatch_script()), "run", *state], cwd=REPO, env=daemon_env()
    )
    url = f"http://127.0.0.1:{port}/healthz"
    wait_until("the daemon to serve /healthz", lambda: '"ok"' in http_get(url))
    return f"127.0.0.1:{port}", state


def inject(state: list[str], fault: str) -> None:
    """Run `kernelwatch inject FAULT --yes` as an operator would."""
    result = subprocess.run(
        [str(kernelwatch_script()), "inject", fault, "--yes", *state],
        cwd=REPO,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_tier_critical_alert_reaches_the_webhook(
    processes: Processes, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """16-bit quantum drill → monthly tier critical → shipped rule fires → webhook gets it."""
    webhook_url, received = webhook
    alertmanager = start_alertmanager(processes, tmp_path, webhook_url)
    instance, state = start_daemon(processes, tmp_path)
    start_prometheus(
        processes,
        tmp_path,
        name="prometheus",
        targets=[instance],
        rule_files=[RULES],
        alertmanager=alertmanager,
    )
    # The profile change is noticed by the daemon, which runs weekly and monthly at once.
    inject(state, "precision_downgrade")

    def delivered() -> dict[str, Any] | None:
        with Webhook.lock:
            notifications = list(received)
        for notification in notifications:
            for alert in notification["alerts"]:
                labels = alert["labels"]
                if labels["alertname"] == ALERT and alert["status"] == "firing":
                    return dict(labels)
        return None

    def diagnostics() -> str:
        metrics = http_get(f"http://{instance}/metrics")
        status = [line for line in metrics.splitlines() if "tier_status" in line]
        return "\n".join([*status, f"webhook got: {received}", processes.logs()])

    labels = wait_until(
        f"{ALERT} to reach the webhook", delivered, timeout_s=120, diagnostics=diagnostics
    )
    assert labels["instance"] == instance
    assert labels["tier"] == "monthly"
    assert labels["severity"] == "page"
    assert labels["job"] == "kernelwatch"
