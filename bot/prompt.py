"""Building the model's prompt: system text, the user's memories as a bullet list, recent history.

The small default model used memories best as a bullet list in the system prompt. Everything is fitted
into the token budget: memories to their own budget (best first), then history, oldest dropped first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.history import Turn
from bot.llm.base import ChatMessage
from memory.records import MemoryRecord

SYSTEM = (
    "You are {bot_name}, a friendly assistant in a group chat. Today is {today}. "
    "You are talking with {user_name}. Answer briefly and helpfully."
)
MEMORIES = (
    "What you remember about {user_name} from earlier conversations:\n{bullets}\n"
    "Use these facts when they are relevant. Do not invent facts about {user_name}."
)


def fit_memories(records: list[MemoryRecord], budget: int, count: Callable[[str], int]) -> list[MemoryRecord]:
    """The best-first prefix of `records` whose bullets fit in `budget` tokens."""
    kept: list[MemoryRecord] = []
    used = 0
    for record in records:
        cost = count(f"- {record.text}\n")
        if used + cost > budget:
            break
        kept.append(record)
        used += cost
    return kept


def build_prompt(
    *,
    bot_name: str,
    user_name: str,
    text: str,
    memories: list[MemoryRecord],
    history: list[Turn],
    now: datetime,
    budget: int,
    count_prompt: Callable[[list[ChatMessage]], int],
) -> list[ChatMessage]:
    """Chat messages for the model, within `budget` prompt tokens (history is dropped first)."""
    system = SYSTEM.format(bot_name=bot_name, today=now.strftime("%A, %d %B %Y"), user_name=user_name)
    if memories:
        bullets = "\n".join(f"- {m.text}" for m in memories)
        system += "\n\n" + MEMORIES.format(user_name=user_name, bullets=bullets)
    turns = list(history)
    while True:
        messages = [ChatMessage("system", system)]
        for turn in turns:
            messages += [ChatMessage("user", turn.text), ChatMessage("assistant", turn.reply)]
        messages.append(ChatMessage("user", text))
        if not turns or count_prompt(messages) <= budget:
            return messages
        turns.pop(0)
