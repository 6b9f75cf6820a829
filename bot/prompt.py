"""Building the model's prompt: system text, the user's memories as a bullet list, recent history.

The small default model used memories best as a bullet list in the system prompt. The list starts with the
user's profile (always there, whatever the message), then the recalled facts and passages of what the user
said earlier, quoted with the day they said it. Recalled memories first get their own token budget (best
first); then the whole prompt is fitted into the model's budget, the profile kept to the last.

Later in a conversation, with a backend that reuses the start of its last prompt, the system prompt keeps the
memories it had (bot/handler.py decides), and the memories recalled for the new message that it lacks come
`later`, in a second short list just before the message. Earlier messages keep the lists they came with
(`listed`), so the whole last prompt and its reply are where they were, and only that list and the message are
new to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
LATER = "Also what you remember about {user_name}, for the next message:\n{bullets}"


def bullet(record: MemoryRecord, user_name: str) -> str:
    """A memory as the model reads it: a fact as it is, a passage of the user's message quoted with its day."""
    text = " ".join(record.text.split())  # one line each: a passage may hold several
    if not record.is_message:
        return f"- {text}"
    when = _day(record.source.time)
    return f'- {"On " + when + ", " if when else ""}{user_name} said: "{text}"'


def _day(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%d %B %Y").lstrip("0")
    except ValueError:
        return ""


def fit_memories(records: list[MemoryRecord], budget: int, count: Callable[[str], int],
                 user_name: str = "") -> list[MemoryRecord]:
    """The best-first prefix of `records` whose bullets fit in `budget` tokens."""
    kept: list[MemoryRecord] = []
    used = 0
    for record in records:
        cost = count(bullet(record, user_name) + "\n")
        if used + cost > budget:
            break
        kept.append(record)
        used += cost
    return kept


def in_prompt_order(memories: list[MemoryRecord], *, stable: bool) -> list[MemoryRecord]:
    """The order of the memory bullets: best first, or (`stable`) in the order they were learned.

    With a backend that reuses the start of the last prompt (llama.cpp), a user whose recalled memories are the
    same set as last time then gets the same system prompt, and only the new exchange is processed, so the first
    token comes much sooner. Only such a backend asks for `stable`: it gains nothing on one that reuses no
    prompt start (transformers), and there the model uses its memories better best first. Figures:
    bench/README.md.
    """
    if not stable:
        return memories
    return sorted(memories, key=lambda m: (m.created_at is None, m.created_at or datetime.min, m.id))


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
    profile: Sequence[MemoryRecord] = (),
    later: Sequence[MemoryRecord] = (),
    listed: Sequence[Sequence[MemoryRecord]] = (),
) -> list[ChatMessage]:
    """Chat messages for the model within `budget` prompt tokens; `profile` comes first in the memories of the
    system prompt, `later` in their own list before the message, `listed[i]` (if given) before `history[i]`'s.

    What does not fit goes in this order: the oldest history turns (with their lists), then the oldest of `later`,
    then the oldest memories, then the profile, and only then the end of the message itself, so the model never
    gets a prompt longer than its context window (`later` first: the system prompt is what a next prompt may start
    with).
    """
    turns, kept, pinned, added = list(history), list(memories), list(profile), list(later)
    lists = [list(records) for records in listed] or [[] for _ in turns]
    while True:
        messages = _messages(bot_name, user_name, text, pinned + kept, list(zip(turns, lists, strict=True)), now,
                             added)
        excess = count_prompt(messages) - budget
        if excess <= 0:
            return messages
        if turns:
            turns.pop(0)
            lists.pop(0)
        elif added:
            added.remove(min(added, key=lambda m: m.created_at or now))
        elif kept:
            kept.remove(min(kept, key=lambda m: m.created_at or now))
        elif pinned:
            pinned.pop()
        elif len(text) > MIN_TEXT_CHARS:
            text = text[: max(MIN_TEXT_CHARS, len(text) - 4 * excess - 16)]
        else:
            return messages


MIN_TEXT_CHARS = 32


def shown_memories(messages: list[ChatMessage], memories: Sequence[MemoryRecord], user_name: str
                   ) -> list[MemoryRecord]:
    """Which of `memories` made it into the system messages of `messages` (`build_prompt` may have dropped some
    to fit)."""
    lines = {line for m in messages if m.role == "system" for line in m.content.splitlines()}
    return [m for m in memories if bullet(m, user_name) in lines]


def _messages(bot_name: str, user_name: str, text: str, memories: list[MemoryRecord],
              turns: list[tuple[Turn, list[MemoryRecord]]], now: datetime, later: list[MemoryRecord]
              ) -> list[ChatMessage]:
    system = SYSTEM.format(bot_name=bot_name, today=now.strftime("%A, %d %B %Y"), user_name=user_name)
    if memories:
        system += "\n\n" + MEMORIES.format(user_name=user_name, bullets=_bullets(memories, user_name))
    messages = [ChatMessage("system", system)]
    for turn, listed in turns:
        messages += _later(listed, user_name)
        messages += [ChatMessage("user", turn.text), ChatMessage("assistant", turn.reply)]
    return messages + _later(later, user_name) + [ChatMessage("user", text)]


def _later(records: list[MemoryRecord], user_name: str) -> list[ChatMessage]:
    """The short list of memories before a user message, if it has any."""
    if not records:
        return []
    return [ChatMessage("system", LATER.format(user_name=user_name, bullets=_bullets(records, user_name)))]


def _bullets(memories: list[MemoryRecord], user_name: str) -> str:
    return "\n".join(bullet(m, user_name) for m in memories)
