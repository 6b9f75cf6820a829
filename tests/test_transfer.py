"""`memorybot admin export` / `admin import`: an embedded bot (Qdrant and SQLite in DATA_DIR) moved to PostgreSQL +
pgvector keeps every memory with its id, vector, source, expiry and supersession, its queue (learned after the
move), what it set aside, what it learned from, who paused and the threads it posted in; files are checked before
anything is written.

The source bot is built once for the module (real mem0, embedded Qdrant, the real embedder; a scripted model
for the replies and extracted facts) and exported once; each test imports that file somewhere new."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import MemoryBot
from bot.database import BotDatabase
from bot.exchange import QueuedExchange
from bot.message import MessageRef
from bot.platform_state import OLD_STATE_FILE, PlatformState
from bot.transfer import TransferError, export_to, import_from
from memory.records import Source
from tests.bot.helpers import RecordingReply, message
from tests.conftest import REPO, settings_for
from tests.fakes.model import ScriptedBackend

TTL_DAYS = 3650
DANA, SAM = message("x").user, message("x", user="sam").user
COMMON = {"rate_limit_messages": 0, "memory_ttl_days": TTL_DAYS}


class Seeded:
    """The seeded embedded bot: its settings, its export and what it held."""

    def __init__(self, root: Path) -> None:
        self.settings = settings_for(root / "data", **COMMON)
        self.export = root / "export.jsonl"
        self.listed: dict[str, list[dict[str, Any]]] = {}
        self.payloads: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, str] = {}


async def _seed(source: Seeded) -> None:
    backend = ScriptedBackend(reply="ok", facts=["The user has a dog called Rex."])
    async with MemoryBot(source.settings, backend=backend) as bot:
        controls = bot.memories.controls
        home = await controls.remember(message("x"), "I live in Lisbon")
        faro = await bot.store.add(DANA.key, "The user lives in Faro.", home.source)  # superseded by the move
        await controls.remember(message("x", message_id="m2"), "I moved to Porto")
        await bot.handle(message("I have a dog called Rex", message_id="m3"), RecordingReply())
        await bot.writeback.drain()
        await controls.remember(message("x", user="sam"), "I like coffee")
        await controls.pause(SAM)
        await PlatformState(bot.db.sql).add_thread("C1", "1710000000.000100")
        await bot.writeback.stop()
        await bot.handle(message("I collect stamps", message_id="m4"), RecordingReply())
        exchange, _ = await bot.db.claim("test", 60)
        await bot.db.set_aside(exchange, "the model's output never parsed")
        await bot.handle(message("I play the cello", message_id="m5"), RecordingReply())  # stays queued
        assert await bot.db.pending_count() == 1
        for user in (DANA, SAM):
            source.listed[user.key] = await _listed(bot, user)
        source.payloads = await _payloads(bot)
        source.ids = {"home": home.id, "faro": faro}
        assert source.payloads[faro]["superseded_by"] == home.id
    await export_to(source.settings, source.export)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    seeded = Seeded(tmp_path_factory.mktemp("source"))
    asyncio.run(_seed(seeded))
    return seeded


async def _listed(bot: MemoryBot, user: Any) -> list[dict[str, Any]]:
    records = await bot.store.list(user.key, include_superseded=True, include_expired=True)
    return sorted((r.to_json() for r in records), key=lambda r: r["id"])


async def _payloads(bot: MemoryBot) -> dict[str, dict[str, Any]]:
    return {p.id: p.payload async for page in bot.store.all_points() for p in page}


def _records(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The header without its time, and the records as sorted JSON (stores page in their own order)."""
    header, *lines = path.read_text().splitlines()
    head = json.loads(header)
    head.pop("exported_at")
    return head, sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines)


def pgvector(postgres: Any, **overrides: Any) -> dict[str, Any]:
    url = postgres.new_database()
    return {"vector_store": "pgvector", "pgvector_url": url, "database_url": url, **COMMON, **overrides}


async def test_the_embedded_bot_moves_to_postgres_with_everything(source, postgres, make_settings):
    header = json.loads(source.export.read_text().splitlines()[0])
    assert header["counts"] == {"memory": 5, "history": 7, "pending": 1, "set_aside": 1, "learned_from": 3,
                                "paused": 1, "bot_thread": 1}, header
    assert stat.S_IMODE(source.export.stat().st_mode) == 0o600
    settings = make_settings(**pgvector(postgres))
    report = await import_from(settings, source.export)
    assert {k: (c.added, c.skipped) for k, c in report.counts.items() if k != "history"} == {
        "memory": (5, 0), "pending": (1, 0), "set_aside": (1, 0), "learned_from": (3, 0), "paused": (1, 0),
        "bot_thread": (1, 0)}
    assert report.counts["history"].not_kept == 7  # DATABASE_URL: mem0 keeps no history

    backend = ScriptedBackend(reply="ok", facts=["The user plays the cello."])
    async with MemoryBot(settings, backend=backend) as bot:
        assert await _payloads(bot) == source.payloads  # ids, sources, expiry, supersession, as stored
        for user in (DANA, SAM):
            assert await _listed(bot, user) == source.listed[user.key]
        expiry = {i: p.get("expiration_date") for i, p in source.payloads.items()}
        assert expiry.pop(source.ids["faro"]) is None and set(expiry.values()) == {"2036-11-23"}  # TTL from m1
        found = await bot.memories.controls.search(message("x"), "where do I live")
        assert found[0].id == source.ids["home"] and found[0].text == "I moved to Porto"
        assert source.ids["faro"] not in {r.id for r in found}  # superseded: kept, not recalled
        await bot.writeback.drain()  # the exchange queued before the move is learned now
        assert await bot.db.pending_count() == 0
        texts = [r.text for r in (await bot.memories.controls.list(DANA)).records]
        assert "The user plays the cello." in texts
        assert await bot.db.sql.fetchone("SELECT count(*) FROM failed_exchanges") == (1,)
        assert await bot.memories.controls.is_paused(SAM)
        assert await PlatformState(bot.db.sql).in_thread("C1", "1710000000.000100")  # follow-ups still answered
        # forgetting works on the moved memories: one id, and a message (found through learned_from)
        assert await bot.memories.forgetting.forget(DANA, source.ids["home"])
        assert await bot.memories.forgetting.forget_message(MessageRef("console", "local", "terminal", "m3")) == 2
        left = [r.text for r in (await bot.memories.controls.list(DANA)).records]
        assert "I moved to Porto" not in left and "The user has a dog called Rex." not in left


async def test_export_import_export_is_the_same_and_importing_again_changes_nothing(source, postgres,
                                                                                      make_settings, tmp_path):
    # pgvector with the state in SQLite: mem0's history is kept, so the second export holds all of the first
    settings = make_settings(**pgvector(postgres, database_url=""))
    await import_from(settings, source.export)
    again = tmp_path / "again.jsonl"
    await export_to(settings, again)
    assert _records(again) == _records(source.export)

    with pytest.raises(TransferError, match="already holds 5 memories and bot state.*--merge"):
        await import_from(settings, source.export)
    report = await import_from(settings, source.export, merge=True)
    assert {k: c.added for k, c in report.counts.items()} == dict.fromkeys(report.counts, 0)
    assert report.counts["memory"].skipped == 5 and report.counts["history"].skipped == 7
    third = tmp_path / "third.jsonl"
    await export_to(settings, third)
    assert _records(third) == _records(source.export)


def _rewrite(source: Seeded, path: Path, edit: Any) -> Path:
    lines = source.export.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def _header_with(lines: list[str], **changes: Any) -> list[str]:
    header = json.loads(lines[0])
    header.update(changes)
    return [json.dumps(header), *lines[1:]]


def _vector_cut(lines: list[str]) -> list[str]:
    record = json.loads(lines[1])
    record["vector"] = record["vector"][:-16]
    return [lines[0], json.dumps(record), *lines[2:]]


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda lines: [*lines[:-1], lines[-1][:20]], r"line {last}: not JSON \(.* at column"),
    (lambda lines: lines[:-1], "does not hold the records its header counts: bot_thread 1 .found 0.; the file may be"),
    (lambda lines: [lines[0], "{]", *lines[2:]], "line 2: not JSON"),
    (lambda lines: [*lines, '{"type": "photo"}'], "line {after}: unknown record type 'photo'"),
    (_vector_cut, r"line 2: memory [0-9a-f-]+: its vector has 381 dimensions, the header says 384"),
    (lambda lines: _header_with(lines, version=2), "line 1: export format version 2 is not one this memorybot"),
    (lambda lines: _header_with(lines, schema_version=99), "line 1: written by a newer memorybot"),
    (lambda lines: ['{"users": []}'], "line 1: not a memorybot export"),
    (lambda lines: [], "line 1: not JSON"),
])
async def test_a_bad_file_is_refused_with_its_line_before_anything_is_written(source, make_settings, tmp_path,
                                                                               edit, expected):
    bad = _rewrite(source, tmp_path / "bad.jsonl", edit)
    settings = make_settings(**COMMON)
    last = len(source.export.read_text().splitlines())
    with pytest.raises(TransferError, match=expected.format(last=last, after=last + 1)) as refused:
        await import_from(settings, bad)
    assert "Rex" not in str(refused.value) and "cello" not in str(refused.value)  # no user's words
    assert not settings.data_dir.exists()  # refused before the target was opened


async def test_vectors_of_another_dimension_are_refused(source, make_settings, tmp_path):
    def other_dims(lines: list[str]) -> list[str]:
        header = json.loads(lines[0])
        header["embedder"]["dims"] = 768
        header["counts"]["memory"] = header["counts"]["history"] = 0
        return [json.dumps(header), *(line for line in lines[1:] if json.loads(line)["type"]
                                      not in ("memory", "history"))]

    settings = make_settings(**COMMON)
    with pytest.raises(TransferError, match="the file's vectors have 768 dimensions .*this store holds 384"):
        await import_from(settings, _rewrite(source, tmp_path / "768.jsonl", other_dims))
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        assert await bot.store.count_points() == 0 and not await bot.db.has_state()


async def test_a_file_from_before_thread_records_imports(source, make_settings, tmp_path):
    """An export written before `bot_thread` records existed counts none and holds none: it is not refused."""
    def older(lines: list[str]) -> list[str]:
        header = json.loads(lines[0])
        del header["counts"]["bot_thread"]
        return [json.dumps(header), *(line for line in lines[1:] if json.loads(line)["type"] != "bot_thread")]

    settings = make_settings(**COMMON)
    report = await import_from(settings, _rewrite(source, tmp_path / "older.jsonl", older))
    assert report.counts["paused"].added == 1 and report.counts["bot_thread"].added == 0
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        assert await bot.memories.controls.is_paused(SAM)
        assert not await PlatformState(bot.db.sql).in_thread("C1", "1710000000.000100")


async def test_threads_still_in_the_older_slack_file_are_exported(make_settings, tmp_path):
    """A bot upgraded and exported before Slack ever started again still has its threads in DATA_DIR/slack.sqlite3:
    the export moves them in first, so they travel."""
    settings = make_settings(**COMMON)
    async with MemoryBot(settings, backend=ScriptedBackend()):
        pass  # a bot that ran (memories and all) before the version that moved the file
    _old_slack_file(settings.data_dir, ("C9", "1710000000.000900"))
    await export_to(settings, tmp_path / "out.jsonl")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()[1:]]
    assert [r for r in records if r["type"] == "bot_thread"] == [
        {"type": "bot_thread", "channel": "C9", "thread_ts": "1710000000.000900"}]
    assert not (settings.data_dir / OLD_STATE_FILE).exists()


async def test_an_older_slack_file_does_not_stop_an_import_into_a_new_bot(source, make_settings):
    """Import checks that its target is empty; the older file's threads are moved in later, when the bot starts."""
    settings = make_settings(**COMMON)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _old_slack_file(settings.data_dir, ("C9", "1710000000.000900"))
    report = await import_from(settings, source.export)
    assert report.counts["bot_thread"].added == 1
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        threads = PlatformState(bot.db.sql)
        assert await threads.in_thread("C1", "1710000000.000100") and await threads.in_thread("C9", "1710000000.000900")


def _old_slack_file(data_dir: Path, thread: tuple[str, str]) -> None:
    old = sqlite3.connect(data_dir / OLD_STATE_FILE)
    old.execute("CREATE TABLE bot_threads (channel TEXT NOT NULL, thread_ts TEXT NOT NULL, "
                "PRIMARY KEY (channel, thread_ts))")
    old.execute("INSERT INTO bot_threads VALUES (?, ?)", thread)
    old.commit()
    old.close()


async def test_a_running_embedded_bot_cannot_be_exported(source, make_settings, tmp_path):
    settings = make_settings(**COMMON)
    async with MemoryBot(settings, backend=ScriptedBackend()):
        with pytest.raises(TransferError, match="DATA_DIR .* is in use by a running memorybot: stop it first"):
            await export_to(settings, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary left behind


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", "admin", *args],
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDER_BACKEND":
                                         "sentence_transformers", **env},
                          capture_output=True, text=True, timeout=600)


async def test_the_commands_move_a_bot(source, postgres, tmp_path):
    out = tmp_path / "cli.jsonl"
    exported = _cli({"DATA_DIR": str(source.settings.data_dir)}, "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "Exported 5 memory, 7 history, 1 pending, 1 set_aside, 3 learned_from, 1 paused" in exported.stdout
    assert _records(out) == _records(source.export) and stat.S_IMODE(out.stat().st_mode) == 0o600
    url = postgres.new_database()
    target = {"DATA_DIR": str(tmp_path / "new"), "VECTOR_STORE": "pgvector", "PGVECTOR_URL": url, "DATABASE_URL": url}
    imported = _cli(target, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "memory: 5 added, 0 already there" in imported.stdout
    assert "history: 0 added, 0 already there, 7 not kept" in imported.stdout
    refused = _cli(target, "import", str(out))
    assert refused.returncode == 1 and "memorybot: the target already holds 5 memories" in refused.stderr
    assert "Traceback" not in refused.stderr
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(out.read_bytes()[:-30])
    bad = _cli(target, "import", "--merge", str(cut))
    last = len(out.read_text().splitlines())
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"line {last}: not JSON" in bad.stderr and "the file may be cut short" in bad.stderr
    settings = settings_for(tmp_path / "new", vector_store="pgvector", pgvector_url=url, database_url=url)
    async with MemoryBot(settings, backend=ScriptedBackend()) as bot:
        assert await _listed(bot, DANA) == source.listed[DANA.key]


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request, tmp_path):
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgres" else ""
    db = BotDatabase(tmp_path / "bot.sqlite3", url)
    await db.open()
    yield db
    await db.close()


async def test_a_set_aside_exchange_whose_id_is_taken_gets_a_new_one_above_the_queue(database):
    source = Source("console", "local", "terminal", "m1", None, "2026-11-26T10:00:00+00:00")
    queued = await database.enqueue("console:local:dana", QueuedExchange(text="hi", reply="ok", source=source))
    fields = {"id": queued, "user_key": "console:local:sam", "payload": "{}", "error": "never parsed",
              "failed_at": 1.5, "platform": "console", "workspace": "local", "channel": "terminal",
              "message_id": "m9"}
    assert await database.load_state("set_aside", [fields]) == 1
    assert await database.load_state("set_aside", [fields]) == 0  # there already
    [(moved,)] = await database.sql.fetchall("SELECT id FROM failed_exchanges")
    assert moved == queued + 1
    later = await database.enqueue("console:local:dana", QueuedExchange(text="hi", reply="ok",
                                                                       source=replace(source, message_id="m2")))
    assert later > moved  # setting it aside later would not overwrite the imported one
