"""Creating igw's topics when they are missing (``IGW_CREATE_TOPICS``), shared by the consumers."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.config import KafkaSettings

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)


async def ensure_topics(kafka: KafkaSettings, names: Iterable[str]) -> list[str]:
    """Create the topics among ``names`` (full names) that do not exist; returns those created.

    Topics that already exist keep their settings. A cluster that refuses creation (ACLs, a
    managed service) is logged: the operator then creates the topics with the documented names.
    """
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), client_id=f"{kafka.client_id}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if not missing:
            return []
        try:
            await admin.create_topics(
                [NewTopic(name, kafka.partitions, kafka.replication_factor) for name in missing],
                timeout_ms=kafka.request_timeout_ms,
            )
        except Exception as exc:  # another replica raced us, or creation is not allowed here
            log.warning("could not create topics %s (%s); create them by hand", ", ".join(missing), exc)
            return []
        log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
