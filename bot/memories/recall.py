"""Recall for replies: the user's profile, their memories most relevant to a message, and what the last reply
used (for `/why`, kept in the recent-activity tables: any replica answers it). DM-only memories are recalled in
DMs only."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable

from bot import supersede
from bot.dates import time_window
from bot.message import IncomingMessage, UserRef
from bot.sql import Sql
from memory.recall import CHANNELS, RecallQuery
from memory.records import KINDS, MemoryRecord
from memory.store import MemoryStore

USED_DAYS = 30  # `why` answers for a reply this recent


class Recall:
    def __init__(self, store: MemoryStore, recent: Sql, channels: tuple[str, ...] = CHANNELS) -> None:
        self._store = store
        self._recent = recent
        self._channels = channels

    async def relevant(self, msg: IncomingMessage, query: str, limit: int, min_score: float, *,
                       kinds: tuple[str, ...] = KINDS) -> list[MemoryRecord]:
        """The user's facts and message passages most relevant to `query`, through every recall channel (meaning,
        keywords, the time the query names; see `memory/recall.py`).

        The user's own name is left out of the query: every memory is about them, so their name matches
        the facts that repeat it, not the ones the question is about. The best memory of each source message
        comes before a second one from the same message (see `memory.recall.run_channels`).
        """
        text = without_names(query, [msg.user_name])
        return await self._store.recall(
            msg.user.key, RecallQuery.of(text, time_window(query, msg.sent_at), self._channels),
            limit, include_private=msg.is_direct, min_score=min_score, kinds=kinds,
        )

    async def profile(self, msg: IncomingMessage) -> list[MemoryRecord]:
        """The user's profile: current facts filling one of `supersede.PROFILE` (name, home, job...), one each,
        in that order."""
        found = await self._store.profile(msg.user.key, supersede.PROFILE, include_private=msg.is_direct)
        return one_per_attribute(found)

    async def current(self, msg: IncomingMessage, memory_ids: tuple[str, ...]) -> list[MemoryRecord]:
        """Those of these memories of the user that may still be recalled for `msg`, in the order given."""
        return await self._store.current(msg.user.key, memory_ids, include_private=msg.is_direct)

    async def note_used(self, user: UserRef, records: list[MemoryRecord]) -> None:
        """Remember which memories went into the user's latest reply, for `why` (their ids; for USED_DAYS)."""
        now = time.time()
        await self._recent.execute(
            "INSERT INTO last_used (user_key, records, at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_key) DO UPDATE SET records = excluded.records, at = excluded.at",
            (user.key, json.dumps([r.id for r in records]), now))
        await self._recent.execute("DELETE FROM last_used WHERE at < ?", (now - USED_DAYS * 86400,))

    async def why(self, user: UserRef) -> list[MemoryRecord]:
        """The memories the user's last reply used, as they are now: one forgotten since is not listed (empty
        if none, or no reply yet)."""
        row = await self._recent.fetchone("SELECT records FROM last_used WHERE user_key = ?", (user.key,))
        found = [await self._store.get(user.key, memory_id) for memory_id in json.loads(row[0])] if row else []
        return [record for record in found if record is not None]


def one_per_attribute(records: list[MemoryRecord]) -> list[MemoryRecord]:
    """The newest fact of each profile attribute (`records` newest first), in `supersede.PROFILE` order."""
    newest: dict[str, MemoryRecord] = {}
    for record in records:
        if record.attribute and record.attribute not in newest:
            newest[record.attribute] = record
    return [newest[a] for a in supersede.PROFILE if a in newest]


def without_names(text: str, names: Iterable[str]) -> str:
    """`text` with these names (whole words, as written) replaced by "they" / "their"."""
    for name in names:
        name = name.strip()
        if len(name) < 2:
            continue
        text = re.sub(rf"\b{re.escape(name)}'s\b", "their", text)
        text = re.sub(rf"\b{re.escape(name)}\b", "they", text)
    return text
