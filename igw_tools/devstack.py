"""The local stack behind ``igw dev``: a broker and every igw process, in one terminal.

Development only. Secrets are generated once and kept in ``<state dir>/dev.env`` (mode 600) so
the curl and ``igw simulate`` examples can ``source`` them; ``INSTAGRAM_*`` values from the
environment win when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from igw.config import Env, KafkaSettings
from igw.topics import TOPIC_NAMES, ensure_topics
from igw_tools.localbroker import LocalBroker, port_is_open

log = logging.getLogger(__name__)

# The account the README, `igw simulate` and the emulator agree on for local runs.
DEV_INSTAGRAM_ACCOUNT: Final = "17841400000000000"
DEV_PAGE_ACCOUNT: Final = "106000000000001"
_COLOURS: Final = ("36", "35", "33", "32", "34", "31")


@dataclass(frozen=True, slots=True)
class Ports:
    gateway: int = 8080
    emulator: int = 8081
    kafka: int = 9092
    agent_metrics: int = 9101
    analytics_metrics: int = 9102
    reconcile_metrics: int = 9103


@dataclass(frozen=True, slots=True)
class DevSecrets:
    verify_token: str
    app_secret: str
    instagram_token: str
    page_token: str

    @classmethod
    def load_or_create(cls, state_dir: Path, environ: Mapping[str, str]) -> DevSecrets:
        path = state_dir / "dev.env"
        saved: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.removeprefix("export ").partition("=")
                if sep:
                    saved[key.strip()] = value.strip().strip("'")
        env = Env(environ)
        given_token = env.secret("INSTAGRAM_WEBHOOK_VERIFY_TOKEN")
        given_secret = env.secret("INSTAGRAM_APP_SECRET")
        values = cls(
            verify_token=(given_token.value if given_token else None)
            or saved.get("INSTAGRAM_WEBHOOK_VERIFY_TOKEN")
            or secrets.token_urlsafe(18),
            app_secret=(given_secret.value if given_secret else None)
            or saved.get("INSTAGRAM_APP_SECRET")
            or secrets.token_hex(16),
            instagram_token=saved.get("IGW_DEV_INSTAGRAM_TOKEN") or "IGdev" + secrets.token_urlsafe(24),
            page_token=saved.get("IGW_DEV_PAGE_TOKEN") or "EAAdev" + secrets.token_urlsafe(24),
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# Local secrets of `igw dev` (development only). Use with: source .igw/dev.env\n"
            f"export INSTAGRAM_WEBHOOK_VERIFY_TOKEN='{values.verify_token}'\n"
            f"export INSTAGRAM_APP_SECRET='{values.app_secret}'\n"
            f"export IGW_DEV_INSTAGRAM_TOKEN='{values.instagram_token}'\n"
            f"export IGW_DEV_PAGE_TOKEN='{values.page_token}'\n"
        )
        path.chmod(0o600)
        return values

    def accounts_file(self, state_dir: Path) -> Path:
        """The accounts the agent sends as and the emulator accepts."""
        path = state_dir / "dev-accounts.json"
        accounts = [
            {"account_id": DEV_INSTAGRAM_ACCOUNT, "flavour": "ig_ig", "token_env": "IGW_DEV_INSTAGRAM_TOKEN"},
            {"account_id": DEV_PAGE_ACCOUNT, "flavour": "messenger", "token_env": "IGW_DEV_PAGE_TOKEN"},
        ]
        path.write_bytes(orjson.dumps(accounts, option=orjson.OPT_INDENT_2))
        return path


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    argv: tuple[str, ...]
    port: int
    ready_path: str


@dataclass
class Running:
    component: Component
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None] = field(init=False)


class DevStack:
    """Starts the broker and the components, relays their output, stops everything on Ctrl-C."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        kafka: KafkaSettings,
        env: Mapping[str, str],
        state_dir: Path,
        ports: Ports,
        out: IO[str] = sys.stdout,
    ) -> None:
        self._components = components
        self._kafka = kafka
        self._env = dict(env)
        self._state_dir = state_dir
        self._ports = ports
        self._out = out
        self._colour = out.isatty()
        self._running: list[Running] = []
        self._stop = asyncio.Event()

    def say(self, name: str, line: str, colour: str = "1") -> None:
        prefix = f"{name:>10} |"
        if self._colour:
            prefix = f"\033[{colour}m{prefix}\033[0m"
        self._out.write(f"{prefix} {line}\n")
        self._out.flush()

    async def run(self, banner: Sequence[str]) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        broker = LocalBroker(port=self._ports.kafka, log_path=self._state_dir / "tansu.log")
        status = 0
        try:
            await asyncio.to_thread(broker.start)
            self.say("broker", f"Tansu (local Kafka-protocol broker) on {broker.bootstrap_servers}")
            created = await ensure_topics(self._kafka, TOPIC_NAMES)
            self.say(
                "broker",
                "topics: " + ", ".join(self._kafka.topic(t) for t in TOPIC_NAMES) + (" (created)" if created else ""),
            )
            for index, component in enumerate(self._components):
                await self._start(component, _COLOURS[index % len(_COLOURS)])
            await self._wait_ready()
            for line in banner:
                self.say("igw dev", line)
            bridge = asyncio.create_task(self._window_bridge(), name="igw-dev-window-bridge")
            status = await self._supervise()
            bridge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bridge
        finally:
            await self._stop_all()
            await asyncio.to_thread(broker.stop)
            self.say("igw dev", "stopped")
        return status

    async def _start(self, component: Component, colour: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *component.argv,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches igw dev only; it stops the children in order
        )
        running = Running(component, process)
        running.pump = asyncio.create_task(self._relay(component.name, process, colour))
        self._running.append(running)

    async def _relay(self, name: str, process: asyncio.subprocess.Process, colour: str) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.say(name, _readable(raw.decode(errors="replace").rstrip()), colour)

    async def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for running in self._running:
                url = f"http://127.0.0.1:{running.component.port}{running.component.ready_path}"
                while True:
                    if running.process.returncode is not None:
                        raise RuntimeError(f"{running.component.name} exited with status {running.process.returncode}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(url) as resp:
                            if resp.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{running.component.name} did not answer {url} within {timeout:.0f}s")
                    await asyncio.sleep(0.2)

    async def _supervise(self) -> int:
        waiters = {asyncio.create_task(r.process.wait()): r for r in self._running}
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stop, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task, running in waiters.items():
            if task in done:
                self.say("igw dev", f"{running.component.name} exited with status {task.result()}; stopping the stack")
                return 1
        return 0

    async def _stop_all(self) -> None:
        for running in reversed(self._running):
            if running.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    running.process.send_signal(signal.SIGTERM)
        for running in reversed(self._running):
            try:
                await asyncio.wait_for(running.process.wait(), 25)
            except TimeoutError:
                running.process.kill()
                await running.process.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await running.pump

    async def _window_bridge(self) -> None:
        """Tell the Graph emulator about inbound messages, so its 24 h window opens as Meta's would."""
        emulator = next((r.component for r in self._running if r.component.name == "emulator"), None)
        if emulator is None:
            return
        url = f"http://127.0.0.1:{emulator.port}/_emulator/inbound"
        consumer = AIOKafkaConsumer(
            self._kafka.topic("messages"),
            self._kafka.topic("postbacks"),
            self._kafka.topic("events"),
            bootstrap_servers=self._kafka.bootstrap_servers,
            group_id=None,
            # The dev broker is new each run: read it all, so nothing published before this consumer
            # got its partitions is missed.
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            async with aiohttp.ClientSession() as session:
                async for record in consumer:
                    event = orjson.loads(record.value)
                    if event.get("type") in ("message", "postback", "reaction", "referral") and event.get("user_id"):
                        body = {
                            "account_id": event["account_id"],
                            "user_id": event["user_id"],
                            "timestamp": event["timestamp"],
                        }
                        with contextlib.suppress(aiohttp.ClientError):
                            async with session.post(url, json=body):
                                pass
        finally:
            await consumer.stop()


def _readable(line: str) -> str:
    """JSON log lines from the children, shown as ``level logger: message``."""
    if not line.startswith("{"):
        return line
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(doc, dict) or "msg" not in doc:
        return line
    return f"{doc.get('level', '')} {doc.get('logger', '')}: {doc['msg']}"


def busy_ports(ports: Ports) -> list[str]:
    named = {
        "--port (gateway)": ports.gateway,
        "--emulator-port": ports.emulator,
        "--kafka-port": ports.kafka,
        "--agent-metrics-port": ports.agent_metrics,
        "--analytics-metrics-port": ports.analytics_metrics,
        "--reconcile-metrics-port": ports.reconcile_metrics,
    }
    return [f"{port} ({flag})" for flag, port in named.items() if port_is_open("127.0.0.1", port)]


def child_env(
    base: Mapping[str, str],
    dev: DevSecrets,
    kafka: KafkaSettings,
    ports: Ports,
    accounts: Path,
    *,
    spool_dir: Path | None = None,
) -> dict[str, str]:
    emulator = f"http://127.0.0.1:{ports.emulator}"
    env = dict(base)
    env.update(
        {
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": dev.verify_token,
            "INSTAGRAM_APP_SECRET": dev.app_secret,
            "IGW_DEV_INSTAGRAM_TOKEN": dev.instagram_token,
            "IGW_DEV_PAGE_TOKEN": dev.page_token,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            # Tansu does not support aiokafka's idempotent producer.
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "IGW_TOPIC_PREFIX": kafka.topic_prefix,
            "IGW_GRAPH_BASE_URL": emulator,
            "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator,
            "IGW_ACCOUNTS_FILE": str(accounts),
            "IGW_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spool_dir is not None and Env(base).raw("IGW_SPOOL_DIR") is None:
        env["IGW_SPOOL_DIR"] = str(spool_dir)  # beside dev.env, whatever the working directory
    return env


def python_igw(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "igw_tools.cli", *args)


def environ() -> dict[str, str]:
    return dict(os.environ)
