"""What a platform adapter keeps across restarts, in the bot's own database (`bot/database.py`): the ids of events
already handled, so a platform's retry is never answered twice (by this process or, on PostgreSQL, by any replica),
and the threads the bot has posted in, so a follow-up there is answered without a mention.

Slack is the platform that needs both today. Event ids are kept `SEEN_EVENTS_DAYS` (retries come within minutes);
the threads stay, and travel with `memorybot admin export` (`bot_thread` records), so a bot moved to other settings
still follows the threads it was in.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from bot.settings import SettingsError
from bot.sql import Sql, SqliteSql

_log = logging.getLogger(__name__)

SEEN_EVENTS_DAYS = 2
OLD_STATE_FILE = "slack.sqlite3"  # in DATA_DIR: where the Slack adapter kept this state before it moved here
_DAY = 86400.0
_ADD_EVENT = "INSERT INTO seen_events (event_id, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING"
_ADD_THREAD = "INSERT INTO bot_threads (channel, thread_ts) VALUES (?, ?) ON CONFLICT DO NOTHING"


class PlatformState:
    """Event ids handled and threads posted in, over the bot database's `sql`."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql
        self._threads: set[tuple[str, str]] = set()  # write-through cache of bot_threads
        self._pruned_at = 0.0  # the first event prunes

    async def first_delivery(self, event_id: str) -> bool:
        """Record `event_id`; true only the first time it is seen (later ones are the platform's retries)."""
        now = time.time()
        if now - self._pruned_at > _DAY:  # keep the table to recent days, also in a long-running process
            self._pruned_at = now
            await self._sql.execute("DELETE FROM seen_events WHERE seen_at < ?", (now - SEEN_EVENTS_DAYS * _DAY,))
        return await self._sql.execute(_ADD_EVENT, (event_id, now)) == 1

    async def add_thread(self, channel: str, thread_ts: str) -> None:
        """Remember a thread the bot posted in. A database that is away costs only this (the next post in the
        thread tries again), never the reply being posted."""
        if (channel, thread_ts) in self._threads:
            return
        try:
            await self._sql.execute(_ADD_THREAD, (channel, thread_ts))
        except Exception as exc:  # the database's errors vary (psycopg, its pool, SQLite)
            _log.warning("could not record the thread the bot posted in (%s); trying again on its next post",
                         type(exc).__name__)
            return
        self._threads.add((channel, thread_ts))

    async def in_thread(self, channel: str, thread_ts: str) -> bool:
        """Whether the bot has posted in this thread."""
        if (channel, thread_ts) in self._threads:
            return True
        return await self._sql.fetchone(
            "SELECT 1 FROM bot_threads WHERE channel = ? AND thread_ts = ?", (channel, thread_ts)) is not None

    async def move_in(self, data_dir: Path) -> None:
        """Take over the SQLite file the Slack adapter kept this state in before it moved here (`OLD_STATE_FILE`
        in `data_dir`), when a bot starts and before `admin export`: its rows are added in
        one transaction, then the file is deleted. Killed between the two, the next open adds them again, which
        adds nothing (a file that cannot be deleted is left with a warning). The file is only read, so a read-only
        `data_dir` is no obstacle."""
        path = data_dir / OLD_STATE_FILE
        if not path.exists():
            return
        try:
            old = await SqliteSql.open_to_read(path)  # nothing writes it any more: an older version did
            try:
                tables = {name for (name,) in await old.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
                events = (await old.fetchall("SELECT event_id, seen_at FROM seen_events")
                          if "seen_events" in tables else [])
                threads = (await old.fetchall("SELECT channel, thread_ts FROM bot_threads")
                           if "bot_threads" in tables else [])
            finally:
                await old.close()
        except sqlite3.DatabaseError as exc:
            raise SettingsError(f"{path} (this bot's state from an older version) cannot be read ({exc}): move it "
                                "aside or delete it (it holds event ids and threads the bot posted in)") from None
        async with self._sql.transaction() as tx:
            for row in events:
                await tx.execute(_ADD_EVENT, row)
            for row in threads:
                await tx.execute(_ADD_THREAD, row)
        try:
            for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                leftover.unlink(missing_ok=True)
        except OSError as exc:  # the rows are in: moving them in again on the next open adds nothing
            _log.warning("moved the state of %s into the bot's database but could not delete the file (%s); "
                         "delete it by hand", path.name, type(exc).__name__)
        _log.info("moved %d thread(s) and %d recent event id(s) from %s into the bot's database",
                  len(threads), len(events), path.name)
