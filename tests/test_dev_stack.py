"""`igw dev` brings up the local stack, answers the README's examples, and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp

from gateway.signature import sign
from igw_tools.localbroker import free_port, port_is_open
from tests.plugins.gateway import dm_body


def _dev_args(state_dir: Path, ports: dict[str, int]) -> list[str]:
    return [
        sys.executable, "-m", "igw_tools.cli", "dev", "--state-dir", str(state_dir),
        "--port", str(ports["gateway"]), "--emulator-port", str(ports["emulator"]),
        "--kafka-port", str(ports["kafka"]), "--agent-metrics-port", str(ports["agent"]),
        "--analytics-metrics-port", str(ports["analytics"]),
    ]  # fmt: skip


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            values[key] = value.strip("'")
    return values


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


async def test_dev_stack_serves_the_readme_walkthrough(tmp_path: Path) -> None:
    """With the saved dev secrets: the handshake works and a signed DM is answered once by the rules agent."""
    ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics")}
    proc = subprocess.Popen(_dev_args(tmp_path, ports), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(proc)
    try:
        # The banner comes once every process answers its readiness check (the consumers have joined).
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and "Ctrl-C stops everything" not in output.text and proc.poll() is None:
            await asyncio.sleep(0.2)
        assert "Ctrl-C stops everything" in output.text, output.text
        url = f"http://127.0.0.1:{ports['gateway']}/api/v1/instagram/webhook"
        async with aiohttp.ClientSession() as session:
            secrets = _read_env(tmp_path / "dev.env")
            assert (tmp_path / "dev.env").stat().st_mode & 0o777 == 0o600
            params = {
                "hub.mode": "subscribe",
                "hub.verify_token": secrets["INSTAGRAM_WEBHOOK_VERIFY_TOKEN"],
                "hub.challenge": "1158201444",
            }
            async with session.get(url, params=params) as resp:
                assert await resp.text() == "1158201444"
            body = dm_body("Hi! Are you open on Saturday?", timestamp=int(time.time() * 1000))
            headers = {"X-Hub-Signature-256": sign(body, secrets["INSTAGRAM_APP_SECRET"])}
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200
            # The clinic's rules agent answers through the Graph emulator: exactly one reply.
            sent: list[dict[str, object]] = []
            answer_deadline = time.monotonic() + 60
            while time.monotonic() < answer_deadline and not sent and proc.poll() is None:
                async with session.get(f"http://127.0.0.1:{ports['emulator']}/_emulator/messages") as resp:
                    sent = await resp.json()
                await asyncio.sleep(0.5)
            assert len(sent) == 1, output.text
            assert sent[0]["recipient_id"] == "1234567890123456"
            # The emulator echoes the reply to the gateway, as Meta does; the agent knows it for its own.
            stats: dict[str, object] = {}
            echo_deadline = time.monotonic() + 20
            while time.monotonic() < echo_deadline and stats.get("echoes_delivered") != 1:
                async with session.get(f"http://127.0.0.1:{ports['emulator']}/_emulator/stats") as resp:
                    stats = await resp.json()
                await asyncio.sleep(0.2)
            assert stats["echoes_delivered"] == 1, stats
            await asyncio.sleep(1.0)
            async with session.get(f"http://127.0.0.1:{ports['agent']}/metrics") as resp:
                metrics = await resp.text()
            assert 'igw_agent_replies_total{outcome="sent",reason="replied"} 1.0' in metrics
            assert 'igw_agent_takeovers_total{kind="human"}' not in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        output.join(proc)
    text = output.text
    assert proc.returncode == 0, text
    assert "stopped" in text
    for port in ports.values():
        assert not port_is_open("127.0.0.1", port)
    # Secrets are printed once, in the banner, and never again in the logs.
    assert text.count(secrets["INSTAGRAM_APP_SECRET"]) == 1


def test_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    """A port in use stops igw dev at once with one line naming the port and its flag."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {name: free_port() for name in ("gateway", "emulator", "kafka", "agent", "analytics")}
        ports["emulator"] = busy
        result = subprocess.run(_dev_args(tmp_path, ports), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(busy) in lines[0]
    assert "--emulator-port" in lines[0]
