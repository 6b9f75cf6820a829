"""What every generation backend provides, and the parameters of one generation.

A backend is synchronous and single-threaded: `LocalModel` (runner.py) calls it from its one worker
thread, so a backend never worries about concurrency or the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    repetition_penalty: float = 1.15
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None  # backends that can constrain output use it


class ModelError(RuntimeError):
    """The model could not be loaded or failed while generating."""


class Backend(Protocol):
    """A loaded model. `stream` yields text pieces until done, a stop string, or `should_stop()`.

    `reuses_prompt_prefix`: the backend keeps the processed start of earlier prompts (llama.cpp's snapshots),
    so a prompt that starts like the last one gets its first token sooner.
    """

    name: str
    context_tokens: int
    reuses_prompt_prefix: bool

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: list[ChatMessage]) -> int: ...

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams, should_stop: Callable[[], bool]
    ) -> Iterator[str]: ...
