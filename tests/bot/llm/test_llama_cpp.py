"""The llama.cpp backend on the bundled GGUF, for real (installed by ./run.sh and CI with the llama extra)."""

import pytest

from bot.app import MemoryBot
from bot.extraction import FactExtractor
from bot.llm import load_backend
from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.runner import LocalModel
from tests.bot.helpers import RecordingReply, message
from tests.conftest import settings_for

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(model_data_dir):
    from bot.settings import load_settings

    return load_backend(load_settings(env_file=None, data_dir=model_data_dir, model_backend="llama_cpp",
                                      context_tokens=1024))


def test_streams_with_the_gguf_chat_template(backend):
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Say hello.")]
    assert "<|im_start|>assistant" in backend.render(messages)
    pieces = list(backend.stream(messages, GenerationParams(max_new_tokens=20), lambda: False))
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_should_stop_ends_generation_early(backend):
    seen = []
    messages = [ChatMessage("user", "Count from 1 to 100, one number per line.")]
    for piece in backend.stream(messages, GenerationParams(max_new_tokens=200), lambda: len(seen) >= 3):
        seen.append(piece)
    assert len(seen) == 3


async def test_constrained_extraction_always_parses(backend):
    from datetime import UTC, datetime

    extractor = FactExtractor(LocalModel(backend))
    for text in ["My name is Dana and I am vegetarian", "hey, how's it going?",
                 "I moved to Porto last year and I work as a nurse", "lol ok"]:
        facts = await extractor.extract(text, datetime(2026, 11, 26, tzinfo=UTC))  # raises if invalid
        assert isinstance(facts, list)


async def test_bot_on_llama_cpp_trims_an_oversized_prompt(real_settings):
    settings = settings_for(real_settings.data_dir, model_backend="llama_cpp", embedder_backend="", context_tokens=544,
                            max_new_tokens=32, max_input_chars=20_000)  # the smallest context allowed
    async with MemoryBot(settings) as bot:
        reply = RecordingReply()
        await bot.handle(message("Please summarise this: " + "the quick brown fox jumps " * 400), reply)
        assert reply.streamed and reply.streamed[0].strip() and not reply.sent


def test_a_conversation_resumes_from_its_snapshot_after_another_prompt(backend):
    params = GenerationParams(max_new_tokens=12)
    facts = " ".join(f"Fact {i}: the user likes item {i}." for i in range(20))
    chat = [ChatMessage("system", f"You are a helpful assistant. {facts}"),
            ChatMessage("user", "Which item do I like most? One sentence.")]
    first = "".join(backend.stream(chat, params, lambda: False))
    other = [ChatMessage("system", "Extract facts as JSON."), ChatMessage("user", "I live in Porto.")]
    "".join(backend.stream(other, params, lambda: False))  # e.g. an extraction replaces the loaded cache

    follow_up = chat + [ChatMessage("assistant", first), ChatMessage("user", "And which one second most?")]
    resumed = "".join(backend.stream(follow_up, params, lambda: False))
    assert backend.prompt_cache.reused_tokens >= backend.prompt_tokens(chat)

    backend.prompt_cache.clear()
    backend.llm.reset()
    fresh = "".join(backend.stream(follow_up, params, lambda: False))
    assert backend.prompt_cache.reused_tokens == 0
    assert resumed == fresh  # a restored cache gives the same greedy reply as processing it all


def test_snapshots_stay_within_their_budget(backend):
    from bot.llm.llama_prompt_cache import PromptCache

    params = GenerationParams(max_new_tokens=4)
    cache = PromptCache(backend.llm, max_bytes=0)
    "".join(backend.stream([ChatMessage("user", "Say hi.")], params, lambda: False))
    cache.save()
    assert cache.size_bytes == 0  # larger than the budget: not kept
    cache = PromptCache(backend.llm, max_bytes=10 * 1024 * 1024)
    for text in ["Say hi.", "Say hello in French.", "Name a colour."]:
        "".join(backend.stream([ChatMessage("user", text)], params, lambda: False))
        cache.save()
    assert 0 < cache.size_bytes <= 10 * 1024 * 1024



async def test_the_next_reply_reuses_the_whole_last_prompt_when_the_same_memories_come_back(
    real_settings, backend, monkeypatch
):
    from dataclasses import replace
    from datetime import timedelta

    prompts = []
    stream = backend.stream

    def recording_stream(messages, params, should_stop):
        prompts.append(messages)
        return stream(messages, params, should_stop)

    monkeypatch.setattr(backend, "stream", recording_stream)
    settings = settings_for(real_settings.data_dir, model_backend="llama_cpp", embedder_backend="", max_new_tokens=24,
                            writeback_quiet_seconds=600)
    async with MemoryBot(settings, backend=backend) as bot:
        first = message("x")
        facts = ["My dog is called Biscuit", "I grow tomatoes", "I play the cello"]  # none fills the profile
        for days, fact in enumerate(facts):
            await bot.memories.controls.remember(replace(first, sent_at=first.sent_at + timedelta(days=days)), fact)
        await bot.handle(message("Which instrument do I play?"), RecordingReply())
        used = await bot.memories.recall.why(first.user)
        assert [m.text for m in used] == facts  # in the order learned, not by relevance
        await bot.handle(message("And what is my dog called?", message_id="m2"), RecordingReply())
    replies = [p for p in prompts if "JSON" not in p[0].content]
    assert replies[0][0] == replies[1][0]  # the same system prompt, memories included
    # the whole first prompt (and the reply to it) was processed already: only the new message was not
    assert backend.prompt_cache.reused_tokens >= backend.prompt_tokens(replies[0])
