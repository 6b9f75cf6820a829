"""What users (and the bot itself) can do with memories, once for every platform.

Adapters map their commands onto `MemoryOps`; the reply path uses `profile` and `recall`, the write-back worker
`learn` (facts) and `keep_passage` (the user's own words). Every operation is scoped to one user: another
user's memory id behaves exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import supersede
from bot.access import AccessPolicy
from bot.database import BotDatabase
from bot.dates import time_window
from bot.errors import UserError
from bot.history import ConversationHistory
from bot.message import IncomingMessage, MessageRef, UserRef
from memory.recall import CHANNELS, RecallQuery
from memory.records import ATTRIBUTE, FACT, KINDS, MESSAGE, SUPERSEDED_BY, MemoryRecord, Source
from memory.store import MemoryStore

_log = logging.getLogger(__name__)

MAX_REMEMBER_CHARS = 500
DUPLICATE_SCORE = 0.95  # similarity above which a new fact is the same as a stored one
SET_ASIDE_DAYS = 30  # how long an exchange the model could not learn from is kept for inspection
MAX_USERS_REMEMBERED = 10_000  # `why` answers for this many most recent users
MAX_CHANGES_REMEMBERED = 10_000  # deleted or edited messages kept in mind (replies still running, late edits)


@dataclass(frozen=True)
class MemoryPage:
    records: list[MemoryRecord]
    page: int
    pages: int
    total: int


def _normalized(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def _same_fact(record: MemoryRecord, fact: str) -> bool:
    """Exact or near duplicate: equal once normalized, or nearly equal in meaning with the same numbers."""
    if _normalized(record.text) == _normalized(fact):
        return True
    same_numbers = re.findall(r"\d+", record.text) == re.findall(r"\d+", fact)
    return same_numbers and (record.score or 0) >= DUPLICATE_SCORE


NOT_FOR_YOU_HERE = "Sorry, I can't do that for you here."


class MemoryOps:
    """`access` (the bot's policy; None for the admin command line) gates the commands that store or search,
    as it gates messages. Listing, exporting, forgetting and pausing are always open to the user."""

    def __init__(self, store: MemoryStore, db: BotDatabase, *, access: AccessPolicy | None = None,
                 ttl_days: int = 0, history_turns: int = 6, channels: tuple[str, ...] = CHANNELS) -> None:
        self._store = store
        self._channels = channels
        self._db = db
        self._access = access
        # One lock per user, held while a fact is stored and while the user forgets or pauses, so a write-back
        # in progress can never add back what the user just deleted. Unused locks go away by themselves.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._erasures: dict[str, int] = {}  # forget-alls per user since start, for replies in flight
        self._ttl_days = ttl_days
        self.history = ConversationHistory(history_turns)  # short-term: recent turns per conversation
        self._last_used: dict[str, list[MemoryRecord]] = {}
        # Deleted or edited messages, oldest first: (ref, deleted, time of the latest edit handled)
        self._changed: dict[tuple[str, str, str], tuple[MessageRef, bool, datetime | None]] = {}
        self._message_locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = \
            weakref.WeakValueDictionary()

    # --- used by the bot

    async def recall(self, msg: IncomingMessage, query: str, limit: int, min_score: float, *,
                     kinds: tuple[str, ...] = KINDS) -> list[MemoryRecord]:
        """The user's facts and message passages most relevant to `query`, through every recall channel (meaning,
        keywords, names, the time the query names; see `memory/recall.py`); DM-only memories in DMs only.

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
        in that order; DM-only ones in DMs only."""
        found = await self._store.profile(msg.user.key, supersede.PROFILE, include_private=msg.is_direct)
        return _one_per_attribute(found)

    async def passages(self, text: str) -> list[str]:
        """A message split into the passages `keep_passage` stores (each short enough for the embedder)."""
        return await self._store.passages(text)

    async def keep_passage(self, user_key: str, text: str, index: int, source: Source, *, resumed: bool) -> None:
        """Store one passage of the user's message as said (episodic memory). `resumed`: an earlier attempt may
        have stored it just before a crash, so it is looked for first and never stored twice."""
        if resumed and await self._store.find_passage(user_key, source, index) is not None:
            return
        created_at = _parse_time(source.time)
        await self._store.add(user_key, text, source, kind=MESSAGE, passage=index, created_at=created_at,
                              expires_on=self._expiry(created_at))

    def note_used(self, user: UserRef, records: list[MemoryRecord]) -> None:
        """Remember which memories went into the user's latest reply, for `why` (for the most recent users)."""
        self._last_used.pop(user.key, None)
        self._last_used[user.key] = list(records)
        if len(self._last_used) > MAX_USERS_REMEMBERED:
            del self._last_used[next(iter(self._last_used))]

    def why(self, user: UserRef) -> list[MemoryRecord]:
        """The memories the user's last reply used (empty if none, or no reply yet)."""
        return list(self._last_used.get(user.key, []))

    async def learn(self, user_key: str, fact: str, source: Source, context: str | None = None) -> str | None:
        """Store a fact unless the user already has it; a fact it makes untrue is updated to it.

        `context` is the message the fact was learned from (its words help recall; see `MemoryStore.add`).
        Returns the id of the new or updated memory, or None for a duplicate.
        """
        similar = await self._store.search(user_key, fact, 5, include_private=True)
        scores = await self._store.similarity(fact, [record.text for record in similar])
        similar = [replace(record, score=score) for record, score in zip(similar, scores, strict=True)]
        if any(_same_fact(record, fact) for record in similar):
            return None
        attribute = supersede.profile_attribute(fact)
        if attribute:  # the profile holds one value per attribute, however unlike the old fact's words are
            profile = await self._store.profile(user_key, (attribute,), include_private=True)
            similar += [record for record in profile if record.id not in {r.id for r in similar}]
        replaced = [similar[i] for i in supersede.replaced([r.text for r in similar], fact)]
        if replaced:
            # The newest version takes the place of the first outdated fact (mem0's history keeps both);
            # any further outdated ones are marked superseded: kept for export, no longer recalled.
            first, *others = replaced
            metadata = {**source.to_metadata(), ATTRIBUTE: attribute}
            if expires_on := self._expiry(_parse_time(source.time)):
                metadata["expiration_date"] = expires_on
            if await self._store.update(user_key, first.id, text=fact, metadata=metadata, context=context):
                for record in others:
                    await self._store.update(user_key, record.id, metadata={SUPERSEDED_BY: first.id})
                return first.id
            # the outdated fact was deleted meanwhile (retention purge): the new one is simply added
        created_at = _parse_time(source.time)
        return await self._store.add(user_key, fact, source, attribute=attribute, context=context,
                                     created_at=created_at, expires_on=self._expiry(created_at))

    def _expiry(self, created_at: datetime | None) -> str | None:
        if self._ttl_days <= 0:
            return None
        start = (created_at or datetime.now(UTC)).date()
        return (start + timedelta(days=self._ttl_days)).isoformat()

    # --- user commands

    async def list(self, user: UserRef, *, page: int = 1, page_size: int = 10) -> MemoryPage:
        """The user's facts, a page at a time: the profile first (in `supersede.PROFILE` order), then newest
        first. The passages of their messages are not listed (`why` and `export` show them)."""
        records = _profile_first(await self._store.list(user.key, kinds=(FACT,)))
        pages = max(1, math.ceil(len(records) / page_size))
        if page < 1 or page > pages:
            raise UserError(f"There is no page {page}; pages go from 1 to {pages}.")
        start = (page - 1) * page_size
        return MemoryPage(records[start : start + page_size], page, pages, len(records))

    def _admit(self, msg: IncomingMessage) -> None:
        decision = self._access.check(msg, command=True) if self._access else None
        if decision and not decision.allowed:
            _log.info("refusing a %s command from %s: %s", msg.platform, msg.user.key, decision.reason)
            raise UserError(decision.reply or NOT_FOR_YOU_HERE)

    async def remember(self, msg: IncomingMessage, text: str) -> MemoryRecord:
        """Store `text` as the user asked (the command is `msg`, checked like a message)."""
        self._admit(msg)
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
        async with self.user_lock(msg.user.key):
            memory_id = await self.learn(msg.user.key, text, source)
        if memory_id is None:
            raise UserError("I already remember that.")
        record = await self._store.get(msg.user.key, memory_id)
        if record is None:
            raise UserError("That memory was deleted while I was saving it; please try again.")
        return record

    async def search(self, msg: IncomingMessage, query: str, *, limit: int = 10) -> list[MemoryRecord]:
        """The user's memories matching `query` (the command is `msg`); DM-only facts in DMs only."""
        self._admit(msg)
        query = query.strip()
        if not query:
            raise UserError("Tell me what to search for, e.g. \"food\".")
        return await self.recall(msg, query, limit, 0.0, kinds=(FACT,))  # as a reply recalls, facts only

    def user_lock(self, user_key: str) -> asyncio.Lock:
        """The lock write-back holds while it stores one of this user's facts."""
        lock = self._locks.get(user_key)
        if lock is None:
            lock = self._locks[user_key] = asyncio.Lock()
        return lock

    def erasures(self, user: UserRef) -> int:
        """How often the user has forgotten everything; a reply that saw this number change drops its turn."""
        return self._erasures.get(user.key, 0)

    async def forget(self, user: UserRef, memory_id: str) -> bool:
        memory_id = memory_id.strip()
        if not memory_id:
            raise UserError("Tell me which memory to forget: give its id from the list.")
        async with self.user_lock(user.key):
            deleted = await self._store.delete(user.key, memory_id)
        if deleted:
            self._forget_used(user.key, {memory_id})
        return deleted

    async def forget_all(self, user: UserRef) -> int:
        async with self.user_lock(user.key):
            self._erasures[user.key] = self._erasures.get(user.key, 0) + 1
            await self._db.forget_user(user.key)
            self._last_used.pop(user.key, None)
            self.history.forget_user(user.key)
            return await self._store.delete_all(user.key)

    def message_lock(self, ref: MessageRef) -> asyncio.Lock:
        """Held while a message is forgotten or relearned, and while a reply to it is queued, so a deletion, an
        edit and the reply each see what the one before did (take it before `user_lock`)."""
        key = _message_key(ref)
        lock = self._message_locks.get(key)
        if lock is None:
            lock = self._message_locks[key] = asyncio.Lock()
        return lock

    async def forget_message(self, ref: MessageRef) -> int:
        """The message was deleted on its platform: forget everything learned from it, for whoever said it.

        Its exchange leaves the write-back queue (and the set-aside table), its facts leave the store, its turn
        leaves the conversation history; a reply to it still running is not queued (see `was_changed`).
        Returns how many memories were deleted.
        """
        async with self.message_lock(ref):
            self._note_change(ref, deleted=True, edited_at=None)
            return await self._forget_message(ref)

    async def relearn_message(
        self, ref: MessageRef, edited_at: datetime | None, learn: Callable[[], Awaitable[None]]
    ) -> bool:
        """The message was edited: forget what its old text taught, then `learn` (queues the new text), as one
        step. False, doing nothing, for a deleted message or an edit not newer than one already handled (a
        repeated or late event)."""
        async with self.message_lock(ref):
            _, deleted, latest = self._changed.get(_message_key(ref), (ref, False, None))
            if deleted or (latest is not None and (edited_at is None or edited_at <= latest)):
                return False
            self._note_change(ref, deleted=False, edited_at=edited_at)
            await self._forget_message(ref)
            await learn()
            return True

    def was_changed(self, msg: IncomingMessage) -> bool:
        """Whether `msg` was deleted or edited since it arrived (its reply must not be learned from)."""
        change = self._changed.get(_message_key(msg.ref))
        return change is not None and change[0].matches(msg)

    def _note_change(self, ref: MessageRef, *, deleted: bool, edited_at: datetime | None) -> None:
        key = _message_key(ref)
        self._changed.pop(key, None)
        self._changed[key] = (ref, deleted, edited_at)
        if len(self._changed) > MAX_CHANGES_REMEMBERED:
            del self._changed[next(iter(self._changed))]

    async def _forget_message(self, ref: MessageRef) -> int:
        users = await self._db.users_with_message(ref)
        for user_key in users:
            async with self.user_lock(user_key):  # a fact of it being stored now is stored before this returns
                await self._db.forget_exchanges(user_key, ref)
        self.history.forget_message(ref)
        if not users:  # never queued for learning: nothing in the store came from it
            return 0
        # The record of the message goes only once its facts are gone: if the store fails now, the deletion
        # is retried (`finish_forgetting`) instead of the message looking as if it had taught nothing.
        await self._db.mark_forgetting(ref)
        deleted = await self._store.delete_from_source(ref.platform, ref.workspace, ref.channel_id, ref.message_id)
        await self._db.forget_sources(ref)
        for user_key, ids in deleted.items():
            self._forget_used(user_key, set(ids))
        return sum(len(ids) for ids in deleted.values())

    async def finish_forgetting(self) -> int:
        """Delete the facts of deleted or edited messages whose deletion failed half-way (store errors)."""
        forgotten = 0
        for ref in await self._db.forgetting():
            async with self.message_lock(ref):
                forgotten += await self._forget_message(ref)
        return forgotten

    def _forget_used(self, user_key: str, memory_ids: set[str]) -> None:
        """Deleted memories leave what `why` lists."""
        if user_key in self._last_used:
            self._last_used[user_key] = [r for r in self._last_used[user_key] if r.id not in memory_ids]

    async def identities(self, platform: str, user_id: str) -> list[UserRef]:
        """Every memory space of one platform user: each workspace (and the DMs, where a platform keeps them
        apart) where the bot remembers something about them or has something of theirs queued (a full scan:
        for admin tasks)."""
        keys = await self._store.user_keys() | await self._db.user_keys()
        refs = {ref for ref in map(UserRef.from_key, keys)
                if ref.platform == platform and ref.user_id == user_id and ref.workspace}
        return sorted(refs, key=lambda ref: ref.workspace)

    async def export(self, user: UserRef) -> dict[str, Any]:
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

    async def purge_expired(self) -> int:
        """Apply the retention setting: delete memories past their expiry, for every user, and exchanges set
        aside for inspection once they are SET_ASIDE_DAYS old (or older than the retention, if shorter)."""
        keep_days = min(SET_ASIDE_DAYS, self._ttl_days) if self._ttl_days > 0 else SET_ASIDE_DAYS
        await self._db.drop_set_aside(keep_days)
        return await self._store.purge_expired()  # also when the retention was turned off after they were learned

    async def pause(self, user: UserRef) -> None:
        async with self.user_lock(user.key):  # after this returns, nothing more is learned
            await self._db.set_paused(user.key, True)

    async def resume(self, user: UserRef) -> None:
        await self._db.set_paused(user.key, False)

    async def is_paused(self, user: UserRef) -> bool:
        return await self._db.is_paused(user.key)


def _one_per_attribute(records: list[MemoryRecord]) -> list[MemoryRecord]:
    """The newest fact of each profile attribute (`records` newest first), in `supersede.PROFILE` order."""
    newest: dict[str, MemoryRecord] = {}
    for record in records:
        if record.attribute and record.attribute not in newest:
            newest[record.attribute] = record
    return [newest[a] for a in supersede.PROFILE if a in newest]


def _profile_first(records: list[MemoryRecord]) -> list[MemoryRecord]:
    """`records` (newest first) with the profile's facts first."""
    profile = _one_per_attribute(records)
    ids = {r.id for r in profile}
    return profile + [r for r in records if r.id not in ids]


def without_names(text: str, names: Iterable[str]) -> str:
    """`text` with these names (whole words, as written) replaced by "they" / "their"."""
    for name in names:
        name = name.strip()
        if len(name) < 2:
            continue
        text = re.sub(rf"\b{re.escape(name)}'s\b", "their", text)
        text = re.sub(rf"\b{re.escape(name)}\b", "they", text)
    return text


def _message_key(ref: MessageRef) -> tuple[str, str, str]:
    return (ref.platform, ref.workspace, ref.message_id)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
