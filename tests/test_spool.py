"""The spool on disk: framing, group commits, replay after a stop, torn writes, limits, disk failures."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.metrics import GatewayMetrics
from gateway.spool import (
    Fault,
    Spool,
    SpooledBody,
    SpoolLocked,
    decode_frames,
    encode_frame,
    open_spool,
    orphan_dirs,
)
from igw.config import KafkaSettings
from igw.errors import SpoolFull, SpoolUnavailable
from igw_tools.localbroker import free_port
from tests.plugins.diskfaults import DiskFaultInjector, SmallFs
from tests.plugins.gateway import WEBHOOK
from tests.plugins.outage import GatewayProcess, gateway_env, signed_poster

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


async def test_unusable_spool_dir_is_a_state_the_gateway_leaves_by_itself(
    tmp_path: Path, gateway_process: Callable[..., GatewayProcess]
) -> None:
    """A spool dir unusable at start-up is logged naming IGW_SPOOL_DIR; /readyz and webhooks say 503 together
    (no Kafka here); once the path is usable the monitor opens the spool and both take bodies again.

    (A path that cannot even be created is a setting error that stops the start: tests/test_bad_configuration.py.
    Here the directory exists and the process's own spool inside it cannot be made.)"""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    blocker = spool_dir / "0"
    blocker.write_text("not a directory")
    env = gateway_env(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), spool_dir)
    proc = gateway_process(env, tmp_path / "gateway.log")
    async with aiohttp.ClientSession() as session:
        post = signed_poster(session, proc.base_url + WEBHOOK)
        async with session.get(proc.base_url + "/readyz") as resp:
            before = await resp.json()
            assert resp.status == 503, before
        assert (before["mode"], before["reason"]) == ("refusing", "io_error")
        assert before["checks"]["spool"] == "unavailable (io_error)"
        assert (await post("while-unusable")).status == 503
        blocker.unlink()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            async with session.get(proc.base_url + "/readyz") as resp:
                after = await resp.json()
                if resp.status == 200:
                    break
            await asyncio.sleep(0.3)
        assert (after["status"], after["mode"], after["checks"]["spool"]) == ("ready", "spooling", "accepting"), after
        assert (await post("once-usable")).status == 200  # spooled: Kafka is still away
    assert "IGW_SPOOL_DIR" in (tmp_path / "gateway.log").read_text()


_NOW_MS = 1_764_000_000_000
_FAULT_OF = {
    errno.EIO: Fault.IO_ERROR,
    errno.EROFS: Fault.READ_ONLY,
    errno.ENOSPC: Fault.DISK_FULL,
    errno.EACCES: Fault.PERMISSION,
}


@pytest.mark.parametrize("err", list(_FAULT_OF), ids=errno.errorcode.get)
@pytest.mark.parametrize("step", ["write", "fsync", "rotation"])
async def test_append_fault_is_named_leaves_nothing_half_written_and_recovers(
    tmp_path: Path, disk_fault: DiskFaultInjector, step: str, err: int
) -> None:
    """A disk error while appending fails that append with its named fault, keeps what was durable, and
    the spool takes bodies again once a probe passes."""
    # segment_bytes=1: every write fills its segment, so the next append starts (rotates to) a new one.
    spool = _spool(tmp_path, segment_bytes=1 if step == "rotation" else 64 * 1024)
    await spool.open()
    try:
        await spool.append(b"before", int(time.time() * 1000), None)
        fault = disk_fault(step, err)
        with pytest.raises(SpoolUnavailable) as refused:
            await spool.append(b"refused by the disk", int(time.time() * 1000), None)
        assert fault.raised
        assert refused.value.reason == _FAULT_OF[err]
        assert spool.fault() == _FAULT_OF[err]
        assert not spool.accepting()
        assert spool.records == 1
        assert not await spool.probe()  # the probe goes through the same step
        fault.clear()
        assert await spool.probe()
        assert spool.fault() is None
        await spool.append(b"after", int(time.time() * 1000), None)
    finally:
        await spool.close()
    again = _spool(tmp_path)
    report = await again.open()
    try:
        assert (report.torn, report.corrupt) == (0, 0)  # no half frame was left behind
        assert [i.body for i in await _drain_all(again)] == [b"before", b"after"]
    finally:
        await again.close()


@pytest.mark.parametrize("err", list(_FAULT_OF), ids=errno.errorcode.get)
async def test_cursor_fault_keeps_the_batch_until_its_ack_is_written(
    tmp_path: Path, disk_fault: DiskFaultInjector, err: int
) -> None:
    """When the cursor cannot be written, ack changes nothing; a stop then replays that one batch; the same
    ack succeeds once the disk recovers."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(10):
        await spool.append(b"body-%d" % i, _NOW_MS + i, None)
    batch = await spool.read_batch(4, 1024 * 1024)
    assert batch is not None
    fault = disk_fault("cursor", err)
    with pytest.raises(SpoolUnavailable) as failed:
        await spool.ack(batch)
    assert failed.value.reason == _FAULT_OF[err]
    assert spool.records == 10
    await spool.close()
    replayed = _spool(tmp_path)
    assert (await replayed.open()).records == 10  # a crash here: this batch is published again, no more
    try:
        again = await replayed.read_batch(4, 1024 * 1024)
        assert again is not None
        assert [i.body for i in again.items] == [i.body for i in batch.items]
        fault.clear()
        await replayed.ack(again)
        assert replayed.records == 6
    finally:
        await replayed.close()
    final = _spool(tmp_path)
    assert (await final.open()).records == 6
    await final.close()


@pytest.mark.parametrize("err", [errno.EIO, errno.EACCES], ids=errno.errorcode.get)
async def test_read_fault_changes_nothing(tmp_path: Path, disk_fault: DiskFaultInjector, err: int) -> None:
    """A body that cannot be read back is reported with its fault and read again once the disk recovers."""
    spool = _spool(tmp_path)
    await spool.open()
    try:
        await spool.append(b"kept", _NOW_MS, None)
        fault = disk_fault("read", err)
        with pytest.raises(SpoolUnavailable) as failed:
            await spool.read_batch(10, 1024 * 1024)
        assert failed.value.reason == _FAULT_OF[err]
        fault.clear()
        assert [i.body for i in await _drain_all(spool)] == [b"kept"]
    finally:
        await spool.close()


@pytest.mark.parametrize("err", [errno.EIO, errno.EROFS, errno.EACCES], ids=errno.errorcode.get)
async def test_replay_fault_at_start_up_releases_the_directory(
    tmp_path: Path, disk_fault: DiskFaultInjector, err: int
) -> None:
    """A segment unreadable at start-up fails open() with its fault and leaves the directory free to open later."""
    spool = _spool(tmp_path)
    await spool.open()
    await spool.append(b"left behind", _NOW_MS, None)
    await spool.close()
    fault = disk_fault("replay", err)
    failing = _spool(tmp_path)
    with pytest.raises(SpoolUnavailable) as failed:
        await failing.open()
    assert failed.value.reason == _FAULT_OF[err]
    fault.clear()
    again = _spool(tmp_path)  # not SpoolLocked: the failed open released the lock
    assert (await again.open()).records == 1
    try:
        assert [i.body for i in await _drain_all(again)] == [b"left behind"]
    finally:
        await again.close()


async def test_cursor_is_overwritten_in_place_and_survives_a_torn_slot(tmp_path: Path) -> None:
    """The cursor file keeps its size and inode; with its newest slot torn, the other one replays one batch."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(10):
        await spool.append(b"body-%d" % i, _NOW_MS + i, None)
    cursor = tmp_path / "cursor"
    inode = cursor.stat().st_ino
    for size in (4, 3):
        batch = await spool.read_batch(size, 1024 * 1024)
        assert batch is not None
        await spool.ack(batch)
    assert (cursor.stat().st_ino, cursor.stat().st_size) == (inode, 1024)
    await spool.close()
    data = bytearray(cursor.read_bytes())
    data[0 + 10] ^= 0xFF  # the second ack went to the slot at byte 0: tear it
    cursor.write_bytes(bytes(data))
    again = _spool(tmp_path)
    assert (await again.open()).records == 6  # back to the first ack: one batch (3) replayed
    await again.close()


async def test_text_cursor_of_earlier_versions_is_read(tmp_path: Path) -> None:
    """A cursor written as ``<segment> <offset>`` text is honoured and rewritten in the slot format."""
    spool = _spool(tmp_path)
    await spool.open()
    for i in range(3):
        await spool.append(b"body-%d" % i, _NOW_MS + i, None)
    await spool.close()
    [segment] = _segments(tmp_path)
    first = len(encode_frame(b"body-0", _NOW_MS, None))
    (tmp_path / "cursor").write_text(f"{int(segment.stem)} {first}\n")
    again = _spool(tmp_path)
    assert (await again.open()).records == 2
    try:
        assert (tmp_path / "cursor").stat().st_size == 1024
        assert [i.body for i in await _drain_all(again)] == [b"body-1", b"body-2"]
    finally:
        await again.close()


async def test_full_filesystem_refuses_then_drains_and_takes_bodies_again(small_fs: SmallFs) -> None:
    """On a 256 KiB filesystem filled by the spool itself, the drain still records progress and frees
    space, every body comes back in order, and appends work again."""
    spool = Spool(small_fs.path / "spool", metrics=METRICS, max_bytes=64 * 1024 * 1024, max_age_seconds=3600)
    await spool.open()
    try:
        appended: list[bytes] = []
        refused: SpoolUnavailable | None = None
        for i in range(10_000):
            body = b'{"n":%d,"pad":"%s"}' % (i, b"x" * 2000)
            try:
                await spool.append(body, _NOW_MS + i, None)
            except SpoolUnavailable as exc:
                refused = exc
                break
            appended.append(body)
        assert refused is not None
        assert refused.reason == Fault.DISK_FULL
        assert spool.fault() == Fault.DISK_FULL
        assert len(appended) > 50, small_fs
        assert not await spool.probe()
        assert [i.body for i in await _drain_all(spool)] == appended  # acks need no free space
        assert _segments(spool.directory) == []
        assert await spool.probe()
        await spool.append(b"after", _NOW_MS, None)
        assert spool.records == 1
    finally:
        await spool.close()
