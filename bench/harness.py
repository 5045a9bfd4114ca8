"""``bench/run``: the ceiling, the floor, igw's gateway and a FastAPI baseline side by side, on one local broker.

For each scenario: a fresh Tansu broker, then rounds of (a, d, b, c) in turn, each a fresh server
pinned to core 0 and the load generator pinned to core 1, a short warm-up, then the measured run.
Every process started here is stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import bigbody, consumer_runs, kafka_check, loadgen, payloads, procstat, report, servers
from bench.ports import PortRange, parse_range
from bench.scenarios import SCENARIOS, Scenario
from igw_tools.localbroker import LocalBroker

SERVER_CORE = 0
LOAD_CORE = 1


@dataclass(frozen=True, slots=True)
class ConsumerSizes:
    """How much work each consumer run gets (records loaded before it starts)."""

    conversations: int = 1000
    messages_each: int = 20
    sequential: int = 2000
    stores: tuple[str, ...] = ("memory", "redis")
    redis_url: str = "redis://127.0.0.1:6379/0"
    analytics_events: int = 200_000


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    warmup: float
    rounds: int
    connections: int
    batch_connections: int | None
    scenarios: tuple[str, ...]
    servers: tuple[str, ...]
    use_wrk: bool
    pin: bool
    pin_broker: bool
    gateway_cmd: str | None
    results_dir: Path
    run_id: str
    secret: str
    verify_token: str
    ports: PortRange = field(default_factory=PortRange)
    consumers: ConsumerSizes = field(default_factory=ConsumerSizes)


def _pin(options: Options, core: int) -> int | None:
    return core if options.pin else None


@dataclass(frozen=True, slots=True)
class Plan:
    """One measured run of one server: what to send, how hard and for how long."""

    scenario: str
    round_no: int
    bodies: tuple[payloads.SignedBody, ...]
    events_per_request: int
    connections: int
    duration: float


def plan_round(options: Options, scenario: Scenario, round_no: int) -> Plan:
    bodies = tuple(scenario.bodies(options.secret))
    per_request = {b.events for b in bodies}
    if len(per_request) != 1:
        raise ValueError(f"scenario {scenario.name}: every body must carry the same number of events")
    connections = options.connections
    if scenario.max_connections is not None:
        connections = options.batch_connections or min(connections, scenario.max_connections)
    return Plan(
        scenario=scenario.name,
        round_no=round_no,
        bodies=bodies,
        events_per_request=per_request.pop(),
        connections=connections,
        duration=max(options.duration, scenario.min_duration),
    )


def run_webhook_round(
    options: Options, scenario: Scenario, broker: LocalBroker, round_no: int
) -> list[report.RunResult]:
    """One round of a webhook scenario: each server in turn, fresh and pinned."""
    plan = plan_round(options, scenario, round_no)
    results = []
    for key in options.servers:
        prefix = f"bench{options.run_id}{scenario.name}{round_no}{key[0]}"
        if key == "ceiling":
            spec = servers.ceiling_spec()
        elif key == "gateway":
            spec = servers.gateway_spec(
                broker.bootstrap_servers, prefix, options.secret, options.verify_token, options.gateway_cmd
            )
        elif key == "floor":
            spec = servers.floor_spec(broker.bootstrap_servers, prefix)
        else:
            topic = f"{prefix}.webhooks"
            kafka_check.create_topic(broker.bootstrap_servers, topic)  # ops create topics before deploying
            spec = servers.baseline_spec(broker.bootstrap_servers, topic, options.secret)
        workdir = options.results_dir / scenario.name / f"round{round_no}-{key}"
        result = measure(options, plan, spec, broker, prefix, workdir)
        results.append(result)
        print(f"  round {round_no} {spec.label:<24} {describe_run(result)}", flush=True)
        if result.delivery is not None:
            print(f"    delivery check: {result.delivery.describe()}", flush=True)
    return results


def describe_run(r: report.RunResult) -> str:
    errors = r.load.non2xx + r.load.socket_errors
    return (
        f"{r.load.rps:>9,.0f} req/s {r.events_per_s:>10,.0f} events/s  p50 {r.load.p50_ms:7.2f} ms  "
        f"p99 {r.load.p99_ms:7.2f} ms  max {r.load.max_ms:8.2f} ms  "
        f"{r.cpu_per_1k_events:.3g} CPU s/1k events (server CPU {r.server_core_busy:.0%})  "
        f"peak RSS {r.peak_rss_bytes / 2**20:.0f} MiB" + (f"  ERRORS {errors}" if errors else "")
    )


def measure(
    options: Options, plan: Plan, spec: servers.ServerSpec, broker: LocalBroker, prefix: str, workdir: Path
) -> report.RunResult:
    """Start the server, warm it up, measure one run, stop it; then check what reached Kafka."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = servers.start(
        spec,
        port=options.ports.take(),
        core=_pin(options, SERVER_CORE),
        log_path=workdir / "server.log",
        probe=plan.bodies[0],
    )
    try:

        def load(duration: float, name: str) -> loadgen.LoadResult:
            cmd = loadgen.command(
                url=server.url,
                path=servers.WEBHOOK_PATH,
                bodies=list(plan.bodies),
                workdir=workdir,
                connections=plan.connections,
                duration=duration,
                core=_pin(options, LOAD_CORE),
                use_wrk=options.use_wrk,
            )
            return loadgen.run(cmd, duration=duration, log=workdir / f"{name}.txt", cwd=servers.REPO_DIR)

        warm = load(options.warmup, "warmup") if options.warmup > 0 else None
        broker_pid = broker.process.pid if broker.process is not None and spec.publishes else None
        cpu_before = procstat.cpu_seconds(server.pid)
        broker_before = procstat.cpu_seconds(broker_pid) if broker_pid else 0.0
        result = load(plan.duration, "load")
        cpu = procstat.cpu_seconds(server.pid) - cpu_before
        broker_cpu = procstat.cpu_seconds(broker_pid) - broker_before if broker_pid else None
        peak = procstat.memory(server.pid).hwm_bytes
    finally:
        server.stop()
    delivery = None
    if spec.publishes:
        found = sum(kafka_check.count_records(broker.bootstrap_servers, prefix).values())
        loads = [x for x in (warm, result) if x is not None]
        acked = server.probe_events + sum(x.ok for x in loads) * plan.events_per_request
        # Requests in flight when a load stopped, or answered non-2xx, may be in Kafka all the same.
        unacked = sum(x.non2xx + x.socket_errors for x in loads) + len(loads) * plan.connections
        delivery = report.Delivery(acked, found, in_flight_bound=unacked * plan.events_per_request)
    return report.RunResult(
        plan.scenario,
        spec.key,
        plan.round_no,
        result,
        plan.events_per_request,
        cpu,
        peak,
        delivery,
        broker_cpu_seconds=broker_cpu,
    )


def start_broker(options: Options, log_path: Path) -> LocalBroker:
    """A fresh Tansu; with --pin-broker on the load generator's core, so the server's core is its own."""
    broker = LocalBroker(port=options.ports.take(), log_path=log_path)
    broker.start()
    if options.pin and options.pin_broker and broker.process is not None:
        try:
            procstat.pin_all_threads(broker.process.pid, LOAD_CORE)
        except BaseException:
            broker.stop()
            raise
    return broker


def run_webhook_scenario(options: Options, scenario: Scenario) -> list[report.RunResult]:
    print(f"\n## scenario {scenario.name}: {scenario.description}", flush=True)
    results: list[report.RunResult] = []
    # Tansu keeps every record in memory and only grows: a fresh broker per scenario.
    broker = start_broker(options, options.results_dir / scenario.name / "tansu.log")
    try:
        for round_no in range(1, options.rounds + 1):
            results += run_webhook_round(options, scenario, broker, round_no)
    finally:
        broker.stop()
    return results


def consumer_setup(options: Options) -> consumer_runs.ConsumerSetup:
    sizes = options.consumers
    return consumer_runs.ConsumerSetup(
        results_dir=options.results_dir,
        run_id=options.run_id,
        secret=options.secret,
        rounds=options.rounds,
        pin=options.pin,
        ports=options.ports,
        conversations=sizes.conversations,
        messages_each=sizes.messages_each,
        sequential=sizes.sequential,
        stores=sizes.stores,
        redis_url=sizes.redis_url,
        analytics_events=sizes.analytics_events,
    )


def run_agent_scenario(options: Options, scenario: Scenario) -> list[report.ConsumerRun]:
    print(f"\n## scenario {scenario.name}: {scenario.description}", flush=True)
    return consumer_runs.agent_scenario(consumer_setup(options), options.results_dir / scenario.name / "tansu.log")


def run_analytics_scenario(options: Options, scenario: Scenario) -> list[report.ConsumerRun]:
    print(f"\n## scenario {scenario.name}: {scenario.description}", flush=True)
    return consumer_runs.analytics_scenario(consumer_setup(options), options.results_dir / scenario.name / "tansu.log")


def run_bigbody_scenario(options: Options, scenario: Scenario) -> list[report.RunResult]:
    """Prints its own table (bench/bigbody.py); a failed delivery check fails the run."""
    print(f"\n## scenario {scenario.name}: {scenario.description}", flush=True)
    workdir = options.results_dir / scenario.name
    broker = start_broker(options, workdir / "tansu.log")
    try:
        result = bigbody.run(
            broker=broker,
            port=options.ports.take(),
            server_core=_pin(options, SERVER_CORE),
            load_core=_pin(options, LOAD_CORE),
            workdir=workdir,
            secret=options.secret,
            verify_token=options.verify_token,
            prefix=f"bench{options.run_id}bigbody",
            duration=options.duration,
        )
    finally:
        broker.stop()
    print(result.markdown(), flush=True)
    dm_over = sum(s > 1.0 for s in result.dm_seconds)
    print(
        f"bigbody_dm_p99_ms={result.percentile_ms(0.99):.1f} bigbody_dm_max_ms={1000 * max(result.dm_seconds):.1f} "
        f"bigbody_dms_over_1s={dm_over} bigbody_peak_rss_mib={result.peak_rss / 2**20:.0f}",
        flush=True,
    )
    if not result.delivered:
        raise SystemExit(f"DELIVERY CHECK FAILED: bigbody: {result.found} records for {result.acknowledged} events")
    return []


Result = report.RunResult | report.ConsumerRun
# Scenario kinds and how to run them.
RUNNERS: dict[str, Callable[[Options, Scenario], Sequence[Result]]] = {
    "webhook": run_webhook_scenario,
    "agent": run_agent_scenario,
    "analytics": run_analytics_scenario,
    "bigbody": run_bigbody_scenario,
}


def memory_soak(options: Options, seconds: float, rate: float, interval: float) -> int:
    """Run the gateway under steady load for ``seconds``, sampling its RSS; say whether it stays flat."""
    scenario = SCENARIOS["mixed"]
    bodies = scenario.bodies(options.secret)
    workdir = options.results_dir / "memory-soak"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(options, workdir / "tansu.log")
    samples: list[tuple[float, int]] = []
    try:
        prefix = f"bench{options.run_id}soak"
        spec = servers.gateway_spec(
            broker.bootstrap_servers, prefix, options.secret, options.verify_token, options.gateway_cmd
        )
        server = servers.start(
            spec,
            port=options.ports.take(),
            core=_pin(options, SERVER_CORE),
            log_path=workdir / "server.log",
            probe=bodies[0],
        )
        try:
            delay_ms = options.connections * 1000 / rate if rate > 0 else 0
            cmd = loadgen.command(
                url=server.url,
                path=servers.WEBHOOK_PATH,
                bodies=bodies,
                workdir=workdir,
                connections=options.connections,
                duration=seconds,
                core=_pin(options, LOAD_CORE),
                use_wrk=options.use_wrk,
                delay_ms=delay_ms,
            )
            print(
                f"memory soak: {seconds:.0f}s of the mixed stream at "
                + ("full speed" if rate <= 0 else f"~{rate:.0f} req/s")
            )
            with (workdir / "load.txt").open("w") as out:
                load = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, cwd=servers.REPO_DIR, start_new_session=True
                )
                try:
                    start = time.monotonic()
                    deadline = start + seconds + loadgen.TIMEOUT_SECONDS + 30
                    while load.poll() is None and time.monotonic() < deadline:
                        rss = procstat.memory(server.pid).rss_bytes
                        samples.append((time.monotonic() - start, rss))
                        print(f"  t={samples[-1][0]:6.0f}s RSS {rss / 2**20:7.1f} MiB", flush=True)
                        time.sleep(interval)
                finally:
                    if load.poll() is None:
                        os.killpg(load.pid, signal.SIGKILL)
                    load.wait(10)
            result = loadgen.parse_output((workdir / "load.txt").read_text())
            print(
                f"  load: {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms, "
                f"{result.non2xx + result.socket_errors} errors"
            )
        finally:
            server.stop()
        found = sum(kafka_check.count_records(broker.bootstrap_servers, prefix).values())
        unacked = result.non2xx + result.socket_errors + options.connections
        delivery = report.Delivery(server.probe_events + result.ok, found, in_flight_bound=unacked)
        print(f"  delivery check: {delivery.describe()}")
    finally:
        broker.stop()
    flat = judge_soak(samples, seconds)
    return flat if delivery.ok else 1


def judge_soak(samples: list[tuple[float, int]], seconds: float) -> int:
    """Flat: after warm-up (the first fifth, at least 30 s), the last quarter's median RSS is within
    max(5 %, 10 MiB) of the first quarter's."""
    warmup = min(max(30.0, seconds / 5), seconds / 2)
    steady = [rss for t, rss in samples if t >= warmup]
    if len(steady) < 4:
        print("memory soak: too few samples after warm-up to judge; run longer")
        return 1
    quarter = max(1, len(steady) // 4)
    first, last = statistics.median(steady[:quarter]), statistics.median(steady[-quarter:])
    growth = last - first
    flat = growth <= max(0.05 * first, 10 * 2**20)
    print(
        f"memory_soak_seconds={seconds:.0f} rss_after_warmup_mib={first / 2**20:.1f} rss_end_mib={last / 2**20:.1f} "
        f"growth_mib={growth / 2**20:.1f} flat={'yes' if flat else 'no'}"
    )
    return 0 if flat else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument(
        "--batch-connections", type=int, help="connections for the batch scenario (default: min(--connections, 4))"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load before each run (default 2)"
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--servers", default=",".join(report.SERVERS), help="comma-separated subset of ceiling,floor,gateway,baseline"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 round, 1 s warm-up")
    parser.add_argument("--memory-soak", type=float, metavar="SECONDS", help="soak the gateway and judge its RSS")
    parser.add_argument(
        "--soak-rate", type=float, default=1000, help="req/s during the soak; 0 = full speed (default 1000)"
    )
    parser.add_argument("--soak-interval", type=float, default=5, help="seconds between RSS samples (default 5)")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is there")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to cores 0 and 1")
    parser.add_argument(
        "--pin-broker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the broker to the load generator's core, so the server's core is its own (default: yes)",
    )
    parser.add_argument("--gateway-cmd", help="benchmark another gateway command instead of `igw gateway`")
    parser.add_argument(
        "--ports",
        default=os.environ.get("IGW_BENCH_PORTS"),
        help="take every port from this range, e.g. 19300-19399 (default: $IGW_BENCH_PORTS, else any free port)",
    )
    consumers = parser.add_argument_group("consumer scenarios (agent, analytics)")
    consumers.add_argument(
        "--agent-conversations", type=int, help="conversations of the concurrent agent run (default 1000)"
    )
    consumers.add_argument(
        "--agent-messages", type=int, help="messages per conversation in that run (default 20; --quick 2)"
    )
    consumers.add_argument(
        "--agent-sequential", type=int, help="messages of the one-conversation run (default 2000; --quick 200)"
    )
    consumers.add_argument(
        "--agent-stores", default="memory,redis", help="agent stores to run: memory,redis (default both)"
    )
    consumers.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", ConsumerSizes().redis_url),
        help="Redis for the Redis store variant (default $REDIS_URL or redis://127.0.0.1:6379/0; own key prefixes)",
    )
    consumers.add_argument(
        "--analytics-events", type=int, help="envelopes the analytics run counts (default 200000; --quick 50000)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if quick:
        args.duration, args.rounds, args.warmup = 2.0, 1, 1.0
    defaults = ConsumerSizes()
    args.agent_conversations = args.agent_conversations or defaults.conversations
    args.agent_messages = args.agent_messages or (2 if quick else defaults.messages_each)
    args.agent_sequential = args.agent_sequential or (200 if quick else defaults.sequential)
    args.analytics_events = args.analytics_events or (50_000 if quick else defaults.analytics_events)
    if min(args.agent_conversations, args.agent_messages, args.agent_sequential, args.analytics_events) < 1:
        parser.error("consumer sizes must be at least 1")
    stores = tuple(s for s in args.agent_stores.split(",") if s)
    if not stores or set(stores) - {"memory", "redis"}:
        parser.error("--agent-stores takes memory, redis or both")
    args.agent_stores = stores
    try:
        args.ports = parse_range(args.ports) if args.ports else None
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    unknown = set(args.servers.split(",")) - set(report.SERVERS)
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception so every finally block stops what it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run_id = secrets.token_hex(3)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        batch_connections=args.batch_connections,
        scenarios=tuple(SCENARIOS) if args.scenario == "all" else (args.scenario,),
        servers=tuple(s for s in report.SERVERS if s in args.servers.split(",")),
        use_wrk=loadgen.have_wrk() and not args.python_load,
        pin=not args.no_pin and (os.cpu_count() or 1) >= 2,
        pin_broker=args.pin_broker,
        gateway_cmd=args.gateway_cmd,
        results_dir=servers.BENCH_DIR / "results" / f"{stamp}-{run_id}",
        run_id=run_id,
        secret=secrets.token_hex(16),
        verify_token=secrets.token_hex(8),
        ports=PortRange(args.ports),
        consumers=ConsumerSizes(
            conversations=args.agent_conversations,
            messages_each=args.agent_messages,
            sequential=args.agent_sequential,
            stores=args.agent_stores,
            redis_url=args.redis_url,
            analytics_events=args.analytics_events,
        ),
    )
    options.results_dir.mkdir(parents=True, exist_ok=True)
    generator = (
        report.wrk_version()
        if options.use_wrk
        else "the Python load generator (slower than wrk: it may be the bottleneck)"
    )
    print(f"igw bench {run_id}: results in {options.results_dir}")
    print(f"machine: {report.machine()}; load: {generator}")
    if not options.pin:
        print("note: not pinned (fewer than 2 CPUs or --no-pin); figures are less comparable")
    if args.memory_soak:
        return memory_soak(options, args.memory_soak, args.soak_rate, args.soak_interval)

    results: list[Result] = []
    for name in options.scenarios:
        scenario = SCENARIOS[name]
        results += RUNNERS[scenario.kind](options, scenario)
    webhook_runs = [r for r in results if isinstance(r, report.RunResult)]
    consumer_results = [r for r in results if isinstance(r, report.ConsumerRun)]
    summaries = report.summarize(webhook_runs)
    consumer_summaries = report.summarize_consumers(consumer_results)
    tables = []
    if summaries:
        tables.append(report.markdown(summaries, setup=webhook_setup(options, generator)))
    if consumer_summaries:
        tables.append(report.consumer_markdown(consumer_summaries, setup=consumer_setup_text(options)))
    text = "\n\n".join(tables)
    (options.results_dir / "results.md").write_text(text + "\n")
    (options.results_dir / "runs.json").write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    print("\n" + text + "\n")
    failed = [r for r in webhook_runs if r.delivery is not None and not r.delivery.ok]
    for r in failed:
        print(f"DELIVERY CHECK FAILED: {r.scenario} round {r.round} {report.LABELS[r.server]}: {r.delivery.describe()}")  # type: ignore[union-attr]
    failed_consumers = [r for r in consumer_results if not r.check.ok]
    for c in failed_consumers:
        print(f"CONSUMER CHECK FAILED: {c.scenario} round {c.round} {c.label}: {c.check.describe()}")
    print(report.summary_line(summaries, consumer_summaries))
    return 1 if failed or failed_consumers else 0


def webhook_setup(options: Options, generator: str) -> str:
    batch_connections = options.batch_connections or min(options.connections, SCENARIOS["batch"].max_connections or 0)
    return (
        f"Load: {generator}, {options.connections} connections ({batch_connections} for batch, runs of at least "
        f"{SCENARIOS['batch'].min_duration:.0f} s), "
        f"{options.duration:.0f} s per run after "
        f"{options.warmup:.0f} s warm-up, medians of {options.rounds} alternating round(s); "
        + (
            f"server on core {SERVER_CORE}, load generator on core {LOAD_CORE}, broker "
            + (f"on core {LOAD_CORE}" if options.pin_broker else "unpinned")
            if options.pin
            else "nothing pinned"
        )
        + "; one local Tansu broker, acks=all."
    )


def consumer_setup_text(options: Options) -> str:
    sizes = options.consumers
    pinning = (
        f"consumer on core {consumer_runs.CONSUMER_CORE}, Graph API emulator on core {consumer_runs.HELPER_CORE}, "
        "broker unpinned"
        if options.pin
        else "nothing pinned"
    )
    return (
        f"Consumers: records loaded into a local Tansu broker before the consumer starts; agent: "
        f"{sizes.conversations} conversations x {sizes.messages_each} DMs, and 1 conversation x {sizes.sequential} "
        f"DMs (strictly in order), rules agent with the clinic sample, replies counted at the Graph API emulator "
        f"(Meta's per-account rate limits lifted on both sides); analytics: {sizes.analytics_events:,} envelopes, "
        f"counted from its igw_biz_events_total; medians of {options.rounds} round(s); {pinning}. "
        "CPU s / 1k: the consumer's utime + stime between its first and last item."
    )


if __name__ == "__main__":
    sys.exit(main())
