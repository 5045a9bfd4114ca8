"""`igw dev` brings up the local stack, answers the README's examples, and leaves nothing behind.

It stops everything on SIGINT, SIGTERM and SIGHUP (the terminal closed), start-up included, and
its children end when it is killed outright (Linux). Secrets from the environment are never
printed; generated ones are shown once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.signature import sign
from igw.config import KafkaSettings
from igw_tools.devenv import DevSecrets, Ports, child_env, read_env_file, write_env_file
from igw_tools.localbroker import free_port, port_is_open
from igw_tools.parentdeath import SUPPORTED as DIES_WITH_PARENT
from tests.plugins.gateway import dm_body

# A secret "from the shell": igw dev must use it and never print or save it.
ENV_APP_SECRET = "shell-app-secret-5f0c3d2e9a"


def _dev_args(state_dir: Path, ports: dict[str, int]) -> list[str]:
    return [
        sys.executable, "-m", "igw_tools.cli", "dev", "--state-dir", str(state_dir),
        "--port", str(ports["gateway"]), "--emulator-port", str(ports["emulator"]),
        "--kafka-port", str(ports["kafka"]), "--agent-metrics-port", str(ports["agent"]),
        "--analytics-metrics-port", str(ports["analytics"]), "--reconcile-metrics-port", str(ports["reconcile"]),
    ]  # fmt: skip


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        for task in Path(f"/proc/{stack.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.update(children)
            stack.extend(children)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "zombie" not in status:
            alive.add(pid)
    return alive


async def _gone(pids: set[int], ports: dict[str, int], timeout: float) -> tuple[set[int], list[int]]:
    """Wait until none of ``pids`` runs and no port answers; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = _alive(pids)
        open_ports = [port for port in ports.values() if port_is_open("127.0.0.1", port)]
        if (not left and not open_ports) or time.monotonic() > deadline:
            return left, open_ports
        await asyncio.sleep(0.2)


async def _wait_for(output: _Output, proc: subprocess.Popen[bytes], text: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text not in output.text and proc.poll() is None:
        await asyncio.sleep(0.1)
    assert text in output.text, output.text


class _Output:
    """igw dev's output, read on a thread so the test can wait for the banner and show it on failure."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def join(self, proc: subprocess.Popen[bytes]) -> None:
        self._thread.join(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.kafka
async def test_dev_stack_serves_the_readme_walkthrough(tmp_path: Path) -> None:
    """The handshake works, a signed DM and the App Dashboard's test DM (`igw simulate --dashboard-test`) are
    each answered once, and SIGHUP (the terminal closed) leaves no process or port behind."""
    ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics", "reconcile")}
    environ = {**os.environ, "INSTAGRAM_APP_SECRET": ENV_APP_SECRET}
    environ.pop("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", None)
    proc = subprocess.Popen(_dev_args(tmp_path, ports), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(proc)
    children: set[int] = set()
    try:
        # The banner comes once every process answers its readiness check (the consumers have joined).
        await _wait_for(output, proc, "Ctrl-C stops everything")
        children = _descendants(proc.pid)
        assert len(children) >= 5, children  # the broker and four igw processes
        assert "agent ready" in output.text  # progress while the consumers join
        url = f"http://127.0.0.1:{ports['gateway']}/api/v1/instagram/webhook"
        dev_env = read_env_file(tmp_path / "dev.env")
        assert (tmp_path / "dev.env").stat().st_mode & 0o777 == 0o600
        assert "INSTAGRAM_APP_SECRET" not in dev_env, "a secret from the environment is never saved"
        assert dev_env["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{ports['kafka']}"
        assert dev_env["KAFKA_ENABLE_IDEMPOTENCE"] == "false"
        async with aiohttp.ClientSession() as session:
            params = {
                "hub.mode": "subscribe",
                "hub.verify_token": dev_env["INSTAGRAM_WEBHOOK_VERIFY_TOKEN"],
                "hub.challenge": "1158201444",
            }
            async with session.get(url, params=params) as resp:
                assert await resp.text() == "1158201444"
            body = dm_body("Hi! Are you open on Saturday?", timestamp=int(time.time() * 1000))
            headers = {"X-Hub-Signature-256": sign(body, ENV_APP_SECRET)}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200
            # The clinic's rules agent answers through the Graph emulator: exactly one reply. The
            # emulator's listing waits for it (README: ?wait=).
            messages = f"http://127.0.0.1:{ports['emulator']}/_emulator/messages"
            async with session.get(messages, params={"recipient": "1234567890123456", "wait": "30"}) as resp:
                sent = await resp.json()
            assert len(sent) == 1, output.text
            assert sent[0]["recipient_id"] == "1234567890123456"
            # The App Dashboard's "Test" DM (a `changes` item) is a message the agent answers too.
            simulate = [
                sys.executable, "-m", "igw_tools.cli", "simulate", "--dashboard-test", "--quiet",
                "--url", url, "--secret", ENV_APP_SECRET,
            ]  # fmt: skip
            result = await asyncio.to_thread(subprocess.run, simulate, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stdout + result.stderr
            async with session.get(messages, params={"recipient": "12334", "wait": "30"}) as resp:
                sent += await resp.json()
            assert [s["recipient_id"] for s in sent] == ["1234567890123456", "12334"], output.text
            # The emulator echoes each reply to the gateway, as Meta does; the agent knows them for its own.
            stats: dict[str, object] = {}
            echo_deadline = time.monotonic() + 20
            while time.monotonic() < echo_deadline and stats.get("echoes_delivered") != 2:
                async with session.get(f"http://127.0.0.1:{ports['emulator']}/_emulator/stats") as resp:
                    stats = await resp.json()
                await asyncio.sleep(0.2)
            assert stats["echoes_delivered"] == 2, stats
            await asyncio.sleep(1.0)
            async with session.get(f"http://127.0.0.1:{ports['agent']}/metrics") as resp:
                metrics = await resp.text()
            assert 'igw_agent_replies_total{outcome="sent",reason="replied"} 2.0' in metrics
            assert 'igw_agent_takeovers_total{kind="human"}' not in metrics
        # A shell that sources dev.env reaches the broker (igw topics: the tools' settings are there).
        topics = subprocess.run(
            [
                shutil.which("bash") or "/bin/bash",
                "-c",
                f"source {tmp_path / 'dev.env'} && {sys.executable} -m igw_tools.cli topics describe",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert topics.returncode == 0, topics.stdout + topics.stderr
    finally:
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=60)
        output.join(proc)
    text = output.text
    assert proc.returncode == 0, text
    assert "SIGHUP: stopping everything" in text
    assert "stopped" in text
    left, open_ports = await _gone(children, ports, timeout=10)
    assert not left, f"processes left: {left}"
    assert not open_ports, f"ports still open: {open_ports}"
    # The generated verify token is shown once; the secret from the environment never.
    assert text.count(dev_env["INSTAGRAM_WEBHOOK_VERIFY_TOKEN"]) == 1
    assert ENV_APP_SECRET not in text
    assert "app secret from the environment of igw dev (not shown" in " ".join(text.split())


@pytest.mark.skipif(not DIES_WITH_PARENT, reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.kafka
async def test_children_end_when_igw_dev_is_killed(tmp_path: Path) -> None:
    """SIGKILL to igw dev, which cannot clean up: the broker and every process still end and free their ports."""
    ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics", "reconcile")}
    proc = subprocess.Popen(_dev_args(tmp_path, ports), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(proc)
    try:
        await _wait_for(output, proc, "Ctrl-C stops everything")
        children = _descendants(proc.pid)
        assert len(children) >= 5, children
    finally:
        proc.kill()
        proc.wait(timeout=30)
        output.join(proc)
    left, open_ports = await _gone(children, ports, timeout=15)
    assert not left, f"processes left: {left}\n{output.text}"
    assert not open_ports, f"ports still open: {open_ports}"


@pytest.mark.kafka
async def test_sigterm_during_start_up_stops_everything(tmp_path: Path) -> None:
    """SIGTERM while the consumers join their groups (before the banner) stops everything within seconds."""
    ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics", "reconcile")}
    # A long session: Tansu holds each join for 15 s, so the signal surely lands inside it.
    environ = {**os.environ, "IGW_CONSUMER_SESSION_TIMEOUT_MS": "30000"}
    proc = subprocess.Popen(_dev_args(tmp_path, ports), env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(proc)
    try:
        await _wait_for(output, proc, "gateway ready")
        children = _descendants(proc.pid)
        assert len(children) >= 5, children
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        output.join(proc)
    assert proc.returncode == 0, output.text
    # The consumers may be anywhere in start-up (checking Kafka, before their logging, or joining).
    assert "Ctrl-C stops everything" not in output.text, "it was ready already: the test proves nothing"
    assert took < 10, output.text
    left, open_ports = await _gone(children, ports, timeout=5)
    assert not left, f"processes left: {left}"
    assert not open_ports, f"ports still open: {open_ports}"


def _dev_secrets(state_dir: Path, environ: dict[str, str]) -> DevSecrets:
    dev = DevSecrets.load_or_create(state_dir, environ)
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:19092", enable_idempotence=False)
    env = child_env({}, dev, kafka, Ports(kafka=19092), state_dir / "accounts.json")
    write_env_file(state_dir / "dev.env", dev, env)
    return dev


def test_generated_secrets_are_shown_on_the_first_run_only(tmp_path: Path) -> None:
    """A first run generates and shows both secrets; the next reuses the saved ones and shows none."""
    first = _dev_secrets(tmp_path, {})
    assert first.generated == {
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN",
        "INSTAGRAM_APP_SECRET",
        "IGW_DEV_INSTAGRAM_TOKEN",
        "IGW_DEV_PAGE_TOKEN",
    }
    shown = " ".join(first.banner_lines(tmp_path / "dev.env"))
    assert first.app_secret in shown
    assert first.verify_token in shown
    second = _dev_secrets(tmp_path, {})
    assert (second.app_secret, second.verify_token) == (first.app_secret, first.verify_token)
    assert second.banner_lines(tmp_path / "dev.env") == []
    # A shell that sourced dev.env hands the saved values back: still the stack's own, not shown.
    saved = read_env_file(tmp_path / "dev.env")
    third = _dev_secrets(tmp_path, saved)
    assert third.from_environment == frozenset()
    assert third.banner_lines(tmp_path / "dev.env") == []


def test_a_secret_from_the_environment_is_used_never_shown_never_saved(tmp_path: Path) -> None:
    """INSTAGRAM_APP_SECRET set in the shell wins, stays out of the banner and out of dev.env."""
    _dev_secrets(tmp_path, {})
    dev = _dev_secrets(tmp_path, {"INSTAGRAM_APP_SECRET": ENV_APP_SECRET})
    assert dev.app_secret == ENV_APP_SECRET
    assert dev.from_environment == {"INSTAGRAM_APP_SECRET"}
    assert ENV_APP_SECRET not in " ".join(dev.banner_lines(tmp_path / "dev.env"))
    written = (tmp_path / "dev.env").read_text()
    assert ENV_APP_SECRET not in written
    assert "INSTAGRAM_APP_SECRET" not in read_env_file(tmp_path / "dev.env")
    assert read_env_file(tmp_path / "dev.env")["KAFKA_ENABLE_IDEMPOTENCE"] == "false"


def test_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    """A port in use stops igw dev at once with one line naming the port and its flag."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics", "reconcile")}
        ports["emulator"] = busy
        result = subprocess.run(_dev_args(tmp_path, ports), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(busy) in lines[0]
    assert "--emulator-port" in lines[0]
