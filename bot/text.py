"""Cleaning text on its way in (control characters, length) and out (reasoning blocks)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def clean_input(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and surrounding whitespace."""
    kept = [c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C"]
    return "".join(kept).strip()


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """Cut `text` to `limit` characters; return it and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def strip_reasoning(text: str) -> str:
    """Remove `<think>…</think>` blocks (and an unclosed trailing one)."""
    return _THINK.sub("", text).strip()


async def without_reasoning(deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """Pass a token stream through, holding back anything inside `<think>…</think>`."""
    buffer = ""
    inside = False
    async for delta in deltas:
        buffer += delta
        while True:
            if inside:
                end = buffer.find("</think>")
                if end < 0:
                    break
                buffer = buffer[end + len("</think>"):].lstrip()
                inside = False
            else:
                start = buffer.find("<think>")
                if start >= 0:
                    if start:
                        yield buffer[:start]
                    buffer = buffer[start + len("<think>"):]
                    inside = True
                    continue
                # keep a possible partial "<think" at the end until the next piece decides it
                keep = _partial_tag_suffix(buffer)
                if len(buffer) > keep:
                    yield buffer[: len(buffer) - keep]
                    buffer = buffer[len(buffer) - keep:]
                break
    if buffer and not inside:
        yield buffer


def _partial_tag_suffix(text: str) -> int:
    tag = "<think>"
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
