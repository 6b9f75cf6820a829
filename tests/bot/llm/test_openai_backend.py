"""The OpenAI-compatible backend against local stand-ins for a vLLM server (through the whole bot) and for
llama-cpp-python's server's departures from it."""

import asyncio

import pytest

from bot.app import MemoryBot
from bot.extraction import FACTS_SCHEMA
from bot.llm import load_backend
from bot.llm.base import ChatMessage, GenerationParams, ModelError
from bot.settings import SettingsError
from tests.bot.helpers import RecordingReply, message
from tests.fakes.llama_cpp_server import FakeLlamaCppServer
from tests.fakes.openai_server import FakeModelServer


async def test_bot_replies_and_learns_through_a_model_server(make_settings):
    async with FakeModelServer(reply="Hi Dana!", facts=["The user is vegetarian."]) as server:
        settings = make_settings(model_backend="openai", openai_base_url=server.base_url, model="qwen-served")
        async with MemoryBot(settings) as bot:
            reply = RecordingReply()
            await bot.handle(message("I'm Dana and I'm vegetarian"), reply)
            await bot.writeback.drain()
            assert reply.streamed == ["Hi Dana!"]
            assert [r.text for r in (await bot.memories.controls.list(message("x").user)).records] == [
                "The user is vegetarian."]
    chat, extraction = server.requests[0], server.requests[1]
    assert chat["model"] == "qwen-served" and chat["stream"] is True
    assert chat["messages"][-1] == {"role": "user", "content": "I'm Dana and I'm vegetarian"}
    assert extraction["response_format"]["type"] == "json_schema"


async def test_unreachable_server_is_a_model_error(make_settings):
    backend = load_backend(make_settings(model_backend="openai", openai_base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ModelError, match="model server failed"):
        list(backend.stream([ChatMessage("user", "hi")], GenerationParams(), lambda: False))


def test_base_url_is_required(make_settings):
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL"):
        make_settings(model_backend="openai")


def _answer(backend, messages, params) -> str:
    return "".join(backend.stream(messages, params, lambda: False))


async def test_a_server_refusing_openais_schema_form_is_sent_llama_cpps(make_settings):
    facts = '{"facts": ["The user lives in Lisbon."]}'
    async with FakeLlamaCppServer(answer=facts) as server:
        backend = load_backend(make_settings(model_backend="openai", openai_base_url=server.base_url))
        params = GenerationParams(json_schema=FACTS_SCHEMA)
        for _ in range(2):
            assert await asyncio.to_thread(_answer, backend, [ChatMessage("user", "I live in Lisbon")], params) == facts
    forms = [r["response_format"] for r in server.requests]
    assert {f["type"] for f in forms[:-2]} == {"json_schema"}  # (the client retries a 500 once)
    assert forms[-2:] == [{"type": "json_object", "schema": FACTS_SCHEMA}] * 2  # the second asks that way at once


async def test_an_answer_that_ends_before_it_began_is_a_model_error(make_settings):
    async with FakeLlamaCppServer(window_chars=100) as server:
        backend = load_backend(make_settings(model_backend="openai", openai_base_url=server.base_url))
        with pytest.raises(ModelError, match="context window"):
            await asyncio.to_thread(_answer, backend, [ChatMessage("user", "fox " * 100)], GenerationParams())
