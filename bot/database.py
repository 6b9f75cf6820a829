"""The bot's own durable state in SQLite (aiosqlite): the write-back queue and per-user learning pauses.

A queued exchange stays in `pending_exchanges` until its facts are stored, so a crash or a store outage
loses nothing: the worker picks up what is left on the next start. `learned_from` keeps the ids (never the
text) of every message queued for learning, so a deleted or edited message the bot never learned from costs
one lookup, not a search of the memory store.

A queued exchange is a `QueuedExchange` kept as JSON; the message it came from is also kept in columns
(`platform`, `workspace`, `channel`, `message_id`), which is what SQL looks exchanges up by: nothing here reads
inside the JSON, so the record can change without queries silently matching nothing. Files from before those
columns get them once, filled from the JSON, when opened (`_add_source_columns`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.exchange import QueuedExchange
from bot.message import MessageRef

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 1: learned_from filled in; 2: stored memories carry their kind, attribute and time
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,  -- a QueuedExchange as JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    platform TEXT NOT NULL,  -- the message the exchange came from (its `source`)
    workspace TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_exchanges (
    id INTEGER PRIMARY KEY,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL,
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS learned_from (
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    user_key TEXT NOT NULL,
    queued_at REAL NOT NULL,
    forgetting INTEGER NOT NULL DEFAULT 0,  -- deleted or edited; its facts are being deleted
    PRIMARY KEY (platform, workspace, message_id, channel, user_key)
);
CREATE INDEX IF NOT EXISTS learned_from_forgetting ON learned_from (forgetting) WHERE forgetting = 1;
CREATE TABLE IF NOT EXISTS paused_users (
    user_key TEXT PRIMARY KEY,
    paused_at REAL NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0
);
"""


async def connect(path: Path, schema: str) -> aiosqlite.Connection:
    """Open (creating it if needed) a SQLite file in WAL mode with `schema` applied; adapters use it too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA secure_delete=ON")  # deleted rows (what users said) are overwritten, not kept
    await db.executescript(schema)
    await db.commit()
    return db


_EXCHANGE_TABLES = ("pending_exchanges", "failed_exchanges")
_SOURCE_COLUMNS = ("platform", "workspace", "channel", "message_id")


async def _columns(db: aiosqlite.Connection, table: str) -> set[str]:
    async with db.execute(f"PRAGMA table_info({table})") as cursor:
        return {str(row[1]) for row in await cursor.fetchall()}


async def _add_source_columns(db: aiosqlite.Connection) -> None:
    """Give exchange tables from before the source columns those columns, filled from the JSON of their rows, in
    one transaction (a table that has them is left alone, so this runs once); then index them for the lookup of
    a message's exchanges (`forget_exchanges`). SQLite adds a NOT NULL column only with a default: ''."""
    for table in _EXCHANGE_TABLES:
        if set(_SOURCE_COLUMNS) <= await _columns(db, table):
            continue
        await db.execute("BEGIN IMMEDIATE")  # another process migrating the same file waits, then finds it done
        try:
            missing = [column for column in _SOURCE_COLUMNS if column not in await _columns(db, table)]
            for column in missing:
                await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            filled = ", ".join(f"{column} = coalesce(json_extract(payload, '$.source.{column}'), '')"
                               for column in _SOURCE_COLUMNS)
            cursor = await db.execute(f"UPDATE {table} SET {filled}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        _log.info("gave %s its source columns (%d rows)", table, cursor.rowcount)
    for table in _EXCHANGE_TABLES:
        await db.execute(f"CREATE INDEX IF NOT EXISTS {table}_source ON {table} (platform, workspace, message_id, "
                         "channel)")
    await db.commit()


@dataclass(frozen=True)
class PendingExchange:
    """A queued exchange as the worker takes it: its row id, whose it is, the exchange and failed attempts."""

    id: int
    user_key: str
    record: QueuedExchange
    attempts: int


def _message_filter(ref: MessageRef) -> tuple[str, tuple[str, ...]]:
    """SQL matching rows about this message: `learned_from` rows, or queued or set-aside exchanges from it (all
    three tables name the message in the same columns)."""
    columns = ["platform", "workspace", "message_id", "channel"]
    values = [ref.platform, ref.workspace, ref.message_id, ref.channel_id]
    kept = [(c, v) for c, v in zip(columns, values, strict=True) if v is not None]
    return " AND ".join(f"{c} = ?" for c, _ in kept), tuple(v for _, v in kept)


class BotDatabase:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open the file. `version` says which one-time upgrades of the memory store it has seen (a new file
        has seen none: it may sit next to a store that already has memories): 1, `learned_from` filled in
        (`fill_sources`); 2, the store's memories given their kind, profile attribute and time (`upgraded`).
        The bot's own tables are brought up to date here, every time (see `_add_source_columns`)."""
        self._db = await connect(self._path, _SCHEMA)
        await _add_source_columns(self._db)
        async with self.db.execute("PRAGMA user_version") as cursor:
            self.version = int((await cursor.fetchone() or (0,))[0])

    @property
    def sources_missing(self) -> bool:
        return self.version < 1

    async def upgraded(self, version: int) -> None:
        """Record that the one-time upgrade to `version` is done."""
        await self.db.execute(f"PRAGMA user_version = {int(version)}")
        await self.db.commit()
        self.version = version

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("database is not open")
        return self._db

    # --- write-back queue

    async def enqueue(self, user_key: str, exchange: QueuedExchange) -> int:
        now = time.time()
        source = exchange.source
        where = (source.platform, source.workspace, source.channel, source.message_id)
        cursor = await self.db.execute(
            "INSERT INTO pending_exchanges (user_key, payload, created_at, platform, workspace, channel, message_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user_key, exchange.to_json(), now, *where),
        )
        await self.db.execute(
            "INSERT OR IGNORE INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*where, user_key, now),
        )
        await self.db.commit()
        return int(cursor.lastrowid or 0)

    async def next_due(self) -> tuple[PendingExchange | None, float | None]:
        """The oldest exchange that is due now, or None and the time the next one becomes due. A row that does
        not hold a readable exchange is set aside (it would otherwise block the queue)."""
        while True:
            async with self.db.execute(
                "SELECT id, user_key, payload, attempts, next_attempt_at FROM pending_exchanges "
                "ORDER BY next_attempt_at, id LIMIT 1"
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None, None
            if row[4] > time.time():
                return None, float(row[4])
            try:
                return PendingExchange(row[0], row[1], QueuedExchange.from_json(row[2]), row[3]), None
            except ValueError as exc:
                _log.warning("exchange %s set aside: its row cannot be read (details in failed_exchanges)", row[0])
                await self._move_to_failed(row[0], None, f"unreadable row: {exc}")

    async def pending_count(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM pending_exchanges") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def is_pending(self, exchange_id: int) -> bool:
        """Whether the exchange is still queued (forget-all removes a user's rows while they are worked on)."""
        async with self.db.execute("SELECT 1 FROM pending_exchanges WHERE id = ?", (exchange_id,)) as cursor:
            return await cursor.fetchone() is not None

    async def save_progress(self, exchange_id: int, exchange: QueuedExchange) -> None:
        """Keep what the worker has done so far (extracted facts, how many are stored) for a retry."""
        await self.db.execute(
            "UPDATE pending_exchanges SET payload = ? WHERE id = ?", (exchange.to_json(), exchange_id)
        )
        await self.db.commit()

    async def done(self, exchange_id: int) -> None:
        await self.db.execute("DELETE FROM pending_exchanges WHERE id = ?", (exchange_id,))
        await self.db.commit()

    async def retry_later(self, exchange_id: int, delay: float) -> None:
        """Count a failed attempt and try again in `delay` seconds."""
        await self.db.execute(
            "UPDATE pending_exchanges SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ?",
            (time.time() + delay, exchange_id),
        )
        await self.db.commit()

    async def set_aside(self, exchange: PendingExchange, error: str) -> None:
        """Move an exchange the model cannot turn into facts out of the queue, keeping it for inspection;
        only while it is still queued (a forget-all meanwhile has deleted it, and it must stay deleted)."""
        await self._move_to_failed(exchange.id, exchange.record.to_json(), error)

    async def _move_to_failed(self, exchange_id: int, payload: str | None, error: str) -> None:
        """Move a queued row to `failed_exchanges` with `payload` (None: the one it has) and `error`."""
        await self.db.execute(
            "INSERT OR REPLACE INTO failed_exchanges "
            "(id, user_key, payload, error, failed_at, platform, workspace, channel, message_id) "
            "SELECT id, user_key, coalesce(?, payload), ?, ?, platform, workspace, channel, message_id "
            "FROM pending_exchanges WHERE id = ?",
            (payload, error, time.time(), exchange_id),
        )
        await self.db.execute("DELETE FROM pending_exchanges WHERE id = ?", (exchange_id,))
        await self.db.commit()

    async def drop_set_aside(self, older_than_days: float) -> int:
        """Delete set-aside exchanges (they hold what users said) once they are this old; return how many."""
        cursor = await self.db.execute("DELETE FROM failed_exchanges WHERE failed_at < ?",
                                       (time.time() - older_than_days * 86400,))
        await self.db.commit()
        return cursor.rowcount

    async def user_keys(self) -> set[str]:
        """Users with exchanges queued or set aside."""
        keys: set[str] = set()
        for table in ("pending_exchanges", "failed_exchanges"):
            async with self.db.execute(f"SELECT DISTINCT user_key FROM {table}") as cursor:
                keys.update(str(row[0]) for row in await cursor.fetchall())
        return keys

    async def fill_sources(self, stored: list[tuple[str, MessageRef]]) -> None:
        """Fill in `learned_from` once (see `open`): the (user key, message) pairs the memory store has facts
        from, and the exchanges queued or set aside."""
        now = time.time()
        await self.db.executemany(
            "INSERT OR IGNORE INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(ref.platform, ref.workspace, ref.channel_id or "", ref.message_id, user_key, now)
             for user_key, ref in stored],
        )
        for table in _EXCHANGE_TABLES:
            await self.db.execute(
                "INSERT OR IGNORE INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
                f"SELECT platform, workspace, channel, message_id, user_key, ? FROM {table}",
                (now,),
            )
        await self.db.commit()
        await self.upgraded(1)

    async def users_with_message(self, ref: MessageRef) -> set[str]:
        """Users whose exchange from this message was queued at some point (it may still be, or set aside)."""
        where, args = _message_filter(ref)
        async with self.db.execute(f"SELECT DISTINCT user_key FROM learned_from WHERE {where}", args) as cursor:
            return {str(row[0]) for row in await cursor.fetchall()}

    async def forget_exchanges(self, user_key: str, ref: MessageRef) -> None:
        """Drop this user's exchanges from this message, queued or set aside."""
        where, args = _message_filter(ref)
        for table in _EXCHANGE_TABLES:
            await self.db.execute(f"DELETE FROM {table} WHERE user_key = ? AND {where}", (user_key, *args))
        await self.db.commit()

    async def mark_forgetting(self, ref: MessageRef) -> None:
        """The facts of this message are about to be deleted (see `forgetting`)."""
        where, args = _message_filter(ref)
        await self.db.execute(f"UPDATE learned_from SET forgetting = 1 WHERE {where}", args)
        await self.db.commit()

    async def forget_sources(self, ref: MessageRef) -> None:
        """The facts of this message are deleted: forget that it taught anything."""
        where, args = _message_filter(ref)
        await self.db.execute(f"DELETE FROM learned_from WHERE {where}", args)
        await self.db.commit()

    async def forgetting(self) -> list[MessageRef]:
        """Messages whose facts were being deleted when the store failed."""
        async with self.db.execute(
            "SELECT DISTINCT platform, workspace, channel, message_id FROM learned_from WHERE forgetting = 1"
        ) as cursor:
            return [MessageRef(*map(str, row)) for row in await cursor.fetchall()]

    async def forget_user(self, user_key: str) -> None:
        """Drop everything queued or set aside for a user (their memories are being deleted)."""
        for table in ("pending_exchanges", "failed_exchanges", "learned_from"):
            await self.db.execute(f"DELETE FROM {table} WHERE user_key = ?", (user_key,))
        await self.db.commit()

    # --- learning pauses

    async def set_paused(self, user_key: str, paused: bool) -> None:
        if paused:
            await self.db.execute(
                "INSERT OR IGNORE INTO paused_users (user_key, paused_at) VALUES (?, ?)", (user_key, time.time())
            )
        else:
            await self.db.execute("DELETE FROM paused_users WHERE user_key = ?", (user_key,))
        await self.db.commit()

    async def is_paused(self, user_key: str) -> bool:
        async with self.db.execute("SELECT 1 FROM paused_users WHERE user_key = ?", (user_key,)) as cursor:
            return await cursor.fetchone() is not None

    async def take_pause_notice(self, user_key: str) -> bool:
        """True once per pause: whether the user still has to be told that learning is paused."""
        cursor = await self.db.execute(
            "UPDATE paused_users SET notified = 1 WHERE user_key = ? AND notified = 0", (user_key,)
        )
        await self.db.commit()
        return cursor.rowcount > 0
