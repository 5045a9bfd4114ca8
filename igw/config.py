"""Reading settings from the environment, shared by every igw process.

Every variable in docs/configuration.md is read through :class:`Env`, once, when a command
starts (never while its argument parser is built), so an invalid one is reported as a
:class:`SettingsError` naming the variable, and every secret may come from ``NAME`` or from the
file named by ``NAME_FILE`` (how Docker, Kubernetes and ECS mount secrets). Error messages show
a value only when it cannot be a secret.
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from igw.errors import SettingsError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "Env", "KafkaSettings", "LogSettings", "Secret", "SettingsError"]

# A host name: labels of letters, digits, inner hyphens and underscores (Docker service names have them).
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value that never shows itself in a repr, a log line or an error message."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


class Env:
    """Typed access to an environment mapping; each error names the variable at fault."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self._environ: Mapping[builtins.str, builtins.str] = os.environ if environ is None else environ

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: builtins.str, default: builtins.str) -> builtins.str:
        return self.raw(name) or default

    def optional_str(self, name: builtins.str) -> builtins.str | None:
        return self.raw(name)

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        min_value: builtins.int | None = None,
        max_value: builtins.int | None = None,
    ) -> builtins.int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = builtins.int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {raw!r}") from None
        if min_value is not None and value < min_value:
            raise SettingsError(name, f"must be at least {min_value}, got {value}")
        if max_value is not None and value > max_value:
            raise SettingsError(name, f"must be at most {max_value}, got {value}")
        return value

    def port(self, name: builtins.str, default: builtins.int, *, allow_zero: builtins.bool = False) -> builtins.int:
        """A TCP port; ``allow_zero``: 0 asks the system for any free port."""
        return self.int(name, default, min_value=0 if allow_zero else 1, max_value=65535)

    def host(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """An address to listen on: an IP address or a host name (checked without a DNS lookup)."""
        value = self.str(name, default)
        if not is_host(value):
            raise SettingsError(name, f"expected an IP address or a host name, got {value!r}")
        return value

    def url(
        self,
        name: builtins.str,
        default: builtins.str | None,
        *,
        schemes: tuple[builtins.str, ...] = ("http", "https"),
        show: builtins.bool = True,
    ) -> builtins.str | None:
        """A URL with one of ``schemes``; ``show=False`` for URLs that may carry a password or token."""
        value = self.raw(name)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme.lower() not in schemes or not (parts.netloc or parts.path):
            expected = " or ".join(f"{scheme}://" for scheme in schemes)
            got = f", got {value!r}" if show else " (the value is not shown: it may hold a password)"
            raise SettingsError(name, f"expected a {expected} URL{got}")
        if parts.scheme.lower() in {"http", "https"} and not parts.hostname:
            raise SettingsError(name, "the URL names no host")
        return value

    def float(
        self, name: builtins.str, default: builtins.float, *, min_value: builtins.float | None = None
    ) -> builtins.float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = builtins.float(raw)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {raw!r}") from None
        if min_value is not None and value < min_value:
            raise SettingsError(name, f"must be at least {min_value}, got {value}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self.raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(name, f"expected true or false, got {raw!r}")

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise SettingsError(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def file(self, name: builtins.str, *, executable: builtins.bool = False) -> Path | None:
        """The path of an existing file (and executable, if asked), or None when unset."""
        raw = self.raw(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file():
            problem = "does not exist" if not path.exists() else "is not a file"
            raise SettingsError(name, f"{raw} {problem}", f"point {name} at an existing file, or unset it")
        if executable and not os.access(path, os.X_OK):
            raise SettingsError(name, f"{raw} is not executable", f"point {name} at the executable, or unset it")
        if not executable and not os.access(path, os.R_OK):
            raise SettingsError(name, f"{raw} is not readable", f"let this user read {raw}, or unset {name}")
        return path

    def directory(self, name: builtins.str) -> Path | None:
        """The path of an existing directory, or None when unset."""
        raw = self.raw(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_dir():
            raise SettingsError(name, f"{raw} is not a directory", f"create {raw}, or unset {name}")
        return path

    def secret(self, name: builtins.str) -> Secret | None:
        """``NAME`` or the contents of the file named by ``NAME_FILE`` (not both)."""
        direct = self.raw(name)
        file_name = self.raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise SettingsError(name, f"both {name} and {name}_FILE are set", "unset one of them")
        if file_name is not None:
            remedy = f"point {name}_FILE at a readable file that holds it, or set {name} instead"
            try:
                text = Path(file_name).read_text(encoding="utf-8").strip()
            except PermissionError as exc:
                # The usual cause in a container: a secret mounted for another user (deploy/README.md).
                raise SettingsError(
                    f"{name}_FILE",
                    f"cannot read {file_name}: {exc.strerror or exc}; "
                    f"this process runs as uid {os.getuid()}, gid {os.getgid()}",
                    "make the file readable by that user or group: deploy/README.md, Secrets",
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
                raise SettingsError(f"{name}_FILE", f"cannot read {file_name}: {reason}", remedy) from None
            if not text:
                raise SettingsError(f"{name}_FILE", f"{file_name} is empty", remedy)
            return Secret(text)
        return Secret(direct) if direct is not None else None

    def required_secret(self, name: builtins.str, why: builtins.str, *, alternative: builtins.str = "") -> Secret:
        """``why``: what the secret is for; ``alternative``: another way to give it (``"pass --token"``)."""
        secret = self.secret(name)
        if secret is None:
            remedy = f"set {name} or {name}_FILE" + (f", or {alternative}" if alternative else "")
            raise SettingsError(name, f"is not set; it is {why}", remedy)
        return secret

    def secrets(
        self, name: builtins.str, *, required_as: builtins.str | None = None, alternative: builtins.str = ""
    ) -> tuple[Secret, ...]:
        """A comma-separated list of secrets (rotation: several are valid at once).

        Unset: empty, or with ``required_as`` a :class:`SettingsError` (see :meth:`required_secret`).
        """
        secret = (
            self.secret(name)
            if required_as is None
            else self.required_secret(name, required_as, alternative=alternative)
        )
        if secret is None:
            return ()
        parts = tuple(Secret(part.strip()) for part in secret.value.split(",") if part.strip())
        if not parts:
            raise SettingsError(name, "holds only commas and spaces, no secret", f"set {name} to one or more secrets")
        return parts


def is_host(value: str) -> bool:
    """An IP address, or a syntactically valid host name (no DNS lookup)."""
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        labels = value.rstrip(".").split(".")
        return 0 < len(value) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
    return True


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How a process logs: ``--log-level``/``--log-format`` win over ``IGW_LOG_LEVEL``/``IGW_LOG_FORMAT``."""

    level: str = "info"
    format: str = "auto"

    @classmethod
    def from_env(cls, env: Env, *, level: str | None = None, fmt: str | None = None) -> LogSettings:
        return cls(
            level=level or env.choice("IGW_LOG_LEVEL", "info", LOG_LEVELS),
            format=fmt or env.choice("IGW_LOG_FORMAT", "auto", LOG_FORMATS),
        )


Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How every igw process reaches Kafka. Read by the gateway and the consumers alike."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "ig"
    enable_idempotence: bool = True
    acks: Literal["all", "1"] = "all"
    linger_ms: int = 2
    max_batch_bytes: int = 256 * 1024
    # Full batches the gateway holds for a broker that does not take them (Java's buffer.memory).
    buffer_bytes: int = 64 * 1024 * 1024
    compression: Compression = "none"
    request_timeout_ms: int = 30_000
    # The largest record igw writes: a dead letter holds a whole signed body. Used for the producer's
    # request size and the dead-letter topic's max.message.bytes (Kafka's default is 1 MiB).
    max_message_bytes: int = 8 * 1024 * 1024 + 65_536
    partitions: int = 6
    replication_factor: int = 1
    # How long topics igw creates keep records (docs/privacy.md): a week covers replaying an outage
    # or a consumer's bug; longer keeps people's messages longer than an inbox tool needs.
    retention_hours: int = 168
    # Erasures outlive the records they erase, so a consumer replaying a topic still sees them.
    erasure_retention_hours: int = 720
    client_id: str = "igw"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None

    @classmethod
    def from_env(cls, env: Env, *, aiokafka_codecs: bool = True) -> KafkaSettings:
        """``aiokafka_codecs``: check that aiokafka can compress with ``KAFKA_COMPRESSION`` (not for librdkafka)."""
        d: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        prefix = env.str("IGW_TOPIC_PREFIX", d["topic_prefix"])
        if not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise SettingsError("IGW_TOPIC_PREFIX", f"may hold letters, digits, '.', '_', '-'; got {prefix!r}")
        acks = env.choice("KAFKA_ACKS", d["acks"], ("all", "1"))
        idempotence = env.bool("KAFKA_ENABLE_IDEMPOTENCE", d["enable_idempotence"])
        if idempotence and acks != "all":
            raise SettingsError(
                "KAFKA_ACKS", "must be 'all' while KAFKA_ENABLE_IDEMPOTENCE is true", "set KAFKA_ACKS=all"
            )
        compression = env.choice("KAFKA_COMPRESSION", d["compression"], ("none", "gzip", "snappy", "lz4", "zstd"))
        if aiokafka_codecs:
            _check_codec(compression)
        protocol = env.choice(
            "KAFKA_SECURITY_PROTOCOL", "plaintext", ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
        )
        mechanism, username, password = _sasl(env, protocol)
        retention = env.int("IGW_TOPIC_RETENTION_HOURS", d["retention_hours"], min_value=1)
        erasure_retention = env.int(
            "IGW_ERASURE_RETENTION_HOURS", max(d["erasure_retention_hours"], retention), min_value=1
        )
        if erasure_retention < retention:
            raise SettingsError(
                "IGW_ERASURE_RETENTION_HOURS",
                f"must be at least IGW_TOPIC_RETENTION_HOURS ({retention})",
                f"set it to {retention} or more",
            )
        return cls(
            bootstrap_servers=_bootstrap_servers(env, d["bootstrap_servers"]),
            topic_prefix=prefix,
            enable_idempotence=idempotence,
            acks="all" if acks == "all" else "1",
            linger_ms=env.int("KAFKA_LINGER_MS", d["linger_ms"], min_value=0),
            max_batch_bytes=env.int("KAFKA_MAX_BATCH_BYTES", d["max_batch_bytes"], min_value=1024),
            buffer_bytes=env.int("KAFKA_BUFFER_BYTES", d["buffer_bytes"], min_value=1024),
            compression=compression,  # type: ignore[arg-type]
            request_timeout_ms=env.int("KAFKA_REQUEST_TIMEOUT_MS", d["request_timeout_ms"], min_value=1000),
            partitions=env.int("IGW_TOPIC_PARTITIONS", d["partitions"], min_value=1),
            retention_hours=retention,
            erasure_retention_hours=erasure_retention,
            replication_factor=env.int("IGW_TOPIC_REPLICATION", d["replication_factor"], min_value=1),
            client_id=env.str("KAFKA_CLIENT_ID", d["client_id"]),
            security_protocol=protocol.upper(),
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
        )

    def topic(self, name: str) -> str:
        """The full topic name for one of igw's topics (``messages``, ``postbacks``, ...)."""
        return f"{self.topic_prefix}.{name}"

    def client_kwargs(self) -> dict[str, object]:
        """Connection keywords shared by aiokafka producers, consumers and admin clients."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SSL") or self.security_protocol == "SASL_SSL":
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context()
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.value if self.sasl_password else None
        return kwargs


def _bootstrap_servers(env: Env, default: str) -> str:
    """``host:port`` entries, comma-separated (a bare host means port 9092, as in aiokafka)."""
    value = env.str("KAFKA_BOOTSTRAP_SERVERS", default)
    if not all(_is_server(entry.strip()) for entry in value.split(",")):
        raise SettingsError("KAFKA_BOOTSTRAP_SERVERS", f"expected comma-separated host:port entries, got {value!r}")
    return value


def _is_server(entry: str) -> bool:
    if entry.startswith("["):  # [IPv6]:port
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            return False
        port = rest[1:] if rest else None
    elif entry.count(":") > 1:  # a bare IPv6 address
        host, port = entry, None
    else:
        host, colon, port_text = entry.partition(":")
        port = port_text if colon else None
    return is_host(host) and (port is None or (port.isdigit() and 0 < int(port) < 65536))


# What igw can authenticate with: GSSAPI and OAUTHBEARER need set-up igw does not offer.
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _sasl(env: Env, protocol: str) -> tuple[str | None, str | None, Secret | None]:
    mechanism = env.optional_str("KAFKA_SASL_MECHANISM")
    username = env.optional_str("KAFKA_SASL_USERNAME")
    password = env.secret("KAFKA_SASL_PASSWORD")
    if not protocol.startswith("sasl_"):
        if mechanism is not None:
            raise SettingsError(
                "KAFKA_SASL_MECHANISM",
                f"is set but KAFKA_SECURITY_PROTOCOL is {protocol}",
                "set KAFKA_SECURITY_PROTOCOL to sasl_ssl or sasl_plaintext, or unset KAFKA_SASL_MECHANISM",
            )
        return None, username, password
    mechanism = (mechanism or "PLAIN").upper()
    if mechanism not in _SASL_MECHANISMS:
        raise SettingsError("KAFKA_SASL_MECHANISM", f"expected one of {', '.join(_SASL_MECHANISMS)}, got {mechanism!r}")
    if username is None:
        raise SettingsError("KAFKA_SASL_USERNAME", f"is required with KAFKA_SECURITY_PROTOCOL={protocol}")
    if password is None:
        raise SettingsError(
            "KAFKA_SASL_PASSWORD",
            f"is required with KAFKA_SECURITY_PROTOCOL={protocol}",
            "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE",
        )
    return mechanism, username, password


def _check_codec(compression: str) -> None:
    if compression in {"none", "gzip"}:
        return
    from aiokafka import codec

    available = {"snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}[compression]()
    if not available:
        package = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}[compression]
        raise SettingsError(
            "KAFKA_COMPRESSION",
            f"{compression} needs the {package} package, which is not installed",
            f"pip install {package}, or set KAFKA_COMPRESSION to gzip or none",
        )
