"""Checks a process makes before it starts anything, so that a start that cannot succeed ends at once.

A process reads its settings, then runs these checks, and only then configures logging and
starts its work: a failure is then the one line ``igw`` prints (``igw.errors.StartupError``),
not a line buried after start-up logs, and nothing was half started.

- :func:`check_listen`: the process can listen on its address and port (bound and released
  at once; the server binds again moments later, and a race there is reported the same way).
- :func:`check_kafka`: a broker answers. The consumers and the tools need Kafka to do anything;
  the gateway does not call this: it starts without Kafka and spools (docs/durability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from igw.config import KafkaSettings
from igw.errors import KafkaUnreachable, ListenError

__all__ = [
    "GATEWAY_LISTEN",
    "KAFKA_CHECK_SECONDS",
    "METRICS_LISTEN",
    "ListenSettings",
    "check_kafka",
    "check_listen",
    "kafka_unreachable",
    "listen_error",
]


@dataclass(frozen=True, slots=True)
class ListenSettings:
    """The flags and variables that set a listening address, named in the remedy of a failed bind."""

    host: str
    port: str


# The gateway's webhook port and the consumers' metrics port.
GATEWAY_LISTEN = ListenSettings(host="--host or IGW_HOST", port="--port or IGW_PORT")
METRICS_LISTEN = ListenSettings(host="--metrics-host or IGW_METRICS_HOST", port="--metrics-port or IGW_METRICS_PORT")

# How long a consumer or tool waits for a first answer from Kafka before it gives up.
KAFKA_CHECK_SECONDS = 15.0


def check_listen(host: str, port: int, *, reuse_port: bool = False, settings: ListenSettings) -> None:
    """Bind ``host:port`` and release it; :class:`ListenError` when that fails.

    ``settings`` names the flags and variables that set the address, for the remedy. Port 0 (any
    free port) is not checked. ``reuse_port``: the socket options of a ``--workers`` gateway,
    whose workers share the port.
    """
    if port == 0:
        return
    if not 0 < port < 65536:
        raise ListenError(f"{port} is not a port number", f"choose a port from 1 to 65535 with {settings.port}")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}", f"check {settings.host}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            # The options asyncio's create_server sets, so this check agrees with the real bind.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise listen_error(host, port, exc, settings) from None


def listen_error(host: str, port: int, exc: OSError, settings: ListenSettings) -> ListenError:
    """What a failed bind means, and what to do about it."""
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"port {port} on {host} is already in use",
            f"stop what holds it, or choose another port with {settings.port}",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{host} is not an address of this host", f"set {settings.host} to one of its addresses")
    if exc.errno == errno.EACCES:
        return ListenError(f"not allowed to listen on port {port}", f"choose a port above 1023 with {settings.port}")
    return ListenError(
        f"cannot listen on {host}:{port}: {exc.strerror or exc}", f"check {settings.host}, {settings.port}"
    )


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    # aiokafka logs each refused connection at ERROR; the check reports the outcome in one line.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


_START_KAFKA = "start Kafka, or set KAFKA_BOOTSTRAP_SERVERS to brokers this host can reach"


def kafka_unreachable(kafka: KafkaSettings) -> KafkaUnreachable:
    """No broker of ``kafka`` answers (aiokafka's KafkaConnectionError, raised only while connecting)."""
    return KafkaUnreachable(f"no Kafka broker answers at {kafka.bootstrap_servers}", _START_KAFKA)


async def check_kafka(kafka: KafkaSettings, *, timeout: float = KAFKA_CHECK_SECONDS) -> None:
    """Ask the cluster for its metadata once; :class:`KafkaUnreachable` when no broker answers in time."""
    servers = kafka.bootstrap_servers
    with _quiet_aiokafka():
        client = AIOKafkaClient(client_id=f"{kafka.client_id}-check", **kafka.client_kwargs())
        try:
            async with asyncio.timeout(timeout):
                await client.bootstrap()
        except TimeoutError:
            raise KafkaUnreachable(f"Kafka at {servers} did not answer within {timeout:g} s", _START_KAFKA) from None
        except (KafkaConnectionError, OSError):
            raise kafka_unreachable(kafka) from None
        except KafkaError as exc:
            # Authentication and TLS refusals; the class name says which, the message may quote the server.
            raise KafkaUnreachable(
                f"Kafka at {servers} refused the connection: {type(exc).__name__}",
                "check KAFKA_SECURITY_PROTOCOL and the KAFKA_SASL_* settings",
            ) from None
        finally:
            await client.close()
