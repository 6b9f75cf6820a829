"""Learning: storing what the write-back worker (or `/remember`) gives, once.

Facts are checked against the user's similar ones: a duplicate is skipped, a fact it makes untrue is updated to
it (mem0's history keeps the old text), and a profile attribute (name, home, job...) holds one value. The
passages of a user's message are stored as said (episodic memory), never twice across a crash. Callers hold
the user's lock (`Locks.hold(user=...)`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bot import supersede
from memory.faults import crash_point
from memory.records import ATTRIBUTE, MESSAGE, SUPERSEDED_BY, MemoryRecord, Source
from memory.store import MemoryStore

DUPLICATE_SCORE = 0.95  # similarity above which a new fact is the same as a stored one


class Learning:
    def __init__(self, store: MemoryStore, ttl_days: int = 0) -> None:
        self._store = store
        self._ttl_days = ttl_days

    async def passages(self, text: str) -> list[str]:
        """A message split into the passages `keep_passage` stores (each short enough for the embedder)."""
        return await self._store.passages(text)

    async def keep_passage(self, user_key: str, text: str, index: int, source: Source, *, resumed: bool) -> None:
        """Store one passage of the user's message as said. `resumed`: an earlier attempt may have stored it
        just before a crash, so it is looked for first and never stored twice."""
        if resumed and await self._store.find_passage(user_key, source, index) is not None:
            return
        created_at = parse_time(source.time)
        await self._store.add(user_key, text, source, kind=MESSAGE, passage=index, created_at=created_at,
                              expires_on=self._expiry(created_at))

    async def learn(self, user_key: str, fact: str, source: Source, context: str | None = None) -> str | None:
        """Store a fact unless the user already has it; a fact it makes untrue is updated to it.

        `context` is the message the fact was learned from (its words help recall; see `MemoryStore.add`).
        Returns the id of the new or updated memory, or None for a duplicate.
        """
        similar = await self._store.search(user_key, fact, 5, include_private=True)
        scores = await self._store.similarity(fact, [record.text for record in similar])
        similar = [replace(record, score=score) for record, score in zip(similar, scores, strict=True)]
        # (a near duplicate the fact makes untrue is no duplicate: "doesn't drink coffee" against "drinks coffee")
        duplicate = next((record for record in similar
                          if _same_fact(record, fact) and not supersede.replaces(fact, record.text)), None)
        attribute = supersede.profile_attribute(fact)
        if attribute:  # the profile holds one value per attribute, however unlike the old fact's words are
            profile = await self._store.profile(user_key, (attribute,), include_private=True)
            similar += [record for record in profile if record.id not in {r.id for r in similar}]
        others = [record for record in similar if duplicate is None or record.id != duplicate.id]
        replaced = [others[i] for i in supersede.replaced([r.text for r in others], fact)]
        if duplicate is not None:
            # Stated again, the fact still makes untrue what it contradicts: this finishes a change that a crash
            # cut short between writing the new fact and marking the older ones (see `_replace`).
            await self._supersede(user_key, replaced, duplicate.id)
            return None
        if replaced and (updated := await self._replace(user_key, replaced, fact, source, attribute, context)):
            return updated
        created_at = parse_time(source.time)
        return await self._store.add(user_key, fact, source, attribute=attribute, context=context,
                                     created_at=created_at, expires_on=self._expiry(created_at))

    async def _replace(self, user_key: str, replaced: list[MemoryRecord], fact: str, source: Source,
                       attribute: str | None, context: str | None) -> str | None:
        """The newest version takes the place of the first outdated fact; any further outdated ones are marked
        superseded (kept for export, no longer recalled). None if the outdated fact was deleted meanwhile
        (retention purge): the new one is then simply added."""
        first, *others = replaced
        metadata = {**source.to_metadata(), ATTRIBUTE: attribute}
        if expires_on := self._expiry(parse_time(source.time)):
            metadata["expiration_date"] = expires_on
        if not await self._store.update(user_key, first.id, text=fact, metadata=metadata, context=context):
            return None
        crash_point("learning.update_written")
        await self._supersede(user_key, others, first.id)
        return first.id

    async def _supersede(self, user_key: str, outdated: list[MemoryRecord], by: str) -> None:
        """Mark outdated facts superseded by memory `by`: kept for export and history, no longer recalled."""
        for record in outdated:
            await self._store.update(user_key, record.id, metadata={SUPERSEDED_BY: by})
            crash_point("learning.superseded")

    def _expiry(self, created_at: datetime | None) -> str | None:
        if self._ttl_days <= 0:
            return None
        start = (created_at or datetime.now(UTC)).date()
        return (start + timedelta(days=self._ttl_days)).isoformat()


def _normalized(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


def _same_fact(record: MemoryRecord, fact: str) -> bool:
    """Exact or near duplicate: equal once normalized, or nearly equal in meaning with the same numbers."""
    if _normalized(record.text) == _normalized(fact):
        return True
    same_numbers = re.findall(r"\d+", record.text) == re.findall(r"\d+", fact)
    return same_numbers and (record.score or 0) >= DUPLICATE_SCORE


def parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
