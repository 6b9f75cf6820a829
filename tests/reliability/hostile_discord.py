"""Section 3 of the reliability suite (issue 17), Discord: hostile and malformed gateway events, counted.

The real `DiscordClient` (discord.py, unmodified) and the real `MemoryBot` (mem0 on embedded Qdrant, or on
pgvector with the state in PostgreSQL when a server is given) run against the fake Discord of
`tests/adapters/discord/fake_discord.py` on 127.0.0.1. The model is scripted to repeat the user's message, so
hostile text reaches what the bot sends. Cases are generated (seeded `random`) from the real payload shapes the
fake builds: a message, an edit, a deletion or a slash command, then one field removed or given a wrong type,
fields Discord does not send, event types it does not have, 100 kB texts, control, right-to-left and zero-width
characters, emoji, `@everyone`, role, channel and user mentions inside what the bot is asked to repeat, messages
of bots, webhooks and the system, edits and deletions of messages the bot never saw, commands with forged ids or
missing options.

Invariants, each a row: the client stays connected and answers a normal message after every batch; a message or
command meant for the bot is answered clearly (its own words echoed, not an apology); nothing is learned from
what the bot did not answer; every message, edit and interaction response the bot sent carries allowed mentions
that forbid everyone and roles (and users other than the author) and fits Discord's 2,000 characters; a forged
id in a command reaches no other user's memory; no exception escapes an event handler (the logs show none).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord

from adapters.discord.client import DiscordClient
from bot.app import MemoryBot
from bot.errors import COMMAND_FAILED, REPLY_FAILED
from bot.llm.base import ChatMessage
from bot.message import UserRef
from tests.adapters.discord.fake_discord import FakeDiscord, Recorded, pointed_at
from tests.conftest import settings_for
from tests.fakes.model import ScriptedBackend
from tests.reliability.logscan import DISCORD_TOKEN, Canaries, LogCapture, scan, with_password
from tests.reliability.tally import Table
from tests.servers.postgres import PostgresServer

SECTION = "3. Hostile input: Discord"
LOG_SECTION = "5. Logs: Discord hostile input"
MESSAGE_LIMIT = 2000
RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")  # a log record's first line (LogCapture's format)
# the commands' error boundary: a malformed interaction is logged as a failed command and the user told so
EXPECTED_ERROR = re.compile(r"^ERROR adapters\.discord\.commands: /\S* failed for user \S+$")
BATCH = 10  # cases between two checks that the bot still answers
VICTIM_SECRET = "victimsecretxq"  # in the victim's memories; no one else's answer may show it

Json = dict[str, Any]


def echo(messages: list[ChatMessage]) -> str:
    """The scripted model repeats what the user said (the last message of the prompt)."""
    return messages[-1].content


# ----- the cases


@dataclass
class Case:
    """One hostile input: gateway frames to send, and what must follow.

    `answer`: True, the bot must answer `message_id` (or the interaction `token`) clearly; False, it must send
    nothing at all; None, either. Whatever it did not answer, it must not learn from (`learn` False: not even if
    answered). `check` names an extra invariant (`Harness.extra_checks`)."""

    family: str
    frames: list[Json]
    message_id: str | None = None
    token: str | None = None
    canary: str | None = None  # a word of the message the answer must repeat
    answer: bool | None = True
    learn: bool | None = None
    check: str | None = None
    what: str = ""  # the mutation, for the violation's text
    apology_ok: bool = False  # Discord's data does not fit the command: "the command failed" is the answer


def frame(event: str, data: Any) -> Json:
    return {"op": 0, "t": event, "d": data}


CONTROL = [chr(c) for c in range(32)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
BIDI = ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u200e", "\u200f", "\u2066", "\u2067", "\u2068",
        "\u2069", "\u061c"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e", "\u034f"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "❤️", "🤖", "🫠", "<:custom:123456789012345678>",
         "<a:dance:123456789012345678>", "\u2764\ufe0f", "🔥" * 3]
WORDS = ["tea", "river", "Lyon", "mañana", "Straße", "東京", "مرحبا", "שלום", "piano", "lamp", "orbit"]
ODD_VALUES: list[Any] = [None, 0, -1, "", "x", [], {}, True, 1.5, "9" * 30, 2**70, {"id": "1"}, ["1", "2"]]
UNKNOWN_EVENTS = ["MESSAGE_CREATE_V2", "message_create", "MESSAGE_CREATE ", "FOO_BAR", "", "MESSAGE",
                  "GUILD_SOUNDBOARD_SOUND_CREATE_EXTRA", "\u0000", "INTERACTION_CREATED", "X" * 500]
UNKNOWN_FIELDS = ["x_future_field", "__proto__", "constructor", "a" * 300, "émoji_field", "nested.dot", "0"]
SYSTEM_TYPES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 18, 20, 21, 22, 23, 24, 46, 99, -1]
# fields a MESSAGE_CREATE may lose or get the wrong type of (paths into the payload)
MESSAGE_FIELDS: list[tuple[Any, ...]] = [
    ("id",), ("channel_id",), ("author",), ("content",), ("timestamp",), ("type",), ("mentions",),
    ("mention_roles",), ("attachments",), ("embeds",), ("pinned",), ("tts",), ("edited_timestamp",),
    ("mention_everyone",), ("member",), ("guild_id",), ("author", "id"), ("author", "username"),
    ("author", "bot"), ("author", "discriminator"), ("author", "global_name"), ("member", "roles"),
    ("member", "joined_at"), ("mentions", 0), ("mentions", 0, "id"), ("flags",), ("webhook_id",),
    ("message_reference",), ("referenced_message",), ("nonce",), ("components",), ("sticker_items",),
]
# fields Discord does send on some messages, given values of the wrong shape
KNOWN_OPTIONAL = ["poll", "components", "sticker_items", "stickers", "interaction", "interaction_metadata",
                  "thread", "message_snapshots", "application", "activity", "call", "reactions",
                  "role_subscription_data", "resolved", "application_id", "position", "mention_channels"]


def _set(payload: Json, path: tuple[Any, ...], value: Any) -> bool:
    """Set (or, `value` DELETE, remove) the field at `path`; False if the path is not in the payload."""
    target: Any = payload
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if isinstance(target, list):
        if not isinstance(last, int) or last >= len(target):
            return False
        if value is DELETE:
            target.pop(last)
        else:
            target[last] = value
        return True
    if not isinstance(target, dict):
        return False
    if value is DELETE:
        return target.pop(last, DELETE) is not DELETE
    target[last] = value
    return True


DELETE: Any = object()


class Generator:
    """Builds the cases from the fake's payload helpers, seeded."""

    def __init__(self, fake: FakeDiscord, canaries: Canaries, seed: int) -> None:
        self.fake = fake
        self.canaries = canaries
        self.rng = random.Random(seed)
        self.victim = fake.user("victim")
        self.victim_memories: list[str] = []  # filled once the victim's memories exist
        self._users = 0

    def user(self, **kw: Any) -> Json:
        self._users += 1
        name = self.rng.choice(["alice", "bob", "карл", "李", "z" * 32, "a\u202eb", "null\x00name", "@everyone",
                                "<@&1>"])
        return self.fake.user(f"{name}{self._users}", **kw)

    def said(self, text: str = "repeat after me") -> tuple[str, str]:
        """A sentence carrying a fresh canary, and the canary."""
        said = self.canaries.say(text)
        return said, self.canaries.words[-1]

    def addressed(self, hostile: str, *, where: str | None = None, author: Json | None = None,
                  mentions: list[Json] | None = None, **kw: Any) -> tuple[Json, str]:
        """A message for the bot (a mention, a DM, or a reply to the bot) asking it to repeat `hostile`."""
        where = where or self.rng.choice(["channel", "channel", "thread", "dm", "reply"])
        said, canary = self.said()
        text = f"{said}: {hostile}"
        fake, author = self.fake, author or self.user()
        if where == "dm":
            return fake.message(author, text, dm=True, mentions=mentions, **kw), canary
        if where == "reply":
            earlier = fake.message(fake.bot_user, "an earlier answer")
            return fake.message(author, text, reply_to=earlier, mentions=mentions, **kw), canary
        mention = fake.mention() if self.rng.random() < 0.8 else f"<@!{fake.bot_user['id']}>"
        text = f"{mention} {text}" if self.rng.random() < 0.7 else f"{text} {mention}"
        channel = fake.thread_id if where == "thread" else fake.channel_id
        return fake.message(author, text, channel_id=channel, mentions=[fake.bot_user, *(mentions or [])],
                            **kw), canary

    def message_case(self, family: str, hostile: str, *, tweak: Callable[[Json], Any] | None = None,
                     **kw: Any) -> Case:
        payload, canary = self.addressed(hostile, **kw)
        if tweak is not None:
            tweak(payload)
        return Case(family, [frame("MESSAGE_CREATE", payload)], message_id=str(payload["id"]), canary=canary)

    # --- field mutations of a message for the bot

    def missing_field(self) -> Case:
        payload, _ = self.addressed(self.rng.choice(WORDS))
        path = self.rng.choice(MESSAGE_FIELDS)
        _set(payload, path, DELETE)
        return self._malformed("message: a field missing", payload, f"without {path}")

    def wrong_type(self) -> Case:
        payload, _ = self.addressed(self.rng.choice(WORDS))
        path, value = self.rng.choice(MESSAGE_FIELDS), self.rng.choice(ODD_VALUES)
        _set(payload, path, copy.deepcopy(value))
        return self._malformed("message: a field of the wrong type", payload, f"{path} = {str(value)[:40]}")

    def _malformed(self, family: str, payload: Json, what: str) -> Case:
        # answered if discord.py still reads it; what is not answered must not be learned
        return Case(family, [frame("MESSAGE_CREATE", payload)], message_id=str(payload.get("id")), answer=None,
                    what=what)

    def extra_fields(self) -> Case:
        payload, canary = self.addressed(self.rng.choice(WORDS))
        targets = [payload, payload["author"], payload.get("member") or payload, payload["mentions"][0]
                   if payload["mentions"] else payload]
        for _ in range(self.rng.randint(1, 4)):
            name = self.rng.choice(UNKNOWN_FIELDS) + str(self.rng.randint(0, 99))
            self.rng.choice(targets)[name] = copy.deepcopy(self.rng.choice(ODD_VALUES + [{"deep": {"er": [1]}}]))
        return Case("message: fields Discord does not send", [frame("MESSAGE_CREATE", payload)],
                    message_id=str(payload["id"]), canary=canary)

    def known_fields_garbled(self) -> Case:
        payload, _ = self.addressed(self.rng.choice(WORDS))
        names = self.rng.sample(KNOWN_OPTIONAL, self.rng.randint(1, 3))
        for name in names:
            payload[name] = copy.deepcopy(self.rng.choice(ODD_VALUES))
        return self._malformed("message: optional fields garbled", payload, f"{names}")

    def unknown_event(self) -> Case:
        payload, _ = self.addressed(self.rng.choice(WORDS))
        event = self.rng.choice(UNKNOWN_EVENTS)
        return Case("unknown event types", [frame(event, payload)], message_id=str(payload["id"]), answer=False,
                    learn=False, what=event[:40])

    def envelope(self) -> Case:
        payload, canary = self.addressed(self.rng.choice(WORDS))
        kind = self.rng.choice(["extra", "seq", "d", "op", "t", "known-garbage"])
        if kind == "extra":  # fields beside op/t/s/d: read as usual
            sent = dict(frame("MESSAGE_CREATE", payload), x_trace=["gw-1"], v=99, compressed=False)
            return Case("gateway frames: odd envelopes", [sent], str(payload["id"]), canary=canary)
        if kind == "seq":
            sent = dict(frame("MESSAGE_CREATE", payload), s=self.rng.choice([-5, 2**64, 0]))
            return Case("gateway frames: odd envelopes", [sent], str(payload["id"]), canary=canary)
        if kind == "d":
            sent = frame("MESSAGE_CREATE", self.rng.choice([None, [], "text", 7, True]))
        elif kind == "op":
            sent = dict(frame("MESSAGE_CREATE", payload), op=self.rng.choice([99, 12, -1, 5]))
        elif kind == "t":
            sent = {"op": 0, "t": None, "d": payload}
        else:  # events the bot does not handle, with data of any shape
            event = self.rng.choice(["TYPING_START", "PRESENCE_UPDATE", "MESSAGE_REACTION_ADD", "GUILD_ROLE_CREATE",
                                     "GUILD_MEMBER_UPDATE", "CHANNEL_PINS_UPDATE", "THREAD_LIST_SYNC",
                                     "MESSAGE_POLL_VOTE_ADD", "GUILD_DELETE", "CHANNEL_DELETE", "USER_UPDATE"])
            data = self.rng.choice([{}, {"id": "x"}, {"guild_id": self.fake.new_id(), "id": self.fake.new_id()},
                                    None, {"user": "nobody"}])
            sent = frame(event, data)
        return Case("gateway frames: odd envelopes", [sent], str(payload["id"]), answer=False, learn=False,
                    what=f"{kind}: {json.dumps(sent)[:80]}")

    # --- hostile texts the bot is asked to repeat

    def long_text(self) -> Case:
        size = self.rng.choice([100_000, 100_000, 4001, 2001, 20_000])
        kind = self.rng.choice(["words", "one word", "lines", "mentions", "emoji", "code"])
        unit = {"words": lambda: self.rng.choice(WORDS) + " ", "one word": lambda: "x",
                "lines": lambda: "\n", "mentions": lambda: f"@everyone <@&{self.fake.role_id}> ",
                "emoji": lambda: self.rng.choice(EMOJI), "code": lambda: "```py\nprint(1)\n"}[kind]
        text = ""
        while len(text) < size:
            text += unit()
        return self.message_case("text: 100 kB and other long texts", text[:size])

    def control_characters(self) -> Case:
        kind = self.rng.choice(["mixed", "only", "nul", "around"])
        if kind == "only":
            text = "".join(self.rng.choices(CONTROL, k=self.rng.randint(1, 50)))
        elif kind == "nul":
            text = "\x00".join(self.rng.choices(WORDS, k=5)) + "\x00" * 10
        elif kind == "around":
            text = f"\x00\x1b[31m{self.rng.choice(WORDS)}\x1b[0m\r\n\x08\x07"
        else:
            text = "".join(self.rng.choice(CONTROL) + self.rng.choice(WORDS) for _ in range(8))
        return self.message_case("text: NUL and control characters", text)

    def bidi_zero_width(self) -> Case:
        marks = BIDI + ZERO_WIDTH + ["\u0301" * 30, "\ud7ff", "\U0010ffff", "\ufffd"]
        text = "".join(self.rng.choice(marks) + self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 10)))
        if self.rng.random() < 0.3:
            text = "".join(self.rng.choices(BIDI + ZERO_WIDTH, k=20))  # nothing visible at all
        if self.rng.random() < 0.3:
            text += f" @\u200beveryone <@\u200b&{self.fake.role_id}> \u202e@here"
        return self.message_case("text: right-to-left and zero-width", text)

    def only_emoji(self) -> Case:
        return self.message_case("text: only emoji", "".join(self.rng.choices(EMOJI, k=self.rng.randint(1, 40))))

    def everyone(self) -> Case:
        forms = ["@everyone", "@here", "@everyone @here", "＠everyone", "@Everyone", "@everyone" * 50,
                 "hey @here, free nitro at discord.gift/x", "`@everyone`", "||@everyone||", "> @here"]
        text = " ".join(self.rng.sample(forms, self.rng.randint(1, 3)))
        return self.message_case("text: @everyone and @here to repeat", text,
                                 tweak=lambda payload: payload.update(mention_everyone=True))

    def role_mentions(self) -> Case:
        fake = self.fake
        roles = [fake.role_id, fake.guild_id, fake.bot_role_id, fake.other_guild.role_id, fake.new_id(), "0"]
        picked = self.rng.sample(roles, self.rng.randint(1, 4))
        text = " ".join(f"<@&{role}>" for role in picked) + " please ping them all"
        case = self.message_case("text: role mentions to repeat", text, mention_roles=picked[:2])
        return case

    def channel_mentions(self) -> Case:
        fake = self.fake
        forms = [f"<#{fake.channel_id}>", f"<#{fake.thread_id}>", f"<#{fake.new_id()}>", "<id:customize>",
                 "<id:browse>", f"<#{fake.other_guild.channel_id}>", "#general", "<#0>"]
        return self.message_case("text: channel mentions to repeat",
                                 " ".join(self.rng.sample(forms, self.rng.randint(1, 4))))

    def user_mentions(self) -> Case:
        others = [self.user() for _ in range(self.rng.randint(1, 3))]
        forms = [f"<@{o['id']}>" for o in others] + [f"<@!{o['id']}>" for o in others]
        forms += [f"<@{self.victim['id']}>", f"<@{self.fake.new_id()}>", "<@0>"]
        text = " ".join(self.rng.sample(forms, min(len(forms), self.rng.randint(1, 5)))) + " say hi to them"
        listed = others if self.rng.random() < 0.5 else []  # the gateway's mentions list, or only the text
        return self.message_case("text: other users' mentions to repeat", text, mentions=listed)

    # --- messages the bot must leave alone

    def not_for_the_bot(self) -> Case:
        fake = self.fake
        kind = self.rng.choice(["bot", "self", "webhook", "system", "system", "no mention", "everyone only"])
        if kind == "bot":
            payload, _ = self.addressed("hi", author=self.user(bot=True))
        elif kind == "self":
            payload, _ = self.addressed("hi", author=fake.bot_user)
        elif kind == "webhook":
            payload, _ = self.addressed("hi")
            payload["webhook_id"] = fake.new_id()
        elif kind == "system":
            payload, _ = self.addressed("hi")
            payload["type"] = self.rng.choice(SYSTEM_TYPES)
            payload.pop("referenced_message", None)
            payload.pop("message_reference", None)
        elif kind == "no mention":
            said, _ = self.said()
            payload = fake.message(self.user(), f"{said} <@{self.user()['id']}>")
        else:
            said, _ = self.said()
            payload = fake.message(self.user(), f"@everyone @here {said}", mention_roles=[fake.role_id])
            payload["mention_everyone"] = True
        return Case("messages of bots, webhooks, the system, or not for the bot",
                    [frame("MESSAGE_CREATE", payload)], message_id=str(payload["id"]), answer=False, learn=False,
                    what=f"{kind} (type {payload['type']})")

    def unknown_edit_or_delete(self) -> Case:
        fake = self.fake
        kind = self.rng.choice(["edit", "edit for the bot", "partial edit", "delete", "delete odd",
                                "bulk", "bulk odd"])
        family = "edits and deletions of unknown messages"
        where = {"channel_id": fake.channel_id, "guild_id": fake.guild_id}
        if kind.startswith("edit"):
            said, _ = self.said()
            payload = fake.message(self.user(), said)
            if kind == "edit for the bot":
                payload, _ = self.addressed("an edit", where="channel")
            payload["edited_timestamp"] = payload["timestamp"]
            # an edit is never answered; one that is for the bot may be learned (the bot did not see it before)
            return Case(family, [frame("MESSAGE_UPDATE", payload)], str(payload["id"]), answer=False,
                        learn=None if kind == "edit for the bot" else False, what=kind)
        if kind == "partial edit":
            data = {"id": fake.new_id(), **where, "content": self.said()[0],
                    "edited_timestamp": self.rng.choice([None, "not a time", "2026-01-01T00:00:00+00:00"])}
            return Case(family, [frame("MESSAGE_UPDATE", data)], data["id"], answer=False, learn=False, what=kind)
        if kind == "delete":
            data = dict(self.rng.choice([where, {"channel_id": fake.dm_channel_id}, {"channel_id": fake.new_id()}]),
                        id=fake.new_id())
            return Case(family, [frame("MESSAGE_DELETE", data)], answer=False, learn=False, what=kind)
        if kind == "delete odd":
            data = {**where, "id": self.rng.choice(["abc", None, -1, 2**70, [], ""])}
            _set(data, (self.rng.choice(["channel_id", "guild_id", "x"]),), self.rng.choice(ODD_VALUES))
            return Case(family, [frame("MESSAGE_DELETE", data)], answer=False, learn=False, what=kind)
        if kind == "bulk":
            ids = [fake.new_id() for _ in range(self.rng.choice([0, 1, 5, 200]))]
            return Case(family, [frame("MESSAGE_DELETE_BULK", {**where, "ids": ids})], answer=False, learn=False,
                        what=kind)
        data = {**where, "ids": self.rng.choice([None, "1,2", [None, "x"], {"a": 1}, [2**70]])}
        return Case(family, [frame("MESSAGE_DELETE_BULK", data)], answer=False, learn=False, what=kind)

    # --- slash commands

    def command(self, name: str, options: list[Json] | None, *, user: Json | None = None, dm: bool = False,
                **changes: Any) -> Json:
        payload = self.fake.command(user or self.user(), name, dm=dm)
        payload["data"]["options"] = options if options is not None else []
        payload.update(changes)
        return payload

    def forged_command(self) -> Case:
        victim_ids = self.victim_memories or ["00000000-0000-0000-0000-000000000000"]
        forged_ids = [*victim_ids, victim_ids[0].upper(), f" {victim_ids[0]} ", self.victim["id"], "*", "%", "_",
                      "' OR '1'='1", "../../memories", "\x00", "@everyone", "<@&1>", "x" * 10_000, "-1", ""]
        kind = self.rng.choice(["forget", "forget", "forget", "search", "remember", "memories", "export", "why",
                                "forget as victim"])
        dm = self.rng.random() < 0.2
        if kind in ("forget", "forget as victim"):
            options = [{"name": "id", "type": 3, "value": self.rng.choice(forged_ids)}]
            payload = self.command("forget", options, dm=dm)
            if kind == "forget as victim":  # a `user` naming the victim beside the member who ran it
                payload = self.command("forget", options, user=None)
                payload["user"] = self.victim
        elif kind == "search":
            query = self.rng.choice([VICTIM_SECRET, f"{VICTIM_SECRET} {self.victim['id']}", "*", "%", "' OR 1=1 --"])
            payload = self.command("search", [{"name": "query", "type": 3, "value": query}], dm=dm)
        elif kind == "remember":
            text = self.rng.choice([f"@everyone <@&{self.fake.role_id}> remember me", f"<@{self.victim['id']}> is me",
                                    f"my id is {self.victim['id']}", "\x00\u202e" + "long " * 3000,
                                    self.said("note")[0]])
            payload = self.command("remember", [{"name": "text", "type": 3, "value": text}], dm=dm)
        elif kind == "memories":
            value = self.rng.choice([0, -1, 2**53, 99999])
            payload = self.command("memories", [{"name": "page", "type": 4, "value": value}], dm=dm)
        else:
            payload = self.command(kind, [], dm=dm)
        return Case("commands with forged ids and arguments", [frame("INTERACTION_CREATE", payload)],
                    token=payload["token"], check="victim untouched", what=kind)

    def broken_command(self) -> Case:
        family = "commands with missing or malformed options"
        kind = self.rng.choice(["missing option", "wrong option name", "wrong option type", "null value",
                                "extra options", "unknown command", "no options key", "no data", "no name",
                                "odd type", "button", "autocomplete", "modal", "no user", "no token"])
        name = self.rng.choice(["remember", "search", "forget", "memories", "forget-all", "pause"])
        options: list[Json] | None = []
        if kind == "wrong option name":
            options = [{"name": "idd", "type": 3, "value": "x"}]
        elif kind == "wrong option type":
            options = [{"name": self.rng.choice(["id", "text", "query", "page"]),
                        "type": self.rng.choice([4, 5, 6, 99]), "value": self.rng.choice(["abc", 1.5, [], None])}]
        elif kind == "null value":
            options = [{"name": self.rng.choice(["id", "text", "query", "page"]), "type": 3, "value": None}]
        elif kind == "extra options":
            options = [{"name": f"opt{i}", "type": 3, "value": "v"} for i in range(self.rng.randint(1, 30))]
        payload = self.command(name, options)
        answer: bool | None = True  # a known command, whatever its options: the user is told something
        if kind == "unknown command":
            payload["data"]["name"] = self.rng.choice(["drop-table", "", "FORGET", "forget all", "x" * 200])
        elif kind == "no options key":
            payload["data"].pop("options")
        elif kind == "no data":
            payload.pop("data")
            answer = None
        elif kind == "no name":
            payload["data"].pop("name")
            answer = None
        elif kind == "odd type":
            payload["type"] = self.rng.choice([1, 6, 99, "2", None])
            answer = None
        elif kind == "button":
            payload = self.fake.button_click(self.user(), self.rng.choice(["forget-all:yes", "", "x" * 100]),
                                             self.fake.new_id())
            answer = None
        elif kind == "autocomplete":
            payload["type"] = 4
            answer = None
        elif kind == "modal":
            payload["type"] = 5
            payload["data"] = self.rng.choice([{"custom_id": "m", "components": []}, {}, None])
            answer = None
        elif kind == "no user":
            payload.pop("member", None)
            payload.pop("user", None)
            answer = None
        elif kind == "no token":
            payload.pop(self.rng.choice(["token", "id", "application_id", "channel_id"]))
            answer = None
        return Case(family, [frame("INTERACTION_CREATE", payload)], token=payload.get("token"), answer=answer,
                    check="victim untouched", what=f"/{name} {kind}", apology_ok=True)

    def cases(self, per_family: int) -> list[Case]:
        makers: list[Callable[[], Case]] = [
            self.missing_field, self.wrong_type, self.extra_fields, self.known_fields_garbled, self.unknown_event,
            self.envelope, self.long_text, self.control_characters, self.bidi_zero_width, self.only_emoji,
            self.everyone, self.role_mentions, self.channel_mentions, self.user_mentions, self.not_for_the_bot,
            self.unknown_edit_or_delete, self.forged_command, self.broken_command,
        ]
        made = [make() for make in makers for _ in range(per_family)]
        self.rng.shuffle(made)
        return made


# ----- running them


class HostileDiscord(FakeDiscord):
    """The fake Discord, able to send any frame on the gateway (the fake's `dispatch` routes by guild id, which a
    hostile payload may not have, or not as a number)."""

    async def send_frame(self, payload: Json) -> None:
        ws = self._shards.get(0)
        if ws is None:
            raise RuntimeError("the bot is not connected to the gateway")
        if payload.get("op") == 0 and "s" not in payload:
            payload = dict(payload, s=next(self._seq))
        await ws.send_json(payload)


@dataclass
class Harness:
    fake: HostileDiscord
    logs: LogCapture
    client: DiscordClient
    bot: MemoryBot
    gen: Generator
    table: Table
    running: int = 0  # event handlers (discord.py's `_run_event`) running now
    handled: dict[str, asyncio.Event] = field(default_factory=dict)  # by message id, set when on_message ends
    authors: dict[str, str] = field(default_factory=dict)  # message id -> author id, of every message read
    seen: list[str] = field(default_factory=list)  # the author of every message read, in order
    rejected: list[Case] = field(default_factory=list)  # cases nothing may be learned from
    answered_ids: set[str] = field(default_factory=set)
    sentinels: list[str] = field(default_factory=list)
    victim_tokens: set[str] = field(default_factory=set)
    played: int = 0  # events sent, sentinels included
    slowest: list[tuple[float, str]] = field(default_factory=list)  # seconds each case took
    request_authors: dict[int, set[str]] = field(default_factory=dict)  # id(request) -> who it may answer
    expected_errors: set[int] = field(default_factory=set)  # log lines (by index) a case explains
    _idle: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def alive(self) -> bool:
        return not self.client.is_closed() and bool(self.fake.connected_shards)

    def watch(self) -> None:
        """Know when every event handler has finished, and when a message's own has."""
        run_event, on_message = self.client._run_event, self.client.on_message

        async def counted(coro: Any, event_name: str, *args: Any, **kwargs: Any) -> None:
            self.running += 1
            try:
                await run_event(coro, event_name, *args, **kwargs)
            finally:
                async with self._idle:
                    self.running -= 1
                    self._idle.notify_all()

        async def watched(message: discord.Message) -> None:
            author = getattr(message, "author", None)
            if author is not None and not author.bot:  # as discord.py read them: whom the bot answers
                self.authors[str(message.id)] = str(author.id)
                self.seen.append(str(author.id))
            try:
                await on_message(message)
            finally:
                self.handled.setdefault(str(message.id), asyncio.Event()).set()

        self.client._run_event = counted  # type: ignore[method-assign]
        self.client.on_message = watched  # type: ignore[method-assign]

    async def settle(self, timeout: float = 60.0) -> None:
        """Wait until everything sent so far has been read and handled: a message discord.py reads and the bot
        ignores (another bot's) goes last, and the handlers still running then are waited for."""
        barrier = self.fake.message(self.fake.user("barrier", bot=True), "barrier")
        done = self.handled.setdefault(str(barrier["id"]), asyncio.Event())
        await self.fake.send_frame(frame("MESSAGE_CREATE", barrier))
        await asyncio.wait_for(done.wait(), timeout)

        async def idle() -> None:
            async with self._idle:
                await self._idle.wait_for(lambda: self.running == 0)
        await asyncio.wait_for(idle(), timeout)

    async def play(self, case: Case) -> None:
        started = time.monotonic()
        try:
            await self._play(case)
        finally:
            self.slowest.append((time.monotonic() - started, f"{case.family}: {case.what}"))

    async def _play(self, case: Case) -> None:
        self.played += 1
        first_line, first_author = len(self.logs.lines), len(self.seen)
        before = len(self.fake.requests)
        for sent in case.frames:
            await self.fake.send_frame(copy.deepcopy(sent))
        if case.token and case.answer:
            with contextlib.suppress(TimeoutError):
                await self.fake.wait_for(lambda r: case.token in r.path and has_content(r), timeout=30)
        await self.settle()
        during = self.fake.requests[before:]
        self.request_authors.update((id(r), set(self.seen[first_author:])) for r in during)
        self.judge(case, during)
        if case.check == "victim untouched":
            await check_victim(self)
        if case.apology_ok:  # the command's failure, logged as the error it is for the operator
            self.expected_errors.update(i for i in range(first_line, len(self.logs.lines))
                                        if EXPECTED_ERROR.match(self.logs.lines[i]))

    def judge(self, case: Case, during: list[Recorded]) -> None:
        """Count the case in its family's row: answered as it must be, and nothing learned where it must not."""
        answers = self.answers(case, during)
        problems = []
        if answers:
            self.answered_ids.add(case.message_id or "")
        if case.answer is True:
            texts = [text_of(r) or "" for r in answers]
            if not any(t.strip() for t in texts):
                problems.append("meant for the bot but not answered")
            elif any(t == REPLY_FAILED or (t == COMMAND_FAILED and not case.apology_ok) for t in texts):
                problems.append("answered with an apology: something failed inside")
            elif case.canary and not any(case.canary in t for t in texts):
                problems.append("the answer does not repeat the message")
        if case.answer is False and during:
            problems.append(f"the bot sent {len(during)} request(s) for an event it must ignore: "
                            f"{[(r.method, r.path) for r in during][:3]}")
        if case.learn is False or (case.answer is None and not answers):
            self.rejected.append(case)
        self.table.check(case.family, not problems, f"{case.what}: " + "; ".join(problems))

    def answers(self, case: Case, during: list[Recorded]) -> list[Recorded]:
        if case.token:
            return [r for r in self.fake.requests if case.token in r.path and has_content(r)]
        if case.message_id:
            return [r for r in self.fake.requests if reference_of(r) == case.message_id]
        return []

    async def sentinel(self) -> None:
        """A plain message for the bot after each batch: it must still be connected and answer it."""
        payload, canary = self.gen.addressed("is everything fine?", where="channel")
        case = Case("still answering after each batch", [frame("MESSAGE_CREATE", payload)],
                    message_id=str(payload["id"]), canary=canary)
        if self.client.is_closed() or not self.client.is_ready():
            self.table.check(case.family, False, "the client is no longer connected")
            return
        self.sentinels.append(case.message_id or "")
        try:
            await self.play(case)
        except TimeoutError:
            self.table.check(case.family, False, "the bot did not handle a plain message within a minute")


def traceback_after(lines: list[str], i: int) -> list[str]:
    """The lines of the traceback logged with record `i`, if any."""
    return list(itertools.takewhile(lambda more: not RECORD.match(more), lines[i + 1:]))


def reference_of(r: Recorded) -> str | None:
    """The message a request replies to (discord.py sends the id as a number)."""
    ref = r.json.get("message_reference") if isinstance(r.json, dict) else None
    return str(ref["message_id"]) if isinstance(ref, dict) and "message_id" in ref else None


def text_of(r: Recorded) -> str | None:
    """The text a request shows, wherever its route keeps it (interaction callbacks under data)."""
    body = r.json if isinstance(r.json, dict) else {}
    data = body.get("data") if isinstance(body.get("data"), dict) else body
    content = (data or {}).get("content")
    return content if isinstance(content, str) else None


def has_content(r: Recorded) -> bool:
    return bool((text_of(r) or "").strip()) or bool(r.files)


def carrier(r: Recorded) -> Json | None:
    """The part of a request's body holding its content and allowed mentions, for routes that send text."""
    sends = (r.method in ("POST", "PATCH") and re.search(r"/channels/\d+/messages(/\d+)?$", r.path)) or \
        r.path.startswith("/webhooks/") or r.path.endswith("/callback")
    if not sends or not isinstance(r.json, dict):
        return None
    data = r.json.get("data") if r.path.endswith("/callback") else r.json
    return data if isinstance(data, dict) and "content" in data else None


def mention_problems(r: Recorded, authors: set[str]) -> list[str]:
    """Why this request could ping everyone, a role, or a user other than the one it answers."""
    body = carrier(r)
    if body is None:
        return []
    allowed = body.get("allowed_mentions")
    where = f"{r.method} {r.path.split('/')[1]}"
    if not isinstance(allowed, dict):
        return [f"{where}: no allowed_mentions, so Discord parses every mention in {body.get('content', '')[:60]!r}"]
    problems = []
    parse = allowed.get("parse", ["everyone", "roles", "users"])
    if "everyone" in parse or "roles" in parse or "users" in parse:
        problems.append(f"{where}: allowed_mentions parse {parse}")
    if allowed.get("roles"):
        problems.append(f"{where}: allowed_mentions names roles {allowed['roles']}")
    users = {str(u) for u in allowed.get("users") or []}
    if users - authors:
        problems.append(f"{where}: allowed_mentions names users {sorted(users)} (authors {sorted(authors)})")
    return problems


async def check_sent(h: Harness) -> None:
    """Every request the bot made that shows text: safe mentions, within Discord's length limit."""
    pings = re.compile(r"@everyone|@here|<@&\d+>|<@!?\d+>")
    for r in h.fake.requests:
        body = carrier(r)
        if body is None:
            continue
        if pings.search(body.get("content") or ""):
            h.table.data["sent texts quoting @everyone, @here, a role or a user"] = \
                h.table.data.get("sent texts quoting @everyone, @here, a role or a user", 0) + 1
        authors = h.request_authors.get(id(r), set()) | {h.authors.get(reference_of(r) or "", "")}
        problems = mention_problems(r, authors)
        h.table.check("bot messages cannot ping everyone, a role or another user", not problems,
                      "; ".join(problems))
        content = body.get("content") or ""
        h.table.check("bot messages fit Discord's 2,000 characters", len(content) <= MESSAGE_LIMIT,
                      f"{r.method} {r.path.split('/')[1]}: {len(content)} characters")
        secret = VICTIM_SECRET in content and not any(token in r.path for token in h.victim_tokens)
        h.table.check("no answer shows another user's memory", not secret,
                      f"{r.method} {r.path.split('/')[1]} shows the victim's memory")


async def check_learning(h: Harness) -> None:
    """After the queue drained: nothing learned from any message the bot did not answer (or must ignore), and
    every plain message after a batch learned (so the check can see learning at all)."""
    await h.bot.writeback.drain(timeout=300)
    queued = {str(row[0]) for row in await h.bot.db.sql.fetchall("SELECT message_id FROM learned_from")}
    stored = {source.message_id for _, source in await h.bot.store.sources()}
    for case in h.rejected:
        ids = {case.message_id} if case.message_id else set()
        learned = ids & (queued | stored)
        h.table.check("nothing learned from what the bot ignored or could not read", not learned,
                      f"{case.family}: learned from message {case.message_id}")
    for message_id in h.sentinels:
        h.table.check("plain messages between batches are learned", message_id in queued and message_id in stored,
                      f"message {message_id} was not learned")


async def victim_memories(h: Harness) -> list[str]:
    victim = UserRef("discord", h.fake.guild_id, str(h.gen.victim["id"]))
    return sorted(r.id for r in (await h.bot.memories.controls.list(victim, page_size=100)).records)


async def check_victim(h: Harness) -> None:
    """A command with a forged id (or any broken command) leaves the victim's memories as they were."""
    before, now = h.gen.victim_memories, await victim_memories(h)
    h.table.check("forged ids reach no other user's memory", now == before,
                  f"the victim's memories changed: {len(before)} before, {len(now)} after")


def check_logs(h: Harness, lines: list[str], logs_table: Table) -> None:
    """No exception escaped an event handler (discord.py logs `Ignoring exception in ...`), nothing was logged
    as an error, and no log line quotes a secret or what a user said."""
    crashes = []
    for i, line in enumerate(lines):
        if i in h.expected_errors:
            continue
        if line.startswith(("ERROR ", "CRITICAL ")) or "Ignoring exception" in line or \
                "Task exception was never retrieved" in line or "Exception in callback" in line:
            after = traceback_after(lines, i)
            crashes.append(" | ".join([line[:200], *after[-3:]]))  # the record, and where its traceback ends
    h.table.add("no exception escapes a handler, no error logged", h.played, crashes)
    scan(logs_table, "log lines of the Discord bot under hostile input", lines, h.gen.canaries,
         extra=[VICTIM_SECRET])


# ----- the entry point


@contextlib.asynccontextmanager
async def connected(workdir: Path, postgres: PostgresServer | None, logs: LogCapture) -> AsyncIterator[Harness]:
    fake = HostileDiscord()
    await fake.start()
    stores: dict[str, Any] = {}
    if postgres is not None:
        url = with_password(postgres.new_database())
        stores = {"vector_store": "pgvector", "pgvector_url": url, "database_url": url}
    settings = settings_for(workdir / "data", **stores)
    try:
        with pointed_at(fake):
            async with MemoryBot(settings, backend=ScriptedBackend(reply=echo, chunk=10**6)) as bot:
                client = DiscordClient(bot, guild_ready_timeout=0.05)
                task = asyncio.create_task(client.start(DISCORD_TOKEN))
                try:
                    await asyncio.wait_for(client.wait_until_ready(), 30)
                    gen = Generator(fake, Canaries(seed=3), seed=17)
                    harness = Harness(fake, logs, client, bot, gen, Table(SECTION))
                    harness.watch()
                    yield harness
                finally:
                    await client.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 10)
    finally:
        await fake.stop()


async def give_victim_memories(h: Harness) -> list[str]:
    """The victim remembers two things, through the real slash command; their ids are what attackers forge."""
    for n in (1, 2):
        payload = h.gen.command("remember", [{"name": "text", "type": 3, "value": f"{VICTIM_SECRET} number {n}"}],
                                user=h.gen.victim)
        h.victim_tokens.add(payload["token"])
        await h.fake.send_frame(frame("INTERACTION_CREATE", payload))
        await h.fake.wait_for(lambda r, t=payload["token"]: t in r.path and has_content(r), timeout=30)
    return await victim_memories(h)


async def run(workdir: Path, *, full: bool, postgres: PostgresServer | None = None) -> tuple[Table, Table]:
    """Play the hostile cases (a sample of each family for CI, `full`: the issue's counts) against the real
    Discord adapter; return this section's table and its log-scan table."""
    logs_table = Table(LOG_SECTION)
    with LogCapture() as logs:
        async with connected(workdir, postgres, logs) as h:
            h.gen.victim_memories = await give_victim_memories(h)
            cases = h.gen.cases(per_family=14 if full else 2)
            for i, case in enumerate(cases):
                try:
                    await h.play(case)
                except (TimeoutError, RuntimeError):
                    h.table.check(case.family, False, f"{case.what}: the bot stopped reading events (a minute "
                                                      "without progress)")
                if not h.alive:
                    h.table.check("the client is still connected at the end", False,
                                  f"{case.family}, {case.what}: the gateway connection ended")
                    break
                if i % BATCH == BATCH - 1 or i == len(cases) - 1:
                    await h.sentinel()
            if h.alive:
                await h.settle()
            await asyncio.sleep(0.5)  # anything sent late (a command still answering) is recorded too
            await check_sent(h)
            await check_learning(h)
            await check_victim(h)
            h.table.check("the client is still connected at the end", h.alive, "the client stopped")
            h.table.data["cases"] = len(cases)
            h.table.data["requests recorded"] = len(h.fake.requests)
            h.table.data["answered"] = len(h.answered_ids)
            h.table.data["slowest cases (s)"] = [(round(t, 1), what) for t, what in sorted(h.slowest)[-5:]]
    check_logs(h, logs.lines, logs_table)
    return h.table, logs_table


def main() -> None:  # pragma: no cover - for running the section by hand
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table, logs_table = asyncio.run(run(Path(tmp), full="--full" in sys.argv))
    print(table.markdown(), logs_table.markdown(), sep="\n\n")
    print(json.dumps([row for row in table.to_json()["rows"] if row["violations"]], indent=1)[:20000])
    print(json.dumps(table.data, indent=1))


if __name__ == "__main__":
    main()
