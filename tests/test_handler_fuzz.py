"""Any signed body, however broken, gets 200 through the real handler and nothing raises out of it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.plugins.gateway import GatewayClient, meta_bytes, post_signed

_ids = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True))
_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
# Shaped like Meta's bodies, with every field free to be the wrong type.
_item = st.fixed_dictionaries(
    {},
    optional={
        "sender": st.one_of(st.fixed_dictionaries({"id": _ids}), _json),
        "recipient": st.one_of(st.fixed_dictionaries({"id": _ids}), _json),
        "timestamp": st.one_of(st.integers(), _json),
        "message": st.one_of(st.fixed_dictionaries({}, optional={"mid": _ids, "text": _json}), _json),
        "postback": _json,
        "field": _json,
        "value": _json,
    },
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "id": _ids,
        "time": st.one_of(st.integers(), _json),
        "messaging": st.one_of(st.lists(_item, max_size=5), _json),
        "changes": st.one_of(st.lists(_item, max_size=5), _json),
        "standby": st.one_of(st.lists(_item, max_size=3), _json),
    },
)
_document = st.fixed_dictionaries(
    {}, optional={"object": st.one_of(st.sampled_from(["instagram", "page"]), _json), "entry": st.lists(_entry)}
)
bodies = st.one_of(_document.map(meta_bytes), _json.map(meta_bytes), st.binary(max_size=512))


@given(body=bodies)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_signed_body_gets_200(memory_gateway_client: GatewayClient, body: bytes) -> None:
    """Events or a dead letter, never a 5xx: the handler does not raise for any signed body."""
    resp = await post_signed(memory_gateway_client, body)
    assert resp.status == 200, await resp.text()
