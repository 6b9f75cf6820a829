"""Discord sharding: the settings, one process running every shard, and two bot processes (one shard each) against
one fake Discord, sharing their state and memories in PostgreSQL.

The fake routes each event to the connection of the shard owning its guild, as Discord does. The two processes are
the real `memorybot discord` command (`adapters.cli.main`), started with the fake's addresses put into discord.py
first: memorybot has no setting for Discord's address, and should not (it would send the token elsewhere). Their
model is an OpenAI-compatible stand-in, one per process, whose replies name the shard, so a reply shows which
process wrote it; an extraction answers `The user's locker number is N.` for the message naming N, and waits while
the test holds extractions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.discord import DiscordPlatform
from adapters.discord.client import DiscordClient
from adapters.discord.service import claim_shards
from adapters.discord.settings import DiscordSettings
from adapters.platform import serve
from bot.database import BotDatabase
from bot.settings import SettingsError, load_group
from bot.sql import PostgresSql
from tests.adapters.discord.conftest import TOKEN, discord_settings
from tests.adapters.discord.fake_discord import FakeDiscord, FakeGuild, Recorded
from tests.conftest import REPO, settings_for
from tests.fakes.model import ScriptedBackend
from tests.fakes.openai_server import FakeModelServer
from tests.servers.processes import stop_all

LOCKER = re.compile(r"locker number is (\d+)")


# ----- settings


def test_shard_ids_are_checked_against_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(**env: str) -> DiscordSettings:
        return load_group(DiscordSettings, env_file=None, discord_token="t", **env)

    assert load().shards is None and load().runs_every_shard  # unsharded: Discord's recommendation
    assert load(discord_shard_count="4", discord_shard_ids="3, 1").shards == [1, 3]
    assert not load(discord_shard_count="4", discord_shard_ids="1,3").runs_every_shard
    assert load(discord_shard_count="2", discord_shard_ids="0,1").runs_every_shard
    for env, wrong in [({"discord_shard_ids": "0"}, "needs DISCORD_SHARD_COUNT"),
                       ({"discord_shard_count": "2", "discord_shard_ids": "1,2"}, "below DISCORD_SHARD_COUNT"),
                       ({"discord_shard_count": "2", "discord_shard_ids": "one"}, "DISCORD_SHARD_IDS must be"),
                       ({"discord_shard_count": "-1"}, "DISCORD_SHARD_COUNT must not be negative")]:
        with pytest.raises(SettingsError, match=wrong):
            load(**env)


def test_some_of_the_shards_need_shared_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "2")
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0,1")
    for name in ("DATABASE_URL", "VECTOR_STORE", "PGVECTOR_URL"):
        monkeypatch.delenv(name, raising=False)
    DiscordPlatform.from_env(None, None)  # every shard here: a process of its own is fine
    monkeypatch.setenv("DISCORD_SHARD_IDS", "1")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        DiscordPlatform.from_env(None, None)
    url = "postgresql://memorybot@127.0.0.1/shared"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("VECTOR_STORE", "pgvector")
    monkeypatch.setenv("PGVECTOR_URL", url)
    assert DiscordPlatform.from_env(None, None).settings.shards == [1]


async def test_serve_refuses_some_of_the_shards_on_state_of_its_own(fake: FakeDiscord, tmp_path: Path) -> None:
    platform = DiscordPlatform(discord_settings(shard_count=2, shard_ids=frozenset({"1"})))
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        await serve(platform, settings_for(tmp_path), backend=ScriptedBackend())
    assert fake.identifies == []


async def test_a_shard_runs_in_one_process_only(postgres) -> None:
    """Two processes on one DATABASE_URL never run the same shard: the second is refused before it connects."""
    url = postgres.new_database()
    one, other = await PostgresSql.open(url, ""), await PostgresSql.open(url, "")

    def shards(ids: str = "") -> DiscordSettings:
        return discord_settings(shard_count=3, shard_ids=frozenset(ids.split(",")) if ids else frozenset())

    try:
        async with AsyncExitStack() as first:
            await claim_shards(first, one, shards("0,1"))
            async with AsyncExitStack() as second:
                await claim_shards(second, other, shards("2"))  # the other shard: fine beside it
            for taken, held in (("1", "shard 1"), ("1,2", "shard 1"), ("", "shards of this bot")):
                with pytest.raises(SettingsError, match=held):
                    async with AsyncExitStack() as second:
                        await claim_shards(second, other, shards(taken))
        async with AsyncExitStack() as first:  # the first process stopped: its shards are free
            await claim_shards(first, other, shards())  # every shard
            with pytest.raises(SettingsError, match="every shard"):
                async with AsyncExitStack() as second:
                    await claim_shards(second, one, shards("2"))
    finally:
        await one.close()
        await other.close()


async def test_a_process_whose_shard_was_taken_while_its_database_was_away_stops(
    fake: FakeDiscord, make_settings, postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the connection holding the shard's lock (a restart), and another process takes the shard
    before this one can take it again: this one stops, saying why, rather than answer beside the other."""
    monkeypatch.setattr("bot.sql.LOCK_CHECK_SECONDS", 0.05)
    monkeypatch.setattr("bot.sql.KEPT_LOCK_GRACE_SECONDS", 0.2)
    url = postgres.new_database()
    settings = make_settings(database_url=url, vector_store="pgvector", pgvector_url=url)
    platform = DiscordPlatform(discord_settings(shard_count=2, shard_ids=frozenset({"0"})), guild_ready_timeout=0.05)
    task = asyncio.create_task(serve(platform, settings, backend=ScriptedBackend(reply="hi"), stop=asyncio.Event()))
    other = await PostgresSql.open(url, "")
    try:
        await fake.wait_identified(timeout=60)
        await other.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND pid <> pg_backend_pid()")
        async with AsyncExitStack() as stack, asyncio.timeout(60):
            while not await stack.enter_async_context(other.try_lock("discord shard 0")):
                await asyncio.sleep(0.01)
            with pytest.raises(SettingsError, match="took over a shard of this one"):
                await task
    finally:
        task.cancel()
        await other.close()


# ----- one process, every shard


async def test_one_process_runs_the_shards_discord_recommends(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def at_once(self: DiscordClient, shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py waits 5 s between two shards' IDENTIFYs, as Discord asks: nothing to wait for here

    monkeypatch.setattr(DiscordClient, "before_identify_hook", at_once)
    fake.recommended_shards = 2
    stop = asyncio.Event()
    platform = DiscordPlatform(discord_settings(), guild_ready_timeout=0.05)  # DISCORD_SHARD_COUNT=0
    task = asyncio.create_task(serve(platform, settings_for(tmp_path), backend=ScriptedBackend(reply="hi"),
                                     stop=stop))
    try:
        await fake.wait_identified(timeout=60, shards=2)
        assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
        alice = fake.user("alice")
        said = [fake.message(alice, f"{fake.mention()} hello", channel_id=g.channel_id, mentions=[fake.bot_user])
                for g in fake.guilds] + [fake.message(alice, "hello", dm=True)]
        shards = [await fake.dispatch("MESSAGE_CREATE", message) for message in said]
        assert shards == [fake.shard_of(fake.guilds[0].id), fake.shard_of(fake.guilds[1].id), 0]
        assert sorted(shards[:2]) == [0, 1]  # each guild on its own shard
        replies = await fake.wait_for(lambda r: r.method == "POST" and r.reference is not None, count=3)
        assert sorted(r.reference for r in replies) == sorted(m["id"] for m in said)
        assert len(fake.sent("PUT", r"/commands$")) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# ----- two processes, one shard each


class Extractions:
    """What both processes' models were asked to extract, by locker number, and whether answers are held."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self.by_shard: dict[str, list[int]] = {}
        self.open = asyncio.Event()
        self.open.set()


class ShardModel(FakeModelServer):
    """The model of shard `shard`'s process: replies say `shard N here.`, extractions answer one fact per message."""

    def __init__(self, shard: int, extractions: Extractions) -> None:
        super().__init__(reply=f"shard {shard} here.")
        self.shard = shard
        self.extractions = extractions

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "response_format" in body:
            numbers = LOCKER.findall(json.dumps(body["messages"][-1]))
            number = numbers[-1] if numbers else "?"
            self.extractions.asked[number] += 1
            self.extractions.by_shard.setdefault(number, []).append(self.shard)
            await self.extractions.open.wait()
            self.facts = [f"The user's locker number is {number}."]
        return await self._answer(request, body)


FAKE_ADDRESS = """
import sys, discord, yarl
discord.http.Route.BASE = {api!r}
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL({gateway!r})
from adapters.cli import main
sys.exit(main(["--env-file", "/dev/null", "discord"]))
"""


def shard_process(fake: FakeDiscord, shard: int, url: str, model: ShardModel, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "DISCORD_TOKEN": TOKEN, "DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": str(shard),
           "DATA_DIR": str(tmp_path / f"shard{shard}"), "HF_HUB_OFFLINE": "1", "DATABASE_URL": url,
           "VECTOR_STORE": "pgvector", "PGVECTOR_URL": url, "MODEL_BACKEND": "openai",
           "OPENAI_BASE_URL": model.base_url, "EMBEDDER_BACKEND": "sentence_transformers",
           # learning waits for a second without replies: an extraction never gives way to a reply mid-way, so
           # each one asked twice would be an exchange learned twice
           "WRITEBACK_QUIET_SECONDS": "1", "MEMORY_KEEP_MESSAGES": "false", "LOG_LEVEL": "INFO"}
    script = FAKE_ADDRESS.format(api=fake.url + "/api/v10", gateway=fake.url + "/gateway")
    log = (tmp_path / f"shard{shard}.log").open("w")
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=log, stderr=log)


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = condition()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


class Shards:
    """The test's side of two running shard processes: say things in a guild, run commands, read what happened."""

    def __init__(self, fake: FakeDiscord, state: BotDatabase, extractions: Extractions) -> None:
        self.fake, self.state, self.extractions = fake, state, extractions
        self.said: list[dict[str, Any]] = []

    async def say(self, user: dict[str, Any], guild: FakeGuild, number: int) -> dict[str, Any]:
        fake = self.fake
        message = fake.message(user, f"{fake.mention()} My locker number is {number}.", channel_id=guild.channel_id,
                               mentions=[fake.bot_user])
        self.said.append(message)
        await fake.dispatch("MESSAGE_CREATE", message)
        return message

    async def answered(self) -> None:
        """Wait until every message said has its reply, written to the end."""
        def done() -> bool:
            replied = {r.reference for r in self.fake.sent("POST", r"/channels/\d+/messages$")}
            return replied >= {m["id"] for m in self.said} and all(
                text.endswith("here.") for g in self.fake.guilds for text in self.fake.shown(g.channel_id))
        await until(done, "not every message was answered")

    async def drained(self) -> None:
        async def done() -> bool:
            return await self.state.pending_count() == 0
        await until(done, "the queue was never drained")

    async def learned(self, *numbers: int) -> None:
        """Wait until `numbers` were extracted and the queue is empty."""
        async def done() -> bool:
            return all(self.extractions.asked[str(n)] for n in numbers) and await self.state.pending_count() == 0
        await until(done, f"{numbers} were not learned")

    async def command(self, user: dict[str, Any], guild: FakeGuild, name: str) -> str:
        payload = self.fake.command(user, name, guild=guild)
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        token = payload["token"]
        followups: list[Recorded] = await self.fake.wait_for(
            lambda r: token in r.path and r.method == "POST" and r.path.startswith("/webhooks/"), timeout=30)
        return followups[0].json["content"]

    async def lockers(self, user: dict[str, Any], guild: FakeGuild) -> list[int]:
        """The locker numbers the bot lists for `user` in `guild` (/memories, answered by that guild's shard)."""
        return sorted(int(n) for n in LOCKER.findall(await self.command(user, guild, "memories")))


async def test_two_processes_one_shard_each_answer_once_learn_once_and_keep_a_pause(
    fake: FakeDiscord, postgres: Any, tmp_path: Path
) -> None:
    url = postgres.new_database()
    extractions = Extractions()
    state = BotDatabase(tmp_path / "unused.sqlite3", url)
    await state.open()
    async with ShardModel(0, extractions) as model0, ShardModel(1, extractions) as model1:
        processes = [shard_process(fake, n, url, model, tmp_path) for n, model in enumerate((model0, model1))]
        try:
            await fake.wait_identified(timeout=180, shards=2)  # a fresh process imports all and loads the embedder
            await until(lambda: all("connected to Discord" in (tmp_path / f"shard{n}.log").read_text()
                                    for n in range(2)), "the shards never got ready", timeout=30)
            await check_shards(Shards(fake, state, extractions))
        finally:
            stop_all(processes)
            await state.close()
    logs = [(tmp_path / f"shard{n}.log").read_text() for n in range(2)]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0 and "Traceback" not in log, log[-3000:]


async def check_shards(shards: Shards) -> None:
    fake = shards.fake
    assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
    on = {fake.shard_of(g.id): g for g in fake.guilds}
    dana, sam = fake.user("dana"), fake.user("sam")

    # Every message is answered once, in its guild, by the process of the guild's shard; each exchange is learned
    # once, whichever process's worker claimed it.
    numbers = {(dana["id"], 0): [100, 101], (sam["id"], 0): [102], (dana["id"], 1): [110, 111], (sam["id"], 1): [112]}
    for (user_id, shard), wanted in numbers.items():
        for number in wanted:
            await shards.say(dana if user_id == dana["id"] else sam, on[shard], number)
    await shards.answered()
    replies = Counter(r.reference for r in fake.sent("POST", r"/channels/\d+/messages$"))
    assert sorted(replies) == sorted(m["id"] for m in shards.said) and set(replies.values()) == {1}
    for shard, guild in on.items():
        assert set(fake.shown(guild.channel_id)) == {f"shard {shard} here."}
    assert [shard for shard, event, _ in fake.dispatched] == [0, 0, 0, 1, 1, 1]
    await shards.learned(*(n for wanted in numbers.values() for n in wanted))
    assert await shards.lockers(dana, on[0]) == [100, 101]  # listed by shard 0's process
    assert await shards.lockers(sam, on[0]) == [102]
    assert await shards.lockers(dana, on[1]) == [110, 111]  # and by shard 1's
    assert await shards.lockers(sam, on[1]) == [112]
    assert len(fake.sent("PUT", r"/commands$")) == 1  # the slash commands, registered by shard 0's process

    # A pause is kept in the shared state: an exchange a worker (of either process) is learning when the user
    # pauses is dropped, and nothing later is queued; other users, and the same user in another server (a memory
    # space of its own, as on one process), go on being learned.
    extractions = shards.extractions
    extractions.open.clear()
    await shards.say(dana, on[1], 120)
    await until(lambda: extractions.asked["120"] == 1, "the exchange was never taken up")
    assert "Paused" in await shards.command(dana, on[1], "pause")
    extractions.open.set()
    await shards.drained()  # before the next reply, which would make the extraction give way and be asked again
    await shards.say(dana, on[1], 121)
    await shards.answered()
    await shards.say(sam, on[1], 122)
    await shards.say(dana, on[0], 130)
    await shards.answered()
    await shards.learned(122, 130)
    assert await shards.lockers(dana, on[1]) == [110, 111]
    assert await shards.lockers(sam, on[1]) == [112, 122]
    assert await shards.lockers(dana, on[0]) == [100, 101, 130]
    assert "121" not in extractions.asked
    assert set(extractions.asked.values()) == {1}, extractions.asked  # nothing extracted twice
