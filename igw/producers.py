"""Starting a Kafka producer, telling a broker that refuses idempotent producers apart from one that is away.

An idempotent producer asks the broker for a producer id when it starts (``InitProducerId``).
A broker that does not support it (Tansu, the local broker of ``igw dev`` and the tests) or an
ACL without ``IdempotentWrite`` answers with an error code: the broker is reachable, and only
``KAFKA_ENABLE_IDEMPOTENCE`` can change the outcome. Saying "not reachable, check
KAFKA_BOOTSTRAP_SERVERS" would send the operator the wrong way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import BrokerResponseError

from igw.config import KafkaSettings
from igw.errors import IdempotenceRefused

__all__ = ["start_producer"]


async def start_producer(producer: Any, settings: KafkaSettings) -> None:
    """``await producer.start()``; :class:`IdempotenceRefused` when the broker answered it with an error.

    Connection failures (``KafkaConnectionError``, ``OSError``) pass through unchanged. The
    producer is stopped before raising a refusal or a cancellation (a stop signal during start-up),
    as aiokafka leaves it half started.
    """
    try:
        await producer.start()
    except asyncio.CancelledError:
        await producer.stop()
        raise
    except BrokerResponseError as exc:
        # Connecting and fetching metadata raise connection errors; an error *code* from the broker at
        # start-up comes from the producer-id request, which only idempotent producers make.
        if not settings.enable_idempotence:
            raise
        await producer.stop()
        raise IdempotenceRefused(settings.bootstrap_servers, type(exc).__name__) from exc
