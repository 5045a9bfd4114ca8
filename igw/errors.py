"""igw's own small error tree. Client errors are translated into it once, at the boundary.

::

    IgwError
    ├── StartupError         the process cannot start: ``igw`` prints one line and exits 2
    │   ├── SettingsError    a setting is missing or invalid; names the variable
    │   │   └── IdempotenceRefused  the broker answers but refuses idempotent producers:
    │   │                    KAFKA_ENABLE_IDEMPOTENCE (the gateway logs it and keeps retrying)
    │   ├── ListenError      the address or port to listen on is taken or not this host's
    │   └── KafkaUnreachable no broker answers at start (consumers and tools; the gateway
    │                        starts without Kafka and spools, docs/durability.md)
    ├── PublishError         Kafka did not acknowledge records
    │   ├── PublishTimeout   no acknowledgement within the deadline (retriable)
    │   ├── BrokerUnavailable  the client cannot reach the cluster (retriable)
    │   └── KeyStoreUnavailable  content could not be sealed: the key store did not answer (retriable)
    └── SpoolError           the local spool cannot take a body; ``reason`` is a metric label
        ├── SpoolFull        over its size or age limit
        └── SpoolUnavailable the disk failed (write or fsync error)

A ``StartupError`` carries what is wrong (its message) and what to do (``remedy``); the ``igw``
command prints ``igw <command>: <message> (<remedy>)`` on stderr and exits 2. Neither part may
hold a secret's value. The HTTP handler spools a body on ``PublishError`` and maps ``SpoolError``
(or ``PublishError`` with no spool) to 503, so that Meta retries the same signed bytes.
"""

from __future__ import annotations


class IgwError(Exception):
    """Base of every error igw raises on purpose."""


class StartupError(IgwError):
    """The process cannot start. ``str()`` says what is wrong, ``remedy`` what the operator should do."""

    def __init__(self, message: str, remedy: str) -> None:
        super().__init__(message)
        self.remedy = remedy


class SettingsError(StartupError):
    """A setting is missing or invalid. The message starts with the environment variable at fault."""

    def __init__(self, variable: str, problem: str, remedy: str | None = None) -> None:
        super().__init__(
            f"{variable}: {problem}", remedy or f"fix {variable}; docs/configuration.md says what it takes"
        )
        self.variable = variable
        self.problem = problem


class IdempotenceRefused(SettingsError):
    """The broker answered a producer's start with an error: it refuses idempotent producers.

    A setting problem, not an outage: the broker is reachable, and retrying changes nothing until
    ``KAFKA_ENABLE_IDEMPOTENCE`` (or the broker's support or ACLs) does.
    """

    def __init__(self, bootstrap_servers: str, error: str) -> None:
        super().__init__(
            "KAFKA_ENABLE_IDEMPOTENCE",
            f"the broker at {bootstrap_servers} answers but refused an idempotent producer ({error})",
            "set KAFKA_ENABLE_IDEMPOTENCE=false for a broker without idempotent producers "
            "(Tansu, the local broker of igw dev), or grant IdempotentWrite where ACLs refuse it",
        )


class ListenError(StartupError):
    """The process cannot listen where it is told to (the port is taken, the address is not this host's)."""


class KafkaUnreachable(StartupError):
    """No Kafka broker answered a process that needs one to start."""


class PublishError(IgwError):
    """Kafka did not acknowledge every record of a request."""

    retriable = True


class PublishTimeout(PublishError):
    """The broker did not acknowledge within the publish deadline."""


class BrokerUnavailable(PublishError):
    """The producer cannot reach the cluster, or the cluster refused the records."""


class KeyStoreUnavailable(PublishError):
    """The content key store did not answer, so records could not be sealed (docs/privacy.md)."""


class SpoolError(IgwError):
    """The spool could not make a body durable; ``reason`` is one of a small fixed set (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpoolFull(SpoolError):
    """The spool is over its size limit (``full``) or its oldest body is over the age limit (``too_old``)."""


class SpoolUnavailable(SpoolError):
    """Writing or syncing the spool failed (``io_error``): a full or failing disk."""
