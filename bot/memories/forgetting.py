"""Forgetting: one memory, everything about a user, what a deleted or edited message taught, and what is past
its retention. Whatever is forgotten also leaves the write-back queue and the conversation history, so it never
comes back (`/why` looks its memories up when asked, so a forgotten one is not listed)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from bot.database import BotDatabase
from bot.errors import UserError
from bot.history import ConversationHistory
from bot.memories.locks import Locks
from bot.message import IncomingMessage, MessageRef, UserRef
from memory.faults import crash_point
from memory.store import MemoryStore

_log = logging.getLogger(__name__)

SET_ASIDE_DAYS = 30  # how long an exchange the model could not learn from is kept for inspection
CHANGES_DAYS = 7  # how long a deleted or edited message is kept in mind (replies still running, late edits)


class Forgetting:
    def __init__(self, store: MemoryStore, db: BotDatabase, locks: Locks, history: ConversationHistory,
                 ttl_days: int = 0) -> None:
        self._store = store
        self._db = db
        self._locks = locks
        self._history = history
        self._ttl_days = ttl_days
        # forget-alls per user and deleted or edited messages, for replies in flight (in `db.recent`: every
        # process sharing the state sees another's)
        self._recent = db.recent

    async def forget(self, user: UserRef, memory_id: str) -> bool:
        """Forget one of the user's memories; False if they have none with that id."""
        memory_id = memory_id.strip()
        if not memory_id:
            raise UserError("Tell me which memory to forget: give its id from the list.")
        async with self._locks.hold(user=user.key):
            deleted = await self._store.delete(user.key, memory_id)
        return deleted

    async def forget_all(self, user: UserRef) -> int:
        """Forget everything about the user (memories, queued exchanges, history); how many memories went."""
        async with self._locks.hold(user=user.key):
            await self._recent.execute("INSERT INTO erasures (user_key, count) VALUES (?, 1) "
                                       "ON CONFLICT (user_key) DO UPDATE SET count = erasures.count + 1", (user.key,))
            crash_point("forget_all.erasure_counted")
            await self._db.forget_user(user.key)
            crash_point("forget_all.queue_dropped")
            await self._history.forget_user(user.key)
            crash_point("forget_all.history_dropped")
            return await self._store.delete_all(user.key)

    async def erasures(self, user: UserRef) -> int:
        """How often the user has forgotten everything; a reply that saw this number change drops its turn."""
        row = await self._recent.fetchone("SELECT count FROM erasures WHERE user_key = ?", (user.key,))
        return int(row[0]) if row else 0

    async def forget_message(self, ref: MessageRef) -> int:
        """The message was deleted on its platform: forget everything learned from it, for whoever said it.

        Its exchange leaves the write-back queue (and the set-aside table), its facts leave the store, its turn
        leaves the conversation history; a reply to it still running is not queued (see `was_changed`).
        Returns how many memories were deleted.
        """
        async with self._locks.hold(message=ref):
            await self._note_change(ref, deleted=True, edited_at=None)
            crash_point("forget.change_noted")
            return await self._forget_message(ref)

    @asynccontextmanager
    async def editing(self, ref: MessageRef, edited_at: datetime | None) -> AsyncIterator[bool]:
        """The message was edited: forget what its old text taught and yield True, holding the message's lock so
        that the caller queues the new text in the same step. Yields False, doing nothing, for a deleted message
        or an edit not newer than one already handled (a repeated or late event)."""
        async with self._locks.hold(message=ref):
            before = await self._change(ref)
            _, deleted, latest = before or (ref, False, None)
            if deleted or (latest is not None and (edited_at is None or edited_at <= latest)):
                yield False
                return
            await self._note_change(ref, deleted=False, edited_at=edited_at)
            crash_point("forget.change_noted")
            try:
                await self._forget_message(ref)
                yield True
            except BaseException:  # the new text was not queued: a repeated edit event must be handled again
                await self._recent.execute(
                    "DELETE FROM message_changes WHERE platform = ? AND workspace = ? AND message_id = ? "
                    "AND channel = ?", (ref.platform, ref.workspace, ref.message_id, ref.channel_id or ""))
                if before is not None and (before[0].channel_id or "") == (ref.channel_id or ""):
                    await self._note_change(before[0], deleted=before[1], edited_at=before[2])
                raise

    async def was_changed(self, msg: IncomingMessage) -> bool:
        """Whether `msg` was deleted or edited since it arrived (its reply must not be learned from)."""
        change = await self._change(msg.ref)
        return change is not None and change[0].matches(msg)

    async def _change(self, ref: MessageRef) -> tuple[MessageRef, bool, datetime | None] | None:
        """How the message was last changed: (the ref it was changed by, deleted, the latest edit handled). A
        change recorded in another channel was another message (Slack's ts are unique per channel only); one with
        the channel unsaid, on either side, may be this one. A deletion wins over edits."""
        channel = ref.channel_id or ""
        row = await self._recent.fetchone(
            "SELECT channel, deleted, edited_at FROM message_changes WHERE platform = ? AND workspace = ? "
            "AND message_id = ? AND (channel = ? OR channel = '' OR ? = '') "
            "ORDER BY deleted DESC, coalesce(edited_at, '') DESC LIMIT 1",
            (ref.platform, ref.workspace, ref.message_id, channel, channel))
        if row is None:
            return None
        channel, deleted, edited_at = row
        changed_by = MessageRef(ref.platform, ref.workspace, str(channel) or None, ref.message_id)
        return changed_by, bool(deleted), datetime.fromisoformat(edited_at) if edited_at else None

    async def finish_forgetting(self) -> int:
        """Delete the facts of deleted or edited messages whose deletion failed half-way (store errors)."""
        forgotten = 0
        for ref in await self._db.forgetting():
            async with self._locks.hold(message=ref):
                forgotten += await self._forget_message(ref)
        return forgotten

    async def purge_expired(self) -> int:
        """Apply the retention setting: delete memories past their expiry, for every user, and exchanges set
        aside for inspection once they are SET_ASIDE_DAYS old (or older than the retention, if shorter)."""
        keep_days = min(SET_ASIDE_DAYS, self._ttl_days) if self._ttl_days > 0 else SET_ASIDE_DAYS
        await self._db.drop_set_aside(keep_days)
        crash_point("retention.set_aside_dropped")
        purged = await self._store.purge_expired()  # also when the retention was turned off after they were learned
        crash_point("retention.purged")
        return purged

    async def _note_change(self, ref: MessageRef, *, deleted: bool, edited_at: datetime | None) -> None:
        now = time.time()
        await self._recent.execute(
            "INSERT INTO message_changes (platform, workspace, message_id, channel, deleted, edited_at, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, workspace, message_id, channel) DO UPDATE SET "
            "deleted = excluded.deleted, edited_at = excluded.edited_at, at = excluded.at",
            (ref.platform, ref.workspace, ref.message_id, ref.channel_id or "", int(deleted),
             edited_at.isoformat() if edited_at else None, now))
        await self._recent.execute("DELETE FROM message_changes WHERE at < ?", (now - CHANGES_DAYS * 86400,))

    async def _forget_message(self, ref: MessageRef) -> int:
        """Under the message's lock."""
        users = await self._db.users_with_message(ref)
        # Marked first, before anything is dropped: from here a deletion the store fails (or a crash) stops
        # half-way is finished by `finish_forgetting`, and the record of the message goes only once its facts
        # are gone, so it never looks as if it had taught nothing.
        if users:
            await self._db.mark_forgetting(ref)
            crash_point("forget.marked")
        for user_key in users:
            async with self._locks.hold(user=user_key):  # a fact of it being stored now is stored before this
                await self._db.forget_exchanges(user_key, ref)
        crash_point("forget.exchanges_dropped")
        await self._history.forget_message(ref)
        crash_point("forget.history_dropped")
        if not users:  # never queued for learning: nothing in the store came from it
            return 0
        deleted = await self._store.delete_from_source(ref.platform, ref.workspace, ref.channel_id, ref.message_id)
        crash_point("forget.store_deleted")
        await self._db.forget_sources(ref)
        crash_point("forget.sources_dropped")
        return sum(len(ids) for ids in deleted.values())
