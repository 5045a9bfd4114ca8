"""Fault-test tools: a broker of a test's own, the real ``igw gateway`` as a process, a load generator.

Named to load after the gateway and kafka plugins, whose helpers it imports (assertion rewriting).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import orjson
import pytest

from gateway.signature import sign
from igw.config import KafkaSettings
from igw_tools.localbroker import LocalBroker, free_port, port_is_open
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, dm_body
from tests.plugins.kafka import KafkaRecord


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, free to be stopped, replaced and frozen."""
    broker = LocalBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.thaw()
        broker.stop()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of this module's own, free to be frozen (each test thaws it again); cheaper than one per test."""
    broker = LocalBroker(log_path=tmp_path_factory.mktemp("module-broker") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.thaw()
        broker.stop()


def gateway_env(kafka: KafkaSettings, spool_dir: Path | None, **extra: str) -> dict[str, str]:
    """The environment of a real ``igw gateway`` for the suite: test secrets, JSON logs, a spool dir."""
    env = {
        **os.environ,
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
        "INSTAGRAM_APP_SECRET": APP_SECRET,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "IGW_TOPIC_PREFIX": kafka.topic_prefix,
        "IGW_LOG_FORMAT": "json",
    }
    if spool_dir is None:
        env["IGW_SPOOL_ENABLED"] = "false"
    else:
        env["IGW_SPOOL_DIR"] = str(spool_dir)
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    """``python -m igw_tools.cli gateway`` on a free loopback port, its output appended to ``log_path``."""

    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "igw_tools.cli", "gateway", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"igw gateway exited with {self.process.returncode}: {self.log_path.read_text()}")
            if port_is_open("127.0.0.1", self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"igw gateway did not listen within {timeout}s")

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def gateway_process() -> Iterator[Callable[..., GatewayProcess]]:
    """``gateway_process(env, log_path)`` starts a real gateway; every one started is stopped at the end."""
    started: list[GatewayProcess] = []

    def _start(env: dict[str, str], log_path: Path, *args: str) -> GatewayProcess:
        proc = GatewayProcess(env, log_path, tuple(args))
        started.append(proc)
        proc.start()
        return proc

    yield _start
    for proc in started:
        proc.stop()


@dataclass(frozen=True, slots=True)
class Outcome:
    mid: str
    status: int  # 0: no answer (connection refused or reset)
    seconds: float


Post = Callable[[str], Awaitable[Outcome]]


def signed_poster(session: aiohttp.ClientSession, url: str, *, timeout: float = 10.0) -> Post:
    """``await post(mid)``: one signed DM with that mid (and a user derived from it)."""

    async def post(mid: str) -> Outcome:
        body = dm_body(f"load {mid}", mid=mid, user=f"9{abs(hash(mid)) % 10**15:015d}")
        headers = {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"}
        started = time.monotonic()
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                await resp.read()
                return Outcome(mid, resp.status, time.monotonic() - started)
        except (aiohttp.ClientError, TimeoutError):
            return Outcome(mid, 0, time.monotonic() - started)

    return post


async def run_load(post: Post, *, workers: int, seconds: float, tag: str) -> list[Outcome]:
    """``workers`` closed-loop clients posting distinct mids for ``seconds``."""
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            outcomes.append(await post(f"{tag}-{w}-{n}"))
            n += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return outcomes


@dataclass(frozen=True, slots=True)
class Tally:
    acknowledged: set[str]
    found: Counter[str]

    @property
    def missing(self) -> set[str]:
        return self.acknowledged - set(self.found)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.found.values() if n > 1)

    @property
    def duplicated(self) -> set[str]:
        return {mid for mid, n in self.found.items() if n > 1}


def tally(outcomes: list[Outcome], records: list[KafkaRecord]) -> Tally:
    """Acknowledged mids against the mids read back from Kafka."""
    found = Counter(orjson.loads(r.value)["message"]["mid"] for r in records)
    return Tally({o.mid for o in outcomes if o.status == 200}, found)


async def wait_for_metric(
    session: aiohttp.ClientSession, base_url: str, name: str, want: float, timeout: float
) -> bool:
    """Poll ``/metrics`` until the unlabelled sample ``name`` equals ``want``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base_url}/metrics") as resp:
                text = await resp.text()
            for line in text.splitlines():
                if line.startswith(name + " ") and float(line.split()[1]) == want:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    return False


def report_fault(name: str, **figures: object) -> None:
    """Append one JSON line of figures to the file named by ``IGW_FAULT_REPORT``, when set (the report table)."""
    path = os.environ.get("IGW_FAULT_REPORT")
    if path:
        with Path(path).open("ab") as f:
            f.write(orjson.dumps({"test": name, **figures}) + b"\n")


@dataclass
class RedisServer:
    """A ``redis-server`` of a test's own on a free loopback port, free to be frozen, killed and restarted."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not port_is_open("127.0.0.1", self.port):
            time.sleep(0.02)
        if not port_is_open("127.0.0.1", self.port):
            raise RuntimeError("redis-server did not listen in time")

    def freeze(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (the suite's shared one must not be stopped)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
