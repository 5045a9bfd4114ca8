"""Reading settings from the environment, shared by every igw process.

Every value is read through :class:`Env`, so an invalid one is reported with the variable that
holds it, and every secret may come from ``NAME`` or from the file named by ``NAME_FILE`` (how
Docker, Kubernetes and ECS mount secrets).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from igw.errors import SettingsError

__all__ = ["Env", "KafkaSettings", "Secret", "SettingsError"]


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

    def int(self, name: builtins.str, default: builtins.int, *, min_value: builtins.int | None = None) -> builtins.int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = builtins.int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {raw!r}") from None
        if min_value is not None and value < min_value:
            raise SettingsError(name, f"must be at least {min_value}, got {value}")
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

    def secret(self, name: builtins.str) -> Secret | None:
        """``NAME`` or the contents of the file named by ``NAME_FILE`` (not both)."""
        direct = self.raw(name)
        file_name = self.raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise SettingsError(name, f"set either {name} or {name}_FILE, not both")
        if file_name is not None:
            try:
                text = Path(file_name).read_text(encoding="utf-8").strip()
            except PermissionError as exc:
                # The usual cause in a container: a secret mounted for another user (deploy/README.md).
                who = f"uid {os.getuid()}, gid {os.getgid()}"
                raise SettingsError(
                    f"{name}_FILE",
                    f"cannot read {file_name}: {exc.strerror or exc}; this process runs as {who}: "
                    "make the file readable by that user or group (deploy/README.md, Secrets)",
                ) from None
            except OSError as exc:
                raise SettingsError(f"{name}_FILE", f"cannot read {file_name}: {exc.strerror or exc}") from None
            if not text:
                raise SettingsError(f"{name}_FILE", f"{file_name} is empty")
            return Secret(text)
        return Secret(direct) if direct is not None else None

    def required_secret(self, name: builtins.str, why: builtins.str) -> Secret:
        secret = self.secret(name)
        if secret is None:
            raise SettingsError(name, f"is required ({why}); set {name} or {name}_FILE")
        return secret


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
    client_id: str = "igw"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None

    @classmethod
    def from_env(cls, env: Env) -> KafkaSettings:
        d: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        prefix = env.str("IGW_TOPIC_PREFIX", d["topic_prefix"])
        if not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise SettingsError("IGW_TOPIC_PREFIX", f"may hold letters, digits, '.', '_', '-'; got {prefix!r}")
        acks = env.choice("KAFKA_ACKS", d["acks"], ("all", "1"))
        idempotence = env.bool("KAFKA_ENABLE_IDEMPOTENCE", d["enable_idempotence"])
        if idempotence and acks != "all":
            raise SettingsError("KAFKA_ACKS", "must be 'all' while KAFKA_ENABLE_IDEMPOTENCE is true")
        return cls(
            bootstrap_servers=env.str("KAFKA_BOOTSTRAP_SERVERS", d["bootstrap_servers"]),
            topic_prefix=prefix,
            enable_idempotence=idempotence,
            acks="all" if acks == "all" else "1",
            linger_ms=env.int("KAFKA_LINGER_MS", d["linger_ms"], min_value=0),
            max_batch_bytes=env.int("KAFKA_MAX_BATCH_BYTES", d["max_batch_bytes"], min_value=1024),
            buffer_bytes=env.int("KAFKA_BUFFER_BYTES", d["buffer_bytes"], min_value=1024),
            compression=env.choice(  # type: ignore[arg-type]
                "KAFKA_COMPRESSION", d["compression"], ("none", "gzip", "snappy", "lz4", "zstd")
            ),
            request_timeout_ms=env.int("KAFKA_REQUEST_TIMEOUT_MS", d["request_timeout_ms"], min_value=1000),
            partitions=env.int("IGW_TOPIC_PARTITIONS", d["partitions"], min_value=1),
            replication_factor=env.int("IGW_TOPIC_REPLICATION", d["replication_factor"], min_value=1),
            client_id=env.str("KAFKA_CLIENT_ID", d["client_id"]),
            security_protocol=env.choice(
                "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
            ).upper(),
            sasl_mechanism=env.optional_str("KAFKA_SASL_MECHANISM"),
            sasl_username=env.optional_str("KAFKA_SASL_USERNAME"),
            sasl_password=env.secret("KAFKA_SASL_PASSWORD"),
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
