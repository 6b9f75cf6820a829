"""Fault injection for the crash tests (tests/reliability/crash_points.py): named steps where the process can be
killed, off by default. (Here, in the lowest layer, so that both `bot/` and `memory/` can name their steps.)

Each durable step of learning and forgetting calls `crash_point("<step>")` right after it. With
`MEMORYBOT_CRASH_AT=<step>` (or `<step>:<n>`, the n-th time that step is reached; n counts from 1) the process
kills itself with SIGKILL there, as a power cut or the OOM killer would: no cleanup, no `finally`, no flush.
With `MEMORYBOT_CRASH_TRACE=<file>` every step reached is appended to that file, one name a line (how the tests
list the kill points a scenario reaches). Both are read once, at import; with neither set `crash_point` is one
module-level None check.

The steps, in the order learning and forgetting reach them:

Learning (bot/writeback.py, bot/memories/learning.py, memory/store.py):
- `writeback.queued`: the exchange's row is committed to the queue (the learning promise starts here)
- `writeback.claimed`: a worker claimed the row
- `writeback.passages_split`: the user's message split into passages, the split saved in the row
- `writeback.passage_stored`: one passage stored in the memory store (not yet counted in the row)
- `writeback.counted`: the row's count of stored passages or facts saved (after each one)
- `writeback.extracted`: the model's facts are in hand (not yet saved in the row)
- `writeback.facts_saved`: the facts saved in the row
- `writeback.fact_stored`: one fact stored (added, updated, or skipped as a duplicate; not yet counted)
- `writeback.done`: the row deleted, the exchange learned
- `store.vector_written`: mem0 wrote a memory's vector (its history not yet)
- `store.history_written`: mem0 wrote a history row (of an add, an update or a deletion)
- `store.added`: a memory is added, its vector anchored to its message
- `store.updated`: a memory's text or metadata changed (a fact that supersedes an older one)
- `learning.update_written`: a new profile fact took the place of the one it makes untrue
- `learning.superseded`: a further outdated fact marked superseded by it

Forgetting (bot/memories/forgetting.py, bot/handler.py, memory/store.py):
- `forget.change_noted`: a deleted or edited message noted (replies in flight drop it)
- `forget.marked`: its `learned_from` rows marked "forgetting" (a restart finishes the deletion from here)
- `forget.exchanges_dropped`: its exchanges left the queue and the set-aside table
- `forget.history_dropped`: its turn left the conversation history
- `forget.store_deleted`: its memories left the store
- `forget.sources_dropped`: its `learned_from` rows deleted (the deletion is finished)
- `edit.forgotten`: an edited message's old text forgotten, its new text not yet queued
- `forget_all.erasure_counted`: a user's forget-all counted (replies in flight drop their turn)
- `forget_all.queue_dropped`: their queued and set-aside exchanges and `learned_from` rows deleted
- `forget_all.history_dropped`: their conversation history deleted
- `store.memory_deleted`: one memory deleted from the store (its history not yet erased): every deletion
  (one memory, a message's, a forget-all's one by one, the retention purge's)
- `store.history_erased`: mem0's history of deleted memories erased
- `retention.set_aside_dropped`: old set-aside exchanges deleted by the retention purge
- `retention.purged`: the retention purge's expired memories deleted
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

CRASH_AT = "MEMORYBOT_CRASH_AT"
CRASH_TRACE = "MEMORYBOT_CRASH_TRACE"


class _Armed:
    """What to do at each step: count it, write it to the trace, kill the process at the chosen one."""

    def __init__(self, at: str, trace: str) -> None:
        step, _, nth = at.partition(":")
        self.step = step or None
        self.nth = int(nth) if nth else 1
        self.trace = open(trace, "a", buffering=1) if trace else None  # noqa: SIM115 - open for the process's life
        self.reached: dict[str, int] = {}

    def reach(self, step: str) -> None:
        count = self.reached[step] = self.reached.get(step, 0) + 1
        if self.trace is not None:
            self.trace.write(f"{step}\n")
        if step == self.step and count == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)


def _armed() -> _Armed | None:
    at, trace = os.environ.get(CRASH_AT, ""), os.environ.get(CRASH_TRACE, "")
    return _Armed(at, trace) if at or trace else None


_ARMED = _armed()


def crash_point(step: str) -> None:
    """A named step (see the module docstring): the process may be killed right here."""
    if _ARMED is not None:
        _ARMED.reach(step)


def after(obj: Any, method: str, step: str) -> None:
    """Make `obj.method` reach `step` each time it returns (steps inside a library: mem0's vector and history
    writes). Nothing is changed when fault injection is off."""
    if _ARMED is None:
        return
    original: Callable[..., Any] = getattr(obj, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        crash_point(step)
        return result

    setattr(obj, method, wrapped)
