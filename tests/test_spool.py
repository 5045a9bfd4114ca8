"""The spool on disk: framing, group commits, replay after a stop, torn writes, limits, disk failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics
from gateway.spool import Spool, SpooledBody, SpoolLocked, decode_frames, encode_frame, open_spool, orphan_dirs
from igw.config import KafkaSettings
from igw.errors import SpoolFull, SpoolUnavailable
from igw_tools.localbroker import free_port
from tests.plugins.outage import gateway_env

# The spools of this module count into one gateway's metrics, read back with _sample.
METRICS = GatewayMetrics()


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return METRICS.registry.get_sample_value(name, labels or {}) or 0.0


def _spool(directory: Path, **kwargs: float) -> Spool:
    return Spool(
        directory,
        metrics=METRICS,
        max_bytes=int(kwargs.get("max_bytes", 1024 * 1024)),
        max_age_seconds=kwargs.get("max_age_seconds", 3600),
        segment_bytes=int(kwargs.get("segment_bytes", 64 * 1024)),
    )


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


async def _drain_all(spool: Spool) -> list[SpooledBody]:
    items: list[SpooledBody] = []
    while (batch := await spool.read_batch(100, 64 * 1024)) is not None:
        items.extend(batch.items)
        await spool.ack(batch)
    return items


def test_frame_round_trip_and_damage_detection() -> None:
    """A frame decodes to what was encoded; a cut or a flipped byte is reported, never decoded."""
    frame = encode_frame(b'{"object":"instagram"}', 1764000000123, "sha256=ab")
    [(end, item)] = list(decode_frames(frame))
    assert end == len(frame)
    assert item == SpooledBody(1764000000123, "sha256=ab", b'{"object":"instagram"}')
    assert [kind for _, kind in decode_frames(frame[:-3])] == ["torn"]
    flipped = bytearray(frame + frame)
    flipped[20] ^= 0xFF
    assert [kind for _, kind in decode_frames(bytes(flipped))] == ["corrupt"]
    assert [kind for _, kind in decode_frames(b"XXXX" + frame[4:])] == ["corrupt"]


async def test_append_read_ack_in_order_and_files_removed(tmp_path: Path) -> None:
    """Bodies come back in append order across segments; once drained, no segment file is left."""
    spool = _spool(tmp_path, segment_bytes=2048)
    await spool.open()
    try:
        bodies = [f'{{"n":{i},"pad":"{"x" * 200}"}}'.encode() for i in range(40)]
        for i, body in enumerate(bodies):
            await spool.append(body, 1_764_000_000_000 + i, None)
        assert spool.records == 40
        assert len(_segments(tmp_path)) > 1  # rotated
        assert _sample("igw_spool_records") == 40
        items = await _drain_all(spool)
        assert [i.body for i in items] == bodies
        assert [i.received_at for i in items] == [1_764_000_000_000 + i for i in range(40)]
        assert spool.records == 0
        assert spool.size_bytes == 0
        assert _segments(tmp_path) == []
        assert _sample("igw_spool_records") == 0
    finally:
        await spool.close()


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    """Many appends at once are made durable by fewer write+fsync rounds than bodies (group commit)."""
    spool = _spool(tmp_path)
    await spool.open()
    try:
        before = _sample("igw_spool_write_duration_seconds_count")
        appends = _sample("igw_spool_appends_total")
        await asyncio.gather(*(spool.append(b'{"i":%d}' % i, 1, "sha256=00") for i in range(200)))
        rounds = _sample("igw_spool_write_duration_seconds_count") - before
        assert _sample("igw_spool_appends_total") - appends == 200
        assert 1 <= rounds < 50
    finally:
        await spool.close()


async def test_reopen_replays_only_what_was_not_acknowledged(tmp_path: Path) -> None:
    """After a stop mid-drain, a new spool on the same directory holds exactly the unacknowledged bodies."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(10):
        await spool.append(b"body-%d" % i, 1000 + i, "sig")
    batch = await spool.read_batch(4, 1024 * 1024)
    assert batch is not None
    await spool.ack(batch)
    await spool.close()

    again = _spool(tmp_path)
    report = await again.open()
    try:
        assert (report.records, report.torn, report.corrupt) == (6, 0, 0)
        assert again.oldest_received_at == 1004
        await again.append(b"after-restart", 2000, None)
        items = await _drain_all(again)
        assert [i.body for i in items] == [b"body-%d" % i for i in range(4, 10)] + [b"after-restart"]
    finally:
        await again.close()


async def test_torn_last_write_is_reported_and_not_replayed(tmp_path: Path) -> None:
    """A half-written last frame (a crash mid-write) is moved aside, counted and logged; the rest replays."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(3):
        await spool.append(b"good-%d" % i, 1000 + i, None)
    await spool.close()
    [segment] = _segments(tmp_path)
    whole = encode_frame(b"half-written", 2000, None)
    with segment.open("ab") as f:
        f.write(whole[: len(whole) // 2])
    before = _sample("igw_spool_failures_total", {"reason": "torn_write"})

    again = _spool(tmp_path)
    report = await again.open()
    try:
        assert (report.records, report.torn) == (3, 1)
        assert _sample("igw_spool_failures_total", {"reason": "torn_write"}) == before + 1
        assert segment.with_suffix(".seg.bad").read_bytes() == whole[: len(whole) // 2]
        assert [i.body for i in await _drain_all(again)] == [b"good-0", b"good-1", b"good-2"]
    finally:
        await again.close()


async def test_damaged_frame_in_the_middle_is_reported(tmp_path: Path) -> None:
    """A flipped byte inside an earlier frame stops replay of that segment there, reported as corrupt."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(3):
        await spool.append(b"frame-%d" % i, 1000 + i, None)
    await spool.close()
    [segment] = _segments(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(encode_frame(b"frame-0", 1000, None))
    data[second + 14] ^= 0xFF  # inside the second frame's payload
    segment.write_bytes(bytes(data))
    before = _sample("igw_spool_failures_total", {"reason": "corrupt"})

    again = _spool(tmp_path)
    report = await again.open()
    try:
        assert (report.records, report.corrupt) == (1, 1)
        assert _sample("igw_spool_failures_total", {"reason": "corrupt"}) == before + 1
        assert [i.body for i in await _drain_all(again)] == [b"frame-0"]
    finally:
        await again.close()


async def test_size_and_age_limits_refuse_bodies(tmp_path: Path) -> None:
    """Over max_bytes, or with the oldest body over max_age, append raises SpoolFull with its reason."""
    spool = _spool(tmp_path, max_bytes=1024 * 1024, max_age_seconds=60)
    await spool.open()
    try:
        big = b"x" * (600 * 1024)
        await spool.append(big, int(time.time() * 1000), None)
        with pytest.raises(SpoolFull) as full:
            spool.append(big, int(time.time() * 1000), None)
        assert full.value.reason == "full"
        assert not spool.accepting()
        await _drain_all(spool)
        assert spool.accepting()
        old = int(time.time() * 1000) - 120_000
        await spool.append(b"old", old, None)
        with pytest.raises(SpoolFull) as too_old:
            spool.append(b"new", int(time.time() * 1000), None)
        assert too_old.value.reason == "too_old"
    finally:
        await spool.close()


async def test_disk_failure_fails_the_append_and_the_spool_recovers(tmp_path: Path) -> None:
    """A write that fails (here: the segment path is a directory) fails its appends; later ones succeed."""
    spool = _spool(tmp_path)
    await spool.open()
    try:
        blocker = tmp_path / f"{1:012d}.seg"
        blocker.mkdir()  # the next segment file cannot be created: like EIO/ENOSPC, an OSError
        before = _sample("igw_spool_failures_total", {"reason": "io_error"})
        with pytest.raises(SpoolUnavailable):
            await spool.append(b"lost-to-the-disk", int(time.time() * 1000), None)
        assert _sample("igw_spool_failures_total", {"reason": "io_error"}) == before + 1
        assert not spool.accepting()
        blocker.rmdir()
        await spool.append(b"kept", int(time.time() * 1000), None)
        assert spool.accepting()
        assert [i.body for i in await _drain_all(spool)] == [b"kept"]
    finally:
        await spool.close()


async def test_one_process_per_directory(tmp_path: Path) -> None:
    """A held directory is not opened twice; open_spool takes the next free one; unheld ones with data are orphans."""
    first = await open_spool(tmp_path, metrics=METRICS, max_bytes=1024 * 1024, max_age_seconds=3600)
    second = await open_spool(tmp_path, metrics=METRICS, max_bytes=1024 * 1024, max_age_seconds=3600)
    try:
        assert (first.directory, second.directory) == (tmp_path / "0", tmp_path / "1")
        with pytest.raises(SpoolLocked):
            await _spool(tmp_path / "0").open()
        await second.append(b"left behind", int(time.time() * 1000), None)
    finally:
        await second.close()
    try:
        assert orphan_dirs(tmp_path, first.directory) == [tmp_path / "1"]
        adopted = _spool(tmp_path / "1")
        assert (await adopted.open()).records == 1
        await adopted.close()
    finally:
        await first.close()


def test_unusable_spool_dir_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    """A spool directory that cannot be created stops start-up with an error naming IGW_SPOOL_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "igw_tools.cli", "gateway", "--port", str(free_port())],
        env={**gateway_env(KafkaSettings(bootstrap_servers="127.0.0.1:1"), blocker / "spool")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert b"IGW_SPOOL_DIR" in proc.stderr + proc.stdout
