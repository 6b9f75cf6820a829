"""Generation on an OpenAI-compatible model server (vLLM, llama.cpp's server, Ollama, ...), for scaling out.

The server applies the model's chat template. Token counts for the prompt budget are estimated from the
text length, since the server's tokenizer is not at hand; keep CONTEXT_TOKENS below the server's window.
Fact extraction asks for JSON-schema constrained output (`response_format`): OpenAI's `json_schema` form, which
vLLM and llama.cpp's own server enforce. llama-cpp-python's server (`python -m llama_cpp.server`) refuses that
form and takes the schema as `{"type": "json_object", "schema": ...}` instead: a server that refuses it is asked
that way from then on.
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
        self._schema_form = "json_schema"  # "json_object" once the server refused json_schema

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._schema_form == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}

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
            # vLLM's name for it; other servers ignore it (llama.cpp's then apply their repeat_penalty, 1.1 by
            # default: its name would make vLLM warn about an unknown field on every request)
            extra_body={"repetition_penalty": params.repetition_penalty},
        )
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.json_schema is not None:
            kwargs["response_format"] = self._response_format(params.json_schema)
        answered = False  # a piece of text or a finish reason came
        try:
            stream = self._create(kwargs, params.json_schema)
            for chunk in stream:
                if chunk.choices and (piece := chunk.choices[0].delta.content):
                    answered = True
                    yield piece
                answered = answered or bool(chunk.choices and chunk.choices[0].finish_reason)
                if should_stop():
                    stream.close()
                    return
        except self._openai.OpenAIError as exc:
            raise ModelError(f"model server failed: {type(exc).__name__}: {exc}") from exc
        if not answered:  # llama-cpp-python's server answers 200 and an empty stream when generation cannot start
            raise ModelError("model server failed: it ended the answer before it began (a prompt longer than its "
                             "context window? keep CONTEXT_TOKENS below the server's)")

    def _create(self, kwargs: dict[str, Any], schema: dict[str, Any] | None) -> Any:
        """Start the completion; if the server refuses the `json_schema` form, ask again in the other one."""
        try:
            return self._client.chat.completions.create(**kwargs)
        except self._openai.APIStatusError as exc:
            # llama-cpp-python answers 500 with its validation error, which names the field
            if schema is None or self._schema_form != "json_schema" or "'json_object'" not in str(exc):
                raise
            _log.info("the model server refused response_format json_schema; sending the schema as json_object")
            self._schema_form = "json_object"
            return self._client.chat.completions.create(**{**kwargs, "response_format": self._response_format(schema)})
