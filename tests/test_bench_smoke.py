"""The benchmark's own parts: its signed bodies are what the gateway accepts, and wrk's output parses."""

from __future__ import annotations

import pytest

from bench import loadgen, payloads, report
from bench.scenarios import SCENARIOS
from gateway.normalize import normalize
from gateway.signature import SignatureVerdict, SignatureVerifier

SECRET = "bench_test_secret"

# Real wrk 4.1.0 runs with bench's Lua script: one against the gateway, one answered 404 throughout.
WRK_OK = """\
Running 2s test @ http://127.0.0.1:59521
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    22.80ms   14.20ms 161.24ms   88.67%
    Req/Sec     2.94k   828.93     4.27k    70.00%
  Latency Distribution
     50%   19.73ms
     75%   25.95ms
     90%   35.34ms
     99%   89.20ms
  5881 requests in 2.02s, 0.86MB read
Requests/sec:   2913.38
Transfer/sec:    438.14KB
BENCH_JSON {"requests":5881,"duration_us":2018620,"non2xx":0,"connect":0,"read":0,"write":0,"timeout":0,\
"p50_us":19734,"p99_us":89203,"max_us":161235}
"""
WRK_404 = """\
Running 1s test @ http://127.0.0.1:18778
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.21ms    1.68ms  19.33ms   90.74%
    Req/Sec     3.80k   690.43     4.93k    60.00%
  Latency Distribution
     50%    1.73ms
     75%    2.58ms
     90%    3.76ms
     99%    8.77ms
  3801 requests in 1.00s, 645.87KB read
  Non-2xx or 3xx responses: 3801
Requests/sec:   3785.59
Transfer/sec:    643.25KB
BENCH_JSON {"requests":3801,"duration_us":1004070,"non2xx":3801,"connect":0,"read":0,"write":0,"timeout":0,\
"p50_us":1734,"p99_us":8766,"max_us":19331}
"""


def test_signer_matches_meta_vectors() -> None:
    """The bench signer reproduces Meta's published X-Hub-Signature-256 vectors."""
    assert payloads.sign(b'{"object":"instagram","entry":[]}', "my_app_secret") == (
        "sha256=a6fe43e7fccbea5be5604ac00da14a47dd4813a83c2f868710cd558b9d0b73ab"
    )
    assert payloads.sign(b"", "my_app_secret") == (
        "sha256=30bb2ab83d5e42814f3d42faeac59cbb9e0ffef97d2c697133115cf266c72177"
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_bodies_pass_the_gateway(name: str) -> None:
    """Every body is accepted by the gateway's verifier and normalizes into exactly its counted events."""
    verifier = SignatureVerifier([SECRET])
    for body in SCENARIOS[name].bodies(SECRET):
        assert verifier.verify(body.body, body.signature) is SignatureVerdict.OK
        normalized = normalize(body.body, received_at=1)
        assert normalized.dead_letter is None
        assert len(normalized.events) == body.events


def test_bodies_are_written_the_way_meta_writes_them() -> None:
    """The one-message body is ~600 ASCII bytes with escaped unicode and slashes; the batch holds 1000 items."""
    (one,) = payloads.one_message(SECRET)
    assert 500 <= len(one.body) <= 700
    assert b"\\u00f6" in one.body
    assert b"https:\\/\\/" in one.body
    assert one.body.isascii()
    (batch,) = payloads.batch(SECRET)
    assert batch.events == payloads.BATCH_ITEMS == 1000
    types = {e.type for b in payloads.mixed(SECRET) for e in normalize(b.body, 1).events}
    assert {"message", "postback", "reaction", "read", "change"} <= types


def test_wrk_output_parses() -> None:
    """The Lua done() line of a captured wrk run gives requests, rate and latencies in ms."""
    ok = loadgen.parse_output(WRK_OK)
    assert (ok.requests, ok.ok, ok.socket_errors) == (5881, 5881, 0)
    assert ok.rps == pytest.approx(2913.4, abs=0.5)
    assert (ok.p50_ms, ok.p99_ms, ok.max_ms) == (19.734, 89.203, 161.235)
    failed = loadgen.parse_output(WRK_404)
    assert (failed.ok, failed.non2xx, failed.rps) == (0, 3801, 0)
    with pytest.raises(ValueError, match="BENCH_JSON"):
        loadgen.parse_output("Running 1s test @ http://127.0.0.1:1\n")


def test_delivery_check_flags_missing_events() -> None:
    """Acknowledged events absent from Kafka fail the check; extras within the in-flight bound do not."""
    assert report.Delivery(acknowledged=100, found=164, in_flight_bound=64).ok
    assert not report.Delivery(acknowledged=100, found=99, in_flight_bound=64).ok
    assert not report.Delivery(acknowledged=100, found=200, in_flight_bound=64).ok
