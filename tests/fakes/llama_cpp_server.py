"""A stand-in for llama-cpp-python's model server (`python -m llama_cpp.server`) and the two ways it departs from
what vLLM does, for the OpenAI backend's fast tests (tests/bot/llm/test_openai_server.py runs the real one):

- it refuses OpenAI's `json_schema` response format with a 500 naming the field; it takes the schema as
  `{"type": "json_object", "schema": ...}`;
- a prompt longer than its context window gets a 200 and an empty event stream: no chunk, no finish reason.
"""

from __future__ import annotations

import json

from aiohttp import web

from tests.fakes.openai_server import FakeModelServer


class FakeLlamaCppServer(FakeModelServer):
    """`answer` to every request whose messages fit in `window_chars`, in one chunk and a finish reason."""

    def __init__(self, answer: str = '{"facts": []}', window_chars: int = 2000) -> None:
        super().__init__()
        self.answer = answer
        self.window_chars = window_chars

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
