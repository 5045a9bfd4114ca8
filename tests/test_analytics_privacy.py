"""Analytics with sealed content and erasures: the same counts as in clear, a person's state dropped."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from consumers.analytics.aggregate import Aggregator
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.analytics.settings import AnalyticsSettings
from igw.keystore import MemoryKeyStore
from igw.normalize import normalize
from igw.sealing import Opener, Sealer
from tests.plugins.gateway import meta_bytes

ACCOUNT = "17841400000000000"
USER = "1234567890123456"
T0 = 1764000000000


def body(mid: str, attachments: list[dict[str, object]]) -> bytes:
    item = {
        "sender": {"id": USER},
        "recipient": {"id": ACCOUNT},
        "timestamp": T0,
        "message": {"mid": mid, "attachments": attachments},
    }
    return meta_bytes({"object": "instagram", "entry": [{"id": ACCOUNT, "time": T0, "messaging": [item]}]})


async def test_sealed_envelopes_count_like_clear_ones() -> None:
    """An image sent sealed is counted as an image attachment once its key is prefetched."""
    store = MemoryKeyStore()
    sealer = Sealer(store)
    (event,) = normalize(body("m1", [{"type": "image", "payload": {"url": "https://x/1.jpg"}}]), T0 + 1).events
    await sealer.prepare([event])
    value = orjson.dumps(sealer.seal(event).envelope)
    registry = CollectorRegistry()
    opener = Opener(store)
    agg = Aggregator(AnalyticsSettings(), AnalyticsMetrics(registry), clock=lambda: T0 / 1000, opener=opener)
    await opener.prefetch([value])
    assert agg.handle("messages", value)
    labels = {"account": ACCOUNT, "type": "image"}
    assert registry.get_sample_value("igw_biz_attachments_total", labels) == 1
    assert len(agg.conversations) == 1

    erasure = {"v": 1, "id": "e1", "type": "erasure", "conversation_id": f"instagram:{ACCOUNT}:{USER}"}
    assert agg.handle("erasures", orjson.dumps(erasure))
    assert len(agg.conversations) == 0
    assert registry.get_sample_value("igw_biz_erasures_total") == 1
