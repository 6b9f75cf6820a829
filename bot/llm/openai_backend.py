"""Generation on an OpenAI-compatible model server (vLLM, llama.cpp's server, Ollama, ...), for scaling out.

The server applies the model's chat template. Token counts for the prompt budget are estimated from the
text length, since the server's tokenizer is not at hand; keep CONTEXT_TOKENS below the server's window.
Fact extraction asks for JSON-schema constrained output (`response_format`), which vLLM enforces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from bot.llm.base import ChatMessage, GenerationParams, ModelError

_log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.5  # a cautious estimate for English text with BPE tokenizers


class OpenAICompatibleBackend:
    name = "openai"
    reuses_prompt_prefix = False

    def __init__(self, base_url: str, api_key: str, model: str, *, context_tokens: int,
                 timeout: float = 120.0) -> None:
        import openai

        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout,
                                     max_retries=1)
        self._model = model
        self.context_tokens = context_tokens

    def count_tokens(self, text: str) -> int:
        return int(len(text) / CHARS_PER_TOKEN) + 1

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        kwargs: dict[str, Any] = dict(
            model=self._model,
            messages=[{"role": m.role, "content": m.content} for m in messages],
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            stream=True,
            # vLLM's name for it; other servers ignore unknown fields in extra_body
            extra_body={"repetition_penalty": params.repetition_penalty},
        )
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": params.json_schema}}
        try:
            stream = self._client.chat.completions.create(**kwargs)
            for chunk in stream:
                if chunk.choices and (piece := chunk.choices[0].delta.content):
                    yield piece
                if should_stop():
                    stream.close()
                    return
        except self._openai.OpenAIError as exc:
            raise ModelError(f"model server failed: {type(exc).__name__}: {exc}") from exc
