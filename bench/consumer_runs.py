"""The consumer benchmarks: ``igw agent`` through the Graph API emulator, and ``igw analytics``.

Each run loads its records into fresh topics of one local Tansu broker first, then starts the
consumer as its own process (as deployed), so loading is not what is measured. The consumer is
pinned to core 0; the Graph API emulator (``igw graph-emulator``, its own process) to core 1.

- agent: replies per second counted at the emulator, from the first accepted send to the last
  (its own timestamps), then a check that every message got exactly one reply (a missing or a
  duplicated reply fails the run). Variants: many conversations at once (each conversation's
  messages in order, conversations concurrent) and one conversation (strictly sequential: the
  per-reply latency path); with the in-process store and, when Redis answers, the Redis store.
- analytics: events per second from the consumer's own ``igw_biz_events_total``, polled on its
  ``/metrics``, from the first counted to the last (the moment the count reached the total is
  interpolated between the last two polls); every event must be counted exactly once.

CPU seconds per 1000 items are the consumer's utime + stime from /proc between the first item
seen and the last, over the items done meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench import envelopes, procstat, servers
from bench.ports import PortRange
from bench.preload import preload
from bench.report import Answered, ConsumerRun
from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.analytics.settings import TOPICS as ANALYTICS_TOPICS
from igw_tools.localbroker import LocalBroker

__all__ = ["ConsumerSetup", "agent_scenario", "analytics_scenario"]

CONSUMER_CORE = 0
HELPER_CORE = 1
AGENT_TOPICS = ("messages", "postbacks", "replies", "deadletter")
# Meta's per-account rates (100/s Instagram) are lifted on both sides: the figure is the consumer's.
UNLIMITED_RATE = "1000000000"
# Until the consumer has joined its group and answered the first item.
START_TIMEOUT_SECONDS = 60.0
# No progress for this long: the run failed.
STALL_SECONDS = 20.0
# After the last expected item, keep watching this long for extras (duplicates).
SETTLE_SECONDS = 1.0
# Tansu holds a new member's JoinGroup for half the session timeout (15 s with the default 30 s);
# group membership timing only, nothing the throughput depends on.
GROUP_ENV = {"IGW_CONSUMER_SESSION_TIMEOUT_MS": "6000", "IGW_CONSUMER_HEARTBEAT_MS": "1000"}
NAN = float("nan")
# A scrape of igw analytics' /metrics costs it ~2.5 ms of CPU: every 0.25 s that is ~1 % of a core.
ANALYTICS_POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class ConsumerSetup:
    results_dir: Path
    run_id: str
    secret: str
    rounds: int
    pin: bool
    ports: PortRange
    conversations: int  # the "many conversations" agent variant
    messages_each: int  # messages per conversation in that variant
    sequential: int  # messages of the one-conversation variant
    stores: tuple[str, ...]  # "memory", "redis"
    redis_url: str
    analytics_events: int
    poll_interval: float = 0.05

    def core(self, core: int) -> int | None:
        return core if self.pin else None


@dataclass(frozen=True, slots=True)
class Progress:
    """Samples taken while a consumer works: when it started and finished, and the CPU meanwhile."""

    first_at: float  # monotonic time of the first sample that saw work done
    first_count: int
    end_at: float  # the last sample
    end_count: int
    cpu: dict[str, float]  # CPU seconds per watched process between those two samples
    # When the count reached ``expected``: interpolated between the last two samples, so that the
    # polling interval does not lengthen the run (None if it never did).
    reached_at: float | None
    finished: bool
    problem: str | None = None


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
        return json.loads(response.read())


def _get_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1 only
        return str(response.read().decode())


def _wait_http(url: str, process: Any, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            _get_text(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s; see {log}")


def watch(
    count: Callable[[], int],
    expected: int,
    processes: dict[str, int],
    consumer: Any,
    *,
    interval: float,
    start_timeout: float = START_TIMEOUT_SECONDS,
    stall: float = STALL_SECONDS,
) -> Progress:
    """Poll ``count()`` until it reaches ``expected``, sampling the CPU of ``processes`` at the first
    sample that saw work done and at the last."""

    def cpus() -> dict[str, float]:
        return {name: procstat.cpu_seconds(pid) for name, pid in processes.items()}

    started = time.monotonic()
    first: tuple[float, int, dict[str, float]] | None = None
    last_change, last_count = started, 0
    previous = (started, 0)
    before_work = (started, 0, cpus())  # the last sample that saw nothing done yet
    problem = None
    reached_at = None
    while True:
        # The count is as of its answer: a consumer busy counting answers a scrape only afterwards.
        done = count()
        now = time.monotonic()
        sample = cpus()
        if first is None and done > 0:
            # A run that fell whole between two samples is timed from the last one that saw nothing done
            # (else it would have no span to divide by).
            first = (now, done, sample) if done < expected else before_work
        elif first is None:
            before_work = (now, done, sample)
        if done >= expected:
            before_at, before = previous
            share = (expected - before) / (done - before) if done > before else 1.0
            reached_at = max(first[0], before_at + share * (now - before_at)) if first is not None else now
            break
        previous = (now, done)
        if done != last_count:
            last_change, last_count = now, done
        if consumer.poll() is not None:
            problem = f"the consumer exited with {consumer.returncode}"
            break
        if first is None and now - started > start_timeout:
            problem = f"nothing done within {start_timeout:.0f}s of starting"
            break
        if first is not None and now - last_change > stall:
            problem = f"stalled at {done} of {expected} for {stall:.0f}s"
            break
        time.sleep(interval)
    if first is None:
        first = (now, done, sample)
    first_at, first_count, first_cpu = first
    return Progress(
        first_at=first_at,
        first_count=first_count,
        end_at=now,
        end_count=done,
        cpu={name: sample[name] - first_cpu[name] for name in processes},
        reached_at=reached_at,
        finished=problem is None,
        problem=problem,
    )


@contextlib.contextmanager
def _started(argv: list[str], env: dict[str, str], core: int | None, log: Path) -> Iterator[Any]:
    process = servers.spawn(argv, env=env, core=core, log_path=log)
    try:
        yield process
    finally:
        servers.stop_group(process, timeout=30.0)


def _keep_metrics(url: str, path: Path) -> None:
    """The consumer's own metrics at the end of the run, next to its log (for reading afterwards)."""
    with contextlib.suppress(OSError, urllib.error.URLError):
        path.write_text(_get_text(url))


def _keep_timeline(times: list[float], path: Path) -> None:
    """Replies per 100 ms from the first: stalls and ramps show here."""
    if not times:
        return
    buckets = Counter(int((t - times[0]) * 10) for t in times)
    path.write_text("".join(f"{b / 10:7.1f}s {buckets.get(b, 0)}\n" for b in range(max(buckets) + 1)))


def _broker_pid(broker: LocalBroker) -> dict[str, int]:
    return {"broker": broker.process.pid} if broker.process is not None else {}


def _redis_answers(url: str) -> bool:
    if importlib.util.find_spec("redis") is None:  # igw[redis] not installed
        return False
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1.0):
            return True
    except OSError:
        return False


def _forget_redis_keys(url: str, prefixes: tuple[str, ...]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    finally:
        client.close()


# -- agent ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentVariant:
    key: str
    label: str
    store: str  # "memory" or "redis"
    records: list[envelopes.Record]
    expected: dict[str, int]  # replies per user


def agent_variants(setup: ConsumerSetup) -> list[AgentVariant]:
    many = envelopes.agent_conversations(setup.conversations, setup.messages_each, setup.secret)
    one = envelopes.agent_conversations(1, setup.sequential, setup.secret)
    shapes = [
        ("many", f"{setup.conversations} conversations", many),
        ("one", "1 conversation", one),
    ]
    variants = []
    for store in setup.stores:
        store_label = "in-process store" if store == "memory" else "Redis store"
        for shape, label, records in shapes:
            variants.append(
                AgentVariant(
                    f"{store}-{shape}", f"{store_label}, {label}", store, records, envelopes.recipients(records)
                )
            )
    return variants


def agent_run(setup: ConsumerSetup, broker: LocalBroker, variant: AgentVariant, round_no: int) -> ConsumerRun:
    """One agent run: load the messages, start the emulator and the agent, watch the replies arrive."""
    prefix = f"bench{setup.run_id}agent{round_no}{variant.key.replace('-', '')}"
    workdir = setup.results_dir / "agent" / f"round{round_no}-{variant.key}"
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = preload(broker.bootstrap_servers, prefix, AGENT_TOPICS, variant.records)
    total = sum(variant.expected.values())
    emulator_port = setup.ports.take()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator_argv = servers.igw_command(
        "graph-emulator",
        "--port",
        str(emulator_port),
        "--no-window",  # no inbound feed here: the window is the agent's own check
        "--rate-ig",
        UNLIMITED_RATE,
        "--rate-page",
        UNLIMITED_RATE,
        "--max-records",
        str(total + 10_000),
        "--no-access-log",
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu lacks aiokafka's idempotent producer
        "IGW_TOPIC_PREFIX": prefix,
        "IGW_AGENT_GROUP": f"{prefix}-agent",
        "IGW_AGENT": "rules",
        "IGW_RULES_FILE": str(SAMPLE_RULES),
        "IGW_ACCESS_TOKEN": "bench-token",
        "IGW_GRAPH_BASE_URL": emulator_url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator_url,
        "IGW_SEND_RATE_IG": UNLIMITED_RATE,
        "IGW_SEND_RATE_PAGE": UNLIMITED_RATE,
        "IGW_METRICS_HOST": "127.0.0.1",
        "IGW_LOG_FORMAT": "text",
        **GROUP_ENV,
    }
    redis_prefixes = (f"{prefix}:agent:", f"{prefix}:rl:")
    if variant.store == "redis":
        env |= {
            "REDIS_URL": setup.redis_url,
            "IGW_AGENT_REDIS_PREFIX": redis_prefixes[0],
            "IGW_SEND_RATE_KEY_PREFIX": redis_prefixes[1],
        }
    metrics_port = setup.ports.take()
    try:
        with _started(emulator_argv, {}, setup.core(HELPER_CORE), workdir / "emulator.log") as emulator:
            _wait_http(f"{emulator_url}/healthz", emulator, "the Graph API emulator", workdir / "emulator.log")
            argv = servers.igw_command("agent", "--metrics-port", str(metrics_port))
            with _started(argv, env, setup.core(CONSUMER_CORE), workdir / "agent.log") as agent:
                progress = watch(
                    lambda: int(_get_json(f"{emulator_url}/_emulator/stats")["accepted"]),
                    total,
                    {"consumer": agent.pid, "emulator": emulator.pid, **_broker_pid(broker)},
                    agent,
                    interval=setup.poll_interval,
                )
                if progress.finished:
                    time.sleep(SETTLE_SECONDS)  # duplicates would arrive now
                peak = procstat.memory(agent.pid).hwm_bytes
                _keep_metrics(f"http://127.0.0.1:{metrics_port}/metrics", workdir / "agent-metrics.txt")
            sends = _get_json(f"{emulator_url}/_emulator/messages", timeout=60)
    finally:
        if variant.store == "redis":
            _forget_redis_keys(setup.redis_url, redis_prefixes)
    found = Counter(str(sent["recipient_id"]) for sent in sends if sent["kind"] == "message")
    times = sorted(float(sent["time"]) for sent in sends if sent["kind"] == "message")
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    _keep_timeline(times, workdir / "replies-per-100ms.txt")
    check = Answered(variant.expected, dict(found))
    if progress.problem:
        print(f"    {variant.label}: {progress.problem}; see {workdir}", flush=True)
    result = ConsumerRun(
        scenario="agent",
        variant=variant.key,
        label=variant.label,
        round=round_no,
        items=len(times),
        seconds=seconds,
        rate=(len(times) - 1) / seconds if seconds > 0 else NAN,
        cpu_seconds=progress.cpu["consumer"],
        cpu_items=progress.end_count - progress.first_count,
        cpu_span=progress.end_at - progress.first_at,
        peak_rss_bytes=peak,
        check=check if progress.finished else _failed(check),
        helper_cpu_seconds=progress.cpu["emulator"],
        broker_cpu_seconds=progress.cpu.get("broker"),
    )
    print(f"  round {round_no} agent, {variant.label:<38} {describe(result)} (loaded in {loaded:.1f}s)", flush=True)
    print(f"    replies check: {result.check.describe()}", flush=True)
    return result


def _failed(check: Answered) -> Answered:
    # A run that stopped early fails even when what it did so far was right.
    return check if not check.ok else Answered({**check.expected, "(run finished)": 1}, check.found, check.what)


def describe(r: ConsumerRun) -> str:
    what = "replies/s" if r.scenario == "agent" else "events/s"
    peak = f"peak RSS {r.peak_rss_bytes / 2**20:.0f} MiB"
    if r.rate != r.rate:
        # Done between two samples: nothing to divide by. More records make a measurable run.
        return f"too quick to time ({r.items} items); {peak}"
    cpu = f"{r.cpu_per_1k:.3g} CPU s/1k (consumer CPU {r.core_busy:.0%})" if r.cpu_items else "CPU: too quick to sample"
    return f"{r.rate:>9,.0f} {what}  {cpu}  {peak}"


def agent_scenario(setup: ConsumerSetup, broker_log: Path) -> list[ConsumerRun]:
    stores = setup.stores
    if "redis" in stores and not _redis_answers(setup.redis_url):
        print(
            f"  note: no Redis at {setup.redis_url} (or no redis package); the Redis store variants are left out",
            flush=True,
        )
        stores = tuple(s for s in stores if s != "redis")
    setup_used = dataclasses.replace(setup, stores=stores)
    variants = agent_variants(setup_used)
    broker = LocalBroker(port=setup.ports.take(), log_path=broker_log)
    broker.start()
    try:
        return [
            agent_run(setup_used, broker, variant, round_no)
            for round_no in range(1, setup.rounds + 1)
            for variant in variants
        ]
    finally:
        broker.stop()


# -- analytics --------------------------------------------------------------------------------


def _events_counted(metrics_url: str) -> int:
    total = 0.0
    for line in _get_text(metrics_url).splitlines():
        if line.startswith("igw_biz_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def analytics_run(
    setup: ConsumerSetup, broker: LocalBroker, records: list[envelopes.Record], round_no: int
) -> ConsumerRun:
    prefix = f"bench{setup.run_id}analytics{round_no}"
    workdir = setup.results_dir / "analytics" / f"round{round_no}"
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = preload(broker.bootstrap_servers, prefix, ANALYTICS_TOPICS, records)
    metrics_port = setup.ports.take()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "IGW_TOPIC_PREFIX": prefix,
        "IGW_ANALYTICS_GROUP": f"{prefix}-analytics",
        "IGW_LOG_FORMAT": "text",
        **GROUP_ENV,
    }
    argv = servers.igw_command("analytics", "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1")
    with _started(argv, env, setup.core(CONSUMER_CORE), workdir / "analytics.log") as analytics:
        _wait_http(metrics_url, analytics, "igw analytics", workdir / "analytics.log")
        progress = watch(
            lambda: _events_counted(metrics_url),
            len(records),
            {"consumer": analytics.pid, **_broker_pid(broker)},
            analytics,
            interval=max(setup.poll_interval, ANALYTICS_POLL_SECONDS),
        )
        if progress.finished:
            time.sleep(SETTLE_SECONDS)
        counted = _events_counted(metrics_url)
        peak = procstat.memory(analytics.pid).hwm_bytes
        _keep_metrics(metrics_url, workdir / "analytics-metrics.txt")
    seconds = (progress.reached_at or progress.end_at) - progress.first_at
    items = (len(records) if progress.reached_at else progress.end_count) - progress.first_count
    check = Answered({"events": len(records)}, {"events": counted}, what="events")
    if progress.problem:
        print(f"    analytics: {progress.problem}; see {workdir}", flush=True)
    result = ConsumerRun(
        scenario="analytics",
        variant="mix",
        label="mixed envelopes",
        round=round_no,
        items=counted,
        seconds=seconds,
        rate=items / seconds if seconds > 0 and items > 0 else NAN,
        cpu_seconds=progress.cpu["consumer"],
        cpu_items=progress.end_count - progress.first_count,
        cpu_span=progress.end_at - progress.first_at,
        peak_rss_bytes=peak,
        check=check if progress.finished else _failed(check),
        broker_cpu_seconds=progress.cpu.get("broker"),
    )
    print(f"  round {round_no} analytics, {len(records):,} events  {describe(result)} (loaded in {loaded:.1f}s)")
    print(f"    events check: {result.check.describe()}", flush=True)
    return result


def analytics_scenario(setup: ConsumerSetup, broker_log: Path) -> list[ConsumerRun]:
    records = envelopes.analytics_mix(setup.analytics_events, setup.secret)
    broker = LocalBroker(port=setup.ports.take(), log_path=broker_log)
    broker.start()
    try:
        return [analytics_run(setup, broker, records, round_no) for round_no in range(1, setup.rounds + 1)]
    finally:
        broker.stop()
