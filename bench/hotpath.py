"""The gateway's pure per-request work, timed alone: signature, normalize, records, metrics.

    .venv/bin/python -m bench.hotpath [--repeat 9] [--only dm] [--callgrind]

For the one-message DM body and the 1000-item batch body of bench/payloads.py, prints µs per call
of ``SignatureVerifier.verify``, ``normalize``, ``build_records`` and the metric calls one
successful webhook request makes (the handler's and the access log's). Wall time is the best of
``--repeat`` timeit rounds, so a busy shared core shows up as noise, not as a slower figure.

``--callgrind`` also counts instructions per call under valgrind (robust to a shared CPU): each
case runs twice in a child process, with n and 3n calls, and the difference over 2n calls is
what one call costs, start-up and warm-up cancelled out.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import timeit
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import payloads
from gateway.access_log import access_logger_for
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signature import SignatureVerifier
from gateway.state import GatewayState
from igw.normalize import Event, Topic, normalize
from igw.records import build_records

SECRET = "bench_hotpath_secret"  # noqa: S105 - signs the benchmark's own bodies
TOPICS = {t: f"igw.{t.value}" for t in Topic}
ROUTE = "/webhooks/meta"  # a label value like the route template the access log reports

# The gateway's metrics as a request reaches them: through the app's state (gateway/views.py) and
# the access logger's class (gateway/access_log.py).
STATE = GatewayState.from_settings(
    GatewaySettings.from_env({"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "bench", "INSTAGRAM_APP_SECRET": SECRET}),
    GatewayMetrics(),
)
ACCESS_LOG = access_logger_for(STATE.metrics, lines=False)(logging.getLogger("bench.access"), "")


def _handler_metrics(body: bytes, events: list[Event], seconds: float) -> None:
    """The metric calls of one successful webhook request, spelled out one by one."""
    state = STATE
    state.metrics.payload_bytes.observe(len(body))
    state.metrics.publish_duration.observe(seconds)
    state.metrics.events_per_request.observe(len(events))
    if len(events) == 1:
        event = events[0]
        state.metrics.count_published(event.type, event.topic.value)
    else:
        for (type_, topic), count in Tally((e.type, e.topic.value) for e in events).items():
            state.metrics.count_published(type_, topic, count)
    ACCESS_LOG.observe_request(ROUTE, "POST", 200, seconds)


def _helper_metrics(body: bytes, events: list[Event], seconds: float) -> None:
    """The same metrics as gateway/views.py and the access log make them (observe_published)."""
    state = STATE
    state.metrics.payload_bytes.observe(len(body))
    state.metrics.observe_published(events, seconds)
    ACCESS_LOG.observe_request(ROUTE, "POST", 200, seconds)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[], object]


def cases(body_name: str) -> list[Case]:
    signed = payloads.one_message(SECRET)[0] if body_name == "dm" else payloads.batch(SECRET)[0]
    body, header = signed.body, signed.signature
    verifier = SignatureVerifier([SECRET])
    two_secrets = SignatureVerifier(["rotated_out_secret", SECRET])
    received_at = time.time_ns() // 1_000_000
    normalized = normalize(body, received_at)
    assert len(normalized.events) == signed.events
    assert normalized.dead_letter is None
    events = normalized.events
    found: list[Case] = [
        Case("verify", lambda: verifier.verify(body, header)),
        Case("verify (2 secrets)", lambda: two_secrets.verify(body, header)),
        Case("normalize", lambda: normalize(body, received_at)),
        Case("build_records", lambda: build_records(normalized, TOPICS, body, received_at, header)),
        Case("metrics (request)", lambda: _handler_metrics(body, events, 0.0042)),
    ]
    found.append(Case("metrics (helpers)", lambda: _helper_metrics(body, events, 0.0042)))
    if body_name == "dm":
        metrics = STATE.metrics
        published = metrics.events_published.labels("message", "messages")
        found += [
            Case("  Histogram.observe", lambda: metrics.publish_duration.observe(0.0042)),
            Case("  Counter child .inc", lambda: published.inc()),
            Case("  count_published", lambda: metrics.count_published("message", "messages")),
            Case("  observe_request", lambda: ACCESS_LOG.observe_request(ROUTE, "POST", 200, 0.0042)),
        ]
    return found


def best_us(call: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()  # enough calls for >= 0.2 s per round
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def _inner(body_name: str, case_name: str, number: int) -> None:
    """Run one case ``number`` times (the callgrind child)."""
    [case] = [c for c in cases(body_name) if c.name == case_name]
    for _ in range(number):
        case.call()


def _instructions(body_name: str, case_name: str, number: int) -> int:
    with tempfile.TemporaryDirectory(prefix="igw-callgrind-") as tmp:
        out = Path(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.hotpath",
                "--inner",
                body_name,
                case_name,
                str(number),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        assert match is not None, "no instruction total in callgrind output"
        return int(match.group(1))


def instructions_per_call(body_name: str, case_name: str) -> float:
    n = 20 if body_name == "batch1000" and case_name in ("normalize", "build_records") else 400
    return (_instructions(body_name, case_name, 3 * n) - _instructions(body_name, case_name, n)) / (2 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timeit rounds per case; the best is reported")
    parser.add_argument("--only", choices=["dm", "batch1000"], help="one body only")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per call (valgrind)")
    parser.add_argument("--inner", nargs=3, metavar=("BODY", "CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        _inner(args.inner[0], args.inner[1], int(args.inner[2]))
        return
    print(f"python {sys.version.split()[0]}, best of {args.repeat} timeit rounds")
    for body_name in [args.only] if args.only else ["dm", "batch1000"]:
        signed = payloads.one_message(SECRET)[0] if body_name == "dm" else payloads.batch(SECRET)[0]
        print(f"\n{body_name}: {len(signed.body)} bytes, {signed.events} events")
        header = f"  {'':22} {'µs/call':>10}" + (f" {'instr/call':>12}" if args.callgrind else "")
        print(header)
        for case in cases(body_name):
            line = f"  {case.name:22} {best_us(case.call, args.repeat):10.2f}"
            if args.callgrind:
                line += f" {instructions_per_call(body_name, case.name):12,.0f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
