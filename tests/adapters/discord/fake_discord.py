"""A small fake Discord for tests: REST routes and a gateway websocket on 127.0.0.1.

The unmodified discord.py talks to it over real sockets. Every REST request is recorded (JSON bodies and
multipart uploads) so tests assert on what the bot actually sent. Tests drive the bot by dispatching
gateway events (`MESSAGE_CREATE`, `INTERACTION_CREATE`) built with the payload helpers here.

It has two servers (guilds) whose ids fall on different shards for any shard count above 1, and takes one gateway
connection per shard, from one process or several: each IDENTIFY's `shard: [id, count]` is recorded, READY lists
the shard's own guilds, and an event goes to the connection of the shard that owns its guild by Discord's rule,
`(guild_id >> 22) % shard_count` (direct messages to shard 0), as Discord routes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"

GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11


@dataclass
class Upload:
    name: str
    filename: str | None
    content: bytes


@dataclass
class Recorded:
    """One REST request the bot made."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    files: list[Upload] = field(default_factory=list)

    @property
    def reference(self) -> str | None:
        """The id of the message this one replies to, if any (discord.py sends ids as numbers)."""
        ref = (self.json or {}).get("message_reference")
        return str(ref["message_id"]) if ref else None

    @property
    def flags(self) -> int:
        """Message flags, wherever the route keeps them (interaction callbacks nest them under data)."""
        body = self.json or {}
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        return int((data or {}).get("flags") or 0)


@dataclass(frozen=True)
class FakeGuild:
    """One server: a text channel with a thread, a members role, and the role Discord gives the bot."""

    id: str
    name: str
    channel_id: str
    thread_id: str
    role_id: str
    bot_role_id: str


def shard_of(guild_id: str | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; direct messages (no guild) go to shard 0."""
    return (int(guild_id) >> 22) % shard_count if guild_id else 0


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int
    retry_after: float | None = None  # a 429: Discord's rate-limit body and headers


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only for exactly "application/json" (no charset).
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json"})


def _member(user: dict[str, Any] | None = None, roles: list[str] | None = None) -> dict[str, Any]:
    """A guild member payload; MESSAGE_CREATE carries it without the user."""
    member: dict[str, Any] = {"roles": roles or [], "joined_at": _iso(), "deaf": False, "mute": False,
                              "flags": 0}
    if user is not None:
        member["user"] = user
    return member


def _iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).isoformat()


class FakeDiscord:
    """State of one fake Discord: a bot user, an application, two guilds (`guild_id`, `channel_id`, ... name the
    first; `other_guild` is the second) and a DM channel. `recommended_shards` is what `/gateway/bot` answers."""

    def __init__(self, recommended_shards: int = 1) -> None:
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self.recommended_shards = recommended_shards
        self.app_id = self.new_id()
        self.bot_user = self.user("memorybot", bot=True, user_id=self.app_id)
        first = self._new_guild("Test Guild")
        # the next id block (ids >> 22): the guild after it on the shard ring, whatever the shard count above 1
        self.other_guild = self._new_guild("Other Guild", guild_id=str(int(first.id) + (1 << 22)))
        self.guilds = [first, self.other_guild]
        self.guild_id, self.channel_id, self.thread_id = first.id, first.channel_id, first.thread_id
        self.role_id, self.bot_role_id = first.role_id, first.bot_role_id
        self.dm_channel_id = self.new_id()
        self.requests: list[Recorded] = []
        self.commands: list[dict[str, Any]] = []
        self.identify: dict[str, Any] | None = None  # the last IDENTIFY payload a bot sent
        self.identifies: list[dict[str, Any]] = []  # every IDENTIFY, in order (one per shard and connection)
        self.dispatched: list[tuple[int, str, dict[str, Any]]] = []  # (shard, event, data) of every event sent
        self.last_response_message_id = ""  # the message an interaction callback created
        self.posted: dict[str, dict[str, Any]] = {}  # the bot's channel messages by id, edits applied
        self.replies_to: dict[str, str] = {}  # the bot's message id -> the message it replied to
        self._failures: list[_Failure] = []
        self._seq = itertools.count(1)
        self._shards: dict[int, web.WebSocketResponse] = {}  # the open gateway connections, by shard
        self._shard_count = 1  # as the bots identified (every connection of one bot names the same count)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----- lifecycle

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for ws in list(self._shards.values()):
            if not ws.closed:
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_identified(self, timeout: float = 10.0, shards: int = 1) -> None:
        """Wait until `shards` gateway connections have identified and been sent their guilds."""
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self._shards) >= shards)
        await asyncio.wait_for(enough(), timeout)

    @property
    def connected_shards(self) -> list[int]:
        return sorted(self._shards)

    def shard_of(self, guild_id: str | None) -> int:
        """The shard that gets this guild's events at the shard count the bots identified with."""
        return shard_of(guild_id, self._shard_count)

    # ----- payload helpers

    def new_id(self) -> str:
        return str(next(self._ids))

    def _new_guild(self, name: str, guild_id: str | None = None) -> FakeGuild:
        return FakeGuild(id=guild_id or self.new_id(), name=name, channel_id=self.new_id(), thread_id=self.new_id(),
                         role_id=self.new_id(), bot_role_id=self.new_id())

    def guild_of(self, channel_id: str) -> FakeGuild | None:
        """The guild a channel or thread is in (None: the DM channel)."""
        return next((g for g in self.guilds if channel_id in (g.channel_id, g.thread_id)), None)

    def user(self, name: str, *, bot: bool = False, user_id: str | None = None) -> dict[str, Any]:
        return {"id": user_id or self.new_id(), "username": name, "global_name": name,
                "discriminator": "0", "avatar": None, "bot": bot}

    def message(
        self,
        author: dict[str, Any],
        content: str,
        *,
        channel_id: str | None = None,
        dm: bool = False,
        mentions: list[dict[str, Any]] | None = None,
        roles: list[str] | None = None,
        reply_to: dict[str, Any] | None = None,
        mention_roles: list[str] | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from `author` in the first guild's text channel, in `channel_id` (the guild
        follows from it), or in the DM channel."""
        channel_id = channel_id or (self.dm_channel_id if dm else self.channel_id)
        guild = self.guild_of(channel_id)
        data: dict[str, Any] = {
            "id": self.new_id(), "channel_id": channel_id,
            "author": author, "content": content, "timestamp": _iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": mentions or [],
            "mention_roles": mention_roles or [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
        }
        if guild is not None:
            data["guild_id"] = guild.id
            data["member"] = _member(roles=roles)
        if reply_to is not None:
            data["type"] = 19
            data["message_reference"] = {"message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                                         "guild_id": reply_to.get("guild_id")}
            data["referenced_message"] = reply_to
        return data

    def mention(self) -> str:
        return f"<@{self.bot_user['id']}>"

    def command(
        self, user: dict[str, Any], name: str, options: dict[str, Any] | None = None, *, dm: bool = False,
        roles: list[str] | None = None, guild: FakeGuild | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for the slash command `name` with string/int `options`, run by a
        member holding `roles` in the text channel of `guild` (the first one by default), or in the DMs."""
        kinds = {str: 3, int: 4, bool: 5}
        opts = [{"name": k, "type": kinds[type(v)], "value": v} for k, v in (options or {}).items()]
        spec = next((c for c in self.commands if c["name"] == name), {"id": self.new_id()})
        data = {"id": spec["id"], "name": name, "type": 1, "options": opts}
        return self._interaction(2, user, data, dm=dm, roles=roles, guild=guild)

    def button_click(
        self, user: dict[str, Any], custom_id: str, message_id: str, *, dm: bool = False
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for a click on the button `custom_id` of an ephemeral message."""
        channel_id = self.dm_channel_id if dm else self.channel_id
        message = {"id": message_id, "channel_id": channel_id, "author": self.bot_user, "content": "",
                   "timestamp": _iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
                   "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
                   "type": 20, "flags": 64, "components": []}
        payload = self._interaction(3, user, {"custom_id": custom_id, "component_type": 2}, dm=dm)
        payload["message"] = message
        return payload

    def _interaction(
        self, kind: int, user: dict[str, Any], data: dict[str, Any], *, dm: bool, roles: list[str] | None = None,
        guild: FakeGuild | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": self.new_id(), "application_id": self.app_id, "type": kind, "token": f"tok-{self.new_id()}",
            "version": 1, "data": data, "locale": "en-US", "attachment_size_limit": 8_000_000,
            "app_permissions": "0", "entitlements": [],
        }
        if dm:
            payload["channel"] = {"id": self.dm_channel_id, "type": DM, "recipients": [user]}
            payload["channel_id"] = self.dm_channel_id
            payload["user"] = user
            payload["context"] = 1
        else:
            guild = guild or self.guilds[0]
            payload["guild_id"] = guild.id
            payload["channel"] = {"id": guild.channel_id, "type": GUILD_TEXT, "guild_id": guild.id}
            payload["channel_id"] = guild.channel_id
            payload["member"] = dict(_member(user, roles), permissions="2147483647")
            payload["context"] = 0
        return payload

    # ----- driving the bot

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send an event to the connection of the shard that owns its guild (DMs: shard 0); return the shard."""
        shard = self.shard_of(data.get("guild_id"))
        ws = self._shards.get(shard)
        if ws is None:
            raise RuntimeError(f"no gateway connection for shard {shard} (connected: {self.connected_shards})")
        self.dispatched.append((shard, event, data))
        await ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})
        return shard

    def fail(
        self, method: str, path_regex: str, status: int, code: int, message: str, times: int = 1
    ) -> None:
        """Answer the next `times` matching requests with a Discord error body."""
        self._failures.append(_Failure(method, re.compile(path_regex), status, code, message, times))

    def rate_limit(self, method: str, path_regex: str, retry_after: float, times: int = 1) -> None:
        """Answer the next `times` matching requests with 429 as Discord does: the JSON body naming `retry_after`,
        its headers, and the `Via` header discord.py looks for (a 429 without it is Cloudflare's ban)."""
        self._failures.append(_Failure(method, re.compile(path_regex), 429, 0, "You are being rate limited.", times,
                                       retry_after))

    async def wait_for(
        self, predicate: Callable[[Recorded], bool], count: int = 1, timeout: float = 10.0
    ) -> list[Recorded]:
        """Wait until at least `count` recorded requests match; return the matches."""
        async def enough() -> list[Recorded]:
            async with self._changed:
                while len(found := [r for r in self.requests if predicate(r)]) < count:
                    await self._changed.wait()
                return found
        return await asyncio.wait_for(enough(), timeout)

    def shown(self, channel_id: str) -> list[str]:
        """What the bot's messages in a channel say now (after edits), oldest first."""
        return [m["content"] for m in self.posted.values() if m["channel_id"] == channel_id]

    def sent(self, method: str = "POST", path_regex: str = r"/channels/\d+/messages$") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(path_regex, r.path)]

    # ----- gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        shard: int | None = None
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 45_000}})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                if payload["op"] == 1:
                    await ws.send_json({"op": 11})
                elif payload["op"] == 2:
                    shard, count = payload["d"].get("shard", [0, 1])
                    await self._ready(ws, payload["d"], shard, count)
        finally:
            async with self._changed:
                if shard is not None and self._shards.get(shard) is ws:
                    del self._shards[shard]
        return ws

    async def _ready(self, ws: web.WebSocketResponse, identify: dict[str, Any], shard: int, count: int) -> None:
        self.identify = identify
        self.identifies.append(identify)
        self._shard_count = count
        own = [g for g in self.guilds if shard_of(g.id, count) == shard]
        ready = {"v": 10, "user": self.bot_user, "guilds": [{"id": g.id, "unavailable": True} for g in own],
                 "session_id": f"fake-session-{shard}", "resume_gateway_url": self.url + "/gateway",
                 "application": {"id": self.app_id, "flags": 0}, "shard": [shard, count]}
        await ws.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
        for guild in own:
            await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": self._guild(guild)})
        async with self._changed:
            self._shards[shard] = ws
            self._changed.notify_all()

    def _guild(self, guild: FakeGuild) -> dict[str, Any]:
        everyone = {"id": guild.id, "name": "@everyone", "permissions": "2147483647", "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False}
        role = dict(everyone, id=guild.role_id, name="members", position=1)
        bot_role = dict(everyone, id=guild.bot_role_id, name="memorybot", position=2, managed=True,
                        tags={"bot_id": self.bot_user["id"]})  # the role Discord gives the bot on invite
        channel = {"id": guild.channel_id, "type": GUILD_TEXT, "guild_id": guild.id, "name": "general",
                   "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None}
        thread = {"id": guild.thread_id, "type": PUBLIC_THREAD, "guild_id": guild.id, "name": "a thread",
                  "parent_id": guild.channel_id, "owner_id": self.new_id(), "message_count": 1,
                  "member_count": 1, "rate_limit_per_user": 0,
                  "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                      "archive_timestamp": _iso(), "locked": False}}
        me = _member(self.bot_user)
        return {"id": guild.id, "name": guild.name, "owner_id": self.new_id(),
                "roles": [everyone, role, bot_role], "channels": [channel], "threads": [thread], "members": [me],
                "member_count": 2, "emojis": [], "stickers": [], "features": [], "large": False,
                "unavailable": False, "joined_at": _iso(), "voice_states": [], "presences": []}

    # ----- REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        record = await self._record(request, path)
        for failure in self._failures:
            if failure.times > 0 and failure.method == request.method and failure.pattern.search(path):
                failure.times -= 1
                if failure.retry_after is not None:
                    response = _json({"message": failure.message, "retry_after": failure.retry_after,
                                      "global": False}, status=429)
                    response.headers.update({"Via": "1.1 google", "Retry-After": str(failure.retry_after),
                                             "X-RateLimit-Scope": "user"})
                    return response
                return _json({"code": failure.code, "message": failure.message},
                                         status=failure.status)
        return self._answer(record)

    async def _record(self, request: web.Request, path: str) -> Recorded:
        body: Any = None
        files: list[Upload] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(data)
                else:
                    files.append(Upload(part.name or "", part.filename, bytes(data)))  # type: ignore[union-attr]
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        record = Recorded(request.method, path, dict(request.query), body, files)
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
        return record

    def _answer(self, r: Recorded) -> web.StreamResponse:
        if r.method == "GET" and r.path == "/users/@me":
            return _json(self.bot_user)
        if r.method == "GET" and r.path == "/oauth2/applications/@me":
            return _json(self._application())
        if r.method == "GET" and r.path in ("/gateway/bot", "/gateway"):
            return _json({"url": self.url + "/gateway", "shards": self.recommended_shards, "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
        if r.method == "PUT" and re.fullmatch(r"/applications/\d+(/guilds/\d+)?/commands", r.path):
            self.commands = [dict(c, id=self.new_id(), application_id=self.app_id, version="1")
                             for c in r.json]
            return _json(self.commands)
        if r.method == "POST" and re.fullmatch(r"/channels/\d+/typing", r.path):
            return web.Response(status=204)
        if r.method == "POST" and (m := re.fullmatch(r"/channels/(\d+)/messages", r.path)):
            message = self._message_from(r.json, m.group(1), self.new_id())
            self.posted[message["id"]] = message
            if r.reference:
                self.replies_to[message["id"]] = r.reference
            return _json(message)
        if r.method == "PATCH" and (m := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", r.path)):
            message = self.posted[m.group(2)]
            message.update(content=r.json.get("content", message["content"]), edited_timestamp=_iso())
            return _json(message)
        if m := re.fullmatch(r"/interactions/(\d+)/[^/]+/callback", r.path):
            self.last_response_message_id = self.new_id()
            return _json({"interaction": {
                "id": m.group(1), "type": 2, "response_message_id": self.last_response_message_id,
                "response_message_ephemeral": bool(r.flags & 64)}})
        if m := re.fullmatch(r"/webhooks/\d+/[^/]+(/messages/(@original|\d+))?", r.path):
            message = self._message_from(r.json, self.channel_id, self.new_id(), webhook=True)
            if r.method == "POST":  # a follow-up: the message a button under it belongs to
                self.last_response_message_id = message["id"]
            return _json(message)
        return _json({"code": 0, "message": f"fake discord: no route {r.method} {r.path}"},
                                 status=404)

    def _application(self) -> dict[str, Any]:
        return {"id": self.app_id, "name": "memorybot", "icon": None, "description": "", "bot_public": True,
                "bot_require_code_grant": False, "verify_key": "0" * 64, "flags": 0,
                "owner": self.user("owner"), "team": None, "summary": "", "rpc_origins": [],
                "interactions_endpoint_url": None}

    def _message_from(
        self, body: dict[str, Any] | None, channel_id: str, message_id: str, *, webhook: bool = False
    ) -> dict[str, Any]:
        body = body or {}
        data: dict[str, Any] = {
            "id": message_id, "channel_id": channel_id, "author": self.bot_user,
            "content": body.get("content", ""),
            "timestamp": _iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
            "type": 0, "flags": body.get("flags", 0), "components": [],
        }
        if webhook:
            data["webhook_id"] = self.app_id
        return data


@contextlib.contextmanager
def pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """discord.py talks to the started `fake`: its REST base and gateway URL (discord.py has no setting for
    Discord's address), put back afterwards."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.url + API_PREFIX
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.url + "/gateway")
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
