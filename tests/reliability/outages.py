"""Section 4 of issue 17, outages, counted: what the bot's users see while a service it needs is down, and whether
every exchange is learned once it is back.

Each outage kind is a phase of a conversation with real parts on 127.0.0.1: the memory store (PostgreSQL+pgvector
killed with SIGKILL and started again on its data directory; the embedded store's SQLite files made to fail every
write), the model server (the OpenAI backend against a stand-in that closes its port, answers 500 or hangs past
the backend's timeout) and the platforms (the fake Slack Web API and Discord REST answering 429 with Retry-After
and 5xx). Messages are sent before the outage (still being answered and learned when it starts), during it and
after recovery. Every message names its own locker number and a canary (logscan.py); the scripted model answers
each extraction with that number's fact, so after the write-back has drained each message must have left exactly
one fact and one passage of itself in the store (on the embedded store, read back from its files by a store opened
after the bot stopped).

Counted per kind: `answered or told` (the message got the model's reply, or one of the bot's fixed messages saying
what went wrong; after recovery only a real reply counts) and `learned once` (its fact and its passage stored
exactly once; a message that was told something went wrong while the bot's own state database was down may be
lost, but never stored twice). Every bot runs at DEBUG inside `LogCapture`, configured with logscan's secrets, and its
log is scanned. `run` is the entry point of the CI test and of bench/reliability.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yarl
from aiohttp import web

from adapters.discord.client import DiscordClient
from adapters.slack.server import make_client, start_slack
from bot.app import MemoryBot, open_store
from bot.errors import REPLY_FAILED
from bot.handler import MODEL_BUSY
from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.openai_backend import OpenAICompatibleBackend
from bot.settings import Secret, Settings
from memory.records import FACT
from memory.store import MemoryStore
from tests.adapters.discord.conftest import Running, _stop, _until_ready
from tests.adapters.discord.fake_discord import FakeDiscord, pointed_at
from tests.adapters.slack.conftest import event_body, mention, signed_headers, slack_settings
from tests.adapters.slack.fake_slack import FakeSlack
from tests.bot.helpers import RecordingReply, message
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend
from tests.fakes.openai_server import FakeModelServer
from tests.reliability.logscan import (
    DISCORD_TOKEN,
    OPENAI_API_KEY,
    SLACK_BOT_TOKEN,
    SLACK_SIGNING_SECRET,
    Canaries,
    LogCapture,
    scan,
    with_password,
)
from tests.reliability.tally import Table
from tests.servers.postgres import ROLE, PostgresServer, _bin, _free_port

REPLY = "Noted, thanks!"  # the model's reply when it is up
TOLD = (REPLY_FAILED, MODEL_BUSY)  # the bot's fixed messages saying it could not answer
LOCKER = re.compile(r"locker number is (\d+)")
MAX_BACKOFF = 2.0  # WRITEBACK_MAX_BACKOFF_SECONDS: write-back retries soon after recovery
MODEL_TIMEOUT = 1.5  # the OpenAI backend's request timeout here (its default is 120 s)
DRAIN_SECONDS = 240.0
BEFORE, DURING, AFTER = "before", "during", "after recovery"


# ----- the conversation and its verdicts


@dataclass
class Sent:
    """One message of the conversation: its locker number, when it was sent, its id on the platform and what the
    user was shown in answer."""

    kind: str
    number: int
    phase: str
    ref: str = ""
    seen: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return REPLY in self.seen and not self.told

    @property
    def told(self) -> bool:
        return any(text in TOLD for text in self.seen)


class Conversation:
    """The messages of every outage kind, numbered across kinds, each with a canary."""

    def __init__(self, canaries: Canaries) -> None:
        self._canaries = canaries
        self._numbers = itertools.count(100)
        self.sent: list[Sent] = []

    def next(self, kind: str, phase: str) -> tuple[Sent, str]:
        sent = Sent(kind, next(self._numbers), phase)
        self.sent.append(sent)
        return sent, self._canaries.say(f"My locker number is {sent.number}.")

    def judge(self, table: Table, kind: str, learned: Learned, *, told_may_be_lost: bool = False) -> None:
        """Count each message of `kind` as answered-or-told and as learned once."""
        for sent in (s for s in self.sent if s.kind == kind):
            what = f"message {sent.number} ({sent.phase})"
            ok = sent.answered or (sent.told and sent.phase != AFTER)
            problem = "told after recovery" if sent.told else "no answer"
            table.check(f"{kind}: answered or told", ok, f"{what}: {problem}; shown {sent.seen!r}")
            facts, passages = learned.facts[sent.number], learned.passages[sent.number]
            ok = facts == passages == 1 or (told_may_be_lost and sent.told and facts == passages == 0)
            table.check(f"{kind}: learned once", ok, f"{what}: {facts} fact(s), {passages} passage(s) stored"
                        f"{' (it was told)' if sent.told else ''}")


@dataclass
class Learned:
    """How many facts and passages of each locker number the store holds."""

    facts: Counter[int] = field(default_factory=Counter)
    passages: Counter[int] = field(default_factory=Counter)

    @classmethod
    async def read(cls, store: MemoryStore) -> Learned:
        learned = cls()
        for user_key in await store.user_keys():
            for record in await store.list(user_key, include_superseded=True, include_expired=True):
                numbers = {int(n) for n in LOCKER.findall(record.text)}
                (learned.facts if record.kind == FACT else learned.passages).update(numbers)
        return learned


async def drained(table: Table, kind: str, bot: MemoryBot) -> None:
    """Let the write-back finish what is queued (a violation if it cannot) and check its worker still runs."""
    try:
        await bot.writeback.drain(timeout=DRAIN_SECONDS)
    except TimeoutError:
        table.check(f"{kind}: write-back drained", False, f"{await bot.db.pending_count()} exchange(s) still queued "
                    f"after {DRAIN_SECONDS:.0f} s")
    task = bot.writeback._task
    table.check(f"{kind}: write-back drained", task is not None and not task.done(), "the write-back worker stopped")


class LockerModel(ScriptedBackend):
    """The scripted model: every reply is REPLY; an extraction answers the fact of the locker number its message
    names."""

    def __init__(self) -> None:
        super().__init__(reply=REPLY, chunk=4, delay=0.02)

    def stream(self, messages: list[ChatMessage], params: GenerationParams,
               should_stop: Callable[[], bool]) -> Iterator[str]:
        if params.json_schema is not None:
            self.facts = locker_facts(messages)
        yield from super().stream(messages, params, should_stop)


def locker_facts(messages: list[dict[str, Any]] | list[ChatMessage]) -> list[str]:
    """The fact an extraction prompt's message gives (the last user message naming a locker number)."""
    for m in reversed(messages):
        content = m["content"] if isinstance(m, dict) else m.content
        if numbers := LOCKER.findall(str(content)):
            return [f"The user's locker number is {numbers[-1]}."]
    return []


def bot_settings(data_dir: Path, **overrides: Any) -> Settings:
    """A bot's settings here: quick write-back retries, and no per-user rate limit (the full run's three users write
    more often than it allows; what is counted here is outages, not the rate limit)."""
    return settings_for(data_dir, writeback_max_backoff_seconds=MAX_BACKOFF, rate_limit_messages=100_000, **overrides)


# ----- Slack, in process, over real HTTP


@dataclass
class SlackBot:
    fake: FakeSlack
    bot: MemoryBot
    url: str
    settle: Callable[[], Awaitable[None]]
    http: aiohttp.ClientSession

    async def say(self, sent: Sent, text: str) -> None:
        """Send `text` as a mention in a channel (the reply goes to its thread); do not wait for the answer."""
        event = mention(text, user=f"U{sent.number % 3}")
        sent.ref = event["ts"]
        body = json.dumps(event_body(event))
        headers = signed_headers(body, "application/json", secret=SLACK_SIGNING_SECRET)
        async with self.http.post(self.url, data=body.encode(), headers=headers) as response:
            await response.read()
            if response.status != 200:
                sent.seen.append(f"HTTP {response.status} to the event")

    def collect(self, sents: list[Sent]) -> None:
        """What each message's thread shows now."""
        for sent in sents:
            sent.seen += [str(m["text"]) for m in self.fake.shown.values() if m["thread_ts"] == sent.ref]


@asynccontextmanager
async def slack_bot(settings: Settings) -> AsyncIterator[SlackBot]:
    slack = slack_settings(slack_bot_token=Secret(SLACK_BOT_TOKEN), slack_signing_secret=Secret(SLACK_SIGNING_SECRET))
    async with FakeSlack() as fake:
        client = make_client(slack, base_url=fake.base_url)
        async with (
            MemoryBot(settings, backend=LockerModel()) as bot,
            start_slack(bot, slack, client=client) as running,
            aiohttp.ClientSession() as http,
        ):
            assert running.url is not None
            yield SlackBot(fake, bot, running.url, running.adapter.drain, http)


async def slack_phase(sb: SlackBot, talk: Conversation, kind: str, phase: str, count: int,
                      settle: bool = True) -> list[Sent]:
    sents = []
    for _ in range(count):
        sent, text = talk.next(kind, phase)
        await sb.say(sent, text)
        sents.append(sent)
    if settle:
        await sb.settle()
        sb.collect(sents)
    return sents


# ----- (a) PostgreSQL killed and started again


class RestartablePostgres(PostgresServer):
    """A PostgreSQL+pgvector server of this section's own (never the session's), which can crash: `kill()` sends
    SIGKILL to the postmaster and every backend, as an out-of-memory kill or a power cut of the database host
    would; `start()` starts it again on the same data directory (it recovers from its WAL)."""

    def __init__(self, root: Path) -> None:
        super().__init__(_free_port())
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self._run_as = "nobody" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        self._server: subprocess.Popen[bytes] | None = None
        if self._run_as:
            shutil.chown(root, self._run_as)
        subprocess.run([_bin("initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"],
                       user=self._run_as, check=True, capture_output=True)

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            with open(self.log, "ab") as out:
                self._server = subprocess.Popen(
                    [_bin("postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                     "-k", str(self.root), "-c", "fsync=off"], user=self._run_as, stdout=out, stderr=out)
            while not self._ready():
                if self._server.poll() is not None:
                    break  # e.g. a killed server's backends still held its shared memory: try again
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)
            else:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        return subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (the processes this object started, by pid)."""
        assert self._server is not None
        postmaster = psutil.Process(self._server.pid)
        backends = postmaster.children(recursive=True)
        for process in (postmaster, *backends):
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self._server.wait()
        psutil.wait_procs(backends, timeout=30)

    def stop(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()


@contextmanager
def restartable_postgres() -> Iterator[RestartablePostgres]:
    root = Path(tempfile.mkdtemp(prefix="memorybot-pg-outage-"))  # under /tmp: reachable by `nobody`
    server = RestartablePostgres(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def postgres_killed(workdir: Path, table: Table, logs: Table, canaries: Canaries, *, full: bool) -> None:
    """A Slack bot with its state and memories on PostgreSQL (DATABASE_URL + pgvector) while the server is killed
    mid-reply and mid-learning, then started again. Outages shorter and longer than the state pool's 15 s wait."""
    kind = "PostgreSQL killed and restarted"
    outages = [6.0, 20.0, 3.0] if full else [6.0]
    talk = Conversation(canaries)
    with LogCapture() as capture, restartable_postgres() as server:
        url = with_password(server.new_database())
        settings = bot_settings(workdir / "postgres", database_url=url, vector_store="pgvector", pgvector_url=url)
        async with slack_bot(settings) as sb:
            await slack_phase(sb, talk, kind, BEFORE, 3 if full else 1)  # a conversation going on
            for outage in outages:
                # replies and learning under way when the server dies
                sents = await slack_phase(sb, talk, kind, BEFORE, 3 if full else 2, settle=False)
                await asyncio.sleep(0.1)
                server.kill()
                sents += await slack_phase(sb, talk, kind, DURING, 3 if full else 1, settle=False)
                await asyncio.sleep(outage)
                server.start()
                await sb.settle()
                sb.collect(sents)
                await slack_phase(sb, talk, kind, AFTER, 3 if full else 1)
            await drained(table, kind, sb.bot)
            talk.judge(table, kind, await Learned.read(sb.bot.store), told_may_be_lost=True)
    table.data["postgres outages (s)"] = outages
    scan(logs, f"log lines: {kind}", capture.lines, canaries)


# ----- (a) the embedded store's files fail, (c) the Slack Web API answers 429 and 5xx


def store_files(memory_dir: Path) -> list[Path]:
    """The SQLite files of the embedded store: Qdrant's collection storage and mem0's history."""
    return sorted(p for p in memory_dir.rglob("*.sqlite*") if not p.name.endswith(("-journal", "-wal", "-shm")))


@contextmanager
def failing_writes(memory_dir: Path) -> Iterator[list[Path]]:
    """Every write to the embedded store's files fails while in use, as on a disk gone bad or read-only: SQLite
    cannot create the rollback journal each write needs (a directory stands where it goes). Permissions would not
    do it: the bot runs as root here, and its files are open already. Reads are served from the store's memory
    (embedded Qdrant loads its collection at start), so writes are what fails."""
    blocked = [path.with_name(path.name + "-journal") for path in store_files(memory_dir)]
    for journal in blocked:
        journal.mkdir()
    try:
        yield blocked
    finally:
        for journal in blocked:
            journal.rmdir()


async def embedded_and_slack(workdir: Path, table: Table, logs: Table, canaries: Canaries, *, full: bool) -> None:
    """One Slack bot on the embedded store: its files fail for a while, then the Web API answers 429 (with
    Retry-After) and 5xx for a while. Learning is checked from the files, by a store opened after the bot stopped."""
    store_kind, limit_kind, error_kind = ("embedded store files failing", "Slack Web API answering 429",
                                          "Slack Web API answering 5xx")
    rounds = 3 if full else 1
    talk = Conversation(canaries)
    settings = bot_settings(workdir / "embedded")
    with LogCapture() as capture:
        async with slack_bot(settings) as sb:
            await slack_phase(sb, talk, store_kind, BEFORE, 1)
            for _ in range(rounds):
                sents = await slack_phase(sb, talk, store_kind, BEFORE, 2 if full else 1, settle=False)
                with failing_writes(settings.memory_dir) as blocked:
                    table.data.setdefault("embedded store files failed", [str(p.relative_to(settings.data_dir))
                                                                          for p in blocked])
                    sents += await slack_phase(sb, talk, store_kind, DURING, 3 if full else 2, settle=False)
                    await sb.settle()
                    await asyncio.sleep(MAX_BACKOFF * 2)  # write-back meets the failing files, and retries
                sb.collect(sents)
                await slack_phase(sb, talk, store_kind, AFTER, 2 if full else 1)
            for _ in range(rounds):
                await slack_limited(sb, talk, limit_kind, full=full)
                await slack_failing(sb, talk, error_kind, full=full)
            await drained(table, store_kind, sb.bot)
        async with open_store(settings) as (store, _):  # what the files hold
            learned = await Learned.read(store)
    for kind in (store_kind, limit_kind, error_kind):
        talk.judge(table, kind, learned)
    scan(logs, "log lines: embedded store and Slack outages", capture.lines, canaries)


async def slack_limited(sb: SlackBot, talk: Conversation, kind: str, *, full: bool) -> None:
    """Slack rate-limits posting and editing for a few calls in a row (Retry-After: 1 s)."""
    sb.fake.fail_http("chat.postMessage", 429, times=3, retry_after=1)
    sb.fake.fail_http("chat.update", 429, times=2, retry_after=1)
    await slack_phase(sb, talk, kind, DURING, 3 if full else 2)
    sb.fake._http_failures.clear()  # the outage is over, whatever retries did not use up
    await slack_phase(sb, talk, kind, AFTER, 1)


async def slack_failing(sb: SlackBot, talk: Conversation, kind: str, *, full: bool) -> None:
    """Slack's Web API answers 500 and 503 for a few calls in a row."""
    sb.fake.fail_http("chat.postMessage", 503, times=2)
    sb.fake.fail_http("chat.postMessage", 500, times=1)
    sb.fake.fail_http("chat.update", 500, times=2)
    sb.fake.fail_http("chat.getPermalink", 503, times=2)
    await slack_phase(sb, talk, kind, DURING, 3 if full else 2)
    sb.fake._http_failures.clear()  # the outage is over, whatever retries did not use up
    await slack_phase(sb, talk, kind, AFTER, 1)


# ----- (b) the model server down, answering 500, hanging


class FlakyModelServer(FakeModelServer):
    """The OpenAI-compatible stand-in, which can fail: `down()` closes its port and `up()` opens the same one
    again; `mode` "error" answers 500, "hang" never answers (until the mode changes). Extractions are answered
    with the fact of the locker number their message names."""

    def __init__(self) -> None:
        super().__init__(reply=REPLY)
        self.mode = "up"
        self.port = 0
        self.keys: set[str] = set()  # the API keys requests came with
        self._unhang = asyncio.Event()

    async def __aenter__(self) -> FlakyModelServer:
        await super().__aenter__()
        self.port = int(yarl.URL(self.base_url).port or 0)
        return self

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._unhang.set()  # requests left hanging end now (their clients gave up long ago)
        self._unhang = asyncio.Event()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.keys.add(request.headers.get("Authorization", ""))
        body = await request.json()
        self.requests.append(body)
        if self.mode == "hang":
            await self._unhang.wait()
            return web.Response(status=503)
        if self.mode == "error":
            return web.json_response({"error": {"message": "internal error", "type": "server_error"}}, status=500)
        if "response_format" in body:
            self.facts = locker_facts(body["messages"])
        return await self._answer(request, body)


async def model_outages(workdir: Path, table: Table, logs: Table, canaries: Canaries, *, full: bool) -> None:
    """A bot on the OpenAI backend (its timeout MODEL_TIMEOUT) while the model server is down, answers 500s and
    hangs, each for a while and then back; messages go through `MemoryBot.handle` (an exception escaping it is a
    violation: no adapter would be needed to answer)."""
    kinds = {"model server down": "down", "model server answering 500": "error",
             "model server timing out": "hang"}
    rounds = 2 if full else 1
    talk = Conversation(canaries)
    with LogCapture() as capture:
        async with FlakyModelServer() as server:
            settings = bot_settings(workdir / "model", model_backend="openai", openai_base_url=server.base_url,
                                    openai_api_key=OPENAI_API_KEY)
            backend = OpenAICompatibleBackend(settings.model.openai_base_url, settings.model.openai_api_key.reveal(),
                                              settings.model.name, context_tokens=settings.model.context_tokens,
                                              timeout=MODEL_TIMEOUT)
            async with MemoryBot(settings, backend=backend) as bot:
                for kind in kinds if full else list(kinds)[:1]:
                    await direct(bot, talk, kind, BEFORE, 1)
                for _ in range(rounds):
                    for kind, mode in kinds.items():
                        if mode == "down":
                            await server.down()
                        else:
                            server.set_mode(mode)
                        await direct(bot, talk, kind, DURING, 2 if full else 1)
                        await asyncio.sleep(MAX_BACKOFF)  # learning meets the outage too
                        if mode == "down":
                            await server.up()
                        else:
                            server.set_mode("up")
                        await direct(bot, talk, kind, AFTER, 2 if full else 1)
                await drained(table, "model server outages", bot)
                learned = await Learned.read(bot.store)
            table.check("model server outages: the API key was sent", server.keys == {f"Bearer {OPENAI_API_KEY}"},
                        f"authorization headers seen: {len(server.keys)}")
    for kind in kinds:
        talk.judge(table, kind, learned)
    scan(logs, "log lines: model server outages", capture.lines, canaries)


async def direct(bot: MemoryBot, talk: Conversation, kind: str, phase: str, count: int) -> None:
    """Messages handed to the core one after the other, each answered before the next."""
    for _ in range(count):
        sent, text = talk.next(kind, phase)
        reply = RecordingReply()
        try:
            await bot.handle(message(text, user=f"u{sent.number % 3}", message_id=f"m{sent.number}",
                                     channel="general", direct=False), reply)
        except Exception as exc:  # what escapes the core: an adapter's boundary would apologize
            sent.seen.append(f"raised {type(exc).__name__}")
        sent.seen += reply.sent + reply.streamed


# ----- (c) Discord REST answering 429 and 5xx


@asynccontextmanager
async def discord_bot(settings: Settings) -> AsyncIterator[Running]:
    fake = FakeDiscord()
    await fake.start()
    try:
        with pointed_at(fake):
            async with MemoryBot(settings, backend=LockerModel()) as bot:
                client = DiscordClient(bot, guild_ready_timeout=0.05)
                task = asyncio.create_task(client.start(DISCORD_TOKEN))
                try:
                    await _until_ready(client, task)
                    running = Running(fake, client, bot)
                    running.watch_handling()
                    yield running
                finally:
                    await _stop(client, task)
    finally:
        await fake.stop()


async def discord_phase(running: Running, talk: Conversation, kind: str, phase: str, count: int) -> None:
    """Messages mentioning the bot in a server channel, sent together; waits until each is handled."""
    fake = running.fake
    sents, payloads = [], []
    for _ in range(count):
        sent, text = talk.next(kind, phase)
        payload = fake.message(fake.user(f"user{sent.number % 3}", user_id=str(1000 + sent.number % 3)),
                               f"{fake.mention()} {text}", mentions=[fake.bot_user])
        sent.ref = payload["id"]
        sents.append(sent)
        payloads.append(payload)
    await asyncio.gather(*(running.say(p, timeout=180) for p in payloads))
    for sent in sents:
        sent.seen += [fake.posted[mid]["content"] for mid, ref in fake.replies_to.items() if ref == sent.ref]


async def discord_outages(workdir: Path, table: Table, logs: Table, canaries: Canaries, *, full: bool) -> None:
    """A Discord bot while its REST calls (posting, editing, typing) are rate-limited or fail with 5xx."""
    limit_kind, error_kind = "Discord REST answering 429", "Discord REST answering 5xx"
    messages_path, edit_path, typing_path = r"/channels/\d+/messages$", r"/channels/\d+/messages/\d+$", r"/typing$"
    rounds = 3 if full else 1
    talk = Conversation(canaries)
    settings = bot_settings(workdir / "discord")
    with LogCapture() as capture:
        async with discord_bot(settings) as running:
            fake = running.fake
            await discord_phase(running, talk, limit_kind, BEFORE, 1)
            for _ in range(rounds):
                fake.rate_limit("POST", messages_path, retry_after=0.5, times=2)
                fake.rate_limit("PATCH", edit_path, retry_after=0.5, times=1)
                fake.rate_limit("POST", typing_path, retry_after=0.5, times=1)
                await discord_phase(running, talk, limit_kind, DURING, 3 if full else 2)
                fake._failures.clear()  # the outage is over, whatever retries did not use up
                await discord_phase(running, talk, limit_kind, AFTER, 1)
                fake.fail("POST", messages_path, 500, 0, "Internal Server Error", times=2 if full else 1)
                fake.fail("POST", messages_path, 503, 0, "Service Unavailable", times=1)
                fake.fail("PATCH", edit_path, 502, 0, "Bad Gateway", times=1)
                fake.fail("POST", typing_path, 503, 0, "Service Unavailable", times=1)
                await discord_phase(running, talk, error_kind, DURING, 3 if full else 2)
                fake._failures.clear()
                await discord_phase(running, talk, error_kind, AFTER, 1)
            await drained(table, "Discord REST outages", running.bot)
            learned = await Learned.read(running.bot.store)
    for kind in (limit_kind, error_kind):
        talk.judge(table, kind, learned)
    scan(logs, "log lines: Discord REST outages", capture.lines, canaries)


# ----- the section


async def run(workdir: Path, *, full: bool, postgres: PostgresServer | None = None) -> tuple[Table, Table]:
    """Every outage kind (the session's `postgres` is not used: this section kills its own server)."""
    table, logs = Table("outages"), Table("logs: outages")
    canaries = Canaries(seed=4)
    started = time.monotonic()
    for scenario in (postgres_killed, embedded_and_slack, model_outages, discord_outages):
        begun = time.monotonic()
        await scenario(workdir, table, logs, canaries, full=full)
        table.data[f"{scenario.__name__} (s)"] = round(time.monotonic() - begun, 1)
    table.data["seconds"] = round(time.monotonic() - started, 1)
    return table, logs
