"""Short-term memory: the last few exchanges of each conversation, kept in process memory only."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from bot.message import MessageRef


@dataclass(frozen=True)
class Turn:
    user_key: str
    text: str
    reply: str
    message_id: str = ""


class ConversationHistory:
    """Recent turns per conversation (channel or thread); the least recently used conversations go first."""

    def __init__(self, turns: int, max_conversations: int = 1000) -> None:
        self._turns = turns
        self._max = max_conversations
        self._by_conversation: OrderedDict[str, deque[Turn]] = OrderedDict()

    def recent(self, conversation: str, user_key: str) -> list[Turn]:
        """This user's recent turns in the conversation (other people's words never enter their prompt)."""
        turns = self._by_conversation.get(conversation, ())
        return [t for t in turns if t.user_key == user_key]

    def add(self, conversation: str, turn: Turn) -> None:
        if self._turns == 0:
            return
        turns = self._by_conversation.pop(conversation, None) or deque(maxlen=self._turns)
        turns.append(turn)
        self._by_conversation[conversation] = turns
        while len(self._by_conversation) > self._max:
            self._by_conversation.popitem(last=False)

    def forget_user(self, user_key: str) -> None:
        for conversation, turns in self._by_conversation.items():
            self._by_conversation[conversation] = deque(
                (t for t in turns if t.user_key != user_key), maxlen=self._turns
            )

    def forget_message(self, ref: MessageRef) -> None:
        """Drop the turn of a deleted message (and the bot's answer to it)."""
        prefix = f"{ref.platform}:{ref.workspace}:" + (f"{ref.channel_id}:" if ref.channel_id is not None else "")
        for conversation, turns in self._by_conversation.items():
            if conversation.startswith(prefix):
                self._by_conversation[conversation] = deque(
                    (t for t in turns if t.message_id != ref.message_id), maxlen=self._turns
                )
