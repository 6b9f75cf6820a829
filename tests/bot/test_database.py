"""The write-back queue keeps typed exchanges, and looks them up by columns a database from before them gets once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bot.database import BotDatabase
from bot.exchange import QueuedExchange
from bot.message import MessageRef
from memory.records import Source

# The tables as they were before the source columns (the payload was the only place naming the message).
OLD_SCHEMA = """
CREATE TABLE pending_exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE failed_exchanges (
    id INTEGER PRIMARY KEY,
    user_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE TABLE learned_from (
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    user_key TEXT NOT NULL,
    queued_at REAL NOT NULL,
    forgetting INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, workspace, message_id, channel, user_key)
);
CREATE INDEX learned_from_forgetting ON learned_from (forgetting) WHERE forgetting = 1;
CREATE TABLE paused_users (
    user_key TEXT PRIMARY KEY,
    paused_at REAL NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0
);
"""
DANA, SAM = "discord:g1:dana", "discord:g1:sam"


def source(message_id: str, channel: str = "c1") -> Source:
    return Source(platform="discord", workspace="g1", channel=channel, message_id=message_id,
                  link=f"https://example.test/{channel}/{message_id}", time="2026-11-26T10:00:00+00:00",
                  origin="extracted", private=False)


def old_payload(text: str, message_id: str, **progress: object) -> str:
    """A payload as the queue wrote it before the typed record (and the worker's progress updates, if any)."""
    return json.dumps({"text": text, "reply": "ok", "context": None, "user_name": "Dana",
                       "source": source(message_id).__dict__, **progress})


def old_database(path: Path, user_version: int) -> None:
    """A bot.sqlite3 from before the source columns: dana's exchanges from m1 (one half learned, one set aside)
    and m2, and sam's from m1."""
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.executemany("INSERT INTO pending_exchanges (id, user_key, payload, created_at) VALUES (?, ?, ?, 0)", [
            (1, DANA, old_payload("I have a dog", "m1", passages=["I have a dog"], passages_stored=1,
                                  facts=["The user has a dog."], stored=0)),
            (2, DANA, old_payload("I have a cat", "m2")),
            (3, SAM, old_payload("So do I", "m1")),
        ])
        db.execute("INSERT INTO failed_exchanges VALUES (4, ?, ?, 'the model said no', 0)",
                   (DANA, old_payload("I have a dog too", "m1")))
        db.execute(f"PRAGMA user_version = {user_version}")
    db.close()


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[BotDatabase]:
    """The old database of `old_database`, opened by the current code (as if before the first `fill_sources`)."""
    old_database(tmp_path / "bot.sqlite3", user_version=0)
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    yield db
    await db.close()


async def rows(db: BotDatabase, table: str) -> list[tuple]:
    return await db.sql.fetchall(f"SELECT id, platform, workspace, channel, message_id FROM {table} ORDER BY id")


async def test_an_old_database_gets_the_source_columns_filled_from_the_payloads(opened):
    assert await rows(opened, "pending_exchanges") == [
        (1, "discord", "g1", "c1", "m1"), (2, "discord", "g1", "c1", "m2"), (3, "discord", "g1", "c1", "m1")]
    assert await rows(opened, "failed_exchanges") == [(4, "discord", "g1", "c1", "m1")]
    indexes = await opened.sql.fetchall("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%_source'")
    assert sorted(row[0] for row in indexes) == ["failed_exchanges_source", "pending_exchanges_source"]
    assert opened.version == 0 and opened.sources_missing  # the memory store's upgrades are still to come


async def test_old_rows_are_read_as_exchanges_with_their_progress(opened):
    exchange, _ = await opened.claim("w", 60)
    assert exchange is not None and exchange.id == 1
    assert exchange.record == QueuedExchange(text="I have a dog", reply="ok", user_name="Dana", source=source("m1"),
                                             passages=["I have a dog"], passages_stored=1,
                                             facts=["The user has a dog."], stored=0)
    await opened.done(exchange)
    exchange, _ = await opened.claim("w", 60)
    assert exchange is not None and exchange.record.passages is None and exchange.record.facts is None


async def test_forgetting_a_message_finds_the_old_rows_queued_and_set_aside(opened):
    await opened.fill_sources([])
    m1 = MessageRef("discord", "g1", None, "m1")
    assert await opened.users_with_message(m1) == {DANA, SAM}
    assert await opened.users_with_message(MessageRef("discord", "g1", "c1", "m2")) == {DANA}
    assert await opened.users_with_message(MessageRef("discord", "g1", "c2", "m2")) == set()  # another channel
    await opened.forget_exchanges(DANA, m1)
    assert [row[0] for row in await rows(opened, "pending_exchanges")] == [2, 3]  # sam's is his to forget
    assert await rows(opened, "failed_exchanges") == []


async def test_opening_again_changes_nothing(tmp_path):
    path = tmp_path / "bot.sqlite3"
    old_database(path, user_version=2)
    seen = []
    for _ in range(2):
        db = BotDatabase(path)
        await db.open()
        columns = [row[1] for row in await db.sql.fetchall("PRAGMA table_info(pending_exchanges)")]
        seen.append((columns, await rows(db, "pending_exchanges"), await rows(db, "failed_exchanges"), db.version))
        await db.close()
    assert seen[0] == seen[1]
    assert seen[0][0][-6:] == ["platform", "workspace", "channel", "message_id", "claimed_by", "lease_until"]
    assert seen[0][3] == 2


async def test_new_rows_name_their_message_in_columns_queued_and_set_aside(tmp_path):
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    try:
        queued = QueuedExchange(text="I have a dog", reply="ok", source=source("m9", channel="c2"))
        exchange_id = await db.enqueue(DANA, queued)
        assert await rows(db, "pending_exchanges") == [(exchange_id, "discord", "g1", "c2", "m9")]
        exchange, _ = await db.claim("w", 60)
        assert exchange is not None and exchange.record == queued
        await db.set_aside(exchange, "the model said no")
        assert await rows(db, "failed_exchanges") == [(exchange_id, "discord", "g1", "c2", "m9")]
        assert await db.users_with_message(MessageRef("discord", "g1", None, "m9")) == {DANA}
        await db.forget_exchanges(DANA, MessageRef("discord", "g1", "c2", "m9"))
        assert await db.user_keys() == set()
    finally:
        await db.close()


async def test_an_exchange_tried_again_later_is_due_after_its_delay(tmp_path):
    db = BotDatabase(tmp_path / "bot.sqlite3")
    await db.open()
    try:
        await db.enqueue(DANA, QueuedExchange(text="I have a dog", reply="ok", source=source("m9")))
        exchange, _ = await db.claim("w", 60)
        assert exchange is not None
        nothing, free_in = await db.claim("v", 60)
        assert nothing is None and free_in is not None and 55 < free_in <= 60  # claimed: free when its lease ends
        await db.retry_later(exchange, 30)
        nothing, free_in = await db.claim("w", 60)
        assert nothing is None and free_in is not None and 25 < free_in <= 30
        await db.retry_later(exchange, 0)  # not claimed any more: nothing changes
        assert (await db.claim("w", 60))[0] is None
    finally:
        await db.close()


async def test_an_unreadable_row_is_set_aside_not_blocking_the_queue(opened):
    await opened.sql.execute("UPDATE pending_exchanges SET payload = '{\"text\": 1}' WHERE id = 1")
    exchange, _ = await opened.claim("w", 60)
    assert exchange is not None and exchange.id == 2
    [(payload, error)] = await opened.sql.fetchall("SELECT payload, error FROM failed_exchanges WHERE id = 1")
    assert payload == '{"text": 1}' and "unreadable" in error


def test_an_exchange_round_trips_through_json():
    queued = QueuedExchange(text="I have a dog", reply="ok", context="Any pets?", user_name="Dana",
                            source=source("m1"))
    assert QueuedExchange.from_json(queued.to_json()) == queued
    learned = replace(queued, passages=["I have a dog"], passages_stored=1, facts=["The user has a dog."], stored=1)
    assert QueuedExchange.from_json(learned.to_json()) == learned


def test_the_json_is_what_the_untyped_payload_was():
    """Rows stay readable both ways: no keys for what is not worked out yet, the source as its fields."""
    queued = QueuedExchange(text="I have a dog", reply="ok", user_name="Dana", source=source("m1"))
    assert json.loads(queued.to_json()) == json.loads(old_payload("I have a dog", "m1"))
    progress = {"passages": ["I have a dog"], "passages_stored": 1, "facts": ["The user has a dog."], "stored": 0}
    learned = replace(queued, **progress)
    assert json.loads(learned.to_json()) == json.loads(old_payload("I have a dog", "m1", **progress))
    assert json.loads(queued.to_json())["source"] == asdict(source("m1"))


@pytest.mark.parametrize("text", ["not json", "[]", '{"text": "x"}', '{"text": "x", "reply": "", "source": {"x": 1}}'])
def test_what_is_not_an_exchange_says_so(text):
    with pytest.raises(ValueError):
        QueuedExchange.from_json(text)
