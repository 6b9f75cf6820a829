"""The bot's own durable state: the write-back queue, per-user learning pauses and what platform adapters keep
(event ids handled, threads posted in: `bot/platform_state.py`), in SQLite (the embedded default) or, when
DATABASE_URL is set, in PostgreSQL shared by several bot processes (`bot/sql.py`).

A queued exchange stays in `pending_exchanges` until its facts are stored, so a crash or a store outage
loses nothing: a worker picks up what is left. A worker claims a row for a lease (`claim`) and renews it while
it works; a row whose lease ran out (its process died) is claimed by the next worker, so each exchange is learned
by one worker at a time, and several processes never wait on each other's claims (`FOR UPDATE SKIP LOCKED`).
`learned_from` keeps the ids (never the text) of every message queued for learning, so a deleted or edited
message the bot never learned from costs one lookup, not a search of the memory store.

A queued exchange is a `QueuedExchange` kept as JSON; the message it came from is also kept in columns
(`platform`, `workspace`, `channel`, `message_id`), which is what SQL looks exchanges up by: nothing here reads
inside the JSON, so the record can change without queries silently matching nothing. SQLite files from before
those columns (or the claim columns) get them once when opened (`_add_columns`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.exchange import QueuedExchange
from bot.message import MessageRef
from bot.sql import Sql, SqliteSql, open_sql

_log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 1: learned_from filled in; 2: stored memories carry their kind, attribute and time
# Times are POSIX seconds (DOUBLE PRECISION: PostgreSQL's REAL would round them to minutes). `SERIAL`: see bot/sql.py.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_exchanges (
    id SERIAL,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,  -- a QueuedExchange as JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    platform TEXT NOT NULL,  -- the message the exchange came from (its `source`)
    workspace TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    claimed_by TEXT NOT NULL DEFAULT '',  -- the worker learning it, until `lease_until`
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS failed_exchanges (
    id BIGINT PRIMARY KEY,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at DOUBLE PRECISION NOT NULL,
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
    queued_at DOUBLE PRECISION NOT NULL,
    forgetting INTEGER NOT NULL DEFAULT 0,  -- deleted or edited; its facts are being deleted
    PRIMARY KEY (platform, workspace, message_id, channel, user_key)
);
CREATE INDEX IF NOT EXISTS learned_from_forgetting ON learned_from (forgetting) WHERE forgetting = 1;
CREATE INDEX IF NOT EXISTS learned_from_user ON learned_from (user_key);
CREATE TABLE IF NOT EXISTS paused_users (
    user_key TEXT PRIMARY KEY,
    paused_at DOUBLE PRECISION NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS bot_threads (  -- threads the bot posted in (bot/platform_state.py)
    channel TEXT NOT NULL,
    thread_ts TEXT NOT NULL,
    PRIMARY KEY (channel, thread_ts)
);
"""

# Recent activity (`recent`): the conversation history (bot/history.py), rate-limit hits (bot/access.py), the
# memories each user's last reply used (`/why`, bot/memories/recall.py), and forget-alls and deleted or edited
# messages that replies still running must see (bot/memories/forgetting.py). Process memory for the embedded default;
# the shared database when there is one, so every replica sees the same.
_RECENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversation_turns (
    id SERIAL,
    conversation TEXT NOT NULL,
    user_key TEXT NOT NULL,
    text TEXT NOT NULL,
    reply TEXT NOT NULL,
    message_id TEXT NOT NULL,
    memory_ids TEXT NOT NULL DEFAULT '[]',  -- JSON: the memories the reply's prompt kept (bot/handler.py)
    shown_turns INTEGER NOT NULL DEFAULT 0,  -- earlier turns the reply's prompt held (bot/history.py)
    listed TEXT NOT NULL DEFAULT '[]',  -- JSON: the memories listed before each of its user messages (bot/history.py)
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_turns_of ON conversation_turns (conversation, user_key, id);
CREATE INDEX IF NOT EXISTS conversation_turns_user ON conversation_turns (user_key);
CREATE INDEX IF NOT EXISTS conversation_turns_at ON conversation_turns (at);
CREATE TABLE IF NOT EXISTS rate_hits (user_key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS rate_hits_of ON rate_hits (user_key, at);
CREATE INDEX IF NOT EXISTS rate_hits_at ON rate_hits (at);
CREATE TABLE IF NOT EXISTS rate_notices (user_key TEXT PRIMARY KEY, told_until DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS last_used (
    user_key TEXT PRIMARY KEY,
    records TEXT NOT NULL,  -- the memories as JSON
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS last_used_at ON last_used (at);
CREATE TABLE IF NOT EXISTS erasures (user_key TEXT PRIMARY KEY, count INTEGER NOT NULL);
DROP TABLE IF EXISTS changed_messages;  -- keyed without the channel (same-ts messages of two channels collided)
CREATE TABLE IF NOT EXISTS message_changes (  -- deleted or edited messages (bot/memories/forgetting.py)
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL,
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,  -- '': the platform did not say (see MessageRef)
    deleted INTEGER NOT NULL,
    edited_at TEXT,  -- the latest edit handled, ISO 8601
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (platform, workspace, message_id, channel)
);
CREATE INDEX IF NOT EXISTS message_changes_at ON message_changes (at);
"""

# Shared recent-activity tables made by an older version get the columns added since (in process memory they are
# made anew each start).
_RECENT_UPGRADES = """
ALTER TABLE conversation_turns ADD COLUMN IF NOT EXISTS memory_ids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE conversation_turns ADD COLUMN IF NOT EXISTS shown_turns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversation_turns ADD COLUMN IF NOT EXISTS listed TEXT NOT NULL DEFAULT '[]';
"""

_EXCHANGE_TABLES = ("pending_exchanges", "failed_exchanges")
_SOURCE_COLUMNS = ("platform", "workspace", "channel", "message_id")
_CLAIM_COLUMNS = {"claimed_by": "TEXT NOT NULL DEFAULT ''", "lease_until": "REAL NOT NULL DEFAULT 0"}


async def _columns(sql: Any, table: str) -> set[str]:
    """The columns of a SQLite table (`sql`: the connection or a transaction on it)."""
    return {str(row[1]) for row in await sql.fetchall(f"PRAGMA table_info({table})")}


async def _add_columns(sql: Sql) -> None:
    """Give SQLite exchange tables from before the source columns those columns, filled from the JSON of their
    rows, and the queue the claim columns, in one transaction each (a table that has them is left alone, so this
    runs once); then index the source columns for the lookup of a message's exchanges (`forget_exchanges`).
    SQLite adds a NOT NULL column only with a default: ''. PostgreSQL tables are made with every column."""
    for table in _EXCHANGE_TABLES:
        if set(_SOURCE_COLUMNS) <= await _columns(sql, table):
            continue
        # another process migrating the same file waits, then finds it done
        async with sql.transaction() as tx:
            have = await _columns(tx, table)
            for column in (c for c in _SOURCE_COLUMNS if c not in have):
                await tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            filled = ", ".join(f"{column} = coalesce(json_extract(payload, '$.source.{column}'), '')"
                               for column in _SOURCE_COLUMNS)
            rows = await tx.execute(f"UPDATE {table} SET {filled}")
        _log.info("gave %s its source columns (%d rows)", table, rows)
    if missing := [c for c in _CLAIM_COLUMNS if c not in await _columns(sql, "pending_exchanges")]:
        async with sql.transaction() as tx:
            for column in missing:
                await tx.execute(f"ALTER TABLE pending_exchanges ADD COLUMN {column} {_CLAIM_COLUMNS[column]}")


# Indexes on columns that SQLite files from before them get only in `_add_columns`.
_SOURCE_INDEXES = "".join(
    f"CREATE INDEX IF NOT EXISTS {table}_source ON {table} (platform, workspace, message_id, channel);\n"
    for table in _EXCHANGE_TABLES
) + "CREATE INDEX IF NOT EXISTS pending_exchanges_due ON pending_exchanges (next_attempt_at, id);\n"


@dataclass(frozen=True)
class PendingExchange:
    """A queued exchange as the worker takes it: its row id, whose it is, the exchange and failed attempts."""

    id: int
    user_key: str
    record: QueuedExchange
    attempts: int
    worker: str = ""  # who claimed it (`BotDatabase.claim`)


def _message_filter(ref: MessageRef) -> tuple[str, tuple[str, ...]]:
    """SQL matching rows about this message: `learned_from` rows, or queued or set-aside exchanges from it (all
    three tables name the message in the same columns)."""
    columns = ["platform", "workspace", "message_id", "channel"]
    values = [ref.platform, ref.workspace, ref.message_id, ref.channel_id]
    kept = [(c, v) for c, v in zip(columns, values, strict=True) if v is not None]
    return " AND ".join(f"{c} = ?" for c, _ in kept), tuple(v for _, v in kept)


class BotDatabase:
    """The bot's state at `url` (PostgreSQL) or, with no url, in the SQLite file at `path`."""

    def __init__(self, path: Path, url: str = "") -> None:
        self._path = path
        self._url = url
        self._sql: Sql | None = None
        self._recent: Sql | None = None
        self.version = 0

    async def open(self) -> None:
        """Open the state. `version` says which one-time upgrades of the memory store it has seen (new state
        has seen none: it may sit next to a store that already has memories): 1, `learned_from` filled in
        (`fill_sources`); 2, the store's memories given their kind, profile attribute and time (`upgraded`).
        The bot's own tables are brought up to date here, every time (see `_add_columns`)."""
        if self._url:  # made whole, once, under the schema lock of bot/sql.py
            self._sql = await open_sql(self._url, self._path,
                                       _SCHEMA + _SOURCE_INDEXES + _RECENT_SCHEMA + _RECENT_UPGRADES)
        else:
            self._sql = await open_sql("", self._path, _SCHEMA)
            await _add_columns(self._sql)
            for statement in filter(None, _SOURCE_INDEXES.split(";\n")):
                await self._sql.execute(statement)
            self._recent = await SqliteSql.open(Path(":memory:"), _RECENT_SCHEMA)
        self.version = await self._sql.version()

    async def reload_version(self) -> None:
        """Read `version` again (another process sharing the state may have upgraded meanwhile)."""
        self.version = await self.sql.version()

    @property
    def shared(self) -> bool:
        """Whether other bot processes share this state (PostgreSQL)."""
        return self.sql.shared

    @property
    def sources_missing(self) -> bool:
        return self.version < 1

    async def upgraded(self, version: int) -> None:
        """Record that the one-time upgrade to `version` is done."""
        await self.sql.set_version(version)
        self.version = version

    async def close(self) -> None:
        if self._recent is not None:
            await self._recent.close()
            self._recent = None
        if self._sql is not None:
            await self._sql.close()
            self._sql = None

    @property
    def sql(self) -> Sql:
        if self._sql is None:
            raise RuntimeError("database is not open")
        return self._sql

    @property
    def recent(self) -> Sql:
        """The recent-activity tables (see `_RECENT_SCHEMA`)."""
        return self._recent or self.sql

    # --- write-back queue

    async def enqueue(self, user_key: str, exchange: QueuedExchange) -> int:
        now = time.time()
        source = exchange.source
        where = (source.platform, source.workspace, source.channel, source.message_id)
        async with self.sql.transaction() as tx:
            [(exchange_id,)] = await tx.fetchall(
                "INSERT INTO pending_exchanges (user_key, payload, created_at, platform, workspace, channel, "
                "message_id) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (user_key, exchange.to_json(), now, *where),
            )
            await tx.execute(
                "INSERT INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*where, user_key, now),
            )
        return int(exchange_id)

    async def claim(self, worker: str, lease_seconds: float) -> tuple[PendingExchange | None, float | None]:
        """Claim the oldest exchange that is due and not claimed by a live worker, for `lease_seconds`; or None
        and the seconds until the next one becomes due or free. A row that does not hold a readable exchange is
        set aside (it would otherwise block the queue). Times are the database's (`Sql.clock`)."""
        clock = self.sql.clock
        while True:
            row = await self.sql.fetchone(
                # taking over a dead worker's claim counts as a failed attempt: an exchange that kills its worker
                # (out of memory, say) is set aside after MAX_ATTEMPTS instead of killing every worker in turn
                "UPDATE pending_exchanges SET attempts = attempts + CASE WHEN claimed_by <> '' THEN 1 ELSE 0 END, "
                f"claimed_by = ?, lease_until = {clock} + ? WHERE id = ("
                f"SELECT id FROM pending_exchanges WHERE next_attempt_at <= {clock} AND lease_until <= {clock} "
                f"ORDER BY next_attempt_at, id LIMIT 1{self.sql.skip_locked}) "
                "RETURNING id, user_key, payload, attempts",
                (worker, lease_seconds),
            )
            if row is None:
                due = await self.sql.fetchone(
                    "SELECT min(CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END) "
                    f"- {clock} FROM pending_exchanges")
                return None, (max(0.0, float(due[0])) if due and due[0] is not None else None)
            try:
                return PendingExchange(int(row[0]), str(row[1]), QueuedExchange.from_json(row[2]), int(row[3]),
                                       worker), None
            except ValueError as exc:
                _log.warning("exchange %s set aside: its row cannot be read (details in failed_exchanges)", row[0])
                await self._move_to_failed(int(row[0]), worker, None, f"unreadable row: {exc}")

    async def release_all(self) -> None:
        """Let go of every claim: on SQLite, for the one bot that owns the file (`MemoryBot` holds DATA_DIR's lock),
        claims left by an earlier run that was killed."""
        await self.sql.execute("UPDATE pending_exchanges SET claimed_by = '', lease_until = 0 WHERE lease_until > 0")

    async def renew(self, exchange: PendingExchange, lease_seconds: float) -> bool:
        """Extend the worker's claim by `lease_seconds`; whether the exchange is still queued and claimed by this
        worker (forget-all removes a user's rows while they are worked on; another worker may take a claim whose
        lease ran out). A lease that ran out while nobody took the row over (the database was away longer than the
        lease) is still this worker's: the claim would have changed `claimed_by`."""
        return await self.sql.execute(
            f"UPDATE pending_exchanges SET lease_until = {self.sql.clock} + ? WHERE id = ? AND claimed_by = ?",
            (lease_seconds, exchange.id, exchange.worker)) > 0

    async def release(self, exchange: PendingExchange) -> None:
        """Give the claim back (the exchange keeps its place in the queue)."""
        await self.sql.execute("UPDATE pending_exchanges SET claimed_by = '', lease_until = 0 "
                               "WHERE id = ? AND claimed_by = ?", (exchange.id, exchange.worker))

    async def pending_count(self) -> int:
        row = await self.sql.fetchone("SELECT COUNT(*) FROM pending_exchanges")
        return int(row[0]) if row else 0

    async def save_progress(self, exchange: PendingExchange, record: QueuedExchange) -> None:
        """Keep what the worker has done so far (extracted facts, how many are stored) for a retry."""
        await self.sql.execute("UPDATE pending_exchanges SET payload = ? WHERE id = ? AND claimed_by = ?",
                               (record.to_json(), exchange.id, exchange.worker))

    async def done(self, exchange: PendingExchange) -> None:
        await self.sql.execute("DELETE FROM pending_exchanges WHERE id = ? AND claimed_by = ?",
                               (exchange.id, exchange.worker))

    async def retry_later(self, exchange: PendingExchange, delay: float) -> None:
        """Count a failed attempt, let go of the claim and try again in `delay` seconds."""
        await self.sql.execute(
            f"UPDATE pending_exchanges SET attempts = attempts + 1, next_attempt_at = {self.sql.clock} + ?, "
            "claimed_by = '', lease_until = 0 WHERE id = ? AND claimed_by = ?",
            (delay, exchange.id, exchange.worker),
        )

    async def set_aside(self, exchange: PendingExchange, error: str) -> None:
        """Move an exchange the model cannot turn into facts out of the queue, keeping it for inspection;
        only while it is still queued (a forget-all meanwhile has deleted it, and it must stay deleted)."""
        await self._move_to_failed(exchange.id, exchange.worker, exchange.record.to_json(), error)

    async def _move_to_failed(self, exchange_id: int, worker: str, payload: str | None, error: str) -> None:
        """Move a queued row that `worker` holds to `failed_exchanges` with `payload` (None: the one it has) and
        `error` (a row another worker took over meanwhile stays where it is)."""
        async with self.sql.transaction() as tx:
            await tx.execute(
                "INSERT INTO failed_exchanges "
                "(id, user_key, payload, error, failed_at, platform, workspace, channel, message_id) "
                "SELECT id, user_key, coalesce(?, payload), ?, ?, platform, workspace, channel, message_id "
                "FROM pending_exchanges WHERE id = ? AND claimed_by = ? "
                "ON CONFLICT (id) DO UPDATE SET user_key = excluded.user_key, payload = excluded.payload, "
                "error = excluded.error, failed_at = excluded.failed_at, platform = excluded.platform, "
                "workspace = excluded.workspace, channel = excluded.channel, message_id = excluded.message_id",
                (payload, error, time.time(), exchange_id, worker),
            )
            await tx.execute("DELETE FROM pending_exchanges WHERE id = ? AND claimed_by = ?", (exchange_id, worker))

    async def drop_set_aside(self, older_than_days: float) -> int:
        """Delete set-aside exchanges (they hold what users said) once they are this old; return how many."""
        return await self.sql.execute("DELETE FROM failed_exchanges WHERE failed_at < ?",
                                      (time.time() - older_than_days * 86400,))

    async def user_keys(self) -> set[str]:
        """Users with exchanges queued or set aside."""
        keys: set[str] = set()
        for table in _EXCHANGE_TABLES:
            keys.update(str(row[0]) for row in await self.sql.fetchall(f"SELECT DISTINCT user_key FROM {table}"))
        return keys

    async def fill_sources(self, stored: list[tuple[str, MessageRef]]) -> None:
        """Fill in `learned_from` once (see `open`): the (user key, message) pairs the memory store has facts
        from, and the exchanges queued or set aside."""
        now = time.time()
        await self.sql.executemany(
            "INSERT INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(ref.platform, ref.workspace, ref.channel_id or "", ref.message_id, user_key, now)
             for user_key, ref in stored],
        )
        for table in _EXCHANGE_TABLES:
            await self.sql.execute(
                "INSERT INTO learned_from (platform, workspace, channel, message_id, user_key, queued_at) "
                # `WHERE true`: SQLite reads ON CONFLICT after a bare SELECT as part of a join
                f"SELECT platform, workspace, channel, message_id, user_key, ? FROM {table} WHERE true "
                "ON CONFLICT DO NOTHING",
                (now,),
            )
        await self.upgraded(1)

    async def users_with_message(self, ref: MessageRef) -> set[str]:
        """Users whose exchange from this message was queued at some point (it may still be, or set aside)."""
        where, args = _message_filter(ref)
        rows = await self.sql.fetchall(f"SELECT DISTINCT user_key FROM learned_from WHERE {where}", args)
        return {str(row[0]) for row in rows}

    async def forget_exchanges(self, user_key: str, ref: MessageRef) -> None:
        """Drop this user's exchanges from this message, queued or set aside."""
        where, args = _message_filter(ref)
        async with self.sql.transaction() as tx:
            for table in _EXCHANGE_TABLES:
                await tx.execute(f"DELETE FROM {table} WHERE user_key = ? AND {where}", (user_key, *args))

    async def mark_forgetting(self, ref: MessageRef) -> None:
        """The facts of this message are about to be deleted (see `forgetting`)."""
        where, args = _message_filter(ref)
        await self.sql.execute(f"UPDATE learned_from SET forgetting = 1 WHERE {where}", args)

    async def forget_sources(self, ref: MessageRef) -> None:
        """The facts of this message are deleted: forget that it taught anything."""
        where, args = _message_filter(ref)
        await self.sql.execute(f"DELETE FROM learned_from WHERE {where}", args)

    async def forgetting(self) -> list[MessageRef]:
        """Messages whose facts were being deleted when the store failed."""
        rows = await self.sql.fetchall(
            "SELECT DISTINCT platform, workspace, channel, message_id FROM learned_from WHERE forgetting = 1")
        return [MessageRef(*map(str, row)) for row in rows]

    async def forget_user(self, user_key: str) -> None:
        """Drop everything queued or set aside for a user (their memories are being deleted)."""
        async with self.sql.transaction() as tx:
            for table in (*_EXCHANGE_TABLES, "learned_from"):
                await tx.execute(f"DELETE FROM {table} WHERE user_key = ?", (user_key,))

    # --- learning pauses

    async def set_paused(self, user_key: str, paused: bool) -> None:
        if paused:
            await self.sql.execute("INSERT INTO paused_users (user_key, paused_at) VALUES (?, ?) "
                                   "ON CONFLICT DO NOTHING", (user_key, time.time()))
        else:
            await self.sql.execute("DELETE FROM paused_users WHERE user_key = ?", (user_key,))

    async def is_paused(self, user_key: str) -> bool:
        return await self.sql.fetchone("SELECT 1 FROM paused_users WHERE user_key = ?", (user_key,)) is not None

    async def take_pause_notice(self, user_key: str) -> bool:
        """True once per pause: whether the user still has to be told that learning is paused."""
        return await self.sql.execute(
            "UPDATE paused_users SET notified = 1 WHERE user_key = ? AND notified = 0", (user_key,)) > 0

    # --- the whole state as records, for moving it to another database (bot/transfer.py)

    async def has_state(self) -> bool:
        """Whether anything is queued, set aside, learned from, paused or posted in here."""
        for state in STATE_TABLES.values():
            if await self.sql.fetchone(f"SELECT 1 FROM {state.table} LIMIT 1") is not None:
                return True
        return False

    async def state_records(self, page_size: int = 500) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(record type, fields) of every row of the state, table by table in `STATE_TABLES` order, a page at a
        time. A queued exchange's row id and claim belong to this database and are left out."""
        for kind, state in STATE_TABLES.items():
            columns = ", ".join(state.fields)
            offset = 0
            while rows := await self.sql.fetchall(f"SELECT {columns} FROM {state.table} ORDER BY {state.order} "
                                                  "LIMIT ? OFFSET ?", (page_size, offset)):
                for row in rows:
                    yield kind, dict(zip(state.fields, row, strict=True))
                offset += len(rows)

    async def load_state(self, kind: str, records: list[dict[str, Any]]) -> int:
        """Add `records` of one type (fields as `state_records` gives them) in one transaction; a record the
        state has already is left alone, so loading twice adds nothing. Returns how many were added.

        A queued exchange is added unless this user's message is known here already (queued, set aside, or
        learned from: `learned_from`, loaded after the queue, names it), so an exchange learned since an
        earlier load is not queued again. A set-aside exchange keeps its id unless that id is taken here; the
        queue's ids then start above every set-aside one (an exchange set aside later keeps its queue id)."""
        state = STATE_TABLES[kind]
        added = 0
        async with self.sql.transaction() as tx:
            for record in records:
                values = tuple(record[field] for field in state.fields)
                if kind == "pending":
                    added += await _load_pending(tx, record, values)
                elif kind == "set_aside":
                    added += await _load_set_aside(tx, record, values)
                else:
                    added += await tx.execute(_insert(state) + " ON CONFLICT DO NOTHING", values)
            if kind == "set_aside" and added:
                await self._ids_above_set_aside(tx)
        return added

    async def _ids_above_set_aside(self, tx: Any) -> None:
        """Make the queue number its next rows above every set-aside id."""
        [(highest,)] = await tx.fetchall("SELECT coalesce(max(id), 0) FROM failed_exchanges")
        await self.sql.number_above(tx, "pending_exchanges", int(highest))


@dataclass(frozen=True)
class StateTable:
    """One table of the state as records: its fields (name and the JSON type of the value: str, int or float)
    and the order its rows are read in."""

    table: str
    fields: dict[str, type]
    order: str


_SOURCE_FIELDS: dict[str, type] = {column: str for column in _SOURCE_COLUMNS}
# Record type -> table, in the order an export writes them: the queue before `learned_from` (see `load_state`).
STATE_TABLES = {
    "pending": StateTable("pending_exchanges", {"user_key": str, "payload": str, "attempts": int,
                                                "next_attempt_at": float, "created_at": float, **_SOURCE_FIELDS},
                          "id"),
    "set_aside": StateTable("failed_exchanges", {"id": int, "user_key": str, "payload": str, "error": str,
                                                 "failed_at": float, **_SOURCE_FIELDS}, "id"),
    "learned_from": StateTable("learned_from", {**_SOURCE_FIELDS, "user_key": str, "queued_at": float,
                                                "forgetting": int},
                               "platform, workspace, message_id, channel, user_key"),
    "paused": StateTable("paused_users", {"user_key": str, "paused_at": float, "notified": int}, "user_key"),
    "bot_thread": StateTable("bot_threads", {"channel": str, "thread_ts": str}, "channel, thread_ts"),
}


async def _load_pending(tx: Any, record: dict[str, Any], values: tuple[Any, ...]) -> int:
    known = await tx.fetchall(
        "SELECT 1 FROM learned_from WHERE user_key = ? AND platform = ? AND workspace = ? AND channel = ? "
        "AND message_id = ? UNION ALL SELECT 1 FROM pending_exchanges WHERE user_key = ? AND platform = ? "
        "AND workspace = ? AND channel = ? AND message_id = ? AND created_at = ?",
        (*_user_message(record), *_user_message(record), record["created_at"]))
    if known:
        return 0
    return await tx.execute(_insert(STATE_TABLES["pending"]), values)


async def _load_set_aside(tx: Any, record: dict[str, Any], values: tuple[Any, ...]) -> int:
    if await tx.fetchall("SELECT 1 FROM failed_exchanges WHERE user_key = ? AND platform = ? AND workspace = ? "
                         "AND channel = ? AND message_id = ? AND failed_at = ?",
                         (*_user_message(record), record["failed_at"])):
        return 0
    taken = await tx.fetchall("SELECT 1 FROM failed_exchanges WHERE id = ? UNION ALL "
                              "SELECT 1 FROM pending_exchanges WHERE id = ?", (record["id"], record["id"]))
    if taken:
        [(highest,)] = await tx.fetchall("SELECT max(m) FROM (SELECT coalesce(max(id), 0) AS m FROM failed_exchanges "
                                         "UNION ALL SELECT coalesce(max(id), 0) FROM pending_exchanges) AS ids")
        values = (int(highest) + 1, *values[1:])
    return await tx.execute(_insert(STATE_TABLES["set_aside"]), values)


def _insert(state: StateTable) -> str:
    """The INSERT of one record of `state` (values in its fields' order)."""
    return f"INSERT INTO {state.table} ({', '.join(state.fields)}) VALUES ({', '.join('?' * len(state.fields))})"


def _user_message(record: dict[str, Any]) -> tuple[str, ...]:
    return (record["user_key"], *(record[column] for column in _SOURCE_COLUMNS))
