"""The bot's state in PostgreSQL, shared by several processes (two `BotDatabase`s on one database stand for two
processes): queue rows are claimed once each, a claim whose lease ran out is taken over, locks, pauses and
conversation history are seen by every process, and a Slack retry reaching another replica is not answered
twice. On SQLite, a claim left by a killed process is let go when the file is opened again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import MemoryBot
from bot.database import BotDatabase
from bot.exchange import QueuedExchange
from bot.history import ConversationHistory, Turn
from bot.message import MessageRef
from bot.platform_state import PlatformState
from bot.settings import SettingsError
from bot.sql import LockLost, PostgresSql, _lock_id
from memory.records import MESSAGE, Source
from tests.bot.helpers import message
from tests.fakes.model import ScriptedBackend
from tests.servers.postgres import PostgresServer

DANA = "slack:T1:dana"


def exchange(n: int) -> QueuedExchange:
    source = Source(platform="slack", workspace="T1", channel="C1", message_id=f"m{n}", link="",
                    time="2026-12-01T10:00:00+00:00", origin="extracted", private=False)
    return QueuedExchange(text=f"message {n}", reply="ok", source=source)


@pytest.fixture
async def two(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[tuple[BotDatabase, BotDatabase]]:
    """Two processes' views of one shared state."""
    url = postgres.new_database()
    first, second = BotDatabase(tmp_path / "a.sqlite3", url), BotDatabase(tmp_path / "b.sqlite3", url)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


async def test_two_workers_claim_each_exchange_once(two):
    first, second = two
    queued = {await first.enqueue(DANA, exchange(n)) for n in range(30)}
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    async def work(db: BotDatabase, name: str) -> None:
        while True:
            pending, _ = await db.claim(name, 60)
            if pending is None:
                return
            claimed[name].append(pending.id)
            await asyncio.sleep(0)  # let the other one in between claim and done
            await db.done(pending)

    await asyncio.gather(work(first, "a"), work(second, "b"), work(first, "a"), work(second, "b"))
    assert sorted(claimed["a"] + claimed["b"]) == sorted(queued)  # every one, none twice
    assert claimed["a"] and claimed["b"]
    assert not (await first.pending_count() or await second.pending_count())


async def test_a_claim_is_taken_over_when_its_lease_runs_out(two):
    first, second = two
    await first.enqueue(DANA, exchange(1))
    mine, _ = await first.claim("a", 0.5)
    assert mine is not None
    nothing, free_at = await second.claim("b", 60)
    assert nothing is None and free_at is not None  # claimed: the other waits for the lease
    await asyncio.sleep(0.6)  # the first process died (it renews no more)
    taken, _ = await second.claim("b", 60)
    assert taken is not None and taken.id == mine.id
    assert not await first.renew(mine, 60) and await second.renew(taken, 60)
    await first.done(mine)  # too late: it no longer holds it, so the row stays for the new owner
    assert await second.pending_count() == 1
    assert not await first.renew(mine, 60)
    await second.done(taken)
    assert await second.pending_count() == 0


async def test_a_renewed_claim_is_kept_and_a_released_one_is_free(two):
    first, second = two
    await first.enqueue(DANA, exchange(1))
    mine, _ = await first.claim("a", 0.5)
    assert mine is not None
    for _ in range(3):
        await asyncio.sleep(0.25)
        assert await first.renew(mine, 0.5)
        assert (await second.claim("b", 60))[0] is None
    await first.release(mine)  # gave way to a reply
    taken, _ = await second.claim("b", 60)
    assert taken is not None and taken.id == mine.id


async def test_pauses_and_forgetting_are_seen_by_every_process(two):
    first, second = two
    await first.set_paused(DANA, True)
    assert await second.is_paused(DANA)
    assert await second.take_pause_notice(DANA) and not await first.take_pause_notice(DANA)
    await first.enqueue(DANA, exchange(1))
    claimed, _ = await second.claim("b", 60)
    assert claimed is not None
    await first.forget_user(DANA)  # forget-all on one replica while the other works on the exchange
    assert not await second.renew(claimed, 60)


async def test_a_lock_held_by_one_process_keeps_the_other_waiting(postgres: PostgresServer):
    url = postgres.new_database()
    one, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with one.lock("user:slack:T1:dana"):
            waiting = asyncio.create_task(other.lock("user:slack:T1:dana").__aenter__())
            async with other.lock("user:slack:T1:sam"):  # another key is free meanwhile
                pass
            await asyncio.sleep(0.3)
            assert not waiting.done()
        await asyncio.wait_for(waiting, 5)
    finally:
        await one.close()
        await other.close()


async def test_a_slack_retry_reaching_another_replica_is_not_answered_twice(two):
    first, second = two
    a, b = PlatformState(first.sql), PlatformState(second.sql)
    assert await a.first_delivery("Ev1")
    assert not await b.first_delivery("Ev1")
    await a.add_thread("C1", "1.000")
    assert await b.in_thread("C1", "1.000")


async def test_a_thread_the_database_could_not_record_is_recorded_on_the_next_post(tmp_path):
    """Recording a thread the bot posted in never breaks off the reply: a failed write is logged and tried again."""
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    try:
        state = PlatformState(db.sql)
        await db.sql.execute("ALTER TABLE bot_threads RENAME TO away")  # the write fails as on a lost server
        await state.add_thread("C1", "1.000")
        await db.sql.execute("ALTER TABLE away RENAME TO bot_threads")
        assert not await state.in_thread("C1", "1.000")
        await state.add_thread("C1", "1.000")
        assert await state.in_thread("C1", "1.000")
    finally:
        await db.close()


async def test_event_ids_older_than_two_days_are_let_go(tmp_path, monkeypatch):
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    try:
        state = PlatformState(db.sql)
        assert await state.first_delivery("Ev1")
        later = time.time() + 3 * 86400
        monkeypatch.setattr(time, "time", lambda: later)
        assert await PlatformState(db.sql).first_delivery("Ev2")  # a restart, three days on: prunes
        assert await db.sql.fetchall("SELECT event_id FROM seen_events") == [("Ev2",)]
    finally:
        await db.close()


async def test_state_opened_by_processes_starting_together_is_made_once(postgres: PostgresServer, tmp_path):
    url = postgres.new_database()
    dbs = [BotDatabase(tmp_path / f"{n}.sqlite3", url) for n in range(4)]
    await asyncio.gather(*(db.open() for db in dbs))
    try:
        await dbs[0].upgraded(2)
        assert await dbs[3].sql.version() == 2
    finally:
        await asyncio.gather(*(db.close() for db in dbs))


async def test_on_sqlite_a_killed_process_claim_is_let_go_on_the_next_start(make_settings):
    settings = make_settings()
    db = BotDatabase(settings.database_path)
    await db.open()
    await db.enqueue("console:local:dana", exchange(1))
    assert (await db.claim("killed", 3600))[0] is not None
    await db.close()  # as if killed: the claim was never given back, its lease runs for an hour
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        await bot.writeback.drain(timeout=60)  # learned now, not in an hour
        [memory] = await bot.store.list("console:local:dana", kinds=(MESSAGE,))
        assert memory.text == "message 1"


async def test_a_lost_lease_is_not_held_and_cannot_set_aside_the_new_owners_exchange(two):
    first, second = two
    await first.enqueue(DANA, exchange(1))
    mine, _ = await first.claim("a", 0.2)
    assert mine is not None
    await asyncio.sleep(0.3)
    assert await first.renew(mine, 0.2)  # run out, but nobody took it: still this worker's (the database was away)
    await asyncio.sleep(0.3)
    taken, _ = await second.claim("b", 60)  # run out again: taken over
    assert taken is not None
    assert not await first.renew(mine, 60)
    await first.set_aside(mine, "too late")
    assert await second.renew(taken, 60) and await second.pending_count() == 1


def test_shared_state_needs_shared_memories(make_settings: Callable, postgres: PostgresServer):
    url = postgres.url("postgres")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        make_settings(database_url=url)  # embedded Qdrant lives in one DATA_DIR
    make_settings(database_url=url, vector_store="pgvector", pgvector_url=url)
    with pytest.raises(SettingsError, match="WRITEBACK_WORKER"):
        make_settings(writeback_worker=False)
    with pytest.raises(SettingsError, match="DATABASE_URL must be a URL"):
        make_settings(database_url="host=db password=x", vector_store="pgvector", pgvector_url=url)


async def test_a_thread_has_its_history_whichever_replica_answers(two):
    first, second = two
    conversation = "slack:T1:C1:1.000"
    for n in range(8):
        await ConversationHistory(first.recent, 6).add(conversation, Turn(DANA, f"message {n}", "ok", f"m{n}"))
    turns = await ConversationHistory(second.recent, 6).recent(conversation, DANA)
    assert [t.message_id for t in turns] == [f"m{n}" for n in range(2, 8)]  # the last six, oldest first
    await ConversationHistory(second.recent, 6).forget_message(MessageRef("slack", "T1", "C1", "m7"))
    await ConversationHistory(first.recent, 6).forget_user("slack:T1:sam")  # another user's: nothing of dana's
    assert [t.message_id for t in await ConversationHistory(first.recent, 6).recent(conversation, DANA)][-1] == "m6"


async def test_locks_work_again_after_the_server_dropped_the_lock_connection(postgres: PostgresServer):
    url = postgres.new_database()
    sql = await PostgresSql.open(url, "")
    try:
        async with sql.lock("user:dana"):
            pass
        await sql._locks.close()  # as when the server restarts: its locks went with it
        async with sql.lock("user:dana"):  # a new connection
            pass
    finally:
        await sql.close()


async def test_a_lock_whose_taker_is_cancelled_is_never_left_held(postgres: PostgresServer):
    """Cancelled at every moment of taking the lock (before the call, while the server answers, after): the lock
    ends free, for this process and for another one."""
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")

    async def hold() -> None:
        async with sql.lock("user:dana"):
            await asyncio.sleep(60)

    try:
        for step in range(250):  # 0 to 5 ms after the start: one of them lands while the server answers
            task = asyncio.create_task(hold())
            await asyncio.sleep(step * 0.00002)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(10), other.lock("user:dana"):  # free for another process
                pass
        async with asyncio.timeout(10), sql.lock("user:dana"):  # and for this one
            pass
    finally:
        await sql.close()
        await other.close()


async def test_a_bot_on_shared_state_stops_when_asked(make_settings, postgres: PostgresServer):
    """Stopped at once after starting: the worker's first claim may be waiting for a pooled connection, where
    psycopg's pool can swallow the cancellation; the worker stops all the same (120 s only guards a hang)."""
    url = postgres.new_database()
    settings = make_settings(database_url=url, vector_store="pgvector", pgvector_url=url)
    async with asyncio.timeout(120):
        for _ in range(3):
            async with MemoryBot(settings, backend=ScriptedBackend()):
                pass


async def test_one_process_at_a_time_purges_what_expired(make_settings, postgres: PostgresServer):
    """A round of maintenance (the retention purge) is left to another process sharing the state that is doing it."""
    from datetime import UTC, datetime

    url = postgres.new_database()
    settings = make_settings(database_url=url, vector_store="pgvector", pgvector_url=url, memory_ttl_days=30)
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        old = replace(message("x", message_id="old"), sent_at=datetime(2020, 1, 1, tzinfo=UTC))
        await bot.memories.controls.remember(old, "I live in Lisbon")
    user_key = message("x").user.key

    other = await PostgresSql.open(url, "")
    try:
        async with AsyncExitStack() as stack:
            assert await stack.enter_async_context(other.try_lock("memorybot maintenance"))
            bot = await stack.enter_async_context(MemoryBot(settings, backend=ScriptedBackend()))
            assert not await bot.maintain(purge=True)  # another process is maintaining: left to it
            assert len(await bot.store.list(user_key, include_expired=True)) == 1
            await stack.aclose()  # the other process is done
        async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
            await bot.maintain(purge=True)  # (or its own first round did it)
            assert await bot.store.list(user_key, include_expired=True) == []
    finally:
        await other.close()


async def test_a_bot_moved_to_shared_state_refuses_to_leave_its_sqlite_state_behind(make_settings, postgres):
    settings = make_settings()
    db = BotDatabase(settings.database_path)
    await db.open()
    await db.set_paused("console:local:dana", True)  # would be learned from again if this file were ignored
    await db.close()
    url = postgres.new_database()
    moved = make_settings(database_url=url, vector_store="pgvector", pgvector_url=url)
    with pytest.raises(SettingsError, match="admin export"):
        async with MemoryBot(moved, backend=ScriptedBackend()):
            pass


async def test_taking_over_a_dead_workers_claim_counts_as_a_failed_attempt(two):
    """So an exchange that kills its workers is set aside after MAX_ATTEMPTS (bot/writeback.py), not retried by
    every worker in turn."""
    first, _ = two
    await first.enqueue(DANA, exchange(1))
    for n in range(3):
        claimed, _ = await first.claim(f"dies-{n}", 0.01)
        assert claimed is not None and claimed.attempts == n
        await asyncio.sleep(0.05)


async def test_shared_history_made_by_an_older_version_gets_the_columns_added_since(postgres: PostgresServer,
                                                                                    tmp_path):
    url = postgres.new_database()
    old = await PostgresSql.open(url, "CREATE TABLE conversation_turns (id SERIAL, conversation TEXT "
                                      "NOT NULL, user_key TEXT NOT NULL, text TEXT NOT NULL, reply TEXT NOT NULL, "
                                      "message_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);")
    await old.execute("INSERT INTO conversation_turns (conversation, user_key, text, reply, message_id, at) "
                      "VALUES ('c', ?, 'hello', 'hi', 'm0', extract(epoch from now()))", (DANA,))
    await old.close()
    db = BotDatabase(tmp_path / "a.sqlite3", url)
    await db.open()
    try:
        history = ConversationHistory(db.recent, 6)
        await history.add("c", Turn(DANA, "again", "ok", "m1", ("mem-1",), 1))
        turns = await history.recent("c", DANA)
        assert [(t.message_id, t.memory_ids, t.shown_turns) for t in turns] == [("m0", (), 0), ("m1", ("mem-1",), 1)]
    finally:
        await db.close()


async def test_a_process_whose_clock_runs_ahead_neither_takes_a_live_claim_nor_retries_early(two, monkeypatch):
    first, second = two
    await first.enqueue(DANA, exchange(1))
    await first.enqueue(DANA, exchange(2))
    mine, _ = await first.claim("a", 60)
    assert mine is not None
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # the second machine's clock an hour ahead
    later, _ = await second.claim("b", 60)
    assert later is not None and later.id != mine.id
    await second.retry_later(later, 30)
    nothing, free_in = await second.claim("b", 60)
    assert nothing is None and free_in is not None and 25 < free_in <= 30  # the database's clock decides


async def drop_lock_connection(sql: PostgresSql, admin: PostgresSql) -> None:
    """The server ends `sql`'s lock connection, as a restart would: its locks go with it. Returns once the server
    session is gone (it lets go of its locks before it leaves pg_stat_activity)."""
    pid = sql._locks.info.backend_pid
    await admin.execute("SELECT pg_terminate_backend(?)", (pid,))
    await gone(admin, pid)


async def gone(admin: PostgresSql, pid: int) -> None:
    """Wait until the server session `pid` has left pg_stat_activity."""
    async with asyncio.timeout(10):
        while await admin.fetchone("SELECT 1 FROM pg_stat_activity WHERE pid = ?", (pid,)):
            await asyncio.sleep(0.01)


async def holders(admin: PostgresSql, key: str) -> list[int]:
    """The server sessions (backend pids) holding the advisory lock of `key` in this database."""
    lock_id = _lock_id(key)
    rows = await admin.fetchall("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                                "AND classid::bigint = ? AND objid::bigint = ?",
                                ((lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF))
    return sorted(pid for (pid,) in rows)


async def held_again(sql: PostgresSql, admin: PostgresSql, key: str, dropped: int) -> None:
    """Wait until `sql` holds `key` on a lock connection other than the dropped one (backend pid `dropped`)."""
    async with asyncio.timeout(10):
        while (sql._locks.closed or sql._locks.info.backend_pid == dropped
               or await holders(admin, key) != [sql._locks.info.backend_pid]):
            await asyncio.sleep(0.01)


async def test_a_held_lock_is_taken_again_after_the_server_dropped_its_connection(postgres, monkeypatch):
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with (sql.try_lock("discord shard 0", keep=True) as held,
                    sql.try_lock("discord shards", shared=True, keep=True)):
            assert held
            keeping = asyncio.create_task(sql.keep_locks())
            dropped = sql._locks.info.backend_pid
            await drop_lock_connection(sql, other)
            await held_again(sql, other, "discord shard 0", dropped)
            async with other.try_lock("discord shard 0") as taken, other.try_lock("discord shards") as every:
                assert not taken and not every  # held again, the shared one too
            assert not keeping.done()
            keeping.cancel()
        async with other.try_lock("discord shard 0") as taken:  # and let go as before
            assert taken
    finally:
        await sql.close()
        await other.close()


async def test_a_lock_that_is_not_kept_is_not_taken_again(postgres, monkeypatch):
    """Only `keep` locks are taken again on a new lock connection: another process may take any other lock the
    dropped connection held (as the next round of maintenance does), and that is no lost lock."""
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    monkeypatch.setattr("bot.sql.KEPT_LOCK_GRACE_SECONDS", 0.0)
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with sql.try_lock("discord shard 0", keep=True) as held, sql.try_lock("maintenance") as also:
            assert held and also
            keeping = asyncio.create_task(sql.keep_locks())
            dropped = sql._locks.info.backend_pid
            await drop_lock_connection(sql, other)
            async with other.try_lock("maintenance") as taken:
                assert taken
                await held_again(sql, other, "discord shard 0", dropped)
                assert await holders(other, "maintenance") == [other._locks.info.backend_pid]
                await asyncio.sleep(0.3)  # several looks of `keep_locks`
                assert not keeping.done()
            keeping.cancel()
    finally:
        await sql.close()
        await other.close()


async def test_a_lock_another_process_took_meanwhile_is_reported_lost(postgres, monkeypatch):
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    monkeypatch.setattr("bot.sql.KEPT_LOCK_GRACE_SECONDS", 0.2)
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with sql.try_lock("discord shard 0", keep=True) as held:
            assert held
            await drop_lock_connection(sql, other)
            async with other.try_lock("discord shard 0") as taken:
                assert taken  # the server let go of it with the dropped connection
                with pytest.raises(LockLost, match="another process took a lock"):
                    async with asyncio.timeout(10):
                        await sql.keep_locks()
    finally:
        await sql.close()
        await other.close()


async def test_a_kept_lock_refused_on_the_new_connection_is_tried_again_before_it_counts_as_lost(postgres,
                                                                                               monkeypatch):
    """Whoever holds a kept lock the new connection could not take again (an old connection the server has not
    ended yet, or a process about to let go) may let go of it within KEPT_LOCK_GRACE_SECONDS: it is taken then."""
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with sql.try_lock("discord shard 0", keep=True) as held:
            assert held
            keeping = asyncio.create_task(sql.keep_locks())
            dropped = sql._locks.info.backend_pid
            await drop_lock_connection(sql, other)
            async with other.try_lock("discord shard 0") as taken:
                assert taken
                async with asyncio.timeout(10):
                    while sql._locks.closed or sql._locks.info.backend_pid == dropped:
                        await asyncio.sleep(0.01)  # a new connection, refused the lock
                await asyncio.sleep(0.5)  # ten looks of `keep_locks`, well within the grace
                assert not keeping.done()
            await held_again(sql, other, "discord shard 0", dropped)
            assert not keeping.done()
            keeping.cancel()
    finally:
        await sql.close()
        await other.close()


class Relay:
    """A TCP relay to the test's PostgreSQL whose `cut` ends the connections through it on the client's side only,
    as a network drop does: the client sees them gone, while the server keeps their sessions, and their locks,
    until it notices (here: until `close`)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._relays: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen on 127.0.0.1; the port to connect to."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._pairs.append((writer, up_writer))
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def cut(self) -> None:
        for client, _ in self._pairs:
            client.transport.abort()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for client, server in self._pairs:
            client.transport.abort()
            server.transport.abort()
        await asyncio.gather(*self._relays)
        await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy what `reader` gets to `writer`, until either end goes; the other end is left as it is."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def test_a_kept_lock_still_held_by_an_old_connection_of_this_process_is_not_lost(postgres, monkeypatch):
    """After a network drop the server may keep the old lock connection, and its locks, for a long while: the new
    connection is refused the kept lock by this process's own old one. That one is ended and the lock taken again,
    even with no grace at all: only another process holding it makes it lost."""
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    monkeypatch.setattr("bot.sql.KEPT_LOCK_GRACE_SECONDS", 0.0)
    url = postgres.new_database()
    relay = Relay(postgres.port)
    through = url.replace(f":{postgres.port}/", f":{await relay.start()}/")
    sql, other = await PostgresSql.open(through, ""), await PostgresSql.open(url, "")
    try:
        async with sql.try_lock("discord shard 0", keep=True) as held:
            assert held
            old = sql._locks.info.backend_pid
            relay.cut()
            assert await holders(other, "discord shard 0") == [old]  # the server keeps the old connection
            keeping = asyncio.create_task(sql.keep_locks())
            await held_again(sql, other, "discord shard 0", old)
            await gone(other, old)  # ended by this process
            assert not keeping.done()
            keeping.cancel()
        async with other.try_lock("discord shard 0") as taken:
            assert taken
    finally:
        await sql.close()
        await other.close()
        await relay.close()


async def test_a_kept_lock_is_counted_before_the_next_lock_call_can_make_the_connection_again(postgres):
    """Lock calls take turns on the lock connection; the next one may find it gone and make it again, taking again
    the kept locks counted by then. A kept lock just granted is counted already when that next call starts."""
    url = postgres.new_database()
    sql = await PostgresSql.open(url, "")
    counted: list[int] = []

    async def next_call() -> None:
        async with sql._locks_guard:
            counted.append(sum((+sql._kept).values()))

    try:
        taking = asyncio.create_task(sql.try_lock("discord shard 0", keep=True).__aenter__())
        async with asyncio.timeout(10):
            while not sql._locks_guard.locked():
                await asyncio.sleep(0)
        after = asyncio.create_task(next_call())  # waits for the try's turn to end
        assert await taking
        await after
        assert counted == [1]
    finally:
        await sql.close()


async def test_a_kept_lock_whose_taker_is_cancelled_is_not_taken_again(postgres):
    """A `keep` try cancelled at any moment is given back and not counted, so a new lock connection does not take
    it again for nobody."""
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")

    async def hold() -> None:
        async with sql.try_lock("discord shard 0", keep=True):
            await asyncio.sleep(60)

    try:
        for step in range(100):  # 0 to 4 ms after the start
            task = asyncio.create_task(hold())
            await asyncio.sleep(step * 0.00004)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        async with asyncio.timeout(10), sql.lock("user:dana"):  # after the give-backs, in turn
            pass
        await drop_lock_connection(sql, other)
        async with asyncio.timeout(10):
            while True:  # the first call after the drop fails on the dead connection; the next makes a new one
                try:
                    async with sql.lock("user:dana"):
                        break
                except Exception:
                    await asyncio.sleep(0.01)
        async with asyncio.timeout(10), other.lock("discord shard 0"):  # free (a give-back may still be under way)
            pass
    finally:
        await sql.close()
        await other.close()


async def test_a_kept_lock_is_taken_again_by_whichever_lock_call_connects_first(postgres):
    """Another lock call (the periodic maintenance one) may make the lost connection again before `keep_locks`
    looks: the kept locks are taken again on it all the same."""
    url = postgres.new_database()
    sql, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")
    try:
        async with sql.try_lock("discord shard 0", keep=True) as held:
            assert held
            await drop_lock_connection(sql, other)
            async with asyncio.timeout(10):
                while True:  # the first call after the drop fails on the dead connection; the next makes a new one
                    try:
                        async with sql.try_lock("memorybot maintenance") as ours:
                            assert ours
                            break
                    except Exception:
                        await asyncio.sleep(0.01)
            async with other.try_lock("discord shard 0") as taken:
                assert not taken
    finally:
        await sql.close()
        await other.close()


async def test_an_older_state_file_that_cannot_be_read_is_refused_by_name(tmp_path):
    old = tmp_path / "slack.sqlite3"
    old.write_bytes(b"not a database at all, but long enough to be looked at" * 100)
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    try:
        with pytest.raises(SettingsError, match="slack.sqlite3 .* cannot be read .*move it aside"):
            await PlatformState(db.sql).move_in(tmp_path)
        assert old.exists()  # nothing lost
    finally:
        await db.close()


REPO = Path(__file__).resolve().parents[2]

# The Slack adapter of an older version writing its DATA_DIR/slack.sqlite3 (argv: the file, how it ended): in WAL
# mode, as it left it; killed, it leaves its rows in the -wal file beside it.
OLDER_SLACK = """
import os, sqlite3, sys, time
old = sqlite3.connect(sys.argv[1])
old.execute("PRAGMA journal_mode=WAL")
old.execute("PRAGMA wal_autocheckpoint=0")
old.executescript("CREATE TABLE seen_events (event_id TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL);"
                  "CREATE TABLE bot_threads (channel TEXT NOT NULL, thread_ts TEXT NOT NULL, "
                  "PRIMARY KEY (channel, thread_ts));")
old.execute("INSERT INTO seen_events VALUES ('EvOld', ?)", (time.time(),))
old.execute("INSERT INTO bot_threads VALUES ('C2', '1.000')")
old.commit()
if sys.argv[2] == "killed":
    os._exit(0)
old.close()
"""

# A bot starting on DATABASE_URL (argv: the url, DATA_DIR) moves the older file's state in.
MOVE_IN = """
import asyncio, logging, sys
from pathlib import Path
from bot.database import BotDatabase
from bot.platform_state import PlatformState

async def main(url: str, data_dir: str) -> None:
    db = BotDatabase(Path(data_dir) / "bot.sqlite3", url)
    await db.open()
    try:
        await PlatformState(db.sql).move_in(Path(data_dir))
    finally:
        await db.close()

logging.basicConfig(level=logging.INFO)
asyncio.run(main(*sys.argv[1:]))
"""


def bound_by_permissions(command: list[str]) -> list[str]:
    """`command` run as a process that file permissions bind. Under root (tests run as root here) that is root
    without the capabilities that let it write anywhere (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run a process as root that file permissions bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]


@pytest.mark.parametrize("ended", ["closed", "killed"])
async def test_an_older_state_file_in_a_read_only_data_dir_is_moved_in_and_left_with_a_warning(postgres, tmp_path,
                                                                                              ended):
    """With DATABASE_URL the bot's state is in PostgreSQL, and DATA_DIR may be read-only. The older file is only
    read, its rows are moved in, and the file, which cannot be deleted, stays with a warning (moving it in again
    on the next start adds nothing). Rows an older version killed left in the -wal file are read too."""
    url = postgres.new_database()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    subprocess.run([sys.executable, "-c", OLDER_SLACK, str(data_dir / "slack.sqlite3"), ended], check=True)
    left = sorted(p.name for p in data_dir.iterdir())
    assert left == (["slack.sqlite3"] if ended == "closed" else ["slack.sqlite3", "slack.sqlite3-shm",
                                                                   "slack.sqlite3-wal"])
    for path in data_dir.iterdir():
        path.chmod(0o444)
    data_dir.chmod(0o555)
    try:
        moved = subprocess.run(bound_by_permissions([sys.executable, "-c", MOVE_IN, url, str(data_dir)]),
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        data_dir.chmod(0o755)
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 thread(s) and 1 recent event id(s) from slack.sqlite3" in moved.stderr
    assert "could not delete the file (PermissionError); delete it by hand" in moved.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == left  # nothing written beside it, nothing deleted
    db = BotDatabase(tmp_path / "bot.sqlite3", url)
    await db.open()
    try:
        state = PlatformState(db.sql)
        assert await state.in_thread("C2", "1.000")
        assert not await state.first_delivery("EvOld")
    finally:
        await db.close()

