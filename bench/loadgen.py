"""Load generation: wrk with a generated Lua script, or a Python (aiohttp) fallback with the same output.

Both print one ``BENCH_JSON {...}`` line at the end; :func:`parse_output` reads it back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import payloads

MARKER = "BENCH_JSON "
# wrk waits this long for one answer; longer than any answer we expect, so saturation shows in p99
# instead of as errors.
TIMEOUT_SECONDS = 10


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int  # completed responses
    non2xx: int  # responses with a status outside 2xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non2xx

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


def parse_output(text: str) -> LoadResult:
    """The result printed by the Lua ``done`` hook (or the Python generator) in ``text``."""
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            break
    else:
        raise ValueError("no BENCH_JSON line in the load generator's output")
    return LoadResult(
        requests=int(data["requests"]),
        non2xx=int(data["non2xx"]),
        socket_errors=int(data["connect"]) + int(data["read"]) + int(data["write"]) + int(data["timeout"]),
        duration_s=int(data["duration_us"]) / 1e6,
        p50_ms=int(data["p50_us"]) / 1000,
        p99_ms=int(data["p99_us"]) / 1000,
        max_ms=int(data["max_us"]) / 1000,
    )


def write_bodies(bodies: list[payloads.SignedBody], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, body in enumerate(bodies):
        path = directory / f"{i:02d}-{body.name}.json"
        path.write_bytes(body.body)
        paths.append(path)
    return paths


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def lua_script(path: str, bodies: list[payloads.SignedBody], files: list[Path], delay_ms: float = 0) -> str:
    """A wrk script posting ``bodies`` in rotation (a static request when there is only one)."""
    lines = [f"local path = {_lua_string(path)}"]
    lines.append(
        "local function slurp(name)\n"
        "  local f = assert(io.open(name, 'rb')); local s = f:read('*a'); f:close(); return s\n"
        "end"
    )
    if len(bodies) == 1:
        # A static request: wrk builds it once, the fastest way to drive the server.
        lines += [
            'wrk.method = "POST"',
            "wrk.path = path",
            f"wrk.body = slurp({_lua_string(str(files[0]))})",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["X-Hub-Signature-256"] = {_lua_string(bodies[0].signature)}',
        ]
    else:
        entries = ", ".join(
            f"{{{_lua_string(str(f))}, {_lua_string(b.signature)}}}" for f, b in zip(files, bodies, strict=True)
        )
        lines += [
            f"local sources = {{{entries}}}",
            "local prepared = {}",
            "local index = 0",
            "function init(args)",
            "  for i, s in ipairs(sources) do",
            '    local headers = {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = s[2]}',
            '    prepared[i] = wrk.format("POST", path, headers, slurp(s[1]))',
            "  end",
            "end",
            "function request()",
            "  index = index % #prepared + 1",
            "  return prepared[index]",
            "end",
        ]
    if delay_ms > 0:
        lines.append(f"function delay() return {int(delay_ms)} end")
    return "\n".join(lines) + "\n" + _DONE


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def command(
    *,
    url: str,
    path: str,
    bodies: list[payloads.SignedBody],
    workdir: Path,
    connections: int,
    duration: float,
    core: int | None,
    use_wrk: bool,
    delay_ms: float = 0,
) -> list[str]:
    """The command line of one load run, pinned to ``core`` when given."""
    files = write_bodies(bodies, workdir / "bodies")
    pin = ["taskset", "-c", str(core)] if core is not None else []
    if use_wrk:
        script = workdir / "load.lua"
        script.write_text(lua_script(path, bodies, files, delay_ms))
        return [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={TIMEOUT_SECONDS}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
    manifest = workdir / "bodies.json"
    manifest.write_text(
        json.dumps([{"file": str(f), "signature": b.signature} for f, b in zip(files, bodies, strict=True)])
    )
    return [
        *pin,
        sys.executable,
        "-m",
        "bench.pyload",
        "--url",
        url + path,
        "--bodies",
        str(manifest),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--delay-ms",
        str(delay_ms),
    ]


def run(cmd: list[str], *, duration: float, log: Path, cwd: Path) -> LoadResult:
    """Run one load command to completion (bounded), keep its output in ``log`` and parse it."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + TIMEOUT_SECONDS + 30, check=False, cwd=cwd
    )
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}; see {log}")
    return parse_output(proc.stdout)
