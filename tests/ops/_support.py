"""Shared helpers for the ops tests: the shipped files, PromQL extraction, real processes, HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "kernelwatch.service"
PLIST = REPO / "systemd" / "com.kernelwatch.daemon.plist"
DASHBOARD = REPO / "grafana" / "kernelwatch-dashboard.json"
RULES = REPO / "prometheus" / "kernelwatch-rules.yml"
RULES_TEST = REPO / "prometheus" / "kernelwatch-rules.test.yml"
PROMETHEUS_EXAMPLE = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_EXAMPLE = REPO / "prometheus" / "alertmanager.yml"

# Measurement gauges the checks emit (kernelwatch_<measurement>); everything else the
# dashboard and rules name is a core metric declared in daemon/metrics.py.
MEASUREMENT_METRICS = frozenset(
    f"kernelwatch_{name}"
    for name in (
        "latency_per_batch_seconds",
        "latency_baseline_seconds",
        "peak_memory_bytes",
        "memory_limit_bytes",
        "memory_overhead_ratio",
        "cache_efficiency_ratio",
        "geometric_ratio_drift_ratio",
        "phase_drift_radians",
        "quantum_state_deviation_distance",
        "normalized_slowdown_ratio",
        "calibration_slowdown_ratio",
    )
)

_METRIC = re.compile(r"\bkernelwatch_[a-z0-9_]+\b")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# Grafana's interval macros and the test's stand-ins for them.
_GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}

T = TypeVar("T")


# --------------------------------------------------------------------------- shipped files


def load_dashboard() -> dict[str, Any]:
    """Return the dashboard JSON as a dict."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def load_rules() -> dict[str, Any]:
    """Return the alerting rules file as a dict."""
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (where, PromQL) for every panel target and annotation query, macros unexpanded."""
    found: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("expr"):
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return found


def rule_expressions(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (alert name, PromQL) for every rule in the rules file."""
    return [
        (f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def expand_grafana(expr: str, instance_regex: str) -> str:
    """Replace Grafana variables and macros so Prometheus can run the query as written."""
    for macro, value in _GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return expr.replace("${instance}", instance_regex).replace("$instance", instance_regex)


def referenced_metrics(expressions: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Map every kernelwatch_* metric family named in the expressions to where it is used."""
    used: dict[str, list[str]] = {}
    for where, expr in expressions:
        for name in _METRIC.findall(expr):
            used.setdefault(family_of(name), []).append(where)
    return used


def family_of(name: str) -> str:
    """Strip a histogram series suffix: ``x_seconds_bucket`` → ``x_seconds``."""
    for suffix in _HISTOGRAM_SERIES:
        if name.endswith(f"_seconds{suffix}"):
            return name.removesuffix(suffix)
    return name


def exposed_families(exposition: str) -> set[str]:
    """Every family a /metrics text declares (# TYPE) or has samples for.

    Labelled counters are exported with samples only after their first event, but
    prometheus-client declares them from the start, so a declared name counts as existing.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(family_of(re.split(r"[{ ]", line, maxsplit=1)[0]))
    return names


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kernelwatch_script() -> Path:
    """Return the installed ``kernelwatch`` console script of the interpreter running pytest."""
    return Path(sys.executable).with_name("kernelwatch")


@dataclass
class Process:
    """A real child process whose output goes to a log file, stopped by ``stop``."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def log(self) -> str:
        """Return what the process has written so far (for failure messages)."""
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reap and close the log."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(timeout=grace_s)
        finally:
            self._log.close()


class Processes:
    """Starts real programs for one test and stops every one of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._started: list[Process] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Process:
        """Start ``argv`` with stdout and stderr in ``<log_dir>/<name>.log``."""
        log_path = self._log_dir / f"{name}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            log.close()
            raise
        process = Process(name=name, argv=list(argv), log_path=log_path, popen=popen, _log=log)
        self._started.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every started process, most recent first."""
        while self._started:
            self._started.pop().stop()

    def logs(self) -> str:
        """Every process's log tail, for a failure message."""
        return "\n".join(
            f"----- {p.name} (exit {p.popen.poll()}) -----\n{p.log()[-4000:]}"
            for p in self._started
        )


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout_s: float = 60.0,
    interval_s: float = 0.5,
    diagnostics: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``probe`` until it returns something other than None/False, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        try:
            result = probe()
        except (OSError, ValueError, KeyError) as exc:
            result, last_error = None, f"{type(exc).__name__}: {exc}"
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout_s:.0f} s waiting for {what}"
            if last_error:
                message += f" (last error: {last_error})"
            raise AssertionError(f"{message}\n{diagnostics()}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------- HTTP


def http_get(url: str, timeout_s: float = 5.0) -> str:
    """GET ``url`` and return the body as text (loopback only)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing to fetch non-loopback URL {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 loopback http only
        body: bytes = response.read()
    return body.decode("utf-8")


def prometheus_query(base_url: str, expr: str) -> dict[str, Any]:
    """Run an instant query through the HTTP API; return the decoded JSON (errors included)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = http_get(url)
    except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
        body = exc.read().decode("utf-8")
        exc.close()
    data: dict[str, Any] = json.loads(body)
    return data


def start_prometheus(
    processes: Processes,
    tmp_path: Path,
    *,
    name: str,
    targets: Sequence[str] = (),
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
) -> str:
    """Start a real Prometheus (1 s scrape and evaluation) on a free port; return its URL."""
    from tests.real_programs import require_program

    binary = require_program("prometheus", package="prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "kernelwatch", "static_configs": [{"targets": list(targets)}]}
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_path = tmp_path / f"{name}.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is valid YAML
    base_url = f"http://127.0.0.1:{port}"
    process = processes.start(
        name,
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / (name + '-data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
    )
    wait_until(
        f"{name} to become ready",
        lambda: process.popen.poll() is None and "Ready" in http_get(f"{base_url}/-/ready"),
        timeout_s=30,
        diagnostics=processes.logs,
    )
    return base_url


def daemon_env() -> dict[str, str]:
    """The environment for a daemon under test: repo importable (user checks), no TTY logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNELWATCH_", "NOTIFY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env
