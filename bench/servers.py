"""The servers under test, each started pinned to one core in its own process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import payloads
from igw_tools.localbroker import port_is_open

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BASELINE_VENV = BENCH_DIR / "results" / ".venv-baseline"
WEBHOOK_PATH = "/api/v1/instagram/webhook"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    key: str
    label: str
    argv: tuple[str, ...]  # without --host/--port
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str | None = None  # a GET that answers 200 once the server can take load
    publishes: bool = True  # publishes to Kafka, so its records can be counted


def ceiling_spec() -> ServerSpec:
    return ServerSpec("ceiling", "(a) aiohttp bare", (sys.executable, str(BENCH_DIR / "ceiling.py")), publishes=False)


def gateway_spec(kafka: str, prefix: str, secret: str, verify_token: str, command: str | None = None) -> ServerSpec:
    argv = tuple(command.split()) if command else tuple(igw_command("gateway"))
    env = {
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": verify_token,
        "INSTAGRAM_APP_SECRET": secret,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu lacks aiokafka's idempotent producer
        "KAFKA_ACKS": "all",
        "IGW_TOPIC_PREFIX": prefix,
    }
    return ServerSpec("gateway", "(b) igw gateway", argv, env, ready_path="/readyz")


def floor_spec(kafka: str, prefix: str) -> ServerSpec:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_ACKS": "all",
        "IGW_TOPIC_PREFIX": prefix,
    }
    argv = (sys.executable, "-m", "bench.floor")
    return ServerSpec("floor", "(d) aiohttp + publish", argv, env, ready_path="/readyz")


def baseline_spec(kafka: str, topic: str, secret: str) -> ServerSpec:
    python = BASELINE_VENV / "bin" / "python"
    env = {"INSTAGRAM_APP_SECRET": secret, "KAFKA_BOOTSTRAP_SERVERS": kafka, "BASELINE_TOPIC": topic}
    return ServerSpec("baseline", "(c) FastAPI + aiokafka", (str(python), str(BENCH_DIR / "baseline_fastapi.py")), env)


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    probe_events: int = 0  # events acknowledged by readiness probes

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        stop_group(self.process, timeout)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the whole process group, SIGKILL it if it is still there after ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def spawn(argv: list[str], *, env: dict[str, str], core: int | None, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` (pinned to ``core``) in its own process group, output to ``log_path``."""
    pin = ["taskset", "-c", str(core)] if core is not None else []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*pin, *argv],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_DIR,
            start_new_session=True,  # its own process group, so stop_group() reaches every child
        )


def igw_command(*args: str) -> list[str]:
    """The ``igw`` console script of the running venv."""
    return [str(Path(sys.executable).parent / "igw"), *args]


def start(
    spec: ServerSpec, *, port: int, core: int | None, log_path: Path, probe: payloads.SignedBody, timeout: float = 30.0
) -> RunningServer:
    """Start ``spec`` and return once it answered a signed POST with 2xx (or raise, having stopped it)."""
    argv = [*spec.argv, "--host", "127.0.0.1", "--port", str(port)]
    process = spawn(argv, env=spec.env, core=core, log_path=log_path)
    server = RunningServer(spec, port, process)
    try:
        _wait_ready(server, probe, timeout, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: RunningServer, probe: payloads.SignedBody, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.spec.label} exited with {server.process.returncode}; see {log_path}")
        if not port_is_open("127.0.0.1", server.port):
            time.sleep(0.1)
            continue
        try:
            if server.spec.ready_path:
                _request(server.url + server.spec.ready_path)
            status = _request(
                server.url + WEBHOOK_PATH,
                data=probe.body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": probe.signature},
            )
        except (OSError, urllib.error.URLError) as exc:
            last_error = str(exc)
            time.sleep(0.2)
            continue
        if 200 <= status < 300:
            server.probe_events += probe.events
            return
        last_error = f"status {status}"
        time.sleep(0.2)
    raise RuntimeError(f"{server.spec.label} was not ready within {timeout:.0f}s ({last_error}); see {log_path}")


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")  # noqa: S310 - 127.0.0.1 only
    with urllib.request.urlopen(req, timeout=5) as response:  # noqa: S310 - 127.0.0.1 only
        response.read()
        return int(response.status)
