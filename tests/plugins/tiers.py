"""Test tiers: a test that needs Kafka or Redis says so with its marker, and only such a test gets one.

``make test-unit`` runs ``pytest -m "not kafka and not redis"``, the broker-free tier; ``make test``
runs everything. Two checks keep the markers complete, so the unit tier never waits on a broker:

- A test whose fixtures start a broker or reach Redis (``KAFKA_FIXTURES``, ``REDIS_FIXTURES``)
  fails before any fixture is set up unless it carries the marker; so does one asking for such a
  fixture at run time.
- While a test without the marker runs, a connection to a Kafka port (9092, the ports of
  ``KAFKA_BOOTSTRAP_SERVERS``, every broker the suite started) or to Redis's port (``REDIS_URL``)
  is refused, and so is starting a broker, in the test's process (``LocalBroker``) or in a child
  process (``IGW_TANSU_BIN`` points at a stand-in that refuses); the test then fails at teardown
  even when the code under test caught the error.
"""

from __future__ import annotations

import errno
import os
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from igw_tools.localbroker import LocalBroker

# Fixtures that start a broker (every Kafka fixture depends on one of these) or reach Redis.
KAFKA_FIXTURES = frozenset({"kafka_broker", "own_broker"})
REDIS_FIXTURES = frozenset({"redis_prefix", "private_redis"})
_FIXTURES_OF = {"kafka": KAFKA_FIXTURES, "redis": REDIS_FIXTURES}


def _bootstrap_ports(servers: str) -> set[int]:
    return {int(part.rsplit(":", 1)[1]) for part in servers.split(",") if ":" in part}


# Ports refused to unmarked tests; brokers the suite starts add theirs.
_kafka_ports: set[int] = {9092} | _bootstrap_ports(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
REDIS_PORT = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")).port or 6379


@dataclass
class _ChildStarts:
    """The stand-in for Tansu that unmarked tests get, and the file where it notes each start."""

    stand_in: Path
    log: Path

    @classmethod
    def create(cls, directory: Path) -> _ChildStarts:
        log, stand_in = directory / "refused-starts", directory / "refusing-tansu"
        log.touch()
        stand_in.write_text(
            "#!/bin/sh\n"
            f'echo "$PPID" >> {shlex.quote(str(log))}\n'
            "echo 'igw test tiers: this test is not marked kafka and may not start a broker' >&2\n"
            "exit 3\n"
        )
        stand_in.chmod(0o755)
        return cls(stand_in, log)

    def count(self) -> int:
        return self.log.stat().st_size


@dataclass
class _Running:
    """The test running now: which services it declared, and what it reached without declaring."""

    nodeid: str
    kafka: bool
    redis: bool
    child_starts_before: int
    violations: list[str] = field(default_factory=list)

    def refuse(self, what: str, marker: str) -> OSError:
        message = f"{self.nodeid} {what} but is not marked {marker} (add pytest.mark.{marker})"
        self.violations.append(message)
        return ConnectionRefusedError(errno.ECONNREFUSED, f"igw test tiers: {message}")

    def collect(self, child_starts: _ChildStarts) -> list[str]:
        """Everything reached without its marker so far, child processes' broker starts included."""
        count = child_starts.count()
        if count > self.child_starts_before:
            self.child_starts_before = count
            self.refuse("started a Kafka broker in a child process", "kafka")
        return list(dict.fromkeys(self.violations))


_running: _Running | None = None
_child_starts: _ChildStarts | None = None


def forgive() -> list[str]:
    """What the running test reached without its marker so far, no longer held against it (this plugin's tests)."""
    assert _running is not None
    assert _child_starts is not None
    violations = _running.collect(_child_starts)
    _running.violations.clear()
    return violations


def _check_address(address: Any) -> None:
    running = _running
    if running is None or not isinstance(address, tuple) or len(address) < 2:
        return
    port = address[1]
    if not running.kafka and port in _kafka_ports:
        raise running.refuse(f"connected to a Kafka port ({port})", "kafka")
    if not running.redis and port == REDIS_PORT:
        raise running.refuse(f"connected to Redis ({port})", "redis")


@pytest.fixture(scope="session", autouse=True)
def _refuse_unmarked_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Patched once for the session; the running test's markers decide what passes (``_tier_guard``)."""
    global _child_starts
    _child_starts = _ChildStarts.create(tmp_path_factory.mktemp("tiers"))
    connect, connect_ex, start_broker = socket.socket.connect, socket.socket.connect_ex, LocalBroker.start

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        _check_address(address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        _check_address(address)
        return connect_ex(sock, address)

    def guarded_start(broker: LocalBroker, timeout: float = 15.0) -> None:
        if _running is not None and not _running.kafka:
            raise _running.refuse("started a Kafka broker", "kafka")
        start_broker(broker, timeout)
        _kafka_ports.add(broker.port)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        patch.setattr(LocalBroker, "start", guarded_start)
        yield


def refuse_unmarked(node: pytest.Item, fixtures: set[str]) -> None:
    """Fail ``node`` when ``fixtures`` holds a broker or Redis fixture and it lacks the marker."""
    for marker, needed in _FIXTURES_OF.items():
        uses = sorted(fixtures & needed)
        if uses and node.get_closest_marker(marker) is None:
            pytest.fail(
                f"{node.nodeid} uses {', '.join(uses)} but is not marked {marker} (add pytest.mark.{marker})",
                pytrace=False,
            )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test asking for a broker or Redis without its marker fails before anything starts."""
    refuse_unmarked(item, set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """The same for a fixture asked for at run time (``request.getfixturevalue``)."""
    if fixturedef.scope == "function" and isinstance(request.node, pytest.Item):
        refuse_unmarked(request.node, {fixturedef.argname})


@pytest.fixture(autouse=True)
def _tier_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    global _running
    assert _child_starts is not None
    node = request.node
    running = _running = _Running(
        node.nodeid,
        kafka=node.get_closest_marker("kafka") is not None,
        redis=node.get_closest_marker("redis") is not None,
        child_starts_before=_child_starts.count(),
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            if not running.kafka:  # child processes (igw dev, bench) start Tansu through this variable
                patch.setenv("IGW_TANSU_BIN", str(_child_starts.stand_in))
            yield
    finally:
        _running = None
    violations = running.collect(_child_starts)
    if violations:
        pytest.fail("\n".join(violations), pytrace=False)
