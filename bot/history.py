"""Short-term memory: the last few exchanges of each conversation, for the next reply's prompt.

Kept in the bot's recent-activity tables (`BotDatabase.recent`): in this process's memory for the embedded
default, as before; in the shared PostgreSQL when several processes serve one community, so a thread's next
message has its history whichever replica answers it. A user's turns leave with a forget-all, a message's with
its deletion, and a conversation silent for HISTORY_DAYS is dropped; at most MAX_CONVERSATIONS conversations'
worth of turns are kept. A backend that reuses prompt starts is shown a window that moves in steps
(`steady_window`), so its prompt keeps starting like the last one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from bot.message import MessageRef
from bot.sql import Sql

HISTORY_DAYS = 7  # a conversation silent this long starts afresh
MAX_CONVERSATIONS = 1000  # conversations' worth of turns kept in all


@dataclass(frozen=True)
class Turn:
    user_key: str
    text: str
    reply: str
    message_id: str = ""
    memory_ids: tuple[str, ...] = ()  # ids of the memories in the reply's system prompt (bot/handler.py)
    shown_turns: int = 0  # how many earlier turns the reply's prompt held (`steady_window`)
    # the memories the reply's prompt listed just before each user message, as (message id, memory ids): one for
    # each turn it showed, then its own message's (bot/handler.py), so the next prompt can list them where they were
    listed: tuple[tuple[str, tuple[str, ...]], ...] = ()


def steady_window(turns: list[Turn], limit: int) -> list[Turn]:
    """The turns of a prompt that should start like the conversation's last one (a backend that reuses prompt
    starts): the last prompt's turns and the exchange since; once that is more than `limit`, the oldest half of
    them leave at once, so the start changes every `limit // 2` replies instead of every reply."""
    if not turns or limit <= 0:
        return []
    wanted = turns[-1].shown_turns + 1
    if wanted > limit:
        wanted = min(wanted - max(1, limit // 2), limit)
    return turns[-wanted:]


class ConversationHistory:
    """Each user's recent turns per conversation (channel or thread)."""

    def __init__(self, sql: Sql, turns: int) -> None:
        self._sql = sql
        self._turns = turns

    async def recent(self, conversation: str, user_key: str) -> list[Turn]:
        """This user's turns among the conversation's last `turns`, oldest first (other people's words never
        enter their prompt)."""
        rows = await self._sql.fetchall(
            "SELECT text, reply, message_id, memory_ids, shown_turns, listed FROM conversation_turns "
            "WHERE conversation = ? AND user_key = ? AND at > ? ORDER BY id",
            (conversation, user_key, time.time() - HISTORY_DAYS * 86400))
        return [Turn(user_key, str(text), str(reply), str(message_id), tuple(json.loads(memory_ids or "[]")),
                     int(shown_turns), tuple((str(m), tuple(ids)) for m, ids in json.loads(listed or "[]")))
                for text, reply, message_id, memory_ids, shown_turns, listed in rows]

    async def add(self, conversation: str, turn: Turn) -> None:
        """Keep the turn; the conversation keeps its last `turns`, and all conversations together the last
        `turns` x MAX_CONVERSATIONS (the least recently active go first)."""
        if self._turns == 0:
            return
        now = time.time()
        async with self._sql.transaction() as tx:
            await tx.execute(
                "INSERT INTO conversation_turns (conversation, user_key, text, reply, message_id, memory_ids, "
                "shown_turns, listed, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation, turn.user_key, turn.text, turn.reply, turn.message_id, json.dumps(list(turn.memory_ids)),
                 turn.shown_turns, json.dumps([[m, list(ids)] for m, ids in turn.listed]), now))
            await tx.execute(
                "DELETE FROM conversation_turns WHERE conversation = ? AND id NOT IN ("
                "SELECT id FROM conversation_turns WHERE conversation = ? ORDER BY id DESC LIMIT ?)",
                (conversation, conversation, self._turns))
            await tx.execute("DELETE FROM conversation_turns WHERE at <= ? OR id <= ("
                             "SELECT max(id) FROM conversation_turns) - ?",
                             (now - HISTORY_DAYS * 86400, self._turns * MAX_CONVERSATIONS))

    async def forget_user(self, user_key: str) -> None:
        await self._sql.execute("DELETE FROM conversation_turns WHERE user_key = ?", (user_key,))

    async def forget_message(self, ref: MessageRef) -> None:
        """Drop the turn of a deleted message (and the bot's answer to it)."""
        prefix = f"{ref.platform}:{ref.workspace}:" + (f"{ref.channel_id}:" if ref.channel_id is not None else "")
        await self._sql.execute(
            "DELETE FROM conversation_turns WHERE message_id = ? AND substr(conversation, 1, ?) = ?",
            (ref.message_id, len(prefix), prefix))
