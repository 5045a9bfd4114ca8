"""Prometheus' own tools for the suite: ``promtool`` and a real ``prometheus`` server per test.

Both come from Debian's ``prometheus`` package, which ``scripts/ensure-services`` installs. A
missing binary fails the test with that hint; it never skips.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from igw_tools.localbroker import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/ensure-services (Debian package 'prometheus')")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@dataclass
class PrometheusServer:
    url: str
    config_path: Path
    process: subprocess.Popen[bytes]


def start_prometheus(tmp: Path, targets: dict[str, str], *, scrape_interval: str = "1s") -> PrometheusServer:
    """A prometheus process on a free port scraping ``targets`` (job -> host:port), data in ``tmp``."""
    binary = require_binary("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 20
    while not _ready(f"http://127.0.0.1:{port}/-/ready"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"prometheus did not start; see {tmp / 'prometheus.log'}")
        time.sleep(0.1)
    return PrometheusServer(f"http://127.0.0.1:{port}", config_path, process)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback test URL
            return bool(resp.status == 200)
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


PrometheusFactory = Callable[[dict[str, str]], PrometheusServer]


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """``prometheus_factory({"job": "127.0.0.1:port"})`` starts a server; stopped after the test."""
    servers: list[PrometheusServer] = []

    def make(targets: dict[str, str]) -> PrometheusServer:
        tmp = tmp_path / f"prometheus{len(servers)}"
        tmp.mkdir()
        server = start_prometheus(tmp, targets)
        servers.append(server)
        return server

    yield make
    for server in servers:
        stop_process(server.process)
