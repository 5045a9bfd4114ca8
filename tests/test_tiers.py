"""The tier guard (tests/plugins/tiers.py): an unmarked test cannot reach a broker or Redis."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from igw_tools.localbroker import LocalBroker, free_port, port_is_open
from tests.plugins import tiers


def test_redis_port_is_refused_to_a_test_not_marked_redis() -> None:
    """Connecting to Redis's port raises at once, and the test is held to account for it even if that is caught."""
    with pytest.raises(ConnectionRefusedError, match="igw test tiers"):
        socket.create_connection(("127.0.0.1", tiers.REDIS_PORT), timeout=1)
    assert tiers.forgive()
    assert not port_is_open("127.0.0.1", tiers.REDIS_PORT)  # swallows the refusal: still noted
    [violation] = tiers.forgive()
    assert "connected to Redis" in violation
    assert "pytest.mark.redis" in violation


def test_a_broker_is_refused_to_a_test_not_marked_kafka() -> None:
    """Starting a broker here, or on port 9092's default, is refused before anything listens."""
    broker = LocalBroker(port=free_port())
    with pytest.raises(ConnectionRefusedError, match="started a Kafka broker"):
        broker.start()
    assert broker.process is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 9092), timeout=1)
    assert len(tiers.forgive()) == 2


def test_a_broker_started_by_a_child_process_is_refused() -> None:
    """igw dev and the benchmarks start Tansu in a child process: the stand-in refuses and the start is noted."""
    start = "from igw_tools.localbroker import LocalBroker, free_port; LocalBroker(port=free_port()).start()"
    result = subprocess.run([sys.executable, "-c", start], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "the local broker exited with status 3" in result.stderr
    [violation] = tiers.forgive()
    assert "started a Kafka broker in a child process" in violation


def test_other_loopback_ports_pass(unused_tcp_port: int) -> None:
    """Anything else (test servers, the Graph API emulator) is not the guard's business."""
    assert not port_is_open("127.0.0.1", unused_tcp_port)
    assert tiers.forgive() == []


def test_a_fixture_needing_a_service_fails_an_unmarked_test(request: pytest.FixtureRequest) -> None:
    """Asking for a broker or Redis fixture without the marker fails with the marker to add."""
    assert isinstance(request.node, pytest.Item)
    with pytest.raises(pytest.fail.Exception, match=r"uses redis_prefix but is not marked redis"):
        tiers.refuse_unmarked(request.node, {"redis_prefix", "tmp_path"})
    with pytest.raises(pytest.fail.Exception, match=r"uses kafka_broker but is not marked kafka"):
        tiers.refuse_unmarked(request.node, {"kafka_broker"})
    tiers.refuse_unmarked(request.node, {"memory_gateway_client", "tmp_path"})


@pytest.mark.redis
def test_a_marked_test_reaches_redis() -> None:
    """The marker lets the connection through."""
    assert port_is_open("127.0.0.1", tiers.REDIS_PORT)
