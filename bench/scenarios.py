"""The scenario registry: what ``--scenario`` may name.

Webhook scenarios send signed bodies to each HTTP server (ceiling, gateway, baseline) in turn.
Other kinds (agent replies per second through the Graph emulator, analytics events per second,
``bench/consumer_runs.py``) have their own ``kind`` and a runner in ``bench/harness.py``'s
``RUNNERS``; they must report measured figures only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import payloads


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    kind: str  # "webhook": load the HTTP servers side by side; other kinds have their own runner
    bodies: Callable[[str], list[payloads.SignedBody]] = lambda _secret: []
    # At most this many connections (None: --connections as given). 64 concurrent 1000-event
    # batches keep 64,000 events in flight, more than the gateway's 3 s publish deadline allows
    # on one core, and not how Meta delivers; --batch-connections overrides it.
    max_connections: int | None = None
    # Measured runs last at least this long (a 1000-event request can take a second or more).
    min_duration: float = 0.0


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} is registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


register(Scenario("one", "one signed Instagram DM per POST (~600 bytes)", "webhook", payloads.one_message))
register(Scenario("batch", "1000 DMs in one POST (Meta's maximum delivery)", "webhook", payloads.batch, 4, 5.0))
register(
    Scenario(
        "mixed",
        "rotating single-event bodies: DMs, image, story reply, postback, reaction, read, comment, Messenger DM",
        "webhook",
        payloads.mixed,
    )
)
register(
    Scenario(
        "agent",
        "igw agent (rules agent, clinic sample) answering pre-loaded DMs through igw graph-emulator",
        "agent",
    )
)
register(Scenario("analytics", "igw analytics counting pre-loaded envelopes of a realistic mix", "analytics"))
register(
    Scenario(
        "bigbody",
        "the largest accepted body (IGW_MAX_BODY_BYTES of DMs) every 3 s while single DMs stream at 100/s",
        "bigbody",
    )
)
