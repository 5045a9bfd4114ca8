"""Where the per-person content keys live (crypto-shredding, docs/privacy.md).

One data key per person (``subject`` = the conversation id ``<platform>:<account>:<user>``), named
by a key id (``kid``) that the sealed envelope carries. Erasing a person deletes their keys, so what
Kafka holds of them can no longer be read, and records the time of the erasure (a tombstone): a body
from before it that arrives later (Meta's retries, the gateway's spool) is published without content.
Every change bumps a counter (``epoch``) that processes poll to drop the keys they cache.

Backends: in memory (tests), SQLite (one host: ``igw dev``, a single machine), Redis (replicas).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from igw.config import Env
from igw.errors import SettingsError

__all__ = ["KeyStore", "MemoryKeyStore", "RedisKeyStore", "SqliteKeyStore", "new_kid", "open_keystore"]

KEY_BYTES = 32  # AES-256


def new_kid(subject: str) -> str:
    """A key id: the subject and a random generation (a new one after each erasure)."""
    return f"{subject}#{secrets.token_hex(6)}"


class KeyStore(Protocol):
    async def current(self, subject: str) -> tuple[str, bytes] | None:
        """The subject's key in use: ``(kid, key)``, or None when none was made (or it was erased)."""
        ...

    async def create(self, subject: str, kid: str, key: bytes) -> tuple[str, bytes]:
        """Make ``kid`` the subject's key unless another process did first; returns the key in use."""
        ...

    async def key(self, kid: str) -> bytes | None:
        """A key by its id, for reading; None once erased."""
        ...

    async def erased_at(self, subject: str) -> int | None:
        """When the subject was last erased (epoch ms), or None."""
        ...

    async def erase(self, subject: str, at_ms: int) -> int:
        """Delete every key of the subject, remember the erasure; returns how many keys were deleted."""
        ...

    async def epoch(self) -> int:
        """A counter that changes whenever a key is deleted: caches are dropped when it moves."""
        ...

    async def put_request(self, code: str, document: bytes) -> None:
        """Keep a deletion request's status document (JSON) under its confirmation code."""
        ...

    async def get_request(self, code: str) -> bytes | None: ...

    async def close(self) -> None: ...


class MemoryKeyStore:
    """Keys in this process only: for tests and one-process tools."""

    def __init__(self) -> None:
        self._current: dict[str, str] = {}
        self._keys: dict[str, bytes] = {}
        self._erased: dict[str, int] = {}
        self._epoch = 0
        self._requests: dict[str, bytes] = {}

    async def put_request(self, code: str, document: bytes) -> None:
        self._requests[code] = document

    async def get_request(self, code: str) -> bytes | None:
        return self._requests.get(code)

    async def current(self, subject: str) -> tuple[str, bytes] | None:
        kid = self._current.get(subject)
        return (kid, self._keys[kid]) if kid is not None else None

    async def create(self, subject: str, kid: str, key: bytes) -> tuple[str, bytes]:
        if subject not in self._current:
            self._current[subject] = kid
            self._keys[kid] = key
        existing = self._current[subject]
        return existing, self._keys[existing]

    async def key(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    async def erased_at(self, subject: str) -> int | None:
        return self._erased.get(subject)

    async def erase(self, subject: str, at_ms: int) -> int:
        prefix = f"{subject}#"
        doomed = [kid for kid in self._keys if kid.startswith(prefix)]
        for kid in doomed:
            del self._keys[kid]
        self._current.pop(subject, None)
        self._erased[subject] = max(at_ms, self._erased.get(subject, 0))
        self._epoch += 1
        return len(doomed)

    async def epoch(self) -> int:
        return self._epoch

    async def close(self) -> None:
        return None


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (kid TEXT PRIMARY KEY, subject TEXT NOT NULL, key BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS keys_subject ON keys (subject)",
    "CREATE TABLE IF NOT EXISTS current (subject TEXT PRIMARY KEY, kid TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS erased (subject TEXT PRIMARY KEY, at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS epoch (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO epoch VALUES (0, 0)",
    "CREATE TABLE IF NOT EXISTS requests (code TEXT PRIMARY KEY, document BLOB NOT NULL)",
)


class SqliteKeyStore:
    """Keys in one SQLite file, shared by the processes of one host (WAL; every write a transaction).

    Calls run in a thread: they happen once per new person per process, never per event.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        path.chmod(0o600)
        self._lock = asyncio.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    def _current(self, subject: str) -> tuple[str, bytes] | None:
        row = self._db.execute(
            "SELECT keys.kid, keys.key FROM current JOIN keys ON keys.kid = current.kid WHERE current.subject = ?",
            (subject,),
        ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def _create(self, subject: str, kid: str, key: bytes) -> tuple[str, bytes]:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            found = self._current(subject)
            if found is not None:
                return found
            self._db.execute("INSERT INTO keys VALUES (?, ?, ?)", (kid, subject, key))
            self._db.execute("INSERT OR REPLACE INTO current VALUES (?, ?)", (subject, kid))
            return kid, key

    def _erase(self, subject: str, at_ms: int) -> int:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            deleted = self._db.execute("DELETE FROM keys WHERE subject = ?", (subject,)).rowcount
            self._db.execute("DELETE FROM current WHERE subject = ?", (subject,))
            self._db.execute(
                "INSERT INTO erased VALUES (?, ?)"
                " ON CONFLICT(subject) DO UPDATE SET at_ms = MAX(at_ms, excluded.at_ms)",
                (subject, at_ms),
            )
            self._db.execute("UPDATE epoch SET value = value + 1")
            return int(deleted)

    async def current(self, subject: str) -> tuple[str, bytes] | None:
        result: tuple[str, bytes] | None = await self._run(self._current, subject)
        return result

    async def create(self, subject: str, kid: str, key: bytes) -> tuple[str, bytes]:
        result: tuple[str, bytes] = await self._run(self._create, subject, kid, key)
        return result

    async def key(self, kid: str) -> bytes | None:
        row = await self._run(lambda: self._db.execute("SELECT key FROM keys WHERE kid = ?", (kid,)).fetchone())
        return bytes(row[0]) if row else None

    async def erased_at(self, subject: str) -> int | None:
        row = await self._run(
            lambda: self._db.execute("SELECT at_ms FROM erased WHERE subject = ?", (subject,)).fetchone()
        )
        return int(row[0]) if row else None

    async def erase(self, subject: str, at_ms: int) -> int:
        result: int = await self._run(self._erase, subject, at_ms)
        return result

    async def epoch(self) -> int:
        row = await self._run(lambda: self._db.execute("SELECT value FROM epoch").fetchone())
        return int(row[0])

    async def put_request(self, code: str, document: bytes) -> None:
        await self._run(
            lambda: self._db.execute("INSERT OR REPLACE INTO requests VALUES (?, ?)", (code, document)) and None
        )

    async def get_request(self, code: str) -> bytes | None:
        row = await self._run(
            lambda: self._db.execute("SELECT document FROM requests WHERE code = ?", (code,)).fetchone()
        )
        return bytes(row[0]) if row else None

    async def close(self) -> None:
        self._db.close()


_CREATE = """
local found = redis.call('GET', KEYS[1])
if found then return {found, redis.call('GET', ARGV[3] .. found)} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', ARGV[3] .. ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return {ARGV[1], ARGV[2]}
"""

_ERASE = """
local kids = redis.call('SMEMBERS', KEYS[2])
for _, kid in ipairs(kids) do redis.call('DEL', ARGV[2] .. kid) end
redis.call('DEL', KEYS[1], KEYS[2])
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > before then redis.call('SET', KEYS[3], ARGV[1]) end
redis.call('INCR', KEYS[4])
return #kids
"""


class RedisKeyStore:
    """Keys in Redis, shared by every replica. Each change is one Lua script (atomic)."""

    def __init__(self, client: Any, prefix: str = "igw:keys") -> None:
        self._redis = client
        self._prefix = prefix
        self._create = client.register_script(_CREATE)
        self._erase = client.register_script(_ERASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "igw:keys") -> RedisKeyStore:
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), prefix)

    def _k(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def current(self, subject: str) -> tuple[str, bytes] | None:
        kid = await self._redis.get(self._k("current", subject))
        if kid is None:
            return None
        key = await self._redis.get(self._k("key", "") + kid.decode())
        return (kid.decode(), bytes(key)) if key is not None else None

    async def create(self, subject: str, kid: str, key: bytes) -> tuple[str, bytes]:
        found = await self._create(
            keys=[self._k("current", subject), self._k("kids", subject)], args=[kid, key, self._k("key", "")]
        )
        return found[0].decode(), bytes(found[1])

    async def key(self, kid: str) -> bytes | None:
        key = await self._redis.get(self._k("key", "") + kid)
        return bytes(key) if key is not None else None

    async def erased_at(self, subject: str) -> int | None:
        value = await self._redis.get(self._k("erased", subject))
        return int(value) if value is not None else None

    async def erase(self, subject: str, at_ms: int) -> int:
        deleted = await self._erase(
            keys=[
                self._k("current", subject),
                self._k("kids", subject),
                self._k("erased", subject),
                self._k("epoch"),
            ],
            args=[at_ms, self._k("key", "")],
        )
        return int(deleted)

    async def epoch(self) -> int:
        return int(await self._redis.get(self._k("epoch")) or 0)

    async def put_request(self, code: str, document: bytes) -> None:
        await self._redis.set(self._k("request", code), document)

    async def get_request(self, code: str) -> bytes | None:
        value = await self._redis.get(self._k("request", code))
        return bytes(value) if value is not None else None

    async def close(self) -> None:
        await self._redis.aclose()


def keystore_url(env: Env, variable: str = "IGW_CONTENT_KEYS") -> str | None:
    """The configured key store URL, checked (not opened) so a bad one stops start-up in one line."""
    url = env.optional_str(variable)
    if url is None:
        return None
    if url == "memory:" or url.startswith(("redis://", "rediss://", "unix://")):
        return url
    if url.startswith("sqlite:") and url.removeprefix("sqlite:").removeprefix("//"):
        return url
    raise SettingsError(variable, f"expected memory:, sqlite:PATH or redis://HOST:PORT/DB, got {url.split(':')[0]}:...")


def open_keystore(url: str, *, variable: str = "IGW_CONTENT_KEYS") -> KeyStore:
    """``memory:``, ``sqlite:PATH`` or ``redis://...`` (``rediss://`` too)."""
    if url == "memory:":
        return MemoryKeyStore()
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise SettingsError(variable, "sqlite: needs a file path, e.g. sqlite:/var/lib/igw/keys.db")
        try:
            return SqliteKeyStore(Path(path))
        except (OSError, sqlite3.Error) as exc:
            raise SettingsError(variable, f"cannot open the key store {path}: {exc}") from None
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            return RedisKeyStore.from_url(url)
        except ImportError:
            raise SettingsError(variable, "redis:// needs the redis extra (pip install 'igw[redis]')") from None
    raise SettingsError(variable, "expected memory:, sqlite:PATH or redis://HOST:PORT/DB")


def now_ms() -> int:
    return int(time.time() * 1000)


def subjects(platform: str, account_id: str, user_ids: Iterable[str]) -> list[str]:
    """The subjects (conversation ids) of one person per account: what erasure deletes keys for."""
    return [f"{platform}:{account_id}:{user}" for user in user_ids]
