"""Bad configuration gets one answer: ``igw <command>: <what is wrong> (<what to do>)`` on stderr, exit 2.

Every variable of docs/configuration.md is given a bad value and run through every command the
doc's table says reads it, in-process through ``igw_tools.cli.main`` (milliseconds each); a few
real processes prove that no traceback and no log line reaches stderr. A variable added to the
doc is covered at once when its default is a number, a boolean or a ``_FILE``; any other needs a
bad value in ``BAD`` below, or a reason in ``FREE`` why every value is valid.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumers.agent_replies.settings import SAMPLE_RULES
from igw import __version__
from igw_tools.cli import main
from igw_tools.localbroker import free_port
from tests.plugins.sourcescan import ROOT
from tests.test_configuration_doc import documented

# The one line, whole: what is wrong, then what to do in the last parentheses.
LINE = re.compile(r"^igw (?P<command>[a-z-]+): (?P<what>.+) \((?P<todo>[^()]+)\)$")
# Every secret value in these tests holds this; no line may show it.
MARK = "s3cr3t"
MISSING = "/nonexistent/igw-bad-configuration"

# Variables every value of which is valid, and why.
FREE = {
    "KAFKA_CLIENT_ID": "any text names the client in the broker's logs and quotas",
    "IGW_AGENT_TOKEN": "a bearer token is opaque; the agent service judges it",
    "IGW_OPENAI_MODEL": "model names are the service's own; a wrong one is the service's error on each call",
    "IGW_OPENAI_HANDOVER_MARKER": "any text can mark a handover",
    "IGW_AGENT_REDIS_PREFIX": "any text is a Redis key prefix",
    "IGW_SEND_RATE_KEY_PREFIX": "any text is a Redis key prefix",
    "IGW_AGENT_GROUP": "any text is a Kafka consumer group id",
    "IGW_ANALYTICS_GROUP": "any text is a Kafka consumer group id",
    "IGW_ANALYTICS_PAYLOADS": "payloads are the page's own strings",
    "IGW_RECONCILE_RATE_KEY_PREFIX": "any text is a Redis key prefix",
}

# Bad values of the variables whose default is neither a number nor a boolean. A mapping sets
# (or, with None, unsets) other variables too; the first key is the variable the line must name.
# "{tmp}" is this module's scratch directory.
BAD: dict[str, str | Mapping[str, str | None]] = {
    "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": None},  # required
    "INSTAGRAM_APP_SECRET": " , ",
    "IGW_WEBHOOK_PATH": "webhook",
    "IGW_CONTENT_KEYS": "postgres://keys",
    "IGW_PRIVACY_PATH": "meta",
    "IGW_PUBLIC_URL": "hooks.example.com",
    "IGW_HOST": "not a host",
    "PROMETHEUS_MULTIPROC_DIR": f"{MISSING}/metrics",
    "IGW_SPOOL_DIR": "/dev/null/spool",
    "IGW_PRODUCER_BACKEND": "kafka-python",
    "IGW_LOG_LEVEL": "verbose",
    "IGW_LOG_FORMAT": "xml",
    "KAFKA_BOOTSTRAP_SERVERS": "localhost:notaport",
    "IGW_TOPIC_PREFIX": "ig/prod",
    "KAFKA_ACKS": "2",
    "KAFKA_COMPRESSION": "brotli",
    "KAFKA_SECURITY_PROTOCOL": "tls",
    "KAFKA_SASL_MECHANISM": {
        "KAFKA_SASL_MECHANISM": "MAGIC",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_USERNAME": "igw",
        "KAFKA_SASL_PASSWORD": f"{MARK}-sasl",
    },
    "KAFKA_SASL_USERNAME": {
        "KAFKA_SASL_USERNAME": None,
        "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "KAFKA_SASL_PASSWORD": f"{MARK}-sasl",
    },
    "KAFKA_SASL_PASSWORD": {
        "KAFKA_SASL_PASSWORD": None,
        "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "KAFKA_SASL_USERNAME": "igw",
    },
    "IGW_ACCESS_TOKEN": {"IGW_ACCESS_TOKEN": None},  # the agent's only account: nothing to send from
    "IGW_ACCOUNTS_FILE": f"{MISSING}/accounts.json",
    "IGW_GRAPH_BASE_URL": "graph.facebook.com",
    "IGW_INSTAGRAM_GRAPH_BASE_URL": "graph.instagram.com",
    "IGW_GRAPH_VERSION": "25.0",
    "REDIS_URL": f"{MARK}@localhost:6379",
    "IGW_AGENT": "magic",
    "IGW_RULES_FILE": "{tmp}/broken-rules.yaml",
    "IGW_AGENT_URL": f"ftp://agent:{MARK}@agent.example",
    "OPENAI_API_KEY": {"OPENAI_API_KEY": None, "IGW_AGENT": "openai"},
    "OPENAI_BASE_URL": "api.openai.com/v1",
    "IGW_OPENAI_SYSTEM_PROMPT_FILE": f"{MISSING}/prompt.txt",
    "IGW_HANDOVER_PAUSE_SECONDS": "soon",
    "IGW_APP_ID": "my-app",
    "IGW_APP_ACCESS_TOKEN": f"{MARK}-no-app-id-in-it",
    "IGW_ANALYTICS_AGENT_APP_IDS": "agent-app",
    "IGW_ANALYTICS_ROLLUP_PATH": "/dev/null/rollup.sqlite",
    "IGW_METRICS_HOST": "not a host",
    "IGW_CONSUMER_OFFSET_RESET": "newest",
    "IGW_CONSUMER_INSTANCE_ID": "agent 1",
    "IGW_TANSU_BIN": f"{MISSING}/tansu",
}

# "all" in the doc's process column: every process that talks to Kafka.
ALL = ("gateway", "agent", "analytics", "reconcile", "topics", "replay")
ALL_PRODUCERS = ("gateway", "agent", "reconcile", "replay")


@dataclass(frozen=True, slots=True)
class Row:
    names: tuple[str, ...]
    default: str
    processes: str


def rows() -> dict[str, Row]:
    """Variable -> its row of docs/configuration.md."""
    result = {}
    for name, line in documented().items():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        result[name] = Row(tuple(re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])), cells[1], cells[3])
    return result


def commands_of(processes: str) -> list[str]:
    """The commands of a process cell: ``gateway, tools (`simulate` and `check` ...)``: gateway, simulate, check."""
    commands: list[str] = []
    tools = re.search(r"tools \(([^)]*)\)", processes)
    if tools:
        commands += [name.split()[0] for name in re.findall(r"`([^`]+)`", tools.group(1))]
    for part in (p.strip() for p in re.sub(r"tools \([^)]*\)", "", processes).split(",")):
        if part == "all":
            commands += ALL
        elif part == "all producers":
            commands += ALL_PRODUCERS
        elif part:
            commands.append(part)
    return list(dict.fromkeys(commands))


def bad_value(name: str, row: Row) -> Mapping[str, str | None] | None:
    """The environment change that makes ``name`` bad, or None when it needs an entry in BAD."""
    if name in BAD:
        given = BAD[name]
        return {name: given} if isinstance(given, str) else given
    if name.endswith("_FILE"):
        return {name: f"{MISSING}/secret", name.removesuffix("_FILE"): None}
    first = re.match(r"`([^`]*)`", row.default)
    if first and re.fullmatch(r"[0-9.]+", first.group(1)):
        return {name: "abc"}
    if first and first.group(1) in {"true", "false"}:
        return {name: "maybe"}
    return None


def cases() -> list[tuple[str, str]]:
    return [
        (name, command) for name, row in rows().items() if name not in FREE for command in commands_of(row.processes)
    ]


# -- fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Places:
    tmp: Path
    busy_port: int  # something listens here
    closed_port: int  # nothing listens here


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Places]:
    tmp = tmp_path_factory.mktemp("bad-configuration")
    (tmp / "broken-rules.yaml").write_text("rules:\n  - name: x\n    keywords: [a\n", encoding="utf-8")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield Places(tmp, listener.getsockname()[1], free_port())


def base_env(command: str, places: Places) -> dict[str, str]:
    """A valid environment for ``command``, set up so that the start fails at once past the settings.

    A bad value that is not rejected then ends in a line about the busy port or the missing
    broker, which does not name the variable: the test fails instead of starting a server.
    """
    kafka = f"127.0.0.1:{places.closed_port}"
    secrets = {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": f"{MARK}-verify", "INSTAGRAM_APP_SECRET": f"{MARK}-app"}
    metrics = {"IGW_METRICS_HOST": "127.0.0.1", "IGW_METRICS_PORT": str(places.busy_port)}
    return {
        "gateway": {
            **secrets,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "IGW_HOST": "127.0.0.1",
            "IGW_PORT": str(places.busy_port),
            "IGW_SPOOL_DIR": str(places.tmp / "spool"),
        },
        "agent": {
            **metrics,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "IGW_RULES_FILE": str(SAMPLE_RULES),
            "IGW_ACCESS_TOKEN": f"{MARK}-token",
        },
        "analytics": {**metrics, "KAFKA_BOOTSTRAP_SERVERS": kafka},
        "reconcile": {**metrics, "KAFKA_BOOTSTRAP_SERVERS": kafka, "IGW_ACCESS_TOKEN": f"{MARK}-token"},
        "topics": {"KAFKA_BOOTSTRAP_SERVERS": kafka},
        "replay": {"KAFKA_BOOTSTRAP_SERVERS": kafka},
        "check": secrets,
        "simulate": secrets,
        "dev": {},
        "graph-emulator": {},
        "erase": {"KAFKA_BOOTSTRAP_SERVERS": kafka},
    }[command]


def argv(command: str, places: Places) -> list[str]:
    nowhere = f"http://127.0.0.1:{places.closed_port}/webhook"
    return {
        "gateway": ["gateway"],
        "agent": ["agent"],
        "analytics": ["analytics"],
        "reconcile": ["reconcile"],
        "topics": ["topics", "create", "--timeout", "5"],
        "replay": ["replay", "deadletter", "--to", "messages", "--dry-run", "--timeout", "5"],
        "check": ["check", nowhere, "--timeout", "1"],
        "simulate": ["simulate", "--event", "message", "--url", nowhere, "--count", "1", "--timeout", "1", "--quiet"],
        # A free broker port of its own: igw dev probes it, and 9092 may hold someone's broker.
        "dev": [
            *("dev", "--state-dir", str(places.tmp / "dev"), "--port", str(places.busy_port)),
            *("--kafka-port", str(places.closed_port)),
        ],
        "graph-emulator": ["graph-emulator", "--port", str(places.busy_port)],
        "erase": ["erase", "--platform", "instagram", "--account", "1", "--user", "2", "--timeout", "2"],
    }[command]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No documented variable from the outside; the process-wide state a command may change, restored."""
    for name in rows():
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level, threshold = root.handlers[:], root.level, gc.get_threshold()
    yield monkeypatch
    root.handlers[:] = handlers
    root.setLevel(level)
    gc.set_threshold(*threshold)


def apply(monkeypatch: pytest.MonkeyPatch, *changes: Mapping[str, str | None], tmp: Path) -> None:
    for change in changes:
        for name, value in change.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value.replace("{tmp}", str(tmp)))


def one_line(capsys: pytest.CaptureFixture[str], command: str) -> re.Match[str]:
    """stderr holds exactly one line of the answer's shape, for ``command``; stdout nothing."""
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.endswith("\n"), err
    assert MARK not in err, err
    match = LINE.match(err.rstrip("\n"))
    assert match is not None, err
    assert match["command"] == command
    return match


# -- the tests ------------------------------------------------------------------------------------


def test_every_variable_has_a_bad_value_or_a_reason() -> None:
    """Each documented variable gets a bad value (from its default, or BAD) or is listed as FREE with a reason."""
    doc = rows()
    uncovered = [name for name, row in doc.items() if name not in FREE and bad_value(name, row) is None]
    assert not uncovered, f"give these a bad value in BAD, or a reason in FREE: {uncovered}"
    assert not set(FREE) & set(BAD), "a variable is either free or has a bad value"
    assert set(FREE) | set(BAD) <= set(doc), "FREE and BAD name only documented variables"
    for name in doc:
        assert commands_of(doc[name].processes), f"no command reads {name}?"


@pytest.mark.parametrize(("variable", "command"), cases())
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str,
    command: str,
    places: Places,
    environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad (or missing) value of each variable, run through each command that reads it, is one line naming it."""
    change = bad_value(variable, rows()[variable])
    assert change is not None
    apply(environment, base_env(command, places), change, tmp=places.tmp)
    assert main(argv(command, places)) == 2
    match = one_line(capsys, command)
    assert match["what"].startswith(f"{variable}: "), match.group(0)


@pytest.mark.parametrize("command", ["gateway", "agent", "analytics", "reconcile", "graph-emulator", "dev"])
def test_a_busy_port_is_one_line(
    command: str, places: Places, environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port another process holds stops the start before Kafka is tried or a log line is written."""
    apply(environment, base_env(command, places), tmp=places.tmp)
    assert main(argv(command, places)) == 2
    match = one_line(capsys, command)
    if command == "dev":  # igw dev checks all its ports and names the flag of each
        assert match["what"] == f"port {places.busy_port} (--port (gateway)) is already in use"
    else:
        assert match["what"] == f"port {places.busy_port} on 127.0.0.1 is already in use"
    assert "choose an" in match["todo"] or "choose others" in match["todo"]


@pytest.mark.parametrize("command", ["agent", "analytics", "reconcile", "topics", "replay"])
def test_an_unreachable_broker_is_one_line(
    command: str, places: Places, environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The consumers and the tools need Kafka: none answering at start is one line naming the servers."""
    apply(environment, base_env(command, places), {"IGW_METRICS_PORT": "0"}, tmp=places.tmp)
    assert main(argv(command, places)) == 2
    match = one_line(capsys, command)
    assert match["what"] == f"no Kafka broker answers at 127.0.0.1:{places.closed_port}"
    assert "KAFKA_BOOTSTRAP_SERVERS" in match["todo"]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("rules.yaml", "rules:\n  - name: x\n    keywords: [a, b\n    text: hi\n", ":4:9: not valid YAML"),
        ("rules.json", '{"rules": [\n  {"name": "x",, "text": "y"}\n]}\n', ":2:16: not valid JSON"),
        ("rules.yaml", "rules:\n  - name: x\n    keyword: [a]\n    text: hi\n", ":3: rules[0].keyword: unknown key"),
    ],
)
def test_a_rules_file_that_does_not_parse_says_where(
    name: str,
    text: str,
    where: str,
    places: Places,
    environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A rules file that does not parse stops the agent before Kafka, naming file, line and (for syntax) column."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    apply(environment, base_env("agent", places), {"IGW_RULES_FILE": str(path)}, tmp=places.tmp)
    assert main(["agent"]) == 2
    match = one_line(capsys, "agent")
    assert match["what"].startswith(f"IGW_RULES_FILE: {path}{where}"), match.group(0)


def test_an_accounts_file_with_no_account_is_one_line(
    places: Places, environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An agent whose accounts file lists none does not start (it would fail every send)."""
    accounts = tmp_path / "accounts.json"
    accounts.write_text("[]", encoding="utf-8")
    apply(
        environment,
        base_env("agent", places),
        {"IGW_ACCESS_TOKEN": None, "IGW_ACCOUNTS_FILE": str(accounts)},
        tmp=places.tmp,
    )
    assert main(["agent"]) == 2
    assert (
        one_line(capsys, "agent")["what"]
        == f"IGW_ACCOUNTS_FILE: no account to send replies from: {accounts} lists none"
    )


def test_help_and_version_ignore_bad_variables(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Variables are read when a command runs, so bad ones never break --help or --version."""
    for name in ("IGW_PORT", "IGW_WORKERS", "IGW_KEEPALIVE_TIMEOUT_SECONDS", "IGW_ACCESS_LOG", "IGW_LOG_LEVEL"):
        environment.setenv(name, "abc")
    for args in (["--help"], ["gateway", "--help"], ["agent", "--help"], ["analytics", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 0
        assert "usage: igw" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"igw {__version__}\n"


def test_a_flag_wins_and_its_variable_is_not_read(
    places: Places, environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --port and --log-level given, bad IGW_PORT and IGW_LOG_LEVEL do not matter."""
    apply(environment, base_env("gateway", places), {"IGW_PORT": "abc", "IGW_LOG_LEVEL": "verbose"}, tmp=places.tmp)
    assert main(["gateway", "--port", str(places.busy_port), "--log-level", "info"]) == 2
    assert one_line(capsys, "gateway")["what"] == f"port {places.busy_port} on 127.0.0.1 is already in use"


# -- real processes: nothing but the line reaches stderr -------------------------------------------


def run_all(runs: Mapping[str, tuple[list[str], Mapping[str, str]]]) -> dict[str, tuple[int, str, str]]:
    """Run ``igw ARGS`` with each environment, all at once (each start costs about a second of imports)."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "igw_tools.cli", *args],
            env={"PATH": "/usr/bin:/bin", **environ},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, environ) in runs.items()
    }
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=60)
        results[name] = (process.returncode, out, err)
    return results


def test_processes_print_one_line_and_exit_2(places: Places) -> None:
    """Real processes: a bad variable, a busy port, an unreachable broker: exit 2, one line, no traceback;
    ``--help`` with IGW_PORT=abc and IGW_WORKERS=abc works, ``--version`` prints the version."""
    results = run_all(
        {
            "gateway": (["gateway"], {**base_env("gateway", places), "IGW_LOG_LEVEL": "verbose"}),
            "agent": (["agent"], {**base_env("agent", places), "IGW_METRICS_PORT": "0", "IGW_LOG_FORMAT": "text"}),
            "analytics": (["analytics"], base_env("analytics", places)),
            "topics": (["topics"], base_env("topics", places)),
            "help": (["--help"], {"IGW_PORT": "abc", "IGW_WORKERS": "abc"}),
            "version": (["--version"], {}),
        }
    )
    for command in ("gateway", "agent", "analytics", "topics"):
        status, out, err = results[command]
        assert status == 2, (command, err)
        assert "Traceback" not in err
        assert err.count("\n") == 1, err
        assert LINE.match(err.rstrip("\n")), err
    assert results["gateway"][2].startswith("igw gateway: IGW_LOG_LEVEL: ")
    assert results["agent"][2].startswith(f"igw agent: no Kafka broker answers at 127.0.0.1:{places.closed_port} (")
    assert results["analytics"][2].startswith(f"igw analytics: port {places.busy_port} on 127.0.0.1 is already in use")
    assert results["topics"][2].startswith(f"igw topics: no Kafka broker answers at 127.0.0.1:{places.closed_port} (")
    status, out, err = results["help"]
    assert (status, err) == (0, "")
    assert "usage: igw" in out
    assert results["version"] == (0, f"igw {__version__}\n", "")


def test_a_missing_metrics_directory_is_one_line_too(places: Places) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming no directory is one line from ``igw gateway`` and harmless to ``--help``."""
    environ = {**base_env("gateway", places), "PROMETHEUS_MULTIPROC_DIR": f"{MISSING}/metrics"}
    results = run_all({"gateway": (["gateway"], environ), "help": (["--help"], environ)})
    assert results["help"][0] == 0
    status, _, err = results["gateway"]
    assert status == 2
    assert err.startswith("igw gateway: PROMETHEUS_MULTIPROC_DIR: "), err
