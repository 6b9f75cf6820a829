"""A fake Slack for tests: the Web API, response URLs, file uploads and a Socket Mode websocket.

It listens on 127.0.0.1 (ephemeral port), records every call, and answers the way Slack does for the
methods the adapter uses. Point an `AsyncWebClient` at `base_url`. `fail(method, error)` makes the next
call(s) of a method fail with a Slack error code; `fail_http(method, status)` answers them with an HTTP error
status instead (429 with a Retry-After, or a 5xx outage). `shown` is what each message the bot posted says now.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import WSMsgType, web

TEAM_ID = "T0TEAM"
TEAM_DOMAIN = "acme"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str = ""


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # bodies posted to response_url
    uploads: dict[str, bytes] = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)  # what the Socket Mode client sent back
    _failures: dict[str, list[str]] = field(default_factory=dict)
    _http_failures: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)  # by ts: channel, thread_ts, text (edits applied)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _port: int = 0
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _socket_open: asyncio.Event = field(default_factory=asyncio.Event)

    # --- lifecycle

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/"

    @property
    def base_url(self) -> str:
        return self.url + "api/"

    def response_url(self, key: str = "r1") -> str:
        return f"{self.url}respond/{key}"

    # --- test helpers

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next `times` calls of `method` fail with the Slack error code `error` ("disconnect": the
        connection drops without an answer)."""
        self._failures.setdefault(method, []).extend([error] * times)

    def fail_http(self, method: str, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` calls of `method` are answered with HTTP `status` (429: Slack's `ratelimited` body and
        `Retry-After: retry_after`; 5xx: a plain-text error page, as Slack's load balancers send)."""
        self._http_failures.setdefault(method, []).extend([(status, retry_after)] * times)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def posts(self) -> list[dict[str, Any]]:
        """Arguments of every chat.postMessage, in order."""
        return [c.args for c in self.calls_to("chat.postMessage")]

    def all_text(self) -> str:
        texts = [str(c.args.get("text", "")) for c in self.calls if c.method.startswith("chat.")]
        texts += [json.dumps(r) for r in self.responses]
        return "\n".join(texts)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until `predicate()` is true (poll), or fail the test."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; calls so far: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.02)

    async def push(self, envelope: dict[str, Any], timeout: float = 5.0) -> None:
        """Send a Socket Mode envelope to the connected client."""
        await asyncio.wait_for(self._socket_open.wait(), timeout)
        await self._sockets[-1].send_str(json.dumps(envelope))

    # --- handlers

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            args = await request.json()
        else:
            args = {**request.query, **(await request.post())}
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(Call(method, args, token))
        if self._http_failures.get(method):
            status, retry_after = self._http_failures[method].pop(0)
            if status == 429:
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(retry_after or 0)})
            return web.Response(status=status, text="Service Unavailable", content_type="text/plain")
        pending = self._failures.get(method)
        if pending:
            error = pending.pop(0)
            if error == "disconnect":  # the connection drops before any answer
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            status, headers = (429, {"Retry-After": "0"}) if error == "ratelimited" else (200, {})
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        answer = self._answer(method, args)
        if method == "chat.postMessage":
            self.shown[answer["ts"]] = {"channel": args.get("channel"), "thread_ts": args.get("thread_ts"),
                                        "text": args.get("text")}
        elif method == "chat.update" and args.get("ts") in self.shown:
            self.shown[str(args["ts"])]["text"] = args.get("text")
        return web.json_response({"ok": True, **answer})

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"url": f"https://{TEAM_DOMAIN}.slack.com/", "team": "Acme", "user": "memorybot",
                    "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}
        if method == "chat.postMessage":
            ts = f"{1700000000 + next(self._ts)}.000100"
            return {"channel": args.get("channel"), "ts": ts, "message": {"text": args.get("text"), "ts": ts}}
        if method == "chat.update":
            return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}
        if method == "chat.postEphemeral":
            return {"message_ts": f"{1700000000 + next(self._ts)}.000200"}
        if method == "chat.getPermalink":
            ts = str(args.get("message_ts", "")).replace(".", "")
            return {"channel": args.get("channel"),
                    "permalink": f"https://{TEAM_DOMAIN}.slack.com/archives/{args.get('channel')}/p{ts}"}
        if method == "users.info":
            user = str(args.get("user"))
            return {"user": {"id": user, "name": user.lower(), "real_name": f"Real {user}",
                             "profile": {"display_name": f"name-{user}"}}}
        if method == "conversations.open":
            return {"channel": {"id": "D" + str(args.get("users", "X"))}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts)}"
            return {"upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            files = json.loads(files) if isinstance(files, str) else files
            return {"files": [{"id": f["id"], "title": f.get("title", "")} for f in files or []]}
        if method == "apps.connections.open":
            return {"url": f"ws://127.0.0.1:{self._port}/socket"}
        return {}

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append(body)
        return web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        return web.Response(text="OK")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        self._socket_open.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data))
        self._sockets.remove(ws)
        return ws
