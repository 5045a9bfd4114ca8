"""The local stack behind ``igw dev``: a broker and every igw process, in one terminal.

Development only. Each process runs in a session of its own, so a Ctrl-C in the terminal reaches
``igw dev`` alone, which stops them in order: on SIGINT, SIGTERM and SIGHUP (the terminal closed),
at any moment, start-up included. On Linux the children also get SIGTERM when ``igw dev`` dies
outright (``igw_tools.parentdeath``), so no broker or process is left holding the ports.
The settings and secrets the processes get are in ``igw_tools.devenv``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, TypeVar

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from igw.config import KafkaSettings
from igw.topics import TOPIC_NAMES, ensure_topics
from igw_tools.devenv import DEV_INSTAGRAM_ACCOUNT, DEV_PAGE_ACCOUNT, Ports
from igw_tools.localbroker import LocalBroker, port_is_open
from igw_tools.parentdeath import die_with_parent

__all__ = [
    "DEV_INSTAGRAM_ACCOUNT",
    "DEV_PAGE_ACCOUNT",
    "Component",
    "DevStack",
    "busy_ports",
    "python_igw",
]

log = logging.getLogger(__name__)

_COLOURS: Final = ("36", "35", "33", "32", "34", "31")
# How often a line says what the stack is still waiting for.
_PROGRESS_EVERY_SECONDS: Final = 3.0
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    argv: tuple[str, ...]
    port: int
    ready_path: str
    # What it does until ready, for the progress lines ("joining its consumer group").
    starting: str = "starting"


@dataclass
class Running:
    component: Component
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None] = field(init=False)


class DevStack:
    """Starts the broker and the components, relays their output, stops everything on a signal."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        kafka: KafkaSettings,
        env: dict[str, str],
        state_dir: Path,
        ports: Ports,
        out: IO[str] = sys.stdout,
    ) -> None:
        self._components = components
        self._kafka = kafka
        self._env = dict(env)
        self._state_dir = state_dir
        self._ports = ports
        self._out: IO[str] | None = out
        self._colour = out.isatty()
        self._running: list[Running] = []
        self._stop = asyncio.Event()
        self._bridge: asyncio.Task[None] | None = None

    def say(self, name: str, line: str, colour: str = "1") -> None:
        if self._out is None:
            return
        prefix = f"{name:>10} |"
        if self._colour:
            prefix = f"\033[{colour}m{prefix}\033[0m"
        try:
            self._out.write(f"{prefix} {line}\n")
            self._out.flush()
        except (OSError, ValueError):
            # The terminal is gone (SIGHUP: it was closed). Stopping the stack matters more than telling it.
            self._out = None

    async def run(self, banner: Sequence[str]) -> int:
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        broker = LocalBroker(port=self._ports.kafka, log_path=self._state_dir / "tansu.log", die_with_parent=True)
        status = 0
        try:
            if await self._unless_stopped(self._start(broker)):
                for line in banner:
                    self.say("igw dev", line)
                status = await self._supervise()
        finally:
            if self._bridge is not None:
                self._bridge.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._bridge
            await self._stop_all()
            # In memory, nothing to keep: no need to wait while Tansu finishes a group join it holds.
            await asyncio.to_thread(broker.stop, 1.0)
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            self.say("igw dev", "stopped")
        return status

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self._stop.is_set():
            self.say("igw dev", f"{sig.name}: stopping everything")
        self._stop.set()

    async def _unless_stopped(self, work: Awaitable[T]) -> bool:
        """Run ``work`` unless a stop signal comes first (then cancel it); True when it finished."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        task.result()  # a failed start-up raises here
        return True

    async def _start(self, broker: LocalBroker) -> None:
        started = time.monotonic()
        names = ", ".join(c.name for c in self._components)
        self.say("igw dev", f"starting the local broker and {names}")
        # On this thread, the loop's: the broker's death signal follows the thread that started it.
        broker.launch()
        listen_by = time.monotonic() + 15
        while not broker.listening():  # the broker has no readiness to wait on: poll its port
            if time.monotonic() > listen_by:
                raise RuntimeError(f"the local broker did not listen on {broker.bootstrap_servers} within 15 s")
            await asyncio.sleep(0.05)
        self.say("broker", f"Tansu (local Kafka-protocol broker) on {broker.bootstrap_servers}")
        created = await ensure_topics(self._kafka, TOPIC_NAMES)
        self.say(
            "broker",
            "topics: " + ", ".join(self._kafka.topic(t) for t in TOPIC_NAMES) + (" (created)" if created else ""),
        )
        for index, component in enumerate(self._components):
            await self._launch(component, _COLOURS[index % len(_COLOURS)])
        await self._wait_ready(started)

    async def _launch(self, component: Component, colour: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *component.argv,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches igw dev only; it stops the children in order
            preexec_fn=die_with_parent(),  # and they end with igw dev, even if it is killed outright
        )
        running = Running(component, process)
        running.pump = asyncio.create_task(self._relay(component.name, process, colour))
        self._running.append(running)

    async def _relay(self, name: str, process: asyncio.subprocess.Process, colour: str) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.say(name, _readable(raw.decode(errors="replace").rstrip()), colour)

    async def _wait_ready(self, started: float, timeout: float = 120.0) -> None:
        """Wait for each component's readiness, saying what is awaited every few seconds."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for running in self._running:
                component = running.component
                url = f"http://127.0.0.1:{component.port}{component.ready_path}"
                next_progress = time.monotonic() + _PROGRESS_EVERY_SECONDS
                while not await _answers(session, url):
                    if running.process.returncode is not None:
                        raise RuntimeError(f"{component.name} exited with status {running.process.returncode}")
                    now = time.monotonic()
                    if now > deadline:
                        raise RuntimeError(f"{component.name} did not answer {url} within {timeout:.0f}s")
                    if now >= next_progress:
                        waited = f"{now - started:.0f} s"
                        self.say("igw dev", f"waiting for {component.name}: {component.starting} ({waited})")
                        next_progress = now + _PROGRESS_EVERY_SECONDS
                    await asyncio.sleep(0.1)
                self.say("igw dev", f"{component.name} ready ({time.monotonic() - started:.1f} s)")
                if component.name == "emulator":
                    # Before the agent can answer anything: the emulator must hear of every inbound message.
                    self._bridge = asyncio.create_task(self._window_bridge(component), name="igw-dev-window-bridge")

    async def _supervise(self) -> int:
        waiters = {asyncio.create_task(r.process.wait()): r for r in self._running}
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stop, *waiters}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in waiters:
            task.cancel()
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

    async def _window_bridge(self, emulator: Component) -> None:
        """Tell the Graph emulator about inbound messages, so its 24 h window opens as Meta's would."""
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


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(url) as resp:
            return resp.status == 200
    return False


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


def python_igw(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "igw_tools.cli", *args)
