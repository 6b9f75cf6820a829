"""What users (and admins) do with their memories: list, remember, search, export, pause and resume learning.

Every operation is scoped to one user: another user's memory id behaves exactly like an unknown one. Who may
run which command is decided by the command table (`bot/commands`), not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.database import BotDatabase
from bot.errors import UserError
from bot.memories.learning import Learning
from bot.memories.locks import Locks
from bot.memories.recall import Recall, one_per_attribute
from bot.message import IncomingMessage, UserRef
from memory.records import FACT, MemoryRecord, Source
from memory.store import MemoryStore

MAX_REMEMBER_CHARS = 500
PAGE_SIZE = 10  # memories a list shows at once


@dataclass(frozen=True)
class MemoryPage:
    records: list[MemoryRecord]
    page: int
    pages: int
    total: int
    page_size: int

    @property
    def first_number(self) -> int:
        """The number of the page's first record in the whole list (from 1)."""
        return (self.page - 1) * self.page_size + 1


class Controls:
    def __init__(self, store: MemoryStore, db: BotDatabase, locks: Locks, recall: Recall,
                 learning: Learning) -> None:
        self._store = store
        self._db = db
        self._locks = locks
        self._recall = recall
        self._learning = learning

    async def list(self, user: UserRef, *, page: int = 1, page_size: int = PAGE_SIZE) -> MemoryPage:
        """The user's facts, a page at a time: the profile first (in `supersede.PROFILE` order), then newest
        first. The passages of their messages are not listed (`why` and `export` show them)."""
        records = _profile_first(await self._store.list(user.key, kinds=(FACT,)))
        pages = max(1, math.ceil(len(records) / page_size))
        if page < 1 or page > pages:
            raise UserError(f"There is no page {page}; pages go from 1 to {pages}.")
        start = (page - 1) * page_size
        return MemoryPage(records[start : start + page_size], page, pages, len(records), page_size)

    async def count_all(self, user: UserRef) -> int:
        """How many memories the user has of every kind (facts, message passages, superseded and expired ones):
        what forgetting everything deletes."""
        return len(await self._store.list(user.key, include_superseded=True, include_expired=True))

    async def remember(self, msg: IncomingMessage, text: str) -> MemoryRecord:
        """Store `text` as the user asked (`msg` is the command, its source)."""
        text = " ".join(text.split())
        if not text:
            raise UserError("Tell me what to remember, e.g. \"I prefer short answers\".")
        if len(text) > MAX_REMEMBER_CHARS:
            raise UserError(f"That is too long to remember ({len(text)} characters; at most {MAX_REMEMBER_CHARS}).")
        source = Source(
            platform=msg.platform, workspace=msg.workspace, channel=msg.channel_id,
            message_id=msg.message_id, link=msg.link, time=msg.sent_at.isoformat(),
            origin="explicit", private=msg.is_direct,
        )
        async with self._locks.hold(user=msg.user.key):
            memory_id = await self._learning.learn(msg.user.key, text, source)
        if memory_id is None:
            raise UserError("I already remember that.")
        record = await self._store.get(msg.user.key, memory_id)
        if record is None:
            raise UserError("That memory was deleted while I was saving it; please try again.")
        return record

    async def search(self, msg: IncomingMessage, query: str, *, limit: int = 10) -> list[MemoryRecord]:
        """The user's facts matching `query`, recalled as a reply recalls them (`msg` is the command)."""
        query = query.strip()
        if not query:
            raise UserError("Tell me what to search for, e.g. \"food\".")
        return await self._recall.relevant(msg, query, limit, 0.0, kinds=(FACT,))

    async def export(self, user: UserRef) -> dict[str, Any]:
        """Every memory of the user (facts, message passages, superseded and expired ones) with its sources
        and history, as JSON-ready data."""
        records = await self._store.list(user.key, include_superseded=True, include_expired=True)
        memories = []
        for record in records:
            item = record.to_json()
            item["history"] = await self._store.history(user.key, record.id)
            memories.append(item)
        return {
            "user": {"platform": user.platform, "workspace": user.workspace, "user_id": user.user_id},
            "exported_at": datetime.now(UTC).isoformat(),
            "memories": memories,
        }

    async def pause(self, user: UserRef) -> None:
        async with self._locks.hold(user=user.key):  # after this returns, nothing more is learned
            await self._db.set_paused(user.key, True)

    async def resume(self, user: UserRef) -> None:
        await self._db.set_paused(user.key, False)

    async def is_paused(self, user: UserRef) -> bool:
        return await self._db.is_paused(user.key)

    async def identities(self, platform: str, user_id: str) -> list[UserRef]:
        """Every memory space of one platform user: each workspace (and the DMs, where a platform keeps them
        apart) where the bot remembers something about them or has something of theirs queued (a full scan:
        for admin tasks)."""
        keys = await self._store.user_keys() | await self._db.user_keys()
        refs = {ref for ref in map(UserRef.from_key, keys)
                if ref.platform == platform and ref.user_id == user_id and ref.workspace}
        return sorted(refs, key=lambda ref: ref.workspace)


def _profile_first(records: list[MemoryRecord]) -> list[MemoryRecord]:
    """`records` (newest first) with the profile's facts first."""
    profile = one_per_attribute(records)
    ids = {r.id for r in profile}
    return profile + [r for r in records if r.id not in ids]
