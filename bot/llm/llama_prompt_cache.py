"""KV snapshots for llama.cpp, so a prompt that starts like an earlier one skips re-reading that start.

llama.cpp holds the key/value cache of one token sequence, and llama-cpp-python reuses the longest common
prefix of the previous and the next prompt. The bot alternates between replies in several conversations and
fact extraction, each of which would throw away the others' cache, and prompt processing is the slow part on a
CPU. So after every generation the sequence's cache is copied out (llama.cpp's per-sequence state, ~12 KB
per token for the 0.5B model; never the 600 KB-per-token logits that llama-cpp-python's own `save_state`
copies) into a small least-recently-used store, and before a generation the snapshot sharing the longest
prefix with the new prompt is copied back when it beats what is loaded.

Fact extraction gains most: nearly all of its prompt (the instructions and examples) is the same every time, so
between replies only the message is processed (figures in bench/README.md). A reply's prompt starts with its
recalled memories (bot/prompt.py), so it resumes only when those and the history match an earlier prompt.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from typing import Any

_log = logging.getLogger(__name__)

MIN_GAIN_TOKENS = 16  # restoring costs a copy; not worth it for a few tokens


def common_prefix(a: Any, b: Any) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """Snapshots of one `llama_cpp.Llama`'s sequence 0, at most `max_bytes` in all. Not thread-safe (the backend
    is only ever called from the model's one worker thread)."""

    def __init__(self, llm: Any, max_bytes: int) -> None:
        self._llm = llm
        self._max_bytes = max_bytes
        self._snapshots: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.reused_tokens = 0  # prompt tokens the last `prepare` found cached (loaded or restored)

    def clear(self) -> None:
        self._snapshots.clear()

    @property
    def size_bytes(self) -> int:
        return sum(len(kv) for kv in self._snapshots.values())

    def prepare(self, tokens: list[int]) -> None:
        """Load the snapshot that shares the most of `tokens`, if it shares clearly more than the live cache."""
        import llama_cpp

        llm = self._llm
        live = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        best, best_len = None, live
        for key in self._snapshots:
            n = common_prefix(key, tokens)
            if n > best_len:
                best, best_len = key, n
        self.reused_tokens = live
        if best is None or best_len < live + MIN_GAIN_TOKENS:
            return
        self._snapshots.move_to_end(best)
        kv = self._snapshots[best]
        ctx = llm._ctx.ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        buffer = (ctypes.c_uint8 * len(kv)).from_buffer_copy(kv)
        if llama_cpp.llama_state_seq_set_data(ctx, buffer, len(kv), 0) != len(kv):
            _log.warning("could not restore a prompt snapshot; processing the whole prompt")
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            llm.n_tokens = 0
            del self._snapshots[best]
            return
        # Keep all but the last cached token: llama-cpp-python then always decodes at least one token, which
        # gives fresh logits to sample from (a restored sequence has none).
        keep = len(best) - 1
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, keep, -1)
        llm.input_ids[:keep] = best[:keep]
        llm.n_tokens = keep
        self.reused_tokens = min(best_len, keep)

    def save(self) -> None:
        """Keep a snapshot of what is loaded now (the prompt and the tokens generated after it)."""
        import llama_cpp

        llm = self._llm
        if llm.n_tokens == 0:
            return
        key = tuple(int(t) for t in llm.input_ids[: llm.n_tokens])
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size > self._max_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        # a snapshot that starts another one makes the shorter one useless
        for other in [k for k in self._snapshots if common_prefix(k, key) == len(k)]:
            del self._snapshots[other]
        self._snapshots[key] = bytes(buffer[:written])
        while self.size_bytes > self._max_bytes:
            self._snapshots.popitem(last=False)
