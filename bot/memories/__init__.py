"""The memory operations of the core, split by role; `Memories` holds one of each.

- `recall`: profile and relevant memories for a reply, and what the last reply used (`/why`)
- `learning`: storing facts and message passages once, with duplicates and outdated facts handled
- `forgetting`: one memory, everything, deleted or edited messages, retention
- `controls`: the user's commands (list, remember, search, export, pause)
- `locks`: the message and user locks, taken in one order
- `history`: the last few turns of each conversation (short-term memory)
"""

from __future__ import annotations

from bot.database import BotDatabase
from bot.history import ConversationHistory
from bot.memories.controls import Controls, MemoryPage
from bot.memories.forgetting import Forgetting
from bot.memories.learning import Learning
from bot.memories.locks import Locks
from bot.memories.recall import Recall
from memory.recall import CHANNELS
from memory.store import MemoryStore

__all__ = ["Memories", "MemoryPage"]


class Memories:
    def __init__(self, store: MemoryStore, db: BotDatabase, *, ttl_days: int = 0, history_turns: int = 6,
                 channels: tuple[str, ...] = CHANNELS) -> None:
        self.locks = Locks(db.sql.lock if db.shared else None)
        self.history = ConversationHistory(db.recent, history_turns)
        self.recall = Recall(store, db.recent, channels)
        self.learning = Learning(store, ttl_days)
        self.forgetting = Forgetting(store, db, self.locks, self.history, ttl_days)
        self.controls = Controls(store, db, self.locks, self.recall, self.learning)
