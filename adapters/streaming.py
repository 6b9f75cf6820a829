"""Showing a streamed reply on a chat platform: split at the length limit, edit at most once per interval.

Platforms differ only in the numbers (Discord 2,000 characters, Slack 4,000) and in the two calls that
send and edit a message, so each adapter passes those in.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

Handle = TypeVar("Handle")

EDIT_INTERVAL = 1.0  # seconds between edits of a streamed message: both platforms rate-limit faster edits

_FENCE = "```"


def split_message(text: str, limit: int) -> list[str]:
    """Cut `text` into parts of at most `limit` characters.

    Cuts prefer a paragraph break, then a line break, then a space. A code block cut in two is closed
    at the end of one part and reopened (with its language) at the start of the next.
    """
    if limit < 20:
        raise ValueError("limit too small to split sensibly")
    parts: list[str] = []
    rest = text
    reopen = ""
    while rest:
        rest = reopen + rest
        if len(rest) <= limit:
            parts.append(rest)
            break
        budget = limit - len(_FENCE) - 1  # room to close a code block
        cut = _best_cut(rest, budget)
        head, rest = rest[:cut], rest[cut:]
        fence = _open_fence(head)
        if fence is not None:
            head = head.rstrip("\n") + "\n" + _FENCE
            reopen = fence + "\n"
        else:
            reopen = ""
        rest = rest.lstrip("\n")
        parts.append(head.rstrip() if fence is None else head)
    return [p for p in parts if p.strip()]


def _best_cut(text: str, budget: int) -> int:
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, budget // 2, budget)
        if at > 0:
            return at + len(sep)
    return budget


def _open_fence(text: str) -> str | None:
    """The opening fence line (e.g. "```python") if `text` ends inside a code block, else None."""
    opening: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            opening = None if opening is not None else stripped
    return opening


class StreamingMessage(Generic[Handle]):
    """A reply that grows: the first text is sent, later text edits it, overflow goes to new messages."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[Handle]],
        edit: Callable[[Handle, str], Awaitable[None]],
        limit: int,
        interval: float = EDIT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._edit = edit
        self._limit = limit
        self._interval = interval
        self._clock = clock
        self._handles: list[Handle] = []
        self._shown: list[str] = []
        self._last_edit = float("-inf")

    async def update(self, text: str, *, final: bool = False) -> None:
        """Show `text` (the whole reply so far); edits are throttled unless `final`."""
        if not text.strip():
            return
        if not final and self._handles and self._clock() - self._last_edit < self._interval:
            return
        parts = split_message(text, self._limit)
        for i, part in enumerate(parts):
            if i < len(self._handles):
                if self._shown[i] != part:
                    await self._edit(self._handles[i], part)
                    self._shown[i] = part
            else:
                self._handles.append(await self._send(part))
                self._shown.append(part)
        self._last_edit = self._clock()


async def render_stream(
    deltas: AsyncIterator[str],
    send: Callable[[str], Awaitable[Handle]],
    edit: Callable[[Handle, str], Awaitable[None]],
    limit: int,
    interval: float = 1.0,
) -> str:
    """Consume `deltas`, showing the growing text; return the full text."""
    message: StreamingMessage[Handle] = StreamingMessage(send, edit, limit, interval)
    text = ""
    async for delta in deltas:
        text += delta
        await message.update(text)
    await message.update(text, final=True)
    return text
