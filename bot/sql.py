"""One SQL connection for the bot's own state, on SQLite (aiosqlite, the embedded default) or PostgreSQL (psycopg 3
async with a connection pool, for several bot processes sharing one state).

Queries are written once, in the SQL both engines speak (`?` placeholders, `ON CONFLICT`, `RETURNING`); the
PostgreSQL side turns `?` into psycopg's `%s`. What differs is said here and only here: the column type of an id
that numbers itself (`SERIAL` in schemas), the `FOR UPDATE SKIP LOCKED` that lets several processes claim queue
rows without waiting on each other (`skip_locked`), the database's clock (`clock`), where a file's one-time
upgrade version is kept, how an id's numbering is moved on (`number_above`), and `lock`, which on PostgreSQL is
an advisory lock all processes see and on SQLite (one process per DATA_DIR) a no-op; a `try_lock(keep=True)` is
taken again by whichever call makes a lost lock connection again, and `keep_locks` watches for that (one refused is
tried again: the server may not have ended the old connection holding it yet). (The upgrade of SQLite files from
before some columns is SQLite's alone: bot/database.py `_add_columns`.)

Each call commits by itself; `transaction()` groups statements that must land together.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

_log = logging.getLogger(__name__)

Row = tuple[Any, ...]
Args = Sequence[Any]

MIN_SQLITE = (3, 35)
LOCK_POLL_SECONDS = (0.005, 0.2)  # first and longest wait between tries of a lock another process holds
LOCK_CHECK_SECONDS = 5.0  # how often `keep_locks` looks whether the locks' connection is still there
# How long a kept lock that a new lock connection could not take again is tried again before another process
# holding it counts as having taken it: after a network drop the server may keep the old connection, and its locks,
# until it notices (one of this process's own old connections holding it is ended at once instead).
KEPT_LOCK_GRACE_SECONDS = 5.0  # one LOCK_CHECK_SECONDS: a takeover is told soon, two processes never run a shard long


class SqlError(RuntimeError):
    """The state database failed (unreachable server, broken file)."""


class LockLost(SqlError):
    """A lock this process holds went with its database connection, and another process has it now."""


# The server sessions holding the advisory lock of a 64-bit id (given as its high and low 32 bits), with their start,
# which tells this process's old connections from other processes' (a process id alone may be a new session's).
# A session ending has no row in pg_stat_activity any more: it holds no lock for long.
_HOLDERS = ("SELECT a.pid, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s")


class Sql:
    """The calls both engines offer. `shared` says whether other processes see the same state."""

    shared = False
    skip_locked = ""  # appended to a `SELECT ... LIMIT 1` that claims a row
    # The database's own time in seconds since 1970, as SQL: what leases and retry times are set and compared
    # with, so processes on machines whose clocks disagree still agree on when a claim runs out.
    clock = "((julianday('now') - 2440587.5) * 86400.0)"

    async def execute(self, query: str, args: Args = ()) -> int:
        """Run one statement and commit; the number of rows it changed."""
        raise NotImplementedError

    async def executemany(self, query: str, rows: Iterable[Args]) -> None:
        raise NotImplementedError

    async def fetchall(self, query: str, args: Args = ()) -> list[Row]:
        raise NotImplementedError

    async def fetchone(self, query: str, args: Args = ()) -> Row | None:
        rows = await self.fetchall(query, args)
        return rows[0] if rows else None

    def transaction(self) -> Any:
        """`async with sql.transaction() as tx:` runs `tx.execute`/`tx.fetchall` as one transaction."""
        raise NotImplementedError

    def lock(self, key: str) -> Any:
        """`async with sql.lock(key):` holds a lock every process sharing this state respects."""
        raise NotImplementedError

    def try_lock(self, key: str, *, shared: bool = False, keep: bool = False) -> Any:
        """`async with sql.try_lock(key) as held:` holds the lock if no other process does (`held` says whether
        it could), without waiting; `shared` ones may be held by several processes at once, but not beside an
        exclusive one. For what one process must run alone for as long as it runs. A `keep` lock is taken again
        when its connection is made again (see `keep_locks`)."""
        raise NotImplementedError

    async def keep_locks(self) -> None:
        """Run beside work that holds a `keep` lock for as long as it runs: every LOCK_CHECK_SECONDS, look whether
        the locks' connection is still there, and make it again if not (a server restart drops a connection's
        locks; the `keep` ones are taken again on the new connection, whichever call makes it, and one refused
        is tried again). Raises LockLost if another process took one of them meanwhile (it still holds it
        KEPT_LOCK_GRACE_SECONDS after the connection was made again); never returns."""
        await asyncio.Event().wait()  # SQLite: one process per DATA_DIR, nothing to lose

    async def number_above(self, tx: Any, table: str, highest: int) -> None:
        """Make `table`'s `SERIAL` id give its next rows numbers above `highest` (inside transaction `tx`)."""
        raise NotImplementedError

    async def version(self) -> int:
        """Which one-time upgrade this state has seen (0 for new state)."""
        raise NotImplementedError

    async def set_version(self, version: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def sqlite_schema(schema: str) -> str:
    return schema.replace("SERIAL", "INTEGER PRIMARY KEY AUTOINCREMENT")


def postgres_schema(schema: str) -> str:
    return schema.replace("SERIAL", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")


class SqliteSql(Sql):
    """A SQLite file in WAL mode on one connection; statements run one at a time on aiosqlite's thread. Tasks
    share the connection, so each statement or transaction holds `_turn`: another task's statement must not land
    inside (and commit) a transaction still under way."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, schema: str) -> SqliteSql:
        """Open (creating it if needed) the file with `schema` applied."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # RETURNING, and ON CONFLICT after INSERT ... SELECT
            raise SqlError(f"memorybot needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python has "
                           f"{sqlite3.sqlite_version}")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA secure_delete=ON")  # deleted rows (what users said) are overwritten, not kept
            await db.executescript(sqlite_schema(schema))
            await db.commit()
        except BaseException:
            await db.close()
            raise
        return cls(db)

    @classmethod
    async def open_to_read(cls, path: Path) -> SqliteSql:
        """Open an existing file to read it only, writing nothing, not even beside it, so a file in a folder this
        process may not write to (a read-only DATA_DIR) is read all the same. A reader of a file in WAL mode (as
        `open` leaves them) needs its -shm file, which such a folder cannot give it, unless the file is opened as
        immutable: that is what a file nothing writes any more (the caller's to know) is when no -wal or -journal
        file beside it holds rows not in the file itself yet."""
        pending = any(path.with_name(path.name + end).exists() for end in ("-wal", "-journal"))
        uri = f"{path.resolve().as_uri()}?mode=ro{'' if pending else '&immutable=1'}"
        return cls(await aiosqlite.connect(uri, uri=True))

    async def execute(self, query: str, args: Args = ()) -> int:
        async with self._statement():
            cursor = await self.db.execute(query, tuple(args))
            await self.db.commit()
            return cursor.rowcount

    async def executemany(self, query: str, rows: Iterable[Args]) -> None:
        async with self._statement():
            await self.db.executemany(query, [tuple(r) for r in rows])
            await self.db.commit()

    async def fetchall(self, query: str, args: Args = ()) -> list[Row]:
        async with self._statement():
            async with self.db.execute(query, tuple(args)) as cursor:
                rows = await cursor.fetchall()
            if self.db.in_transaction:  # an UPDATE ... RETURNING
                await self.db.commit()
            return [tuple(r) for r in rows]

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[None]:
        """One statement's turn; a failed one leaves no transaction open (sqlite3 opens one before a write)."""
        async with self._turn:
            try:
                yield
            except BaseException:
                if self.db.in_transaction:
                    await self.db.rollback()
                raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTransaction]:
        async with self._turn:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self.db)
            except BaseException:
                await self.db.rollback()
                raise
            await self.db.commit()

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        yield  # one process per DATA_DIR: the caller's in-process lock is all there is to hold

    @asynccontextmanager
    async def try_lock(self, key: str, *, shared: bool = False, keep: bool = False) -> AsyncIterator[bool]:
        yield True  # one process per DATA_DIR (bot.app.lock_data_dir): no other process to hold it

    async def number_above(self, tx: Any, table: str, highest: int) -> None:
        # AUTOINCREMENT counts in sqlite_sequence, which has no row for a table that never had one
        await tx.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 "
                         "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)", (table, table))
        await tx.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (highest, table))

    async def version(self) -> int:
        return int((await self.fetchone("PRAGMA user_version") or (0,))[0])

    async def set_version(self, version: int) -> None:
        await self.execute(f"PRAGMA user_version = {int(version)}")

    async def close(self) -> None:
        await self.db.close()


class _SqliteTransaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, query: str, args: Args = ()) -> int:
        cursor = await self._db.execute(query, tuple(args))
        return cursor.rowcount

    async def fetchall(self, query: str, args: Args = ()) -> list[Row]:
        async with self._db.execute(query, tuple(args)) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]


def _postgres(query: str, args: Args) -> tuple[str, tuple[Any, ...] | None]:
    """psycopg's form of a query: `%s` placeholders; no arguments at all lets a schema hold several statements."""
    if not args:
        return query, None
    return query.replace("%", "%%").replace("?", "%s"), tuple(args)


def _lock_id(key: str) -> int:
    """A 64-bit advisory lock id for `key` (two keys sharing one only wait for each other)."""
    data = key.encode()
    return ((zlib.crc32(data) << 32) | zlib.adler32(data)) - (1 << 63)


class PostgresSql(Sql):
    """A pool of connections to one PostgreSQL database that several bot processes share. `schema` is applied
    once per database, under an advisory lock, so processes starting together do not race."""

    shared = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    clock = "extract(epoch from statement_timestamp())::double precision"  # stable: index conditions may use it

    def __init__(self, pool: Any, url: str, timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._locks: Any = None  # one connection holding this process's advisory locks
        self._locks_guard = asyncio.Lock()
        self._giving_back: set[asyncio.Future[bool]] = set()  # unlocks of tries granted after their caller left
        self._kept: Counter[tuple[str, int]] = Counter()  # (kind, id) of the `keep` locks held, to take again
        self._missing: Counter[tuple[str, int]] = Counter()  # those the lock connection has not taken again yet
        self._missing_since = 0.0  # when the lock connection was made again (time.monotonic)
        # (backend pid, start) of each lock connection this process made, and whether this process ended it: a
        # kept lock one of them still holds is this process's own
        self._sessions: dict[Row, bool] = {}
        self._lost = False  # another process took a `keep` lock while its connection was away

    @classmethod
    async def open(cls, url: str, schema: str, *, timeout: float = 15.0, max_size: int = 8) -> PostgresSql:
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:
            raise SqlError("DATABASE_URL needs psycopg 3 and psycopg-pool (the `pgvector` extra)") from exc
        pool = AsyncConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=timeout,
                                   kwargs={"autocommit": True})
        try:
            await pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            await pool.close()
            raise SqlError(f"cannot reach the PostgreSQL server of DATABASE_URL within {timeout:.0f} s "
                           f"({type(exc).__name__})") from exc
        sql = cls(pool, url, timeout)
        try:
            async with sql.transaction() as tx:
                await tx.execute("SELECT pg_advisory_xact_lock(?)", (_lock_id("memorybot schema"),))
                await tx.execute(postgres_schema(schema))
        except BaseException:
            await sql.close()
            raise
        return sql

    async def execute(self, query: str, args: Args = ()) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(*_postgres(query, args))
            return int(cursor.rowcount)

    async def executemany(self, query: str, rows: Iterable[Args]) -> None:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(query.replace("%", "%%").replace("?", "%s"), [tuple(r) for r in rows])

    async def fetchall(self, query: str, args: Args = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(*_postgres(query, args))
            return [tuple(r) for r in await cursor.fetchall()]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTransaction]:
        async with self._pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Try the advisory lock without blocking the lock connection (other keys stay free), waiting longer
        between tries, up to LOCK_POLL_SECONDS[1]. The server drops the locks of a process that dies."""
        lock_id, wait = _lock_id(key), LOCK_POLL_SECONDS[0]
        while not await self._uncancelled("SELECT pg_try_advisory_lock(%s)", lock_id):
            await asyncio.sleep(wait)
            wait = min(wait * 2, LOCK_POLL_SECONDS[1])
        try:
            yield
        finally:
            await self._uncancelled("SELECT pg_advisory_unlock(%s)", lock_id)

    @asynccontextmanager
    async def try_lock(self, key: str, *, shared: bool = False, keep: bool = False) -> AsyncIterator[bool]:
        kind = "_shared" if shared else ""
        lock_id, kept = _lock_id(key), (kind if keep else None)
        unlock = f"SELECT pg_advisory_unlock{kind}(%s)"
        held = await self._uncancelled(f"SELECT pg_try_advisory_lock{kind}(%s)", lock_id, undo=unlock, kept=kept)
        try:
            yield held
        finally:
            if held:
                await self._uncancelled(unlock, lock_id, kept=kept)

    async def keep_locks(self) -> None:
        while True:
            retrying = bool(+self._missing) and time.monotonic() - self._missing_since < KEPT_LOCK_GRACE_SECONDS
            await asyncio.sleep(LOCK_POLL_SECONDS[1] if retrying else LOCK_CHECK_SECONDS)
            if +self._kept:
                try:
                    async with self._locks_guard:
                        await self._keep()
                except Exception as exc:  # the server still away: nobody can take the locks meanwhile; try again
                    _log.warning("the connection holding this process's locks is lost and cannot be made again "
                                 "yet (%s); trying again in %.0f s", type(exc).__name__, LOCK_CHECK_SECONDS)
            if self._lost:
                raise LockLost("another process took a lock of this one while its database connection was away "
                               "(a PostgreSQL restart?); stopping what the lock was for")

    async def _keep(self) -> None:
        """One look of `keep_locks` (the caller holds `_locks_guard`): the lock connection is made again if it is
        gone (and with it the locks it held), and the kept locks it still lacks are tried again."""
        if self._locks is not None and not self._locks.closed:
            try:
                await self._locks.execute("SELECT 1")
            except Exception:  # psycopg's OperationalError, or the socket's
                await self._locks.close()
        connection = await self._lock_connection()
        if +self._missing:
            await self._retake(connection)
        if +self._missing:
            await self._check_missing(connection)

    async def _uncancelled(self, query: str, lock_id: int, undo: str | None = None, kept: str | None = None) -> bool:
        """A lock call that runs to its end even if the caller is cancelled meanwhile: a cancelled try could
        otherwise leave the lock granted on the server, held by nobody, until the process ends. A try granted after
        its caller was cancelled is given back (`undo`, for the tries of other kinds than `lock`'s). `kept`: see
        `_on_lock_connection`."""
        if undo is None and "unlock" not in query:
            undo = "SELECT pg_advisory_unlock(%s)"
        call = asyncio.ensure_future(self._on_lock_connection(query, lock_id, kept))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._after_cancel(done, lock_id, undo, kept))
            raise

    def _after_cancel(self, call: asyncio.Future[bool], lock_id: int, undo: str | None, kept: str | None) -> None:
        """A lock call whose caller was cancelled has ended: a lock it was granted is given back (`undo`; its
        failure is only logged: the caller is gone, and the server drops the lock with the connection anyway)."""
        self._giving_back.discard(call)
        if call.cancelled():
            return
        if (error := call.exception()) is not None:
            _log.warning("an advisory lock call failed after its caller stopped: %s", type(error).__name__)
        elif undo is not None and call.result():
            unlock = asyncio.ensure_future(self._on_lock_connection(undo, lock_id, kept))
            self._giving_back.add(unlock)
            unlock.add_done_callback(lambda done: self._after_cancel(done, lock_id, None, None))

    async def _on_lock_connection(self, query: str, lock_id: int, kept: str | None = None) -> bool:
        """Run a lock call on the lock connection, connecting it first if it is not open (the first call, or
        after the server went away: the locks it held went with it, and the caller's call fails). For a `keep`
        lock, `kept` is its kind: one granted is counted among the locks to take again, and one let go no longer
        is, while `_locks_guard` is held, so a connection made again takes again exactly the ones held. One let go
        that the connection has not taken again yet has nothing to unlock."""
        import psycopg

        letting_go = "unlock" in query
        async with self._locks_guard:
            if kept is not None and letting_go:
                self._kept[kept, lock_id] -= 1
                if self._missing[kept, lock_id] > 0:
                    self._missing[kept, lock_id] -= 1
                    return False
            connection = await self._lock_connection()
            try:
                cursor = await connection.execute(query, (lock_id,))
                row = await cursor.fetchone()
            except psycopg.OperationalError:
                await connection.close()  # connected again on the next call
                raise
            done = bool(row and row[0])
            if kept is not None and done and not letting_go:
                self._kept[kept, lock_id] += 1
        return done

    async def _lock_connection(self) -> Any:
        """The lock connection (the caller holds `_locks_guard`), made again if it is not open. Its server session
        is noted (`_sessions`). On a new one the `keep` locks are taken again (`_retake`), since the server let go
        of them with the old one, or will once it notices that it is gone. A failure midway closes it, so the next
        call starts over."""
        import psycopg

        if self._locks is not None and not self._locks.closed:
            return self._locks
        self._locks = connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                                         connect_timeout=int(self._timeout))
        try:
            cursor = await connection.execute("SELECT pid, backend_start FROM pg_stat_activity "
                                              "WHERE pid = pg_backend_pid()")
            session = await cursor.fetchone()
            self._sessions[tuple(session)] = False
            self._missing, self._missing_since = +self._kept, time.monotonic()  # a count of 0 dropped
            if self._missing:
                await self._retake(connection)
                if self._missing:
                    _log.warning("the connection holding this process's locks was lost; %d kept lock(s) are still "
                                 "held elsewhere (an old connection the server has not ended yet?): trying again",
                                 sum(self._missing.values()))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _retake(self, connection: Any) -> None:
        """Take again on `connection` the kept locks it lacks (the caller holds `_locks_guard`). One refused stays
        in `_missing`, for `keep_locks` to try again."""
        for (kind, lock_id), times in (+self._missing).items():
            for _ in range(times):
                cursor = await connection.execute(f"SELECT pg_try_advisory_lock{kind}(%s)", (lock_id,))
                row = await cursor.fetchone()
                if not (row and row[0]):
                    break
                self._missing[kind, lock_id] -= 1
        if not +self._missing:
            _log.warning("the connection holding this process's locks was lost; took its %d kept lock(s) again",
                         sum((+self._kept).values()))

    async def _check_missing(self, connection: Any) -> None:
        """Look who holds the kept locks `connection` could not take again (the caller holds `_locks_guard`). An
        old lock connection of this process holds them for it (after a network drop the server keeps a session
        until it notices it is gone): it is ended, so they can be taken again. Another process still holding one
        KEPT_LOCK_GRACE_SECONDS after the connection was made again took it: it is lost (`keep_locks` raises)."""
        late = time.monotonic() - self._missing_since >= KEPT_LOCK_GRACE_SECONDS
        for _, lock_id in +self._missing:
            cursor = await connection.execute(_HOLDERS, ((lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF))
            for session in await cursor.fetchall():
                ended = self._sessions.get(tuple(session))
                if ended is None:
                    self._lost |= late
                elif not ended:
                    self._sessions[tuple(session)] = True
                    await connection.execute("SELECT pg_terminate_backend(%s)", (session[0],))
                    _log.warning("an old connection of this process, which the server has not ended yet, still "
                                 "holds its kept lock(s): ended it, to take them again")

    async def number_above(self, tx: Any, table: str, highest: int) -> None:
        await tx.execute("SELECT setval(pg_get_serial_sequence(?, 'id'), greatest(?, nextval(pg_get_serial_sequence("
                         "?, 'id'))))", (table, highest, table))

    async def version(self) -> int:
        row = await self.fetchone("SELECT value FROM memorybot_meta WHERE key = 'version'")
        return int(row[0]) if row else 0

    async def set_version(self, version: int) -> None:
        await self.execute("INSERT INTO memorybot_meta (key, value) VALUES ('version', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (int(version),))

    async def close(self) -> None:
        if self._locks is not None:
            await self._locks.close()
        await self._pool.close()


class _PostgresTransaction:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, query: str, args: Args = ()) -> int:
        cursor = await self._conn.execute(*_postgres(query, args))
        return int(cursor.rowcount)

    async def fetchall(self, query: str, args: Args = ()) -> list[Row]:
        cursor = await self._conn.execute(*_postgres(query, args))
        return [tuple(r) for r in await cursor.fetchall()]


POSTGRES_META = "CREATE TABLE IF NOT EXISTS memorybot_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);"


async def open_sql(url: str, path: Path, schema: str) -> Sql:
    """PostgreSQL at `url` if one is set, else the SQLite file at `path`; `schema` applied either way."""
    if url:
        return await PostgresSql.open(url, POSTGRES_META + schema)
    return await SqliteSql.open(path, schema)
