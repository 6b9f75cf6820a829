"""`LocalModel`: the one model of the process, run off the event loop, one generation at a time.

Generations run on a single worker thread, so the model is never used concurrently. Replies
("foreground") are bounded by `queue_size`: past it, `ModelBusy` tells the user to retry. Background
work (fact extraction) yields to replies: it does not start while a reply is coming and stops early when
one comes, raising `Preempted` so the caller can try again later. A reply is coming from the moment its
message is taken up (`reply_coming`), not only once its prompt is ready: its recall then has the cores to
itself, and the model is free when the prompt reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager

from bot.llm.base import Backend, ChatMessage, GenerationParams, ModelError

_log = logging.getLogger(__name__)


class ModelBusy(ModelError):
    """Too many replies are waiting for the model."""


class Preempted(ModelError):
    """A background generation gave way to a reply; try it again later."""


_DONE = object()


class LocalModel:
    def __init__(self, backend: Backend, queue_size: int = 8) -> None:
        self.backend = backend
        self._queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._foreground = 0  # replies streaming or waiting for the model: bounded by queue_size
        self._coming = 0  # replies coming: being prepared (`reply_coming`) or streaming
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_reply_end = float("-inf")

    async def wait_for_idle(self) -> None:
        """Return once no reply is coming, waiting for or using the model."""
        await self._idle.wait()

    @property
    def quiet_for(self) -> float:
        """Seconds since the last reply finished (0 while one is coming)."""
        return 0.0 if self._coming else time.monotonic() - self._last_reply_end

    @asynccontextmanager
    async def reply_coming(self) -> AsyncIterator[None]:
        """Around all of a reply (recall, prompt, generation): background work gives way for as long as it lasts."""
        self._coming += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._coming -= 1
            self._last_reply_end = time.monotonic()
            if self._coming == 0:
                self._idle.set()

    @property
    def context_tokens(self) -> int:
        """The model's context window: prompt and new tokens together."""
        return self.backend.context_tokens

    @property
    def reuses_prompt_prefix(self) -> bool:
        """Whether a prompt starting like the last one is answered sooner (see `Backend`)."""
        return self.backend.reuses_prompt_prefix

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return self.backend.prompt_tokens(messages)

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams, *, background: bool = False,
        preemptible: bool = True,
    ) -> AsyncIterator[str]:
        """Yield the reply's text pieces as the model produces them. Background work stops for a waiting
        reply (`Preempted`) unless it is not `preemptible` (then the reply waits until it is done)."""
        if background:
            # closed with this stream: `_run` then stops the model's thread, which the next reply needs
            async with aclosing(self._run(messages, params, preemptible)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        if self._foreground >= self._queue_size:
            raise ModelBusy("generation queue is full")
        self._foreground += 1
        try:
            async with self.reply_coming(), aclosing(self._run(messages, params, False)) as pieces:
                async for piece in pieces:
                    yield piece
        finally:
            self._foreground -= 1

    async def generate(
        self, messages: list[ChatMessage], params: GenerationParams, *, background: bool = False,
        preemptible: bool = True,
    ) -> str:
        pieces = self.stream(messages, params, background=background, preemptible=preemptible)
        return "".join([piece async for piece in pieces])

    async def _run(
        self, messages: list[ChatMessage], params: GenerationParams, yields: bool
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        abandoned = threading.Event()  # the consumer went away (cancelled, or the adapter failed)
        preempted = threading.Event()

        def should_stop() -> bool:
            if abandoned.is_set():
                return True
            if yields and self._coming > 0:
                preempted.set()
                return True
            return False

        def work() -> None:
            try:
                if should_stop():
                    return
                for piece in self.backend.stream(messages, params, should_stop):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                    if should_stop():
                        break
            except Exception as exc:  # handed to the awaiting coroutine, which raises it
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        future = loop.run_in_executor(self._executor, work)
        try:
            while (item := await pieces.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise ModelError(f"generation failed: {item}") from item
                yield item  # type: ignore[misc]
            if preempted.is_set():
                raise Preempted("gave way to a reply")
        finally:
            abandoned.set()
            await asyncio.shield(future)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
