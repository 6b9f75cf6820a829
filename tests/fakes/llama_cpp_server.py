"""A stand-in for llama-cpp-python's model server (`python -m llama_cpp.server`) and the two ways it departs from
what vLLM does, for the OpenAI backend's fast tests (tests/bot/llm/test_openai_server.py runs the real one):

- it refuses OpenAI's `json_schema` response format with a 500 naming the field; it takes the schema as
  `{"type": "json_object", "schema": ...}`;
- a prompt longer than its context window gets a 200 and an empty event stream: no chunk, no finish reason.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class FakeLlamaCppServer:
    def __init__(self, answer: str = '{"facts": []}', window_chars: int = 2000) -> None:
        self.answer = answer
        self.window_chars = window_chars
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> FakeLlamaCppServer:
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
        if (body.get("response_format") or {}).get("type") not in (None, "text", "json_object"):
            return web.json_response({"error": {"message": "1 validation error: ('body', 'response_format', 'type'): "
                                                           "Input should be 'text' or 'json_object'"}}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if sum(len(m["content"]) for m in body["messages"]) <= self.window_chars:
            for delta, finish in [({"content": self.answer}, None), ({}, "stop")]:
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
