"""``igw simulate``: send realistic signed webhook traffic to a gateway, then summarize.

Open loop at ``--rate`` requests per second (or as fast as ``--concurrency`` allows with
``--rate 0``), for ``--duration`` seconds or ``--count`` requests. Always bounded in time: each
request has ``--timeout``, and the run stops scheduling at its deadline.

With ``--emulator URL`` every message a body carries is also written into the Graph API
emulator's conversations (as Meta keeps them), and ``--drop RATIO`` leaves that share of the
bodies undelivered, as Meta sometimes does: ``igw reconcile`` then finds them (docs/reconcile.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from gateway.settings import DEFAULT_WEBHOOK_PATH
from gateway.signature import sign
from igw.config import Env
from igw.errors import SettingsError
from igw_tools.simulator import (
    DEFAULT_HUMAN_ECHO_SHARE,
    DEV_APP_ID,
    EVENT_KINDS,
    Platform,
    SimulatedBody,
    TrafficGenerator,
)

DEFAULT_URL = f"http://127.0.0.1:8080{DEFAULT_WEBHOOK_PATH}"


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    """What to send, where, and how fast."""

    url: str = DEFAULT_URL
    secret: str = ""
    event: str | None = None  # None: a realistic mix
    file_body: bytes | None = None  # sent byte for byte instead of generated bodies
    dashboard_test: bool = False  # Meta's App Dashboard test DM instead of generated bodies
    platform: Platform = "instagram"
    account_id: str | None = None
    conversations: int = 100
    batch: int = 1
    rate: float = 50.0  # requests per second; 0 = as fast as `concurrency` allows
    duration: float | None = None
    count: int | None = None
    concurrency: int = 64
    timeout: float = 10.0
    seed: int | None = None
    # The Graph API emulator that keeps the conversations, and the share of bodies not delivered.
    emulator_url: str | None = None
    drop: float = 0.0
    app_id: str = DEV_APP_ID  # echoes of the agent's replies carry it
    human_echo_share: float = DEFAULT_HUMAN_ECHO_SHARE  # of the echoes, typed by a person

    def __post_init__(self) -> None:
        if self.count is None and self.duration is None:
            raise ValueError("give a count or a duration")
        if self.rate < 0 or self.batch < 1 or self.concurrency < 1 or self.timeout <= 0:
            raise ValueError("rate must be >= 0; batch, concurrency and timeout must be positive")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if not 0.0 <= self.drop < 1.0:
            raise ValueError("drop must be at least 0 and below 1")
        if not 0.0 <= self.human_echo_share <= 1.0:
            raise ValueError("--human-echoes must be between 0 and 1")
        if not self.app_id.isdigit():
            raise ValueError(f"--app-id takes the app's numeric id, got {self.app_id!r}")
        if self.dashboard_test and self.platform != "instagram":
            raise ValueError("--dashboard-test sends Instagram's dashboard test; leave out --platform messenger")


@dataclass(slots=True)
class SimulationReport:
    """What happened: status codes, failures, latencies, and what should have reached each topic."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    expected_topics: Counter[str] = field(default_factory=Counter)  # accepted (2xx) items per topic suffix
    items_sent: int = 0
    elapsed: float = 0.0
    # Bodies left undelivered on purpose (--drop), and the events in them.
    dropped: int = 0
    dropped_items: int = 0
    recorded: int = 0  # messages written into the emulator's conversations

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds (0 when nothing was measured)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "items": self.items_sent,
            "elapsed_seconds": round(self.elapsed, 3),
            "rate_per_second": round(self.requests / self.elapsed, 1) if self.elapsed else 0.0,
            "statuses": dict(sorted(self.statuses.items())),
            "latency_seconds": {
                "p50": self.percentile(50),
                "p90": self.percentile(90),
                "p99": self.percentile(99),
                "max": max(self.latencies, default=0.0),
            },
            "expected_topics": dict(sorted(self.expected_topics.items())),
            "dropped": self.dropped,
            "dropped_items": self.dropped_items,
            "recorded": self.recorded,
        }

    def summary(self) -> str:
        d = self.as_dict()
        statuses = "  ".join(f"{status}: {n}" for status, n in d["statuses"].items()) or "none"
        lat = {k: f"{v * 1000:.1f} ms" for k, v in d["latency_seconds"].items()}
        lines = [
            f"sent {d['requests']} requests ({d['items']} events) in {d['elapsed_seconds']:.2f} s"
            f" = {d['rate_per_second']} req/s",
            f"status: {statuses}",
            f"latency: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}",
        ]
        if self.recorded or self.dropped:
            lines.append(
                f"emulator: {self.recorded} messages recorded in conversations; not delivered on purpose:"
                f" {self.dropped} requests ({self.dropped_items} events)"
            )
        if self.failed:
            lines.append(f"FAILED: {self.failed} of {self.requests} requests did not get a 2xx answer")
        return "\n".join(lines)


def conversation_messages(body: bytes) -> list[dict[str, Any]]:
    """The messages of a webhook body as the emulator's conversations keep them (``POST /_emulator/conversations``)."""
    try:
        return _conversation_messages(orjson.loads(body))
    except (ValueError, AttributeError, KeyError, TypeError):
        return []  # a --file body that is not Meta's shape: nothing to record


def _conversation_messages(document: Any) -> list[dict[str, Any]]:
    platform = "instagram" if document.get("object") == "instagram" else "messenger"
    found: list[dict[str, Any]] = []
    for entry in document.get("entry", []):
        for item in entry.get("messaging", []):
            message = item.get("message")
            if not isinstance(message, dict) or not message.get("mid"):
                continue
            echo = bool(message.get("is_echo"))
            found.append(
                {
                    "account_id": entry["id"],
                    "user_id": item["recipient"]["id"] if echo else item["sender"]["id"],
                    "mid": message["mid"],
                    "text": message.get("text"),
                    "attachments": message.get("attachments") or [],
                    "timestamp": item.get("timestamp"),
                    "direction": "outbound" if echo else "inbound",
                    "platform": platform,
                }
            )
    return found


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection-error"
    return f"error:{type(exc).__name__}"


async def simulate(
    plan: SimulationPlan, *, progress: Callable[[SimulationReport, float], None] | None = None
) -> SimulationReport:
    """Run ``plan`` against the gateway and return the report. Never runs past its deadline."""
    generator = TrafficGenerator(
        platform=plan.platform,
        account_id=plan.account_id,
        conversations=plan.conversations,
        seed=plan.seed,
        app_id=plan.app_id,
        human_echo_share=plan.human_echo_share,
    )
    report = SimulationReport()
    limit = asyncio.Semaphore(plan.concurrency)
    started = time.monotonic()
    # Scheduling stops at `stop_at`; requests in flight then get at most their own timeout.
    stop_at = started + plan.duration if plan.duration is not None else float("inf")
    if plan.count is not None and plan.rate > 0:
        stop_at = min(stop_at, started + plan.count / plan.rate + 1.0)
    client_timeout = aiohttp.ClientTimeout(total=plan.timeout)

    drops = random.Random(plan.seed)  # noqa: S311 - which bodies to drop, not cryptography

    async def send(session: aiohttp.ClientSession, simulated: SimulatedBody) -> None:
        if plan.emulator_url is not None:
            messages = conversation_messages(simulated.body)
            if messages:
                try:
                    url = f"{plan.emulator_url}/_emulator/conversations"
                    async with session.post(url, json={"messages": messages}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            report.recorded += len(messages)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    report.statuses[f"emulator-{_error_name(exc)}"] += 1
        if plan.drop and drops.random() < plan.drop:
            # Meta "forgot" this one: never posted, counted apart.
            report.dropped += 1
            report.dropped_items += len(simulated.kinds) or 1
            limit.release()
            return
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(simulated.body, plan.secret)}
        t0 = time.perf_counter()
        try:
            async with session.post(plan.url, data=simulated.body, headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = _error_name(exc)
        else:
            report.latencies.append(time.perf_counter() - t0)
            if status.startswith("2"):
                report.expected_topics.update(simulated.topic_counts())
        finally:
            limit.release()
        report.statuses[status] += 1

    def next_body() -> SimulatedBody:
        if plan.file_body is not None:
            return SimulatedBody(body=plan.file_body, kinds=())
        if plan.dashboard_test:
            return generator.dashboard_test()
        return generator.next(plan.event, batch=plan.batch)

    connector = aiohttp.TCPConnector(limit=plan.concurrency, force_close=False)
    tasks: set[asyncio.Task[None]] = set()
    last_progress = started
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        index = 0
        while plan.count is None or index < plan.count:
            now = time.monotonic()
            if now >= stop_at:
                break
            if plan.rate > 0:
                due = started + index / plan.rate
                if due > now:
                    await asyncio.sleep(min(due, stop_at) - now)
                    continue
            # Wait for a free slot, but never past the deadline.
            try:
                await asyncio.wait_for(limit.acquire(), timeout=max(0.001, min(stop_at - now, plan.timeout)))
            except TimeoutError:
                continue
            simulated = next_body()
            report.items_sent += len(simulated.kinds) if simulated.kinds else 1
            task = asyncio.create_task(send(session, simulated))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
            if progress is not None and now - last_progress >= 0.25:
                last_progress = now
                progress(report, now - started)
        if tasks:
            # Each request is bounded by the client timeout; this bound is a belt on top of it.
            await asyncio.wait(tasks, timeout=plan.timeout + 1.0)
            for task in tasks:
                task.cancel()
    report.elapsed = time.monotonic() - started
    if progress is not None:
        progress(report, report.elapsed)
    return report


class ProgressPrinter:
    """A self-rewriting line on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, *, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.25 if self.tty else 5.0)
        self._last = -1e9
        self._wrote_tty = False

    def __call__(self, report: SimulationReport, elapsed: float) -> None:
        if elapsed - self._last < self.interval:
            return
        self._last = elapsed
        rate = report.requests / elapsed if elapsed > 0 else 0.0
        line = (
            f"{elapsed:6.1f} s  sent {report.requests}  failed {report.failed}  {rate:.0f} req/s"
            f"  p99 {report.percentile(99) * 1000:.1f} ms"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self._wrote_tty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._wrote_tty:
            self.stream.write("\n")
            self.stream.flush()


def _plan_from_args(args: argparse.Namespace) -> SimulationPlan:
    env = Env()
    secret = args.secret
    if not secret:
        # Several comma-separated secrets (rotation): sign with the first, as Meta signs with one.
        configured = env.secrets(
            "INSTAGRAM_APP_SECRET", required_as="the app secret to sign bodies with", alternative="pass --secret"
        )
        secret = configured[0].value
    count, duration = args.count, args.duration
    if count is None and duration is None:
        count = 1 if (args.event or args.file or args.dashboard_test) and not args.mix else None
        duration = None if count is not None else 10.0
    file_body = Path(args.file).read_bytes() if args.file else None
    return SimulationPlan(
        url=args.url,
        secret=secret,
        event=args.event,
        file_body=file_body,
        dashboard_test=args.dashboard_test,
        platform=args.platform,
        account_id=args.account_id,
        conversations=args.conversations,
        batch=args.batch,
        rate=args.rate,
        duration=duration,
        count=count,
        concurrency=args.concurrency,
        timeout=args.timeout,
        seed=args.seed,
        emulator_url=args.emulator.rstrip("/") if args.emulator else None,
        drop=args.drop,
        app_id=args.app_id or _app_id(env),
        human_echo_share=args.human_echoes,
    )


def _app_id(env: Env) -> str:
    """IGW_APP_ID (as dev.env sets it), else the app id `igw dev` gives its agent."""
    app_id = env.optional_str("IGW_APP_ID")
    if app_id is not None and not app_id.isdigit():
        raise SettingsError("IGW_APP_ID", f"expected the app's numeric id, got {app_id!r}")
    return app_id or DEV_APP_ID


def run(args: argparse.Namespace) -> int:
    try:
        plan = _plan_from_args(args)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"igw simulate: {exc}\n")
        return 2
    printer = ProgressPrinter(sys.stderr)
    report = asyncio.run(simulate(plan, progress=None if args.quiet else printer))
    printer.done()
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    else:
        sys.stdout.write(report.summary() + "\n")
    return 0 if report.requests and not report.failed else 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="send realistic signed webhook traffic to a gateway",
        description="Send signed Meta-style webhooks to a gateway and report status codes and latency. "
        "With neither --count nor --duration: one request for --event/--file/--dashboard-test, 10 s for --mix.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--event", choices=EVENT_KINDS, help="send this event type")
    what.add_argument("--file", metavar="BODY.json", help="send this file's bytes as the body, unchanged")
    what.add_argument("--mix", action="store_true", help="send a realistic mix of event types")
    what.add_argument(
        "--dashboard-test",
        action="store_true",
        help="send the DM Meta's App Dashboard 'Test' button sends for Instagram's messages field (a changes "
        "item), for --account-id and stamped now, so the local agent answers it",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="the webhook URL (default %(default)s)")
    parser.add_argument("--secret", help="app secret to sign with (default: INSTAGRAM_APP_SECRET or its _FILE)")
    parser.add_argument("--platform", choices=("instagram", "messenger"), default="instagram")
    parser.add_argument("--account-id", help="the business account (Instagram) or Page (Messenger) id")
    parser.add_argument("--conversations", type=_positive_int, default=100, help="distinct users (default 100)")
    parser.add_argument("--batch", type=_positive_int, default=1, help="events per request (default 1)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second; 0 = unthrottled (default 50)")
    parser.add_argument("--duration", type=float, help="seconds to send for")
    parser.add_argument("--count", type=_positive_int, help="requests to send")
    parser.add_argument("--concurrency", type=_positive_int, default=64, help="requests in flight at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable bodies")
    parser.add_argument(
        "--emulator",
        metavar="URL",
        help="also write every message into this Graph API emulator's conversations (igw graph-emulator)",
    )
    parser.add_argument(
        "--drop",
        type=float,
        default=0.0,
        help="share of bodies (0 to below 1) not delivered, as Meta sometimes loses webhooks; with --emulator,"
        " igw reconcile finds them (default 0)",
    )
    parser.add_argument(
        "--app-id",
        help=f"the app id echoes of the agent's replies carry (default: IGW_APP_ID, else igw dev's {DEV_APP_ID})",
    )
    parser.add_argument(
        "--human-echoes",
        type=float,
        default=DEFAULT_HUMAN_ECHO_SHARE,
        metavar="SHARE",
        help="share of echoes typed by a person in the app, which pause the agent in that conversation "
        f"(default {DEFAULT_HUMAN_ECHO_SHARE:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=run)
