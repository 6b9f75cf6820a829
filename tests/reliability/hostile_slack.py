"""Section 3 of issue 17 for Slack: hostile input, generated, counted.

Malformed and adversarial requests built from the real event shapes (tests/adapters/slack/conftest.py) are sent over
real HTTP to the real bolt app (adapters/slack) serving the real MemoryBot on a real store, against the fake Slack
Web API. The model is scripted to repeat the user's text, so hostile text reaches what the bot sends. Each family
of cases combines field mutations, hostile texts and delivery kinds with a seeded `random`. Every case is checked:

- no crash: no answer of 500, no ERROR record or traceback in the logs while it ran;
- answered where the bot was addressed with something it can answer (a post in the conversation, or the command's
  response); ignored input is not answered and, like rejected input, never learned (the store, the write-back queue
  and the conversation history are searched for its canary word);
- rejected (bad or missing signature, stale or future timestamp): 401, and the fake Slack hears nothing;
- no ping: every text and block the bot sends (posts, edits, ephemerals, response_url bodies, views) is searched for
  `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^…>` (a user group) and `<@U…>`, and for raw `@channel`,
  `@here`, `@everyone` where Slack would link them (`link_names` or `parse=full`);
- a replayed event id (Slack's retries, also all at once) is answered once;
- forged ids in command arguments (another user's memory id, another user's id, the same user id in another
  workspace) neither reach nor change another identity's memories;
- after each batch a normal message is answered (the app keeps answering).

The app runs with logscan's Slack token and signing secret inside `LogCapture`; its log lines are scanned for
secrets and canaries (section 5).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from adapters.slack.commands import CANCEL, CONFIRM, HOME_FORGET
from adapters.slack.server import RunningSlack, make_client, start_slack
from bot.app import MemoryBot
from bot.llm.base import ChatMessage
from bot.message import UserRef
from bot.settings import Secret
from tests.adapters.slack.conftest import (
    click_form,
    command_form,
    event_body,
    mention,
    message,
    next_ts,
    slack_settings,
)
from tests.adapters.slack.fake_slack import BOT_USER_ID, TEAM_ID, FakeSlack
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend
from tests.reliability.logscan import SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, Canaries, LogCapture, scan
from tests.reliability.tally import Table
from tests.servers.postgres import PostgresServer

SECTION = "3a. Hostile input, Slack"
LOG_SECTION = "5. Logs and secrets: hostile input, Slack"

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

USER, VICTIM = "U1", "U2"  # the hostile user, and the user whose memories they try to reach
OTHER_TEAM = "T0OTHER"  # a second workspace: the same user id there is another person

# what the bot must never send: Slack's special mentions, user groups and user mentions (escaped text shows none)
PINGS = ("<!channel", "<!here", "<!everyone", "<!subteam^", "<@")
RAW_PINGS = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)  # pings only where Slack links names

# hostile texts, by family: (row, builders of a text around a canary)
MASS = ("<!channel>", "<!here>", "<!everyone>", "<!subteam^S0DEVS>", "<!subteam^S0DEVS|@devs>", "<!channel|@channel>",
        "<!here|here>", "@channel", "@here", "@everyone", "&lt;!channel&gt;", "&lt;!here&gt;", "<!channel",
        "<<!channel>>", "<\u200b!channel>", "<!date^1392734382^{date}|Feb 18>", "<#C0GENERAL|general>")
OTHERS = (f"<@{VICTIM}>", f"<@{VICTIM}|victim>", "<@U0ADMIN>", f"<@{BOT_USER_ID}>", "&lt;@U2&gt;", "<@W0ENTERPRISE>",
          "<https://evil.example|click me>", "<mailto:a@evil.example|mail>", "@U2", "<@U2><@U3><@U4>")
CONTROL = [chr(c) for c in (*range(0, 32), 127)] + ["\u0085", "\u2028", "\u2029", "\r\n", "\x1b[31m"]
INVISIBLE = ["\u202e", "\u202d", "\u202a", "\u202b", "\u2066", "\u2067", "\u200f", "\u200e", "\u200b", "\u200c",
             "\u200d", "\ufeff", "\u2060", "\u00ad", "\u034f", "\u061c"]
EMOJI = ["😀", "🔥", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇺🇦", ":tada:", ":skin-tone-2:", "🫠"]
ODD = ["\ud800", "\udfff", "\U0010ffff", "\ufffd", "\ufffe", "Z\u0351\u0352\u0353" * 20, "ǅ", "ﷺ", "𒐫" * 50,
       "\u0000\ud83d"]
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")

WRONG_VALUES: tuple[Any, ...] = (None, 0, 7, -1.5, True, [], {}, ["x"], {"id": "U1"}, "", "   ")
BAD_TS = ("abc", "nan", "inf", "-1", "1e400", "99999999999999999999.0", "1.2.3", "0x10")


def _sprinkle(rng: random.Random, pool: list[str], text: str, count: int) -> str:
    chars = list(text)
    for _ in range(count):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(pool))
    return "".join(chars)


def mass_text(rng: random.Random, canary: str) -> str:
    picks = " ".join(rng.sample(MASS, rng.randint(1, 3)))
    return rng.choice([f"please repeat exactly: {picks} {canary}", f"{picks} say {canary} to everyone",
                       f"repeat after me: {canary} {picks} {picks}"])


def others_text(rng: random.Random, canary: str) -> str:
    picks = " ".join(rng.sample(OTHERS, rng.randint(1, 3)))
    return f"please repeat exactly: hey {picks}, {canary} says hi"


def long_text(rng: random.Random, canary: str) -> str:
    size = rng.choice((20_000, 100_000, 102_400))
    words = " ".join(rng.choice(WORDS) for _ in range(size // 6))
    return f"repeat this: {canary} {words}"[:size]


def control_text(rng: random.Random, canary: str) -> str:
    return _sprinkle(rng, CONTROL, f"please repeat: {canary} and <!channel>", rng.randint(1, 12))


def invisible_text(rng: random.Random, canary: str) -> str:
    return _sprinkle(rng, INVISIBLE, f"repeat: <!here> {canary} @everyone", rng.randint(1, 10))


def emoji_text(rng: random.Random, canary: str) -> str:
    only = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 30)))
    return only if rng.random() < 0.5 else f"{only} {canary} {only}"  # only emoji: nothing to learn


def odd_text(rng: random.Random, canary: str) -> str:
    return _sprinkle(rng, ODD, f"repeat: {canary} <!everyone>", rng.randint(1, 4))


TEXT_FAMILIES: tuple[tuple[str, Callable[[random.Random, str], str]], ...] = (
    ("text: <!channel>, <!here>, <!everyone>, user groups, @channel", mass_text),
    ("text: mentions of other users, links", others_text),
    ("text: 20-100 kB", long_text),
    ("text: NUL and control characters", control_text),
    ("text: right-to-left and zero-width characters", invisible_text),
    ("text: only emoji", emoji_text),
    ("text: lone surrogates, combining marks, odd code points", odd_text),
)

# --- expectations

ANSWER = "answer"  # addressed with something it can answer: a post in the conversation, or the command's response
REJECT = "reject"  # 401 and nothing happens
IGNORE = "ignore"  # not for the bot: no answer, nothing learned
SURVIVE = "survive"  # anything but a crash or a ping (the bot may answer or not)


@dataclass
class Case:
    family: str
    body: bytes
    content_type: str | None = JSON
    expect: str = ANSWER
    channel: str | None = None  # where the answer is posted; None: the command's response_url
    canary: str = ""
    headers: Callable[[bytes], dict[str, str]] | None = None  # None: signed as Slack signs, at sending time
    what: str = ""  # a short description for violations


def signature(body: bytes, timestamp: str, secret: str = SLACK_SIGNING_SECRET) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(body, stamp)}


def json_body(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8", "surrogatepass")  # lone surrogates go as JSON escapes, as Slack's would


def event_case(family: str, event: dict[str, Any], expect: str, canary: str = "", *, event_id: str | None = None,
               team_id: str = TEAM_ID, what: str = "") -> Case:
    return Case(family, json_body(event_body(event, event_id, team_id)), expect=expect,
                channel=event.get("channel") if isinstance(event.get("channel"), str) else None, canary=canary,
                what=what or str(event.get("type")))


# --- the running app


@dataclass
class Outgoing:
    """What the bot sent since a mark: Web API calls and response_url bodies."""

    calls: list[tuple[str, dict[str, Any]]]
    responses: list[dict[str, Any]]
    uploads: list[bytes]

    def posts_to(self, channel: str) -> int:
        return sum(1 for method, args in self.calls if method in ("chat.postMessage", "chat.postEphemeral")
                   and args.get("channel") == channel)

    def messages(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from ((method, args) for method, args in self.calls if not method.startswith(("auth.", "users.info")))
        yield from (("response_url", body) for body in self.responses)

    def text(self) -> str:
        return json.dumps([self.calls, self.responses], ensure_ascii=False) + b"".join(self.uploads).decode(
            errors="replace")


def strings(value: Any) -> Iterator[str]:
    """Every string inside `value` (JSON-encoded values, such as form-encoded `blocks`, decoded)."""
    if isinstance(value, str):
        yield value
        if value[:1] in "[{":
            try:
                yield from strings(json.loads(value))
            except ValueError:
                pass
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def pings(method: str, args: dict[str, Any]) -> list[str]:
    """How one message the bot sent could ping people, in words (empty: it cannot)."""
    links_names = str(args.get("link_names", "")).lower() in ("1", "true") or args.get("parse") == "full"
    found = []
    for text in strings(args):
        found += [f"{method} sent {p!r}: {text[:120]!r}" for p in PINGS if p in text]
        if links_names and RAW_PINGS.search(text):
            found.append(f"{method} sent a raw @-mention with link_names/parse=full: {text[:120]!r}")
    return found


@dataclass
class SlackUnderTest:
    """The fake Slack, the bot and the bolt app on HTTP, with the means to send a case and read what followed."""

    fake: FakeSlack
    bot: MemoryBot
    running: RunningSlack
    http: aiohttp.ClientSession
    logs: LogCapture
    thread_ts: str = ""  # a thread the bot answered in, in C1
    victim_ids: list[str] = field(default_factory=list)
    victim_word: str = ""
    forbidden: dict[str, str] = field(default_factory=dict)  # canary -> family, of input that must not be learned
    answered: list[str] = field(default_factory=list)  # canaries of normal messages: what the search must find

    @property
    def url(self) -> str:
        assert self.running.url is not None
        return self.running.url

    async def send(self, body: bytes, content_type: str | None,
                   headers: Callable[[bytes], dict[str, str]] | None = None) -> int:
        sent = (headers or signed)(body)
        if content_type is not None:
            sent = {"Content-Type": content_type, **sent}
        async with self.http.post(self.url, data=body, headers=sent) as response:
            await response.read()
            return response.status

    def mark(self) -> tuple[int, int, int, int]:
        return len(self.fake.calls), len(self.fake.responses), len(self.fake.uploads), len(self.logs.lines)

    def since(self, mark: tuple[int, int, int, int]) -> Outgoing:
        uploads = list(self.fake.uploads.values())[mark[2]:]
        return Outgoing([(c.method, c.args) for c in self.fake.calls[mark[0]:]], self.fake.responses[mark[1]:],
                        uploads)

    def crashes(self, mark: tuple[int, int, int, int]) -> list[str]:
        lines = self.logs.lines[mark[3]:]
        return [line[:200] for line in lines if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line]

    async def settle(self) -> None:
        await self.running.adapter.drain()

    async def learned(self) -> str:
        """Everything the bot keeps of what users said: the store's memories, the write-back queue, the
        conversation history."""
        await self.bot.writeback.drain(timeout=120)
        kept: list[str] = []
        async for page in self.bot.store.all_points():
            kept += [json.dumps(point.payload, ensure_ascii=False) for point in page]
        for table in ("pending_exchanges", "failed_exchanges"):
            kept += [row[0] for row in await self.bot.db.sql.fetchall(f"SELECT payload FROM {table}")]
        kept += [f"{row[0]} {row[1]}" for row in await self.bot.db.recent.fetchall(
            "SELECT text, reply FROM conversation_turns")]
        return "\n".join(kept)

    async def victim_memories(self) -> set[str]:
        victim = UserRef("slack", TEAM_ID, VICTIM)
        return {r.id for r in await self.bot.store.list(victim.key, include_superseded=True, include_expired=True)}

    async def command(self, text: str, *, user: str = USER, channel: str = "D1", team_id: str = TEAM_ID) -> int:
        form = command_form(text, user=user, channel=channel, team_id=team_id, response_url=self.fake.response_url())
        return await self.send(form.encode(), FORM)

    async def event(self, event: dict[str, Any], **kwargs: Any) -> int:
        return await self.send(json_body(event_body(event, **kwargs)), JSON)


def echo(messages: list[ChatMessage]) -> str:
    """The scripted model's reply: the user's message, repeated (as a model asked to repeat it would)."""
    return f"You asked me to say: {messages[-1].content}"


@asynccontextmanager
async def slack_under_test(workdir: Path, logs: LogCapture) -> AsyncIterator[SlackUnderTest]:
    backend = ScriptedBackend(reply=echo, chunk=4096)
    slack = slack_settings(slack_bot_token=Secret(SLACK_BOT_TOKEN), slack_signing_secret=Secret(SLACK_SIGNING_SECRET))
    async with FakeSlack() as fake:
        client = make_client(slack, base_url=fake.base_url)
        settings = settings_for(workdir / "data", rate_limit_messages=0, log_level="DEBUG")
        async with (
            MemoryBot(settings, backend=backend) as bot,
            start_slack(bot, slack, client=client) as running,
            aiohttp.ClientSession() as http,
        ):
            yield SlackUnderTest(fake, bot, running, http, logs)


async def prepare(sut: SlackUnderTest, canaries: Canaries) -> None:
    """A thread the bot answered in, and the victim's memories (a remembered fact and a learned message)."""
    start = mention("start a thread please", channel="C1")
    await sut.event(start)
    sut.victim_word = canaries.word()
    await sut.command(f"remember my locker code is {sut.victim_word}", user=VICTIM, channel="D2")
    await sut.event(message(f"my bike is called {sut.victim_word}", channel="D2", user=VICTIM))
    await sut.settle()
    await sut.bot.writeback.drain(timeout=120)
    sut.thread_ts = start["ts"]
    sut.victim_ids = sorted(await sut.victim_memories())
    assert sut.victim_ids and sut.fake.posts(), "the app did not answer its first messages"


# --- families of cases


def deliveries(sut: SlackUnderTest, text: str) -> list[tuple[str, Case]]:
    """`text` delivered every way a user addresses the bot: a DM, a mention, a follow-up in the bot's thread, and
    `/memory` with it as an argument."""
    def command(words: str) -> Case:
        words = words.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # a form cannot carry them
        form = command_form(words, user=USER, channel="C1", team_id=TEAM_ID, response_url=sut.fake.response_url())
        return Case("", form.encode(), FORM, ANSWER, None)

    thread = message(text, channel="C1", channel_type="channel", thread_ts=sut.thread_ts)
    return [
        ("DM", event_case("", message(text, channel="D1"), ANSWER)),
        ("mention", event_case("", mention(text, channel="C1"), ANSWER)),
        ("thread follow-up", event_case("", thread, ANSWER)),
        ("/memory remember", command(f"remember {text}")),
        ("/memory search", command(f"search {text}")),
        ("/memory forget", command(f"forget {text}")),
        ("/memory <text>", command(text)),
    ]


def text_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, per_family: int) -> Iterator[Case]:
    for family, build in TEXT_FAMILIES:
        for _ in range(per_family):
            canary = canaries.word()
            how, case = rng.choice(deliveries(sut, build(rng, canary)))
            case.family, case.canary, case.what = family, canary, how
            yield case


EVENT_FIELDS = ("user", "text", "ts", "channel", "channel_type", "thread_ts", "event_ts", "type", "blocks", "team",
                "edited", "files", "client_msg_id", "subtype", "bot_id")
BODY_FIELDS = ("team_id", "event_id", "authorizations", "api_app_id", "event_time", "type", "event")
# fields the bot reads to answer: changing them may make the event unanswerable (no requirement to answer)
NEEDED = {"user", "ts", "channel", "thread_ts", "type", "event", "subtype", "bot_id", "team_id", "text",
          "authorizations"}
NEEDED_BY_KIND = {"DM": {"channel_type"}, "thread follow-up": {"thread_ts"}}


def base_event(sut: SlackUnderTest, kind: str, text: str) -> dict[str, Any]:
    if kind == "DM":
        return message(text, channel="D1", blocks=[{"type": "rich_text", "elements": []}], client_msg_id="m-1")
    if kind == "mention":
        return mention(text, channel="C1", team=TEAM_ID)
    return message(text, channel="C1", channel_type="channel", thread_ts=sut.thread_ts)


def mutated(sut: SlackUnderTest, family: str, kind: str, where: str, name: str, value: Any, canary: str,
            missing: bool) -> Case:
    """The `kind` event with field `name` (of the event or of the body around it) removed or set to `value`."""
    event = base_event(sut, kind, f"please repeat: {canary}")
    body = event_body(event)
    target = event if where == "event" else body
    if missing:
        target.pop(name, None)
    else:
        target[name] = value
    needed = name in NEEDED | NEEDED_BY_KIND.get(kind, set())
    # the text missing is an empty message (answered as such); any other change of a needed field may make the
    # event unanswerable
    expect = ANSWER if (not needed or (name == "text" and missing)) else SURVIVE
    if where == "body" and name == "event_id" and not missing:
        expect = ANSWER if isinstance(value, str) and value.strip() else SURVIVE  # no id to tell retries apart
    state = "missing" if missing else f"= {json.dumps(value)[:40]}"
    channel = event.get("channel") if isinstance(event.get("channel"), str) else None
    return Case(family, json_body(body), JSON, expect, channel, canary, what=f"{kind}: {where}.{name} {state}")


def field_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, missing: int,
                wrong: int) -> Iterator[Case]:
    kinds = ("DM", "mention", "thread follow-up")
    slots = [(kind, "event", name) for kind in kinds for name in EVENT_FIELDS]
    slots += [(kind, "body", name) for kind in kinds for name in BODY_FIELDS]
    for kind, where, name in rng.sample(slots, min(missing, len(slots))):
        yield mutated(sut, "field missing", kind, where, name, None, canaries.word(), missing=True)
    for _ in range(wrong):
        kind, where, name = rng.choice(slots)
        values = list(WRONG_VALUES) + (list(BAD_TS) if name in ("ts", "event_ts", "thread_ts") else [])
        yield mutated(sut, "field of the wrong type or value", kind, where, name, rng.choice(values),
                      canaries.word(), missing=False)


UNKNOWN_TYPES = ("reaction_added", "team_join", "member_joined_channel", "link_shared", "tokens_revoked",
                 "app_uninstalled", "channel_rename", "file_shared", "foo_bar", "", "APP_MENTION", "message.im",
                 "pin_added", "emoji_changed", "user_change", "dnd_updated")
IGNORED_SUBTYPES = ("bot_message", "me_message", "channel_join", "channel_leave", "message_replied",
                    "ekm_access_denied", "huddle_thread", "channel_topic", "pinned_item", "reminder_add", "weird", "")
ANSWERED_SUBTYPES = ("file_share", "thread_broadcast")
ODD_SUBTYPES: tuple[Any, ...] = (0, [], {"x": 1}, ["file_share"], True)
BODY_TYPES = ("event_callbackx", "block_suggestion", "view_submission", "shortcut", "interactive_message",
              "app_rate_limited", "", "EVENT_CALLBACK")


def type_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    """Unknown event types and body types, odd and ignored subtypes, bot messages, the Home tab with odd fields."""
    family = "unknown event types and subtypes"
    for _ in range(count):
        canary = canaries.word()
        text = f"please repeat: <!channel> {canary}"
        pick = rng.randrange(7)
        if pick == 0:
            event = {**message(text, channel="D1"), "type": rng.choice(UNKNOWN_TYPES)}
            yield event_case(family, event, IGNORE, canary, what=f"event type {event['type']!r}")
        elif pick == 1:
            subtype = rng.choice(IGNORED_SUBTYPES)
            yield event_case(family, message(text, channel="D1", subtype=subtype), IGNORE, canary,
                             what=f"subtype {subtype!r}")
        elif pick == 2:
            subtype = rng.choice(ANSWERED_SUBTYPES)
            yield event_case(family, message(text, channel="D1", subtype=subtype), ANSWER, canary,
                             what=f"subtype {subtype!r}")
        elif pick == 3:
            subtype = rng.choice(ODD_SUBTYPES)
            yield event_case(family, message(text, channel="D1", subtype=subtype), SURVIVE, canary,
                             what=f"subtype {json.dumps(subtype)}")
        elif pick == 4:
            bot = rng.choice([{"bot_id": "B999"}, {"bot_profile": {"id": "B9"}}, {"bot_id": "B0BOT", "user": "U0BOT"}])
            builder = rng.choice([message, mention])
            yield event_case(family, builder(text, channel="D1" if builder is message else "C1", **bot), IGNORE,
                             canary, what=f"a bot's message {bot}")
        elif pick == 5:
            body = {**event_body(message(text, channel="D1")), "type": rng.choice(BODY_TYPES)}
            yield Case(family, json_body(body), JSON, IGNORE, "D1", canary, what=f"body type {body['type']!r}")
        else:
            home: dict[str, Any] = {"type": "app_home_opened", "user": USER, "channel": "D1", "tab": "home",
                                    "event_ts": next_ts()}
            name = rng.choice(["user", "tab", "channel", "view"])
            home[name] = rng.choice([None, 5, [], {}, "", "messages", canary])
            yield event_case(family, home, SURVIVE, canary, what=f"app_home_opened {name}={home[name]!r}")


def edit_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    """`message_changed` and `message_deleted` with missing, odd or hostile fields."""
    family = "edits and deletions, malformed"
    for _ in range(count):
        canary = canaries.word()
        old_ts = next_ts()
        new = {"type": "message", "user": USER, "text": f"repeat: <!here> {canary}", "ts": old_ts,
               "edited": {"user": USER, "ts": next_ts()}}
        if rng.random() < 0.5:
            event: dict[str, Any] = {"type": "message", "subtype": "message_changed", "channel": "D1",
                                     "channel_type": "im", "ts": next_ts(), "message": new,
                                     "previous_message": {"type": "message", "user": USER, "text": "old", "ts": old_ts}}
            name = rng.choice(["message", "previous_message", "channel", "message.text", "message.ts",
                               "message.edited", "message.user", "message.subtype", "message.thread_ts"])
        else:
            event = {"type": "message", "subtype": "message_deleted", "channel": "D1", "channel_type": "im",
                     "ts": next_ts(), "deleted_ts": old_ts, "previous_message": new}
            name = rng.choice(["deleted_ts", "channel", "previous_message"])
        value = rng.choice([None, 7, "", [], {}, "tombstone", "abc", canary, {"ts": "x"}])
        target, key = (event["message"], name.split(".", 1)[1]) if name.startswith("message.") else (event, name)
        if rng.random() < 0.3:
            target.pop(key, None)
            state = "missing"
        else:
            target[key] = value
            state = f"= {json.dumps(value)}"
        # an edit may be relearned (it is the user's message); it is never answered
        yield event_case(family, event, SURVIVE, canary, what=f"{event['subtype']}: {name} {state}")


Signer = Callable[[bytes, str], str]  # (body, timestamp) -> the X-Slack-Signature header


def headers_with(timestamp: str | None, sign: Signer | None) -> Callable[[bytes], dict[str, str]]:
    """The timestamp header `timestamp` and `sign`'s signature of the body (None: that header is left out)."""
    def make(body: bytes) -> dict[str, str]:
        headers = {}
        if timestamp is not None:
            headers["X-Slack-Request-Timestamp"] = timestamp
        if sign is not None:
            headers["X-Slack-Signature"] = sign(body, timestamp or str(int(time.time())))
        return headers
    return make


def now_offset(seconds: int) -> str:
    """A timestamp `seconds` from now (cases are made as they are sent: the families are generators)."""
    return str(int(time.time()) + seconds)


BAD_SIGNATURES: tuple[tuple[str, Signer], ...] = (
    ("another secret", lambda body, ts: signature(body, ts, "not-the-signing-secret")),
    ("the secret of another app", lambda body, ts: signature(body, ts, SLACK_SIGNING_SECRET + "x")),
    ("a signature of another body", lambda body, ts: signature(body + b" ", ts)),
    ("a signature of another timestamp", lambda body, ts: signature(body, str(int(ts) - 1) if ts.isdigit() else "1")),
    ("zeros", lambda body, ts: "v0=" + "0" * 64),
    ("empty", lambda body, ts: ""),
    ("version v1", lambda body, ts: "v1=" + signature(body, ts)[3:]),
    ("no version", lambda body, ts: signature(body, ts)[3:]),
    ("cut short", lambda body, ts: signature(body, ts)[:-1]),
    ("upper case", lambda body, ts: signature(body, ts).upper()),
    ("the body in the header", lambda body, ts: body[:200].decode(errors="replace")),
)
BAD_STAMPS = ("abc", "", " ", "1e9", "12.5", "-", "0x10", "9" * 40)


def rejected_bodies(sut: SlackUnderTest, canary: str, rng: random.Random) -> tuple[str, bytes, str]:
    """A request that would change something if accepted: a DM to learn from, `/memory remember`, a confirmed
    forget-all."""
    pick = rng.randrange(3)
    if pick == 0:
        return "DM", json_body(event_body(message(f"remember this: {canary}", channel="D1"))), JSON
    if pick == 1:
        form = command_form(f"remember {canary}", user=USER, channel="D1", team_id=TEAM_ID,
                            response_url=sut.fake.response_url())
        return "/memory remember", form.encode(), FORM
    return "forget-all click", click_form(CONFIRM, "forget-all", user=VICTIM,
                                          response_url=sut.fake.response_url()).encode(), FORM


def signature_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    for _ in range(count):
        canary = canaries.word()
        kind, body, content_type = rejected_bodies(sut, canary, rng)
        pick = rng.randrange(4)
        if pick == 0:
            name, sign = rng.choice(BAD_SIGNATURES)
            yield Case("wrong signature", body, content_type, REJECT, None, canary, headers_with(now_offset(0), sign),
                       f"{kind}, {name}")
        elif pick == 1:
            missing = rng.choice(["signature", "timestamp", "both"])
            stamp = None if missing in ("timestamp", "both") else now_offset(0)
            sign = None if missing in ("signature", "both") else signature
            yield Case("missing signature headers", body, content_type, REJECT, None, canary,
                       headers_with(stamp, sign), f"{kind}, no {missing}")
        elif pick == 2:
            seconds = rng.choice([-301, -302, -600, -3600, -86400 * 30, -int(time.time()), 301, 600, 86400 * 365])
            yield Case("stale or future timestamp", body, content_type, REJECT, None, canary,
                       headers_with(now_offset(seconds), signature), f"{kind}, signed {seconds:+d} s from now")
        else:
            stamp = rng.choice(BAD_STAMPS)
            yield Case("timestamp not a number", body, content_type, REJECT, None, canary,
                       headers_with(stamp, signature), f"{kind}, timestamp {stamp!r}")


def malformed_bodies(sut: SlackUnderTest, canary: str) -> list[tuple[str, bytes, str | None]]:
    """Bodies, signed correctly, that are not what Slack sends."""
    event = json.dumps(event_body(message(f"repeat: {canary}", channel="D1")))
    form = command_form(f"remember {canary}", user=USER, channel="D1", team_id=TEAM_ID,
                        response_url=sut.fake.response_url())
    fields = dict(pair.split("=", 1) for pair in form.split("&"))
    def without(name: str) -> bytes:
        return "&".join(f"{k}={v}" for k, v in fields.items() if k != name).encode()
    return [
        ("empty JSON body", b"", JSON),
        ("JSON cut short", event[: len(event) // 2].encode(), JSON),
        ("JSON array", b"[1, 2, 3]", JSON),
        ("JSON null", b"null", JSON),
        ("JSON string", json.dumps(canary).encode(), JSON),
        ("JSON number", b"12345", JSON),
        ("event_callback without event", b'{"type": "event_callback", "event_id": "Ev0"}', JSON),
        ("event null", b'{"type": "event_callback", "event": null}', JSON),
        ("event a string", json.dumps({"type": "event_callback", "event": canary}).encode(), JSON),
        ("event a list", b'{"type": "event_callback", "event": [1]}', JSON),
        ("not UTF-8", b"\xff\xfe" + event.encode(), JSON),
        ("deeply nested", b'{"type": "event_callback", "event": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", JSON),
        ("NaN and duplicate keys", event.replace('"event_time": ', '"event_time": NaN, "event_time": ').encode(), JSON),
        ("form body as JSON", form.encode(), JSON),
        ("JSON body as form", event.encode(), FORM),
        ("no content type", event.encode(), None),
        ("text/plain", event.encode(), "text/plain"),
        ("empty form", b"", FORM),
        ("payload empty", b"payload=", FORM),
        ("payload not JSON", b"payload=%7B%22type", FORM),
        ("payload null", b"payload=null", FORM),
        ("payload a list", b"payload=%5B%5D", FORM),
        ("payload a string", b"payload=%22" + canary.encode() + b"%22", FORM),
        ("payload block_actions without actions", b"payload=" + urlencode(
            {"p": json.dumps({"type": "block_actions", "user": {"id": USER}})})[2:].encode(), FORM),
        ("command without user_id", without("user_id"), FORM),
        ("command without text", without("text"), FORM),
        ("command without response_url", without("response_url"), FORM),
        ("command without team_id", without("team_id"), FORM),
        ("command without channel_id", without("channel_id"), FORM),
        ("command without command", without("command"), FORM),
        ("bad percent escapes", b"command=%2Fmemory&text=%ZZ%&user_id=U1", FORM),
        ("repeated fields", form.encode() + b"&user_id=U2&text=forget+all", FORM),
        ("url_verification with a hostile challenge",
         json.dumps({"type": "url_verification", "challenge": f"<!channel> {canary}", "token": "x"}).encode(), JSON),
        ("a megabyte of JSON", json.dumps(event_body(message("x" * 1_000_000 + canary, channel="D1"))).encode(), JSON),
    ]


def body_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    bodies_count = len(malformed_bodies(sut, "x"))
    picks = list(range(bodies_count)) * (count // bodies_count + 1)
    for index in sorted(rng.sample(picks, count)):
        canary = canaries.word()
        name, body, content_type = malformed_bodies(sut, canary)[index]
        # a command with a field Slack always sends missing, or a huge body, may be answered or not
        # still a well-formed event or command underneath: it may be answered
        expect = SURVIVE if name.startswith(("command without", "repeated", "a megabyte", "url_verification", "NaN",
                                             "JSON body as form", "no content type", "text/plain")) else IGNORE
        yield Case("malformed body, signed", body, content_type, expect, "D1", canary, what=name)


def button_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    """Button presses with values Slack would not send: hostile text, other commands, another user's memory id."""
    family = "button values forged"
    for _ in range(count):
        canary = canaries.word()
        hostile = mass_text(rng, canary) if rng.random() < 0.5 else others_text(rng, canary)
        pick = rng.randrange(3)
        if pick == 0:
            form = click_form(CANCEL, hostile, user=USER, response_url=sut.fake.response_url())
            yield Case(family, form.encode(), FORM, ANSWER, None, canary, what="cancel with a hostile value")
        elif pick == 1:
            form = click_form(CONFIRM, rng.choice([hostile, "forget", "remember", "export", "FORGET-ALL"]), user=USER,
                              response_url=sut.fake.response_url())
            yield Case(family, form.encode(), FORM, ANSWER, None, canary, what="confirm with a forged command")
        else:
            form = click_form(f"{HOME_FORGET}:{rng.choice(sut.victim_ids)}", rng.choice(sut.victim_ids + [hostile]),
                              user=USER, response_url=None)
            yield Case(family, form.encode(), FORM, SURVIVE, None, canary,
                       what="home forget of the victim's memory id")


def forged_cases(sut: SlackUnderTest, rng: random.Random, canaries: Canaries, count: int) -> Iterator[Case]:
    """`/memory` with another identity's ids as arguments, from the hostile user and from the victim's user id in
    another workspace."""
    family = "forged ids in command arguments"
    for _ in range(count):
        memory_id = rng.choice(sut.victim_ids)
        words = rng.choice([
            f"forget {memory_id}", f"forget  {memory_id.upper()} ", f"forget <@{VICTIM}>",
            f"forget all {memory_id}", f"forget-all {VICTIM}", f"export {VICTIM}", f"export <@{VICTIM}>",
            f"list {VICTIM}", f"memories <@{VICTIM}>", f"search locker code {sut.victim_word}", f"why <@{VICTIM}>",
            f"search {memory_id}", f"list 1 {VICTIM}",
        ])
        user, team = rng.choice([(USER, TEAM_ID), (VICTIM, OTHER_TEAM), ("U3", TEAM_ID)])
        form = command_form(words, user=user, channel=rng.choice(["C1", "D1"]), team_id=team,
                            response_url=sut.fake.response_url())
        yield Case(family, form.encode(), FORM, ANSWER, None, "", what=f"{user}@{team}: /memory {words}")


# --- running the cases

# how many cases of each kind: CI's sample, and the bench's full run (>= 200 a section, per issue 17)
SAMPLE = {"texts per family": 4, "fields missing": 12, "fields wrong": 14, "types": 16, "edits": 8,
          "signatures": 20, "bodies": 12, "buttons": 6, "forged ids": 8, "replays": 5}
FULL = {"texts per family": 40, "fields missing": 66, "fields wrong": 200, "types": 120, "edits": 80,
        "signatures": 200, "bodies": 70, "buttons": 50, "forged ids": 80, "replays": 40}


async def try_case(sut: SlackUnderTest, table: Table, case: Case, scanned: Table) -> None:
    mark = sut.mark()
    status = await sut.send(case.body, case.content_type, case.headers)
    await sut.settle()
    out = sut.since(mark)
    problems = [f"crash: {line}" for line in sut.crashes(mark)]
    if status >= 500:
        problems.append(f"answered HTTP {status}")
    if case.expect == REJECT:
        if status != 401:
            problems.append(f"HTTP {status}, not 401")
        if out.calls or out.responses:
            problems.append(f"a rejected request made the bot call {[m for m, _ in out.calls]} / respond")
    elif case.expect == ANSWER:
        answered = out.posts_to(case.channel) if case.channel else len(out.responses)
        if status != 200 or not answered:
            problems.append(f"not answered (HTTP {status}, {[m for m, _ in out.calls]})")
    elif case.expect == IGNORE and (out.posts_to(case.channel or "D1") or out.responses):
        problems.append("answered input that is not for the bot")
    if case.expect in (REJECT, IGNORE) and case.canary:
        sut.forbidden[case.canary] = case.family
    if case.family.startswith("forged ids"):
        problems += await forged_reach(sut, out)
    for method, args in out.messages():
        found = pings(method, args)
        scanned.add("messages the bot sent, searched for pings", 1, found)
        problems += [f"ping: {p}" for p in found]
    table.add(case.family, 1, [f"{case.what}: {p}" for p in problems])


async def forged_reach(sut: SlackUnderTest, out: Outgoing) -> list[str]:
    problems = []
    if sut.victim_word in out.text():
        problems.append("the victim's memory reached another identity")
    if missing := set(sut.victim_ids) - await sut.victim_memories():
        problems.append(f"the victim's memories {sorted(missing)} were deleted by another identity")
    return problems


async def replay_cases(sut: SlackUnderTest, table: Table, rng: random.Random, canaries: Canaries,
                       count: int) -> None:
    """Each event delivered 2-4 times under one event id (Slack's retries), one after the other or all at once:
    answered once."""
    family = "replayed event ids"
    for i in range(count):
        mark = sut.mark()
        canary = canaries.word()
        channel = f"D8{i:04d}"
        event = rng.choice([message(f"repeat: {canary}", channel=channel),
                            mention(f"repeat: {canary}", channel=channel)])
        body = json_body(event_body(event, event_id=f"EvReplay{i}"))
        times = rng.randint(2, 4)
        mode = rng.choice(["in turn", "all at once", "first delivery marked as a retry"])

        def retry(n: int) -> Callable[[bytes], dict[str, str]]:
            return lambda b: {**signed(b), "X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "http_timeout"}

        if mode == "all at once":
            statuses = await asyncio.gather(*(sut.send(body, JSON, retry(n) if n else None) for n in range(times)))
        else:
            statuses = []
            for n in range(times):
                first_retry = mode.startswith("first") or n > 0
                statuses.append(await sut.send(body, JSON, retry(n + 1) if first_retry else None))
                await sut.settle()
        await sut.settle()
        out = sut.since(mark)
        problems = [f"crash: {line}" for line in sut.crashes(mark)]
        if any(s != 200 for s in statuses):
            problems.append(f"statuses {statuses}")
        if (posted := out.posts_to(channel)) != 1:
            problems.append(f"answered {posted} times")
        table.add(family, 1, [f"{times} deliveries {mode}: {p}" for p in problems])


async def keeps_answering(sut: SlackUnderTest, table: Table, canaries: Canaries, after: str) -> None:
    mark = sut.mark()
    canary = canaries.word()
    status = await sut.event(message(f"a normal message {canary}", channel="D7"))
    await sut.settle()
    out = sut.since(mark)
    answered = any(m == "chat.postMessage" and args.get("channel") == "D7" and canary in str(args.get("text"))
                   for m, args in out.calls)
    table.check("a normal message after each batch is answered", status == 200 and answered,
                f"after {after}: HTTP {status}, calls {[m for m, _ in out.calls]}")
    sut.answered.append(canary)


async def nothing_learned(sut: SlackUnderTest, table: Table) -> None:
    kept = await sut.learned()
    unseen = [word for word in sut.answered if word not in kept]
    table.check("the normal messages are found by that search (it can find what was learned)", not unseen,
                f"not found: {unseen}")
    for canary, family in sut.forbidden.items():
        if canary in kept:
            table.add(family, 0, [f"learned from rejected or ignored input (canary {canary})"])
    table.add("rejected or ignored input searched for in the store, queue and history", len(sut.forbidden), [])
    gone = set(sut.victim_ids) - await sut.victim_memories()
    table.check("the victim's memories are all there at the end", not gone, f"deleted: {sorted(gone)}")


async def run(workdir: Path, *, full: bool, postgres: PostgresServer | None = None) -> tuple[Table, Table]:
    """Section 3 for Slack: (the hostile-input table, the log scan table). `postgres` is not needed."""
    del postgres
    table, scanned, logs = Table(SECTION), Table(SECTION), Table(LOG_SECTION)
    rng = random.Random(1703)
    canaries = Canaries(seed=1703)
    n = FULL if full else SAMPLE
    started = time.monotonic()
    with LogCapture() as capture:
        async with slack_under_test(workdir, capture) as sut:
            await prepare(sut, canaries)
            batches: list[tuple[str, Callable[[], Iterator[Case]]]] = [
                ("hostile texts", lambda: text_cases(sut, rng, canaries, n["texts per family"])),
                ("fields", lambda: field_cases(sut, rng, canaries, n["fields missing"], n["fields wrong"])),
                ("types", lambda: type_cases(sut, rng, canaries, n["types"])),
                ("edits", lambda: edit_cases(sut, rng, canaries, n["edits"])),
                ("signatures", lambda: signature_cases(sut, rng, canaries, n["signatures"])),
                ("bodies", lambda: body_cases(sut, rng, canaries, n["bodies"])),
                ("buttons", lambda: button_cases(sut, rng, canaries, n["buttons"])),
                ("forged ids", lambda: forged_cases(sut, rng, canaries, n["forged ids"])),
            ]
            seconds = table.data.setdefault("seconds by batch", {})
            for name, cases in batches:
                batch_started = time.monotonic()
                for case in cases():
                    await try_case(sut, table, case, scanned)
                await keeps_answering(sut, table, canaries, name)
                seconds[name] = round(time.monotonic() - batch_started, 1)
            batch_started = time.monotonic()
            await replay_cases(sut, table, rng, canaries, n["replays"])
            await keeps_answering(sut, table, canaries, "replays")
            await nothing_learned(sut, table)
            seconds["replays and the final search"] = round(time.monotonic() - batch_started, 1)
    table.merge(scanned)
    table.data["seconds"] = round(time.monotonic() - started, 1)
    scan(logs, "Slack app and bot log lines (DEBUG)", capture.lines, canaries)
    return table, logs
