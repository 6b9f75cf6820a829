"""A scripted generation backend for tests of platform behaviour (splitting, edits, mentions).

It stands in for the model only where a test needs exact, long or slow output; tests of what the bot
learns and says use the real bundled model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from bot.llm.base import ChatMessage, GenerationParams


class ScriptedBackend:
    """Replies with `reply(messages)` in pieces of `chunk` characters, `delay` seconds apart.

    Extraction prompts (recognised by their JSON instruction) get `facts` as the model's JSON answer.
    """

    name = "scripted"
    reuses_prompt_prefix = False
    context_tokens = 4096

    def __init__(
        self,
        reply: str | Callable[[list[ChatMessage]], str] = "Hello!",
        facts: list[str] | None = None,
        chunk: int = 8,
        delay: float = 0.0,
    ) -> None:
        self._reply = reply
        self.facts = facts or []
        self._chunk = chunk
        self._delay = delay
        self.calls: list[list[ChatMessage]] = []

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]:
        self.calls.append(messages)
        if params.json_schema is not None or "JSON" in messages[0].content:
            text = json.dumps({"facts": self.facts})
        else:
            text = self._reply(messages) if callable(self._reply) else self._reply
        for start in range(0, len(text), self._chunk):
            if should_stop():
                return
            if self._delay:
                time.sleep(self._delay)
            yield text[start : start + self._chunk]
