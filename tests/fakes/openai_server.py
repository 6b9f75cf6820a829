"""A small OpenAI-compatible model server on 127.0.0.1 (chat completions, streamed as server-sent events).

It stands in for a vLLM server, which cannot run here; it records each request so tests can check what the
backend asked for.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class FakeModelServer:
    def __init__(self, reply: str = "Hello from the server!", facts: list[str] | None = None) -> None:
        self.reply = reply
        self.facts = facts or []
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeModelServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        return await self._answer(request, body)

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Stream the reply, or the facts to an extraction (it asks for a JSON `response_format`)."""
        text = json.dumps({"facts": self.facts}) if "response_format" in body else self.reply
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(text), 5):
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "delta": {"content": text[start:start + 5]}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
