"""`MemoryStore`: per-user memories in mem0 (facts and passages of the user's messages), every call serialized on
one dedicated thread.

Embedded Qdrant allows one client per folder and is not thread-safe (concurrent calls lost writes), and
the embedder and the store block, so all work runs on a single worker thread off the event loop. Memories
are stored as given (`infer=False`): extraction is the caller's job, mem0's LLM is never called. A fact's
vector is anchored to the message it was learned from (`_anchor`). Recall runs every channel the store offers
(`memory/recall.py`): on embedded Qdrant over the cached user (`memory/vector_cache.py`), on a server where
the data lives (`memory/server_channels.py`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from memory import points
from memory.config import EMBEDDING_DIMS, StoreConfig
from memory.faults import after, crash_point
from memory.passages import split_passages
from memory.recall import DENSE, Hit, RecallQuery, UserChannels, run_channels
from memory.records import (
    ATTRIBUTE,
    FACT,
    KIND,
    KINDS,
    MESSAGE,
    PASSAGE,
    SUPERSEDED_BY,
    MemoryRecord,
    Source,
)
from memory.server_channels import PgvectorUser, ServerUser, prepare_table
from memory.vector_cache import VectorCache, expired, unit

_log = logging.getLogger(__name__)

T = TypeVar("T")

PASSAGE_MARGIN = 16  # tokens left free under the embedder's limit when a message is split
MAX_CHARS_PER_TOKEN = 8  # and at most this many characters a token: a passage stays a readable size


class StoreError(RuntimeError):
    """The memory store failed (unreachable server, broken files); the operation may be retried."""


class MemoryStore:
    """Async facade over one mem0 `Memory`. Open with `async with MemoryStore(config) as store`."""

    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-store")
        self._mem0: Any = None
        self._cache: VectorCache | None = None
        self._pgvector = False  # recall in our own SQL (memory/server_channels.py)
        # Learning one fact embeds the fact, its message and its nearest stored facts; the facts of one message
        # share the message and mostly the neighbours, and mem0 embeds again what it stores (the fact, searched
        # for first; the message's passage, the fact's anchor next). Remembering recent vectors, for mem0 too
        # (`_RecentVectors`), saves those repeated calls.
        self._embed = lru_cache(maxsize=256)(self._embed_text)
        self._embedder: Any = None  # the embedder itself

    async def __aenter__(self) -> MemoryStore:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            self._mem0 = await self._call(self._config.create_mem0)
        except StoreError as exc:
            if "already accessed" in str(exc):  # embedded Qdrant's folder lock
                raise StoreError(f"{self._config.directory} is in use by another memorybot process: embedded "
                                 "Qdrant allows one at a time (stop the bot first, or use a Qdrant server)") from exc
            raise
        self._embedder = self._mem0.embedding_model
        self._mem0.embedding_model = _RecentVectors(self._embedder, self._embed)
        # the crash tests' steps inside mem0 (memory/faults.py; nothing changes when they are off)
        after(self._mem0.vector_store, "insert", "store.vector_written")
        after(self._mem0.vector_store, "delete", "store.memory_deleted")
        after(self._mem0.db, "add_history", "store.history_written")
        # mem0's history keeps every version's text; a forgotten one is overwritten, not left in free pages
        await self._call(self._mem0.db.connection.execute, "PRAGMA secure_delete=ON")
        await self._call(self._erase_deleted_history)
        vector_store = self._mem0.vector_store
        pool = getattr(vector_store, "connection_pool", None)
        if pool is not None and hasattr(pool, "wait"):  # pgvector connects in the background: fail now, not later
            try:
                await self._call(pool.wait, timeout=self._config.connect_timeout)
            except StoreError as exc:
                raise StoreError(f"cannot reach the PostgreSQL server of PGVECTOR_URL within "
                                 f"{self._config.connect_timeout:.0f} s ({exc})") from exc
        if getattr(vector_store, "is_local", False):  # embedded Qdrant: see memory/vector_cache.py
            self._cache = VectorCache(vector_store.client, vector_store.collection_name)
        self._pgvector = self._config.provider == "pgvector"
        if self._pgvector:
            await self._call(prepare_table, vector_store)

    async def close(self) -> None:
        self._embed.cache_clear()
        if self._mem0 is not None:
            mem0, cache, self._mem0, self._cache = self._mem0, self._cache, None, None
            loop = asyncio.get_running_loop()
            if cache is not None:  # its SQLite connections belong to the store's thread
                await loop.run_in_executor(self._executor, cache.drop)
            await loop.run_in_executor(self._executor, _close_mem0, mem0)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except (ValueError, KeyError, TypeError):
            raise
        except Exception as exc:  # anything the vector store, embedder or history DB raised
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    # --- writes

    async def add(
        self,
        user_key: str,
        text: str,
        source: Source,
        *,
        kind: str = FACT,
        attribute: str | None = None,
        passage: int | None = None,
        context: str | None = None,
        created_at: datetime | None = None,
        expires_on: str | None = None,
    ) -> str:
        """Store one memory for `user_key`; return its id. A fact may fill a profile `attribute`; a message
        passage says where in its message it stands (`passage`). `context` is the message a fact was learned
        from: folded into the fact's vector (see `_anchor`), not stored with it."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind of memory {kind!r}")
        metadata = {**source.to_metadata(), KIND: kind}
        if attribute:
            metadata[ATTRIBUTE] = attribute
        if passage is not None:
            metadata[PASSAGE] = passage
        if created_at is not None:
            metadata["created_at"] = created_at.isoformat()
        return await self._call(self._add, user_key, text, metadata, expires_on, context)

    def _add(self, user_key: str, text: str, metadata: dict[str, Any], expires_on: str | None,
             context: str | None) -> str:
        with self._dropping_cache_on_failure(user_key):
            result = self._mem0.add([{"role": "user", "content": text}], user_id=user_key, metadata=metadata,
                                    infer=False, expiration_date=expires_on)
            memory_id = str(result["results"][0]["id"])
            if context:
                self._anchor(memory_id, text, context)
            if self._cache:
                self._cache.refresh(user_key, memory_id)
        crash_point("store.added")
        return memory_id

    @contextmanager
    def _dropping_cache_on_failure(self, user_key: str) -> Iterator[None]:
        """A write that fails half-way (stored, then the anchoring failed) leaves the cache unsure about the
        user: drop their cached vectors, to be reloaded from the store on their next search."""
        try:
            yield
        except BaseException:
            if self._cache:
                self._cache.drop(user_key)
            raise

    async def update(self, user_key: str, memory_id: str, *, text: str | None = None,
                     metadata: dict[str, Any] | None = None, context: str | None = None) -> bool:
        """Change a memory's text or metadata; False if it does not exist or belongs to someone else.
        A new text's vector is anchored to `context`, the message it came from, as in `add`."""
        if await self.get(user_key, memory_id) is None:
            return False
        await self._call(self._update, user_key, memory_id, text, metadata, context)
        return True

    def _update(self, user_key: str, memory_id: str, text: str | None, metadata: dict[str, Any] | None,
                context: str | None) -> None:
        with self._dropping_cache_on_failure(user_key):
            self._mem0.update(memory_id, text=text, metadata=metadata)
            if text is not None and context:
                self._anchor(memory_id, text, context)
            if self._cache:
                self._cache.refresh(user_key, memory_id)
        crash_point("store.updated")

    def _anchor(self, memory_id: str, text: str, context: str) -> None:
        """Store the fact's vector halfway between the fact and the message it was learned from.

        An extracted fact is short ("Caroline paints.") and drops words a later question uses ("the sunset
        she painted at the lake"); the message keeps them, so the anchored vector is found by questions about
        the whole message as well as by the fact's own words. mem0 re-embeds the bare text when it changes a
        memory, so `update` anchors again.
        """
        vector = unit(self._embed(text) + self._embed(context))
        self._mem0.vector_store.update(vector_id=memory_id, vector=vector.tolist())

    def _embed_text(self, text: str) -> np.ndarray:
        """The unit vector of `text` (call `_embed`, which remembers recent ones; the result is shared)."""
        return unit(self._embedder.embed(text, None))

    async def delete(self, user_key: str, memory_id: str) -> bool:
        """Delete one memory; False if it does not exist or belongs to someone else."""
        if await self.get(user_key, memory_id) is None:
            return False
        await self._call(self._delete, user_key, memory_id)
        return True

    def _delete(self, user_key: str, memory_id: str) -> None:
        with self._dropping_cache_on_failure(user_key):
            self._erase_history([memory_id])  # before too: see `_erase_history`
            self._mem0.delete(memory_id)
            self._erase_history([memory_id])
            if self._cache:
                self._cache.remove(user_key, memory_id)

    def _erase_history(self, memory_ids: list[str]) -> None:
        """Delete mem0's history of these memories: it keeps every version's text (and the deleted text
        itself), and a forgotten memory must leave nothing behind. mem0 2.2.1 has no call for it; its history
        is always this SQLite table, whatever the vector store. Called before a deletion and after it: a
        process killed once mem0 deleted the vector (it writes the deletion's history row, the text again,
        after) would leave the older rows where no later deletion finds them; the deletion's own row is
        erased when the store is next opened (`_erase_deleted_history`). A failure is logged (ids only), not
        raised: the memories go whatever their history does."""
        history = self._mem0.db
        with history._lock:
            try:
                for start in range(0, len(memory_ids), 500):
                    chunk = memory_ids[start : start + 500]
                    history.connection.execute(
                        f"DELETE FROM history WHERE memory_id IN ({','.join('?' * len(chunk))})", chunk
                    )
                history.connection.commit()
                crash_point("store.history_erased")
            except sqlite3.Error:
                history.connection.rollback()
                _log.exception("could not erase the history of %d forgotten memories: %s", len(memory_ids),
                               memory_ids[:20])

    def _erase_deleted_history(self) -> None:
        """Erase what mem0's history keeps of memories it deleted (a process killed between mem0's deletion and
        `_erase_history` after it)."""
        history = self._mem0.db
        with history._lock:
            history.connection.execute("DELETE FROM history WHERE memory_id IN "
                                       "(SELECT memory_id FROM history WHERE event = 'DELETE')")
            history.connection.commit()

    async def delete_from_source(
        self, platform: str, workspace: str, channel: str | None, message_id: str
    ) -> dict[str, list[str]]:
        """Delete every memory, of any user, from this message (its facts and its passages; `channel` None: any
        channel, where message ids are unique in a workspace); returns the deleted ids by user id."""
        filters = {"source_platform": platform, "source_workspace": workspace, "source_message_id": message_id}
        if channel is not None:
            filters["source_channel"] = channel
        return await self._call(self._delete_from_source, filters)

    def _delete_from_source(self, filters: dict[str, str]) -> dict[str, list[str]]:
        deleted: dict[str, list[str]] = {}
        rows = self._rows(filters)
        self._erase_history([str(row.id) for row in rows])
        try:
            for row in rows:
                user_key = str((row.payload or {}).get("user_id", ""))
                with self._dropping_cache_on_failure(user_key):
                    self._mem0.delete(str(row.id))
                    if self._cache:
                        self._cache.remove(user_key, str(row.id))
                deleted.setdefault(user_key, []).append(str(row.id))
        finally:
            self._erase_history([memory_id for ids in deleted.values() for memory_id in ids])
        return deleted

    async def purge_expired(self) -> int:
        """Delete every memory, of any user, whose expiration date has passed; return how many."""
        return await self._call(self._purge_expired)

    def _rows(self, filters: dict[str, str] | None = None) -> list[Any]:
        """The stored points of every user matching `filters` (all without), up to `max_purge_scan` (a scan of
        the collection: deletions and maintenance only)."""
        listed = self._mem0.vector_store.list(filters=filters, top_k=self._config.max_purge_scan)
        return list(listed[0] if listed and isinstance(listed[0], list) else listed)

    async def sources(self) -> list[tuple[str, Source]]:
        """(user id, source) of every memory learned from a conversation (a full scan: for an upgrade)."""
        return await self._call(lambda: [
            (str(payload["user_id"]), Source.from_metadata(payload))
            for payload in (row.payload or {} for row in self._rows())
            if payload.get("user_id") and payload.get("source_origin") == "extracted"
        ])

    async def upgrade(self, attribute_of: Callable[[str], str | None]) -> int:
        """Give memories stored before messages were kept their kind (a fact), the time their source was said
        and, for a fact, the profile attribute it fills (`attribute_of`); return how many changed (a full
        scan, once: see `BotDatabase.version`)."""
        return await self._call(self._upgrade, attribute_of)

    def _upgrade(self, attribute_of: Callable[[str], str | None]) -> int:
        changed = 0
        for row in self._rows():
            payload = dict(row.payload or {})
            if KIND in payload:
                continue
            payload[KIND] = FACT
            payload.update(Source.from_metadata(payload).to_metadata())
            if attribute := attribute_of(str(payload.get("data", ""))):
                payload[ATTRIBUTE] = attribute
            self._mem0.vector_store.update(vector_id=str(row.id), payload=payload)
            changed += 1
        if self._cache:
            self._cache.drop()
        return changed

    async def user_keys(self) -> set[str]:
        """The user ids that have memories (a full scan: for admin tasks)."""
        return await self._call(lambda: {str(row.payload["user_id"]) for row in self._rows()
                                         if (row.payload or {}).get("user_id")})

    def _purge_expired(self) -> int:
        stale = [str(row.id) for row in self._rows() if expired(row.payload or {})]
        self._erase_history(stale)
        deleted: list[str] = []
        try:
            for memory_id in stale:
                self._mem0.delete(memory_id)
                deleted.append(memory_id)
        finally:
            self._erase_history(deleted)
            if self._cache:
                self._cache.drop()
        return len(deleted)

    async def delete_all(self, user_key: str) -> int:
        ids = [r.id for r in await self.list(user_key, include_superseded=True, include_expired=True)]
        if ids:
            await self._call(self._delete_all, user_key, ids)
        return len(ids)

    def _delete_all(self, user_key: str, ids: list[str]) -> None:
        self._erase_history(ids)
        try:
            self._mem0.delete_all(user_id=user_key)
            self._erase_history(ids)
        finally:
            if self._cache:
                self._cache.drop(user_key)

    # --- reads

    async def passages(self, text: str) -> list[str]:
        """`text` split into passages the embedder reads whole (see `memory/passages.py`)."""
        return await self._call(self._passages, text)

    def _passages(self, text: str) -> list[str]:
        model = self._mem0.embedding_model
        if hasattr(model, "count_tokens"):  # our OpenVINO and llama.cpp embedders
            tokens, limit = model.count_tokens, model.max_tokens
        else:  # sentence-transformers, through mem0's huggingface embedder
            encoder = model.model
            tokens, limit = (lambda t: len(encoder.tokenizer(t)["input_ids"])), encoder.max_seq_length

        def cost(passage: str) -> int:  # a word too long for the tokenizer is one unknown token, however long
            return max(tokens(passage), len(passage) // MAX_CHARS_PER_TOKEN)

        return split_passages(text, cost, limit - PASSAGE_MARGIN)

    async def find_passage(self, user_key: str, source: Source, passage: int) -> str | None:
        """The id of this passage of the user's message if it is stored (to store it once after a crash)."""
        found = await self._call(self._points, user_key, {"source_channel": source.channel,
                                                          "source_message_id": source.message_id, KIND: MESSAGE})
        return next((i for i, payload in found if payload.get(PASSAGE) == passage), None)

    def _points(self, user_key: str, filters: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(id, payload) of the user's points matching `filters` (mem0 filter syntax; only equality with the
        cache)."""
        if self._cache:
            return self._cache.points(user_key, lambda p: all(p.get(k) == v for k, v in filters.items()))
        rows = self._rows({"user_id": user_key, **filters})
        return [(str(row.id), dict(row.payload or {})) for row in rows]

    async def similarity(self, text: str, others: list[str]) -> list[float]:
        """Cosine similarity of `text` to each of `others`, fact to fact (stored vectors are anchored to
        their messages, so search scores do not say how alike two facts are)."""
        return await self._call(self._similarity, text, others)

    def _similarity(self, text: str, others: list[str]) -> list[float]:
        query = self._embed(text)
        return [float(np.dot(query, self._embed(other))) for other in others]

    async def get(self, user_key: str, memory_id: str) -> MemoryRecord | None:
        """The fact with this id if it belongs to `user_key`, else None (also for malformed ids)."""
        try:
            item = await self._call(self._mem0.get, memory_id)
        except (ValueError, StoreError) as exc:
            if isinstance(exc, StoreError) and not _looks_like_bad_id(exc):
                raise
            return None
        if not item or item.get("user_id") != user_key:
            return None
        return _record(item)

    async def search(
        self, user_key: str, query: str, limit: int, *, include_private: bool, min_score: float = 0.0,
        kinds: tuple[str, ...] = (FACT,),
    ) -> list[MemoryRecord]:
        """The user's current memories of these kinds (facts by default) most similar to `query`, best first."""
        return await self.recall(user_key, RecallQuery(query, channels=frozenset({DENSE})), limit,
                                 include_private=include_private, min_score=min_score, kinds=kinds)

    async def recall(
        self, user_key: str, query: RecallQuery, limit: int, *, include_private: bool, min_score: float = 0.0,
        kinds: tuple[str, ...] = KINDS, depth: int = 50,
    ) -> list[MemoryRecord]:
        """The user's current memories most relevant to `query` through its channels, fused (see
        `memory/recall.py`), best first. Each channel looks at its best `depth` (at least `limit`)."""
        return await self._call(self._recall, user_key, query, limit, include_private, min_score, kinds,
                                max(depth, limit))

    def _recall(self, user_key: str, query: RecallQuery, limit: int, include_private: bool, min_score: float,
                kinds: tuple[str, ...], depth: int) -> list[MemoryRecord]:
        vector = self._embed(query.text)
        user = self._channels(user_key, include_private, kinds, vector)
        hits = run_channels(user, query, depth if len(query.channels) > 1 else limit, min_score)
        return [_record_from_hit(hit) for hit in hits[:limit]]

    def _channels(self, user_key: str, include_private: bool, kinds: tuple[str, ...],
                  vector: np.ndarray) -> UserChannels:
        def keep(payload: dict[str, Any]) -> bool:
            return _is_current(payload, include_private) and payload.get(KIND, FACT) in kinds

        if self._cache:
            return self._cache.user(user_key, keep, vector)
        filters: dict[str, Any] = {"user_id": user_key}
        if not include_private:
            filters["source_private"] = False
        server_user = PgvectorUser if self._pgvector else ServerUser
        return server_user(self._mem0.vector_store, filters, keep, vector.tolist())

    async def profile(self, user_key: str, attributes: tuple[str, ...], *, include_private: bool
                      ) -> list[MemoryRecord]:
        """The user's current facts that fill one of these profile attributes, newest first."""
        # the cache holds the user's payloads anyway; a server filters on its side
        wanted = {} if self._cache else {ATTRIBUTE: {"in": list(attributes)}}
        found = await self._call(self._points, user_key, wanted)
        records = [_record_from_hit(Hit(i, p, float("nan"))) for i, p in found
                   if p.get(ATTRIBUTE) in attributes and _is_current(p, include_private)]
        records.sort(key=lambda r: r.updated_at or r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return records

    async def current(self, user_key: str, memory_ids: Sequence[str], *, include_private: bool
                      ) -> list[MemoryRecord]:
        """Those of these memories that are still the user's current ones (there, not superseded or expired and,
        unless `include_private`, not from a DM), in the order given."""
        return await self._call(self._current, user_key, list(memory_ids), include_private)

    def _current(self, user_key: str, memory_ids: list[str], include_private: bool) -> list[MemoryRecord]:
        if self._cache:
            payloads = dict(self._cache.points(user_key, lambda p: True))
        else:
            found = (self._mem0.vector_store.get(vector_id=i) for i in memory_ids)
            payloads = {str(row.id): dict(row.payload or {}) for row in found
                        if row is not None and (row.payload or {}).get("user_id") == user_key}
        return [_record_from_hit(Hit(i, payloads[i], float("nan"))) for i in memory_ids
                if i in payloads and _is_current(payloads[i], include_private)]

    async def list(
        self, user_key: str, *, include_superseded: bool = False, include_expired: bool = False,
        kinds: tuple[str, ...] = KINDS,
    ) -> list[MemoryRecord]:
        """All of the user's memories of these kinds, newest first."""
        result = await self._call(
            self._mem0.get_all, filters={"user_id": user_key}, top_k=self._config.max_list,
            show_expired=include_expired,
        )
        items = [i for i in result["results"] if (include_superseded or not _superseded(i))
                 and (i.get("metadata") or {}).get(KIND, FACT) in kinds]
        records = [_record(i) for i in items]
        records.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return records

    async def history(self, user_key: str, memory_id: str) -> list[dict[str, Any]]:
        if await self.get(user_key, memory_id) is None:
            return []
        return list(await self._call(self._mem0.history, memory_id))

    # --- the whole store, as it is (moving to another store: bot/transfer.py, memory/points.py)

    @property
    def dims(self) -> int:
        """The length of the vectors this store holds."""
        return int(getattr(self._mem0.vector_store, "embedding_model_dims", EMBEDDING_DIMS))

    @property
    def keeps_history(self) -> bool:
        """Whether mem0's version history is written (see `StoreConfig.keep_history`)."""
        return self._config.keep_history

    async def count_points(self) -> int:
        """How many memories the store holds, of every user and kind, superseded and expired ones included."""
        return await self._call(points.count, self._mem0.vector_store, self._config.provider)

    async def all_points(self, page_size: int = 256) -> AsyncIterator[list[points.Point]]:
        """Every stored memory with its vector and payload as stored, a page at a time (the store holds no more
        than a page in memory)."""
        after: Any = None
        while True:
            page, after = await self._call(points.read_page, self._mem0.vector_store, self._config.provider,
                                           after, page_size)
            if page:
                yield page
            if after is None:
                return

    async def insert_points(self, batch: list[points.Point]) -> int:
        """Store memories with their own ids, vectors and payloads, as they are (nothing is embedded again); an
        id the store holds already is left as it is. Returns how many were stored. Raises ValueError for a
        vector of another length than the store's."""
        for point in batch:
            if point.vector.shape != (self.dims,):
                raise ValueError(f"memory {point.id} has a vector of {point.vector.size} dimensions; "
                                 f"this store holds {self.dims}")
        return await self._call(self._insert_points, batch)

    def _insert_points(self, batch: list[points.Point]) -> int:
        vector_store = self._mem0.vector_store
        have = points.existing_ids(vector_store, self._config.provider, [p.id for p in batch])
        new = [p for p in batch if p.id not in have]
        try:
            points.insert(vector_store, new)
        finally:
            if self._cache and new:
                self._cache.drop()
        return len(new)

    async def history_rows(self, page_size: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        """mem0's version history of every memory, a page of rows at a time (nothing when none is kept)."""
        after = 0
        while True:
            page, after = await self._call(points.history_page, self._mem0.db, after, page_size)
            if not page:
                return
            yield page

    async def insert_history(self, rows: list[dict[str, Any]]) -> int:
        """Add mem0 history rows with their own ids (a row already there is left alone); how many were added.
        Nothing is written when no history is kept (`keeps_history`)."""
        if not self.keeps_history:
            return 0
        return await self._call(points.insert_history, self._mem0.db, rows)


class _RecentVectors:
    """mem0's embedder, answered from the store's recent vectors (`MemoryStore._embed`); all else passes through."""

    def __init__(self, embedder: Any, embed: Callable[[str], np.ndarray]) -> None:
        self._embedder = embedder
        self._recent = embed

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        return self._recent(text).tolist()

    def embed_batch(self, texts: list[str], memory_action: str | None = None) -> list[list[float]]:
        return [self.embed(text) for text in texts]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


def _close_mem0(mem0: Any) -> None:
    """mem0's close() leaves the vector store open; embedded Qdrant holds a folder lock until it is closed."""
    mem0.close()
    if hasattr(mem0.embedding_model, "close"):  # our embedders free their model
        mem0.embedding_model.close()
    client = getattr(mem0.vector_store, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def _superseded(item: dict[str, Any]) -> bool:
    return bool((item.get("metadata") or {}).get(SUPERSEDED_BY))


def _looks_like_bad_id(exc: Exception) -> bool:
    text = str(exc).lower()
    return "uuid" in text or "not found" in text or "invalid" in text


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _is_current(payload: dict[str, Any], include_private: bool) -> bool:
    """Whether a memory may be recalled: not superseded or expired and, unless `include_private`, not from a DM."""
    return not (payload.get(SUPERSEDED_BY) or expired(payload)
                or (payload.get("source_private") and not include_private))


def _record_from_hit(hit: Hit) -> MemoryRecord:
    """A record from a raw vector-store payload (mem0 keeps metadata keys at the top level of it)."""
    payload = hit.payload
    score = None if hit.score != hit.score else hit.score  # NaN: no similarity computed
    return _record({"id": hit.id, "memory": payload.get("data", ""), "created_at": payload.get("created_at"),
                    "updated_at": payload.get("updated_at"), "metadata": payload, "score": score})


def _record(item: dict[str, Any]) -> MemoryRecord:
    metadata = item.get("metadata") or {}
    return MemoryRecord(
        id=str(item["id"]),
        text=str(item.get("memory", "")),
        created_at=_parse_time(item.get("created_at")),
        updated_at=_parse_time(item.get("updated_at")),
        source=Source.from_metadata(metadata),
        score=item.get("score"),
        superseded_by=metadata.get(SUPERSEDED_BY),
        kind=str(metadata.get(KIND, FACT)),
        attribute=metadata.get(ATTRIBUTE),
    )
