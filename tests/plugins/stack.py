"""igw processes as subprocesses on free loopback ports: the whole stack, as an operator runs it.

``igw_stack`` starts ``igw <command> ...`` with an explicit environment, waits for its health
endpoint, and stops every process (SIGTERM, then SIGKILL) after the test. Logs go to files in
the test's tmp dir and are printed when a process fails to come up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.prometheus import stop_process


@dataclass
class IgwProcess:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback test URL
            return bool(resp.status == 200)
    except OSError:
        return False


def stack_env(bootstrap: str, prefix: str) -> dict[str, str]:
    """What every process of a stack test shares: the broker, a topic prefix, quick consumer timings."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "IGW_TOPIC_PREFIX": prefix,
        # Tansu does not support aiokafka's idempotent producer; production keeps it on.
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_ACKS": "all",
        "IGW_TOPIC_PARTITIONS": "3",
        "IGW_LOG_FORMAT": "text",
        # Tansu holds a JoinGroup for part of the rebalance timeout: keep joins quick in tests.
        "IGW_CONSUMER_MAX_POLL_INTERVAL_MS": "2000",
        "IGW_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "IGW_CONSUMER_HEARTBEAT_MS": "500",
        "IGW_CONSUMER_POLL_TIMEOUT_MS": "100",
        "IGW_CONSUMER_LAG_INTERVAL_SECONDS": "1",
        "IGW_SHUTDOWN_TIMEOUT_SECONDS": "3",
    }


IgwStarter = Callable[..., IgwProcess]


@pytest.fixture
def igw_stack(tmp_path: Path) -> Iterator[IgwStarter]:
    """``igw_stack(name, args, env, url=..., ready_path="/healthz")``: start one igw process and wait for it."""
    started: list[IgwProcess] = []

    def start(
        name: str,
        args: list[str],
        env: Mapping[str, str],
        *,
        url: str,
        ready_path: str = "/healthz",
        timeout: float = 30,
    ) -> IgwProcess:
        log_path = tmp_path / f"{name}.log"
        environ = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", **env}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "igw_tools.cli", *args], env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        proc = IgwProcess(name, url, process, log_path)
        started.append(proc)
        deadline = time.monotonic() + timeout
        while not _http_ok(url + ready_path):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"igw {name} did not become ready at {url}{ready_path}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return proc

    yield start
    for proc in reversed(started):
        stop_process(proc.process)
