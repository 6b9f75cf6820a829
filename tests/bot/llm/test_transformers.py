"""The transformers backend (any transformers model) on the bundled GGUF converted to bf16, for real."""

from __future__ import annotations

import pytest

from bot.llm import load_backend
from bot.llm.base import ChatMessage, GenerationParams
from tests.conftest import settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(model_data_dir):
    return load_backend(settings_for(model_data_dir, model_backend="transformers", context_tokens=1024))


def test_streams_with_the_models_chat_template(backend) -> None:
    messages = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Say hello.")]
    assert "<|im_start|>assistant" in backend.render(messages)
    pieces = list(backend.stream(messages, GenerationParams(max_new_tokens=20), lambda: False))
    assert len(pieces) > 1 and "".join(pieces).strip()


def test_should_stop_ends_generation_early(backend) -> None:
    seen: list[str] = []
    messages = [ChatMessage("user", "Count from 1 to 100, one number per line.")]
    for piece in backend.stream(messages, GenerationParams(max_new_tokens=200), lambda: len(seen) >= 3):
        seen.append(piece)
    assert 3 <= len(seen) < 20  # it stops within a token or two, not after 200
