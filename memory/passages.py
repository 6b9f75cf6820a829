"""Splitting a message into passages the embedder reads whole.

The embedder sees at most a fixed number of tokens (256 word pieces for all-MiniLM-L6-v2) and silently drops
the rest, so a long message stored as one vector would be unsearchable past its first paragraph. Passages end
at paragraph, line or sentence ends where possible, and at word ends otherwise; short neighbours are joined so
a chatty message does not become a dozen one-line memories.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Sentence ends: ".", "!", "?", "…" and their CJK forms, followed by space or the end.
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


def split_passages(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """`text` as passages of at most `max_tokens` tokens each (by `count_tokens`), in order, none empty."""
    text = text.strip()
    if not text:
        return []
    if count_tokens(text) <= max_tokens:
        return [text]
    pieces = [piece for block in re.split(r"\n\s*\n|\n", text) for piece in _SENTENCE_END.split(block)]
    passages: list[str] = []
    current = ""
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        for part in _fitting(piece, count_tokens, max_tokens):
            joined = f"{current} {part}" if current else part
            if current and count_tokens(joined) > max_tokens:
                passages.append(current)
                joined = part
            current = joined
    if current:
        passages.append(current)
    return passages


def _fitting(piece: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """`piece` itself if it fits, else cut at word ends (or characters, for text without spaces) to fit."""
    if count_tokens(piece) <= max_tokens:
        return [piece]
    words = piece.split(" ") if " " in piece else list(piece)
    glue = " " if " " in piece else ""
    parts: list[str] = []
    start = 0
    while start < len(words):
        # binary search for the longest run of words from `start` that fits
        low, high = start + 1, len(words)
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens(glue.join(words[start:middle])) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        parts.append(glue.join(words[start:low]))
        start = low
    return parts
