"""The OpenAI-compatible backend against a local stand-in for a vLLM server, through the whole bot."""

import pytest

from bot.app import MemoryBot
from bot.llm import load_backend
from bot.llm.base import ChatMessage, GenerationParams, ModelError
from bot.settings import SettingsError
from tests.bot.helpers import RecordingReply, message
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
