"""Slack in HTTP mode behind a load balancer: two or three replicas of the app share one PostgreSQL (bot state,
write-back queue, Slack event ids and threads, pgvector memories), and any replica may get any request.

The test is the load balancer: it signs Events API requests and `/memory` commands as Slack does, posts them round
robin over the replicas, and sends Slack's redelivery of some events (same event_id, `X-Slack-Retry-Num`) to another
replica. Every message is answered once (one chat.postMessage in its thread, one reply asked of the model), every
exchange is learned once (one extraction, one fact, one kept message), a redelivery is answered by nobody; a
thread goes on, with its history, on whichever replica gets the follow-up; forgetting everything through one replica
while another is in the middle of learning leaves nothing, then or after the queue drains; a pause set through one
replica holds on the others.

The replicas run in this process, each as `memorybot slack` runs (`adapters.platform.serve` of a `SlackPlatform`,
with its own MemoryBot, DATA_DIR, database connections, write-back worker and model client): `memorybot slack`
always calls slack.com, as no setting names another Web API URL, so a subprocess could not be pointed at the fake.
Each replica's model is its own OpenAI-compatible stand-in (tests/fakes/openai_server.py) whose extraction answer is
a fact made from the message, so requests are counted per message and per replica. The replicas start once per
module and number of replicas; each test has its own users.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.platform import serve
from adapters.slack.commands import CONFIRM
from adapters.slack.identity import PLATFORM
from adapters.slack.server import RunningSlack, SlackPlatform, make_client, start_slack
from adapters.slack.settings import SlackSettings
from bot.app import MemoryBot
from bot.handler import PAUSED_NOTICE
from memory.records import MemoryRecord
from tests.adapters.slack.conftest import (
    FORM,
    click_form,
    command_form,
    event_body,
    mention,
    message,
    signed_headers,
    slack_settings,
)
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack
from tests.conftest import settings_for
from tests.fakes.openai_server import FakeModelServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOCKER = re.compile(r"locker number is (\d+)")
REPLY = "Noted"  # one chunk of the stand-in's stream: the message posted is the whole reply, with no edit
KEEPALIVE_SECONDS = 0.05  # how often a held extraction's stream sends an empty chunk
SETTLE_SECONDS = 60.0


def fact(number: int) -> str:
    return f"The user's locker number is {number}."


def said(number: int) -> str:
    return f"My locker number is {number}."


@dataclass
class Ledger:
    """What the replicas asked their models, per locker number and per replica."""

    replies: Counter[int] = field(default_factory=Counter)
    extractions: Counter[int] = field(default_factory=Counter)
    replies_by: Counter[int] = field(default_factory=Counter)  # replies generated, per replica
    held: set[int] = field(default_factory=set)  # numbers whose extraction waits while they are in here
    learning: Counter[int] = field(default_factory=Counter)  # held extractions streaming now, per replica


class LockerModel(FakeModelServer):
    """The model of replica `replica`: replies "Noted", and extracts `The user's locker number is N.` from the
    message naming N. An extraction of a held number streams empty chunks until the number is let go, so it is
    under way for as long as the test wants; the replica can still stop it for a reply (it reads a chunk), and it
    is answered at once when the replica has a reply waiting (an extraction that no longer gives way must not keep
    a reply waiting)."""

    def __init__(self, ledger: Ledger, replica: int) -> None:
        super().__init__(reply=REPLY)
        self.ledger = ledger
        self.replica = replica
        self.replying: Callable[[], bool] = lambda: False  # whether the replica has a reply running or waiting

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        numbers = LOCKER.findall(json.dumps(body["messages"][-1]))
        number = int(numbers[-1]) if numbers else -1
        if "response_format" not in body:
            self.ledger.replies[number] += 1
            self.ledger.replies_by[self.replica] += 1
            return await self._answer(request, body)
        self.ledger.extractions[number] += 1
        if number in self.ledger.held:
            return await self._held(request, body, number)
        self.facts = [fact(number)]
        return await self._answer(request, body)

    async def _held(self, request: web.Request, body: dict[str, Any], number: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.ledger.learning[self.replica] += 1
        try:
            while number in self.ledger.held and not self.replying():
                if request.transport is None or request.transport.is_closing():
                    return response  # the replica stopped reading: it gave way to a reply
                await response.write(_chunk(body, ""))
                await asyncio.sleep(KEEPALIVE_SECONDS)
            await response.write(_chunk(body, json.dumps({"facts": [fact(number)]})))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self.ledger.learning[self.replica] -= 1
        return response


def _chunk(body: dict[str, Any], content: str) -> bytes:
    delta = {"content": content} if content else {}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


class Replica(SlackPlatform):
    """`memorybot slack` that shows the test what it runs (its core, its Slack adapter), to wait for their work."""

    def __init__(self, settings: SlackSettings, client: Any) -> None:
        super().__init__(settings, client=client)
        self.bot: MemoryBot | None = None
        self.running: RunningSlack | None = None
        self.ready = asyncio.Event()

    async def serve(self, bot: MemoryBot, stop: asyncio.Event) -> None:
        async with start_slack(bot, self.settings, client=self._client) as running:
            self.bot, self.running = bot, running
            self.ready.set()
            await stop.wait()

    @property
    def url(self) -> str:
        assert self.running is not None and self.running.url is not None
        return self.running.url

    def replying(self) -> bool:
        return self.bot is not None and self.bot.model is not None and self.bot.model.quiet_for == 0


@dataclass
class Cluster:
    """The replicas, the fake Slack they call, and the test's hands as their load balancer."""

    replicas: list[Replica]
    models: list[LockerModel]  # replica n's is models[n]
    fake: FakeSlack
    ledger: Ledger
    http: aiohttp.ClientSession
    _turns: Iterator[int] = field(default_factory=itertools.count)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    def __len__(self) -> int:
        return len(self.replicas)

    def route(self) -> int:
        """The next replica, round robin."""
        return next(self._turns) % len(self.replicas)

    def number(self) -> int:
        """A locker number no message has named yet."""
        return next(self._numbers)

    async def post(self, replica: int, body: str, content_type: str, *, retry: int | None = None) -> None:
        headers = signed_headers(body, content_type, retry=retry)
        async with self.http.post(self.replicas[replica].url, data=body.encode(), headers=headers) as response:
            await response.read()
            assert response.status == 200, (replica, response.status)

    async def event(self, event: dict[str, Any], replica: int, *, event_id: str | None = None,
                    retry: int | None = None) -> str:
        """Deliver `event` to `replica` (again, with `event_id` and `retry`); its event_id."""
        body = event_body(event, event_id)
        await self.post(replica, json.dumps(body), "application/json", retry=retry)
        return str(body["event_id"])

    async def command(self, replica: int, user: str, text: str) -> dict[str, Any]:
        """`/memory <text>` through `replica`; the answer posted to the command's response_url."""
        form = command_form(text, user=user, channel="C1", team_id=TEAM_ID, response_url=self.fake.response_url())
        return await self._answered(self.post(replica, form, FORM))

    async def click(self, replica: int, user: str, action_id: str, value: str) -> dict[str, Any]:
        """A button under an answer, clicked through `replica`; what replaced the answer."""
        form = click_form(action_id, value, user=user, response_url=self.fake.response_url())
        return await self._answered(self.post(replica, form, FORM))

    async def _answered(self, request: Any) -> dict[str, Any]:
        before = len(self.fake.responses)
        await request
        await self.fake.wait_for(lambda: len(self.fake.responses) > before, timeout=30)
        return self.fake.responses[before]

    async def replies_done(self) -> None:
        """Wait until every replica has finished the replies and commands it started."""
        await asyncio.gather(*(r.running.adapter.drain() for r in self.replicas if r.running))

    async def settle(self) -> None:
        """Wait until every reply is done and the shared queue is empty (every exchange learned or dropped)."""
        await self.replies_done()
        await asyncio.gather(*(r.bot.writeback.drain(SETTLE_SECONDS) for r in self.replicas if r.bot))

    async def learning_replica(self) -> int:
        """A replica in the middle of an extraction held back by the ledger (wait for one)."""
        await asyncio.sleep(5 * KEEPALIVE_SECONDS)  # streams given up for a reply have noticed by now
        await self.fake.wait_for(lambda: any(self.ledger.learning.values()), timeout=30)
        return next(n for n, streams in self.ledger.learning.items() if streams)

    async def memories(self, user: str) -> list[MemoryRecord]:
        """Everything the shared store holds of `user` (facts and kept messages, superseded and expired too)."""
        bot = self.replicas[-1].bot
        assert bot is not None
        return await bot.store.list(f"{PLATFORM}:{TEAM_ID}:{user}", include_superseded=True, include_expired=True)

    def answers(self, *, thread_ts: str | None = None, channel: str | None = None) -> list[str]:
        """The texts the replicas posted in one thread, or in one channel (a DM)."""
        return [str(p.get("text")) for p in self.fake.posts()
                if (thread_ts is None or p.get("thread_ts") == thread_ts)
                and (channel is None or p.get("channel") == channel)]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[2, 3], ids=lambda n: f"{n}-replicas")
async def cluster(request: pytest.FixtureRequest, postgres: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    count: int = request.param
    url = postgres.new_database()
    ledger = Ledger()
    stop = asyncio.Event()
    serving: list[asyncio.Task[None]] = []
    async with FakeSlack() as fake, AsyncExitStack() as models, aiohttp.ClientSession() as http:
        replicas, replica_models = [], []
        try:
            for n in range(count):  # one after another: loading models side by side is not safe in one process
                model = await models.enter_async_context(LockerModel(ledger, n))
                settings = settings_for(tmp_path_factory.mktemp(f"replica{n}"), database_url=url,
                                        vector_store="pgvector", pgvector_url=url, model_backend="openai",
                                        openai_base_url=model.base_url)
                slack = slack_settings()
                replica = Replica(slack, make_client(slack, base_url=fake.base_url))
                serving.append(asyncio.create_task(serve(replica, settings, stop=stop), name=f"replica {n}"))
                await _started(replica, serving[-1])
                model.replying = replica.replying
                replicas.append(replica)
                replica_models.append(model)
            yield Cluster(replicas, replica_models, fake, ledger, http)
        finally:
            ledger.held.clear()
            stop.set()
            _, stuck = await asyncio.wait(serving, timeout=30)
            for task in stuck:  # as a second SIGTERM would
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
            assert not stuck, f"{sorted(t.get_name() for t in stuck)} did not stop within 30 s"
    for task in serving:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _started(replica: Replica, serving: asyncio.Task[None]) -> None:
    """Wait until the replica listens; raise what stopped it if it did not start."""
    ready = asyncio.create_task(replica.ready.wait())
    await asyncio.wait({ready, serving}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if serving.done():
        serving.result()
        raise AssertionError("the replica stopped before it listened")
    assert replica.ready.is_set(), "the replica did not start within 120 s"


@dataclass(frozen=True)
class Sent:
    user: str
    number: int
    event: dict[str, Any]
    event_id: str
    replica: int


USERS = ("UDANA", "USAM", "UKIM")


async def test_every_message_is_answered_once_and_learned_once(cluster: Cluster) -> None:
    sent = []
    for n in range(4 * len(USERS)):
        user, number, replica = USERS[n % len(USERS)], cluster.number(), cluster.route()
        event = mention(said(number), user=user)
        sent.append(Sent(user, number, event, await cluster.event(event, replica), replica))
    # Slack's redeliveries (it did not see the acks in time) reach other replicas while the first ones work
    await asyncio.gather(*(cluster.event(s.event, (s.replica + 1) % len(cluster), event_id=s.event_id, retry=1)
                           for s in sent[::2]))
    await cluster.settle()
    late = sent[1]  # and one more, after everything is done, to yet another replica
    await cluster.event(late.event, (late.replica + 2) % len(cluster), event_id=late.event_id, retry=2)
    await cluster.settle()

    ledger = cluster.ledger
    for s in sent:
        assert cluster.answers(thread_ts=s.event["ts"]) == [REPLY], s
        assert (ledger.replies[s.number], ledger.extractions[s.number]) == (1, 1), s
    assert all(ledger.replies_by[n] for n in range(len(cluster)))  # the load reached every replica
    for user in USERS:
        mine = [s.number for s in sent if s.user == user]
        records = await cluster.memories(user)
        assert sorted(r.text for r in records if not r.is_message) == sorted(fact(n) for n in mine), user
        assert sorted(r.text for r in records if r.is_message) == sorted(said(n) for n in mine), user


async def test_a_thread_goes_on_whichever_replica_gets_the_follow_up(cluster: Cluster) -> None:
    first, then = cluster.number(), cluster.number()
    started = mention(said(first), user="ULEE")
    await cluster.event(started, 0)
    await cluster.replies_done()
    follow_up = message(f"And my old one? {said(then)}", channel="C1", channel_type="channel", user="ULEE",
                        thread_ts=started["ts"])  # no mention: answered because the bot posted in the thread
    await cluster.event(follow_up, len(cluster) - 1)
    await cluster.settle()

    assert cluster.answers(thread_ts=started["ts"]) == [REPLY, REPLY]
    [asked] = [r for m in cluster.models for r in m.requests
               if "response_format" not in r and said(then) in json.dumps(r["messages"][-1])]
    assert said(first) in json.dumps(asked["messages"][:-1])  # the thread's history came along


async def test_forgetting_everything_on_one_replica_while_another_learns_leaves_nothing(cluster: Cluster) -> None:
    fay = "UFAY"
    numbers = [cluster.number() for _ in range(2 * len(cluster))]
    cluster.ledger.held.update(numbers)  # their extractions are under way until let go
    try:
        events = []
        for number in numbers:
            events.append(event := mention(said(number), user=fay))
            await cluster.event(event, cluster.route())
        await cluster.replies_done()  # every message answered: none of fay's arrives after the forgetting
        learner = await cluster.learning_replica()
        teller = (learner + 1) % len(cluster)
        question = await cluster.command(teller, fay, "forget all")
        confirm = question["blocks"][1]["elements"][0]
        assert confirm["action_id"] == CONFIRM, question
        done = await cluster.click(teller, fay, CONFIRM, confirm["value"])
        assert done["text"].startswith("Done: I forgot"), done
        assert cluster.ledger.learning[learner], "the other replica was no longer learning when fay forgot"
    finally:
        cluster.ledger.held.difference_update(numbers)
    await cluster.settle()

    assert await cluster.memories(fay) == []
    for event in events:
        assert cluster.answers(thread_ts=event["ts"]) == [REPLY]
    listing = await cluster.command((teller + 1) % len(cluster), fay, "list")
    assert "don't remember anything" in listing["text"], listing


async def test_a_user_paused_through_one_replica_is_paused_on_all(cluster: Cluster) -> None:
    gus, dm = "UGUS", "DGUS"
    assert (await cluster.command(0, gus, "pause"))["text"].startswith("Paused"), "pause"
    others = range(1, len(cluster))
    numbers = [cluster.number() for _ in range(2 * len(others))]
    for number, replica in zip(numbers, itertools.cycle(others), strict=False):
        await cluster.event(message(said(number), channel=dm, user=gus), replica)
    await cluster.settle()

    assert not any(cluster.ledger.extractions[n] for n in numbers)
    assert await cluster.memories(gus) == []
    assert Counter(cluster.answers(channel=dm)) == Counter({REPLY: len(numbers), PAUSED_NOTICE: 1})  # told once

    assert (await cluster.command(len(cluster) - 1, gus, "resume"))["text"].startswith("Resumed"), "resume"
    number = cluster.number()
    await cluster.event(message(said(number), channel=dm, user=gus), 0)
    await cluster.settle()
    assert sorted(r.text for r in await cluster.memories(gus)) == sorted([fact(number), said(number)])
