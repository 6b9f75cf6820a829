"""A small fake Discord for tests: REST routes and a gateway websocket on 127.0.0.1.

The unmodified discord.py talks to it over real sockets. Every REST request is recorded (JSON bodies and
multipart uploads) so tests assert on what the bot actually sent. Tests drive the bot by dispatching
gateway events (`MESSAGE_CREATE`, `INTERACTION_CREATE`) built with the payload helpers here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int


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
    """State of one fake Discord: a bot user, an application, one guild with a text channel and a thread."""

    def __init__(self) -> None:
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self.app_id = self.new_id()
        self.bot_user = self.user("memorybot", bot=True, user_id=self.app_id)
        self.guild_id = self.new_id()
        self.channel_id = self.new_id()
        self.thread_id = self.new_id()
        self.dm_channel_id = self.new_id()
        self.role_id = self.new_id()
        self.bot_role_id = self.new_id()
        self.requests: list[Recorded] = []
        self.commands: list[dict[str, Any]] = []
        self.identify: dict[str, Any] | None = None  # the IDENTIFY payload the bot sent
        self.last_response_message_id = ""  # the message an interaction callback created
        self.posted: dict[str, dict[str, Any]] = {}  # the bot's channel messages by id, edits applied
        self._failures: list[_Failure] = []
        self._seq = itertools.count(1)
        self._ws: web.WebSocketResponse | None = None
        self._identified = asyncio.Event()
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
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_identified(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._identified.wait(), timeout)

    # ----- payload helpers

    def new_id(self) -> str:
        return str(next(self._ids))

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
        """A MESSAGE_CREATE payload from `author` in the guild text channel (or the DM channel)."""
        data: dict[str, Any] = {
            "id": self.new_id(), "channel_id": channel_id or (self.dm_channel_id if dm else self.channel_id),
            "author": author, "content": content, "timestamp": _iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": mentions or [],
            "mention_roles": mention_roles or [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
        }
        if not dm:
            data["guild_id"] = self.guild_id
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
        roles: list[str] | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for the slash command `name` with string/int `options`, run by a
        member holding `roles`."""
        kinds = {str: 3, int: 4, bool: 5}
        opts = [{"name": k, "type": kinds[type(v)], "value": v} for k, v in (options or {}).items()]
        spec = next((c for c in self.commands if c["name"] == name), {"id": self.new_id()})
        data = {"id": spec["id"], "name": name, "type": 1, "options": opts}
        return self._interaction(2, user, data, dm=dm, roles=roles)

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
        self, kind: int, user: dict[str, Any], data: dict[str, Any], *, dm: bool, roles: list[str] | None = None
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
            payload["guild_id"] = self.guild_id
            payload["channel"] = {"id": self.channel_id, "type": GUILD_TEXT, "guild_id": self.guild_id}
            payload["channel_id"] = self.channel_id
            payload["member"] = dict(_member(user, roles), permissions="2147483647")
            payload["context"] = 0
        return payload

    # ----- driving the bot

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if self._ws is None:
            raise RuntimeError("no gateway connection")
        await self._ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

    def fail(
        self, method: str, path_regex: str, status: int, code: int, message: str, times: int = 1
    ) -> None:
        """Answer the next `times` matching requests with a Discord error body."""
        self._failures.append(_Failure(method, re.compile(path_regex), status, code, message, times))

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
        self._ws = ws
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 45_000}})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            if payload["op"] == 1:
                await ws.send_json({"op": 11})
            elif payload["op"] == 2:
                self.identify = payload["d"]
                await self._ready(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        ready = {"v": 10, "user": self.bot_user, "guilds": [{"id": self.guild_id, "unavailable": True}],
                 "session_id": "fake-session", "resume_gateway_url": self.url + "/gateway",
                 "application": {"id": self.app_id, "flags": 0}}
        await ws.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
        await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": self._guild()})
        self._identified.set()

    def _guild(self) -> dict[str, Any]:
        everyone = {"id": self.guild_id, "name": "@everyone", "permissions": "2147483647", "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False}
        role = dict(everyone, id=self.role_id, name="members", position=1)
        bot_role = dict(everyone, id=self.bot_role_id, name="memorybot", position=2, managed=True,
                        tags={"bot_id": self.bot_user["id"]})  # the role Discord gives the bot on invite
        channel = {"id": self.channel_id, "type": GUILD_TEXT, "guild_id": self.guild_id, "name": "general",
                   "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None}
        thread = {"id": self.thread_id, "type": PUBLIC_THREAD, "guild_id": self.guild_id, "name": "a thread",
                  "parent_id": self.channel_id, "owner_id": self.new_id(), "message_count": 1,
                  "member_count": 1, "rate_limit_per_user": 0,
                  "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                      "archive_timestamp": _iso(), "locked": False}}
        me = _member(self.bot_user)
        return {"id": self.guild_id, "name": "Test Guild", "owner_id": self.new_id(),
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
            return _json({"url": self.url + "/gateway", "shards": 1, "session_start_limit": {
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
