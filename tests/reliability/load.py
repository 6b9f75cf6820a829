"""Section 6 of issue 17, load: many users writing at once to the real Slack and Discord adapters.

Simulated users (50 x 20 messages on each platform in the full run, 10 x 5 in CI) talk to a real `MemoryBot`
(embedded Qdrant, write-back running) through the real bolt app over HTTP (the fake Slack of
tests/adapters/slack) and through real discord.py over the fake gateway (tests/adapters/discord). Every user writes
in their own session, all sessions at once: a message, then the bot's answer read, a pause, the next message, as
people chat. The model is scripted (`LoadModel`): each reply comes in pieces a few milliseconds apart, so replies
take time, the generation queue fills and users beyond it are told to retry (`MODEL_BUSY`); each extraction answers
one fact made of the message's canary, so every message has one passage and one fact of its own to find.

Invariants, counted per platform:
- every message answered (the scripted reply, in its thread or as a reply to it, once) or told to retry (the
  busy notice, or the rate limit's notice); anything else, or nothing once the adapter has finished its work, is
  a violation. The rate limit allows each user's messages (RATE_LIMIT_MESSAGES = messages per user), since a
  refusal after the first is silent by design and the invariant is about load, not about the limit;
- the queue drained at the end: no pending exchange, none set aside, and every message's exchange learned once
  (exactly one stored passage with its message id, exactly one fact with its canary, nothing else). Waiting for
  it has no deadline, only a stall limit (STALL_SECONDS without progress), since a loaded machine is slow;
- resident memory (RSS) flat after warm-up: sampled every RSS_INTERVAL s from the bot's start to the queue
  drained; warm-up lasts until a quarter of the messages are sent; of the rest, the last third's highest sample
  may be at most FLAT_TOLERANCE above the first third's highest. RSS over time is in `table.data["rss"]`.
The bots run at LOG_LEVEL=DEBUG inside `LogCapture` with logscan's secrets as their tokens; every log line is
scanned for a secret or a canary (a user's words).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import psutil

from adapters.discord.client import DiscordClient
from adapters.slack.server import make_client, start_slack
from bot.app import MemoryBot
from bot.errors import REPLY_FAILED
from bot.handler import MODEL_BUSY
from bot.llm.base import ChatMessage, GenerationParams
from bot.settings import Secret, Settings
from memory.records import MemoryRecord
from tests.adapters.discord.conftest import _stop, _until_ready
from tests.adapters.discord.fake_discord import FakeDiscord, pointed_at
from tests.adapters.slack.conftest import Harness, mention, message, slack_settings
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend
from tests.reliability.logscan import (
    DISCORD_TOKEN,
    SLACK_BOT_TOKEN,
    SLACK_SIGNING_SECRET,
    Canaries,
    LogCapture,
    scan,
)
from tests.reliability.tally import Table
from tests.servers.postgres import PostgresServer

REPLY = "Thanks, I will keep that in mind. Is there anything else on your mind today?"
RATE_NOTICE = "You're sending messages a bit fast."
# Longest a user waits for an answer before writing again; the verdict is taken once the adapter has finished
# (Discord: given WAIT_SECONDS more), so a late answer still counts, and one never shown does not.
WAIT_SECONDS = 120.0
STALL_SECONDS = 120.0  # write-back learning nothing for this long ends the wait for the queue to drain
RSS_INTERVAL = 0.5
WARM_UP = 0.25  # of the messages sent
FLAT_TOLERANCE = 0.10
CANARY = re.compile(r"qz[a-z]{6}\d+")


@dataclass(frozen=True)
class Load:
    users: int
    messages: int  # per user
    queue_size: int  # GENERATION_QUEUE_SIZE: replies waiting for the model before users are told to retry
    chunk_delay: float  # seconds between the pieces of a reply
    think: tuple[float, float]  # a user's pause after reading an answer, seconds (uniform)


FULL = Load(users=50, messages=20, queue_size=8, chunk_delay=0.03, think=(0.2, 1.0))
# fewer users: a smaller queue, so that it still fills
SAMPLE = Load(users=10, messages=5, queue_size=4, chunk_delay=0.03, think=(0.1, 0.5))


class LoadModel(ScriptedBackend):
    """Replies with REPLY in pieces `delay` seconds apart; an extraction answers at once with one fact made of the
    message's canary ("The user collects qz... stamps."). Prompts are not kept (they would grow with the load)."""

    def __init__(self, delay: float) -> None:
        super().__init__(reply=REPLY, chunk=8, delay=delay)

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        if params.json_schema is None:
            for start in range(0, len(REPLY), self._chunk):
                if should_stop():
                    return
                time.sleep(self._delay)
                yield REPLY[start : start + self._chunk]
            return
        words = CANARY.findall(messages[-1].content)
        yield json.dumps({"facts": [f"The user collects {words[-1]} stamps."] if words else []})


def user_text(word: str) -> str:
    """A message stating one fact, named by its canary `word`."""
    return f"I collect {word} stamps from old letters."


@dataclass
class Sent:
    """One message a simulated user sent, and what became of it."""

    user_key: str
    message_id: str
    word: str
    at: float = 0.0  # when it was sent, seconds on the section's clock
    answers: list[str] = field(default_factory=list)  # the final text of each message the bot sent for it


class Chat(Protocol):
    """One platform as the simulated users see it."""

    name: str
    bot: MemoryBot

    async def send(self, user: int, index: int, text: str, word: str) -> Sent:
        """Deliver user `user`'s message number `index` the way the platform does."""

    def answers(self, sent: Sent) -> list[str]:
        """What the bot has shown for `sent` so far (each message's text after its edits)."""

    async def finish(self) -> None:
        """Wait until the adapter has finished every reply it started."""


def is_answered(text: str) -> bool:
    return text == REPLY


def is_told(text: str) -> bool:
    return text == MODEL_BUSY or text.startswith(RATE_NOTICE)


def is_final(text: str) -> bool:
    """Whether a message of the bot's is a whole answer (a reply still streaming is a part of REPLY)."""
    return is_answered(text) or is_told(text) or text == REPLY_FAILED


# ----- resident memory


class RssSampler:
    """This process's resident memory every RSS_INTERVAL seconds while in use: `points` as [seconds since
    `started` (a `time.monotonic()`), MB]."""

    def __init__(self, started: float) -> None:
        self.points: list[list[float]] = []
        self._process = psutil.Process()
        self._started = started
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.monotonic() - self._started

    async def _sample(self) -> None:
        while True:
            self.points.append([round(self.now(), 2), round(self._process.memory_info().rss / 2**20, 1)])
            await asyncio.sleep(RSS_INTERVAL)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.points.append([round(self.now(), 2), round(self._process.memory_info().rss / 2**20, 1)])

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def flat_after(points: list[list[float]], warm: float) -> tuple[bool, str]:
    """Whether RSS stayed flat after `warm` seconds (see the module docstring), and the figures."""
    after = [mb for at, mb in points if at >= warm]
    if len(after) < 3:
        return False, f"only {len(after)} RSS samples after warm-up"
    third = len(after) // 3
    first, last = max(after[:third]), max(after[-third:])
    figures = f"first third's max {first:.0f} MB, last third's max {last:.0f} MB ({len(after)} samples)"
    return last <= first * (1 + FLAT_TOLERANCE), figures


# ----- the platforms


class RecordingSlack(FakeSlack):
    """The fake Slack, also keeping each posted message's final text by conversation (channel, thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: dict[tuple[str, str | None], list[str]] = {}  # (channel, thread_ts) -> ts of each post
        self.texts: dict[str, str] = {}  # ts -> text after edits

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        answer = super()._answer(method, args)
        if method == "chat.postMessage":
            where = (str(args.get("channel")), str(args["thread_ts"]) if args.get("thread_ts") else None)
            self.posted.setdefault(where, []).append(answer["ts"])
            self.texts[answer["ts"]] = str(args.get("text", ""))
        elif method == "chat.update":
            self.texts[str(args.get("ts"))] = str(args.get("text", ""))
        return answer


class SlackChat:
    """Users mention the bot in one of a few channels (each mention starts a thread), every fourth message in a
    DM instead; events are signed and posted to the app as Slack delivers them."""

    name = "slack"

    def __init__(self, harness: Harness, fake: RecordingSlack) -> None:
        self.bot = harness.bot
        self._harness = harness
        self._fake = fake
        self._where: dict[str, tuple[tuple[str, str | None], int]] = {}  # message ts -> conversation, posts before
        self._next: dict[str, str] = {}  # message ts -> the ts of the next message sent where it was (a DM)
        self._last: dict[tuple[str, str | None], str] = {}  # conversation -> the ts of its latest message

    async def send(self, user: int, index: int, text: str, word: str) -> Sent:
        user_id = f"U{user:04d}"
        if index % 4 == 3:
            channel = f"D{user_id}"
            event = message(text, channel=channel, user=user_id)
            where: tuple[str, str | None] = (channel, None)
        else:
            channel = f"C{user % 5}"
            event = mention(text, channel=channel, user=user_id)
            where = (channel, event["ts"])
        self._where[event["ts"]] = (where, len(self._fake.posted.get(where, [])))
        if where in self._last:
            self._next[self._last[where]] = event["ts"]
        self._last[where] = event["ts"]
        sent = Sent(f"slack:{TEAM_ID}:{user_id}", event["ts"], word)
        status = await self._harness.event(event, secret=SLACK_SIGNING_SECRET)
        if status != 200:
            sent.answers.append(f"(HTTP {status} for the event)")
        return sent

    def answers(self, sent: Sent) -> list[str]:
        """The bot's posts where `sent` was, after it and before the user's next message there (a user's DM holds
        all their DM messages; a mention's thread only its own)."""
        where, before = self._where[sent.message_id]
        following = self._next.get(sent.message_id)
        until = self._where[following][1] if following else None
        return [self._fake.texts[ts] for ts in self._fake.posted.get(where, [])[before:until]]

    async def finish(self) -> None:
        await self._harness.running.adapter.drain()


class RecordingDiscord(FakeDiscord):
    """The fake Discord, also keeping which of the bot's messages reply to which message."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[str, list[str]] = {}  # message id -> ids of the bot's messages referencing it

    def _message_from(self, body: dict[str, Any] | None, channel_id: str, message_id: str, *,
                      webhook: bool = False) -> dict[str, Any]:
        reference = (body or {}).get("message_reference")
        if reference and not webhook:
            self.replies.setdefault(str(reference["message_id"]), []).append(message_id)
        return super()._message_from(body, channel_id, message_id, webhook=webhook)


class DiscordChat:
    """Users mention the bot in the text channel or the thread of the first server or in the second server's
    channel, every fourth message in a DM instead; gateway events go out one at a time, as on one connection."""

    name = "discord"

    def __init__(self, bot: MemoryBot, client: DiscordClient, fake: RecordingDiscord) -> None:
        self.bot = bot
        self._client = client
        self._fake = fake
        self._users: dict[int, dict[str, Any]] = {}
        self._channels = [fake.channel_id, fake.thread_id, fake.other_guild.channel_id]
        self._gateway = asyncio.Lock()

    async def send(self, user: int, index: int, text: str, word: str) -> Sent:
        fake = self._fake
        author = self._users.setdefault(user, fake.user(f"user{user}"))
        if index % 4 == 3:
            payload = fake.message(author, text, dm=True)
            workspace = "dm"
        else:
            channel = self._channels[(user + index) % len(self._channels)]
            payload = fake.message(author, f"{fake.mention()} {text}", channel_id=channel,
                                   mentions=[fake.bot_user])
            workspace = payload["guild_id"]
        async with self._gateway:
            await fake.dispatch("MESSAGE_CREATE", payload)
        return Sent(f"discord:{workspace}:{author['id']}", payload["id"], word)

    def answers(self, sent: Sent) -> list[str]:
        return [self._fake.posted[i]["content"] for i in self._fake.replies.get(sent.message_id, [])]

    async def finish(self) -> None:
        await self._client.finish_work(WAIT_SECONDS)


def load_settings(workdir: Path, load: Load) -> Settings:
    return settings_for(workdir / "data", log_level="DEBUG", generation_queue_size=load.queue_size,
                        rate_limit_messages=load.messages)


@contextlib.asynccontextmanager
async def slack_chat(workdir: Path, load: Load) -> AsyncIterator[SlackChat]:
    backend = LoadModel(load.chunk_delay)
    slack = slack_settings(slack_bot_token=Secret(SLACK_BOT_TOKEN), slack_signing_secret=Secret(SLACK_SIGNING_SECRET))
    async with (
        RecordingSlack() as fake, MemoryBot(load_settings(workdir, load), backend=backend) as bot,
        start_slack(bot, slack, client=make_client(slack, base_url=fake.base_url)) as running,
        aiohttp.ClientSession() as http,
    ):
        yield SlackChat(Harness(fake, bot, running, backend, http), fake)


@contextlib.asynccontextmanager
async def discord_chat(workdir: Path, load: Load) -> AsyncIterator[DiscordChat]:
    fake = RecordingDiscord()
    await fake.start()
    try:
        with pointed_at(fake):
            async with MemoryBot(load_settings(workdir, load), backend=LoadModel(load.chunk_delay)) as bot:
                client = DiscordClient(bot, guild_ready_timeout=0.05)
                task = asyncio.create_task(client.start(DISCORD_TOKEN))
                try:
                    await _until_ready(client, task)
                    yield DiscordChat(bot, client, fake)
                finally:
                    await _stop(client, task)
    finally:
        await fake.stop()


# ----- the users


async def answered(chat: Chat, sent: Sent) -> None:
    """Wait (as a user reads the channel) until the bot's answer to `sent` is whole, or WAIT_SECONDS pass."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not any(is_final(text) for text in chat.answers(sent)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def session(chat: Chat, user: int, load: Load, canaries: Canaries, sent: list[Sent],
                  clock: Callable[[], float]) -> None:
    """One user: each message, then its answer read, then a pause."""
    pause = random.Random(user)
    for index in range(load.messages):
        word = canaries.word()
        at = clock()
        one = await chat.send(user, index, user_text(word), word)
        one.at = at
        sent.append(one)
        await answered(chat, one)
        await asyncio.sleep(pause.uniform(*load.think))


async def run_users(chat: Chat, load: Load, canaries: Canaries, clock: Callable[[], float]) -> list[Sent]:
    """Every user's session at once, until the adapter has finished its last reply; the messages sent, each with
    the bot's answers."""
    sent: list[Sent] = []
    await asyncio.gather(*(session(chat, user, load, canaries, sent, clock) for user in range(load.users)))
    await chat.finish()
    for one in sent:
        one.answers = chat.answers(one)
    return sent


# ----- the checks


def count_answers(table: Table, prefix: str, sent: list[Sent]) -> None:
    table.add(f"{prefix}messages sent", len(sent), [])
    table.add(f"{prefix}answered", sum(1 for s in sent if s.answers and is_answered(s.answers[0])), [])
    table.add(f"{prefix}told to retry", sum(1 for s in sent if s.answers and is_told(s.answers[0])), [])
    for one in sent:
        ok = len(one.answers) == 1 and (is_answered(one.answers[0]) or is_told(one.answers[0]))
        table.check(f"{prefix}unanswered", ok,
                    f"message {one.message_id} of {one.user_key}: the bot showed {one.answers!r}")


async def drained(bot: MemoryBot) -> None:
    """Wait until the write-back queue is empty, for as long as it keeps shrinking (on a busy machine learning a
    thousand exchanges takes many minutes): STALL_SECONDS without one learned ends the wait, and what is left is
    counted as not drained."""
    while True:
        before = await bot.db.pending_count()
        try:
            await bot.writeback.drain(timeout=STALL_SECONDS)
            return
        except TimeoutError:
            if await bot.db.pending_count() >= before:
                return


async def count_learned(table: Table, prefix: str, bot: MemoryBot, sent: list[Sent]) -> None:
    await drained(bot)
    pending = await bot.db.pending_count()
    row = await bot.db.sql.fetchone("SELECT COUNT(*) FROM failed_exchanges")
    set_aside = int(row[0]) if row else 0
    table.check(f"{prefix}queue drained", pending == 0 and set_aside == 0,
                f"{pending} exchange(s) still queued, {set_aside} set aside")
    by_user: dict[str, list[Sent]] = {}
    for one in sent:
        by_user.setdefault(one.user_key, []).append(one)
    for user_key, theirs in by_user.items():
        stored = await bot.store.list(user_key)
        for one in theirs:
            table.check(f"{prefix}learned once", learned_once(stored, one), f"message {one.message_id} of {user_key}:"
                        f" {[(r.kind, r.source.message_id) for r in stored if _of(r, one)]}")
        unexpected = [r for r in stored if not any(_of(r, one) for one in theirs)]
        table.check(f"{prefix}nothing else stored", not unexpected,
                    f"{user_key}: {len(unexpected)} memories of no message sent")


def _of(record: MemoryRecord, sent: Sent) -> bool:
    """Whether a stored memory was learned from `sent`: its passage (by message id) or its fact (by canary)."""
    return record.source.message_id == sent.message_id if record.is_message else sent.word in record.text


def learned_once(stored: list[MemoryRecord], sent: Sent) -> bool:
    passages = [r for r in stored if r.is_message and _of(r, sent)]
    facts = [r for r in stored if not r.is_message and _of(r, sent)]
    return len(passages) == 1 and len(facts) == 1 and facts[0].source.message_id == sent.message_id


# ----- the section


Start = Callable[[Path, Load], contextlib.AbstractAsyncContextManager[Chat]]


async def run_platform(name: str, start: Start, seed: int, workdir: Path, load: Load, table: Table,
                       logs: Table, started: float) -> None:
    """One platform's users, the checks, and its RSS (seconds since `started`, the section's start)."""
    canaries = Canaries(seed)
    prefix = f"{name}: "
    with LogCapture() as captured:
        async with RssSampler(started) as sampler, start(workdir / name, load) as chat:
            begun = sampler.now()
            sent = await run_users(chat, load, canaries, sampler.now)
            answered_at = sampler.now()
            count_answers(table, prefix, sent)
            await count_learned(table, prefix, chat.bot, sent)
            await sampler.stop()  # at the queue drained, before the bot stops
    times = sorted(one.at for one in sent)
    warm = times[int(WARM_UP * len(times))] if times else float("inf")
    ok, figures = flat_after(sampler.points, warm)
    table.check(f"{prefix}RSS flat after warm-up", ok, figures)
    table.data.setdefault("rss", {})[name] = sampler.points
    table.data.setdefault("rss_check", {})[name] = figures
    table.data.setdefault("seconds", {})[name] = {  # on the section's clock
        "bot started": round(begun, 1), "last answer": round(answered_at, 1),
        "queue drained, memories checked": round(sampler.points[-1][0], 1)}
    scan(logs, f"{name}: log lines", captured.lines, canaries)


async def run(workdir: Path, *, full: bool, postgres: PostgresServer | None = None) -> tuple[Table, Table]:
    """Section 6 on both platforms (the embedded store: `postgres` is not used)."""
    load = FULL if full else SAMPLE
    table, logs = Table("6. Load"), Table("logs: load")
    table.data["load"] = {"users": load.users, "messages_per_user": load.messages,
                          "generation_queue_size": load.queue_size}
    starts: list[tuple[str, Start]] = [("slack", slack_chat), ("discord", discord_chat)]
    started = time.monotonic()
    for seed, (name, start) in enumerate(starts):
        await run_platform(name, start, seed, workdir, load, table, logs, started)
    return table, logs

