"""The OpenVINO GenAI backend: the GGUF rewrite it needs (exact), and the bundled model on it, for real."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from bot.app import MemoryBot
from bot.extraction import FactExtractor
from bot.llm import load_backend
from bot.llm.base import ChatMessage, GenerationParams
from bot.llm.openvino_model import q5_0_as_q8_0
from bot.llm.runner import LocalModel
from tests.bot.helpers import RecordingReply, message
from tests.conftest import settings_for


def test_q5_0_blocks_become_q8_0_blocks_of_the_same_values() -> None:
    weights = np.random.default_rng(0).normal(size=(8, 896)).astype(np.float32)
    q5 = quantize(weights, GGMLQuantizationType.Q5_0)
    q8 = q5_0_as_q8_0(q5)
    assert q8.shape == (8, 896 // 32 * 34)
    assert np.array_equal(dequantize(q8, GGMLQuantizationType.Q8_0), dequantize(q5, GGMLQuantizationType.Q5_0))


@pytest.fixture(scope="module")
def backend(model_data_dir):
    pytest.importorskip("openvino_genai")
    return load_backend(settings_for(model_data_dir, model_backend="openvino", context_tokens=2048))


@pytest.mark.slow
def test_streams_with_the_models_chat_template_and_stops(backend) -> None:
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Say hello.")]
    assert "<|im_start|>assistant" in backend.render(messages)
    pieces = list(backend.stream(messages, GenerationParams(max_new_tokens=20), lambda: False))
    assert len(pieces) > 1 and "".join(pieces).strip()
    seen: list[str] = []
    counting = [ChatMessage("user", "Count from 1 to 100, one number per line.")]
    for piece in backend.stream(counting, GenerationParams(max_new_tokens=200), lambda: len(seen) >= 3):
        seen.append(piece)
    assert len(seen) == 3
    stopped = "".join(backend.stream(counting, GenerationParams(max_new_tokens=60, stop=("5",)), lambda: False))
    assert "4" in stopped and "5" not in stopped


@pytest.mark.slow
def test_a_prompt_that_starts_like_an_earlier_one_starts_sooner(backend) -> None:
    facts = " ".join(f"Fact {i}: the user likes item {i}." for i in range(60))
    chat = [ChatMessage("system", f"You are a helpful assistant. {facts}"), ChatMessage("user", "Hi!")]
    params = GenerationParams(max_new_tokens=1)

    def first_token_seconds(messages: list[ChatMessage]) -> float:
        started = time.perf_counter()
        next(iter(backend.stream(messages, params, lambda: False)), None)
        return time.perf_counter() - started

    cold = first_token_seconds(chat)
    list(backend.stream([ChatMessage("user", "Extract facts as JSON: I live in Porto.")], params, lambda: False))
    warm = first_token_seconds([*chat[:1], ChatMessage("user", "And what else?")])
    assert backend.reuses_prompt_prefix and warm < cold / 2, (cold, warm)


@pytest.mark.slow
async def test_constrained_extraction_always_parses(backend) -> None:
    extractor = FactExtractor(LocalModel(backend))
    for text in ["I'm vegetarian and I have two cats", "write me a poem", "I moved to Porto last year"]:
        facts = await extractor.extract(text, datetime(2026, 11, 26, tzinfo=UTC))  # raises if invalid
        assert isinstance(facts, list)


@pytest.mark.slow
async def test_the_bot_answers_and_learns_on_openvino(real_settings) -> None:
    pytest.importorskip("openvino_genai")
    settings = settings_for(real_settings.data_dir, model_backend="openvino", max_new_tokens=40)
    async with MemoryBot(settings) as bot:
        reply = RecordingReply()
        await bot.handle(message("Hi! I live in Lisbon and I keep bees."), reply)
        assert reply.streamed and reply.streamed[0].strip() and not reply.sent
        await bot.writeback.drain(timeout=300)
