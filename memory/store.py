"""`MemoryStore`: per-user facts in mem0, every call serialized on one dedicated thread.

Embedded Qdrant allows one client per folder and is not thread-safe (concurrent calls lost writes), and
the embedder and the store block, so all work runs on a single worker thread off the event loop. Facts
are stored as given (`infer=False`): extraction is the caller's job, mem0's LLM is never called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any, TypeVar

from memory.config import StoreConfig
from memory.records import MemoryRecord, Source

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Payload keys memorybot writes beside the source.
SUPERSEDED_BY = "superseded_by"


class StoreError(RuntimeError):
    """The memory store failed (unreachable server, broken files); the operation may be retried."""


class MemoryStore:
    """Async facade over one mem0 `Memory`. Open with `async with MemoryStore(config) as store`."""

    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-store")
        self._mem0: Any = None

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._mem0 = await self._call(self._config.create_mem0)

    async def close(self) -> None:
        if self._mem0 is not None:
            mem0, self._mem0 = self._mem0, None
            await asyncio.get_running_loop().run_in_executor(self._executor, mem0.close)
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
        created_at: datetime | None = None,
        expires_on: str | None = None,
    ) -> str:
        """Store one fact for `user_key`; return its id."""
        metadata = source.to_metadata()
        if created_at is not None:
            metadata["created_at"] = created_at.isoformat()
        result = await self._call(
            self._mem0.add,
            [{"role": "user", "content": text}],
            user_id=user_key,
            metadata=metadata,
            infer=False,
            expiration_date=expires_on,
        )
        return str(result["results"][0]["id"])

    async def update(self, user_key: str, memory_id: str, *, text: str | None = None,
                     metadata: dict[str, Any] | None = None) -> bool:
        """Change a fact's text or metadata; False if it does not exist or belongs to someone else."""
        if await self.get(user_key, memory_id) is None:
            return False
        await self._call(self._mem0.update, memory_id, text=text, metadata=metadata)
        return True

    async def delete(self, user_key: str, memory_id: str) -> bool:
        """Delete one fact; False if it does not exist or belongs to someone else."""
        if await self.get(user_key, memory_id) is None:
            return False
        await self._call(self._mem0.delete, memory_id)
        return True

    async def purge_expired(self) -> int:
        """Delete every memory, of any user, whose expiration date has passed; return how many."""
        return await self._call(self._purge_expired)

    def _purge_expired(self) -> int:
        today = date.today().isoformat()
        listed = self._mem0.vector_store.list(filters=None, top_k=self._config.max_purge_scan)
        rows = listed[0] if listed and isinstance(listed[0], list) else listed
        expired = [row.id for row in rows if str((row.payload or {}).get("expiration_date") or "9999") < today]
        for memory_id in expired:
            self._mem0.delete(str(memory_id))
        return len(expired)

    async def delete_all(self, user_key: str) -> int:
        count = len(await self.list(user_key, include_superseded=True, include_expired=True))
        if count:
            await self._call(self._mem0.delete_all, user_id=user_key)
        return count

    # --- reads

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
        self, user_key: str, query: str, limit: int, *, include_private: bool, min_score: float = 0.0
    ) -> list[MemoryRecord]:
        """The user's current facts most relevant to `query`, best first."""
        filters: dict[str, Any] = {"user_id": user_key}
        if not include_private:
            filters["source_private"] = False
        # Superseded facts stay in the store for history; fetch extra so they can be dropped here.
        result = await self._call(
            self._mem0.search, query, top_k=limit * 2, filters=filters, threshold=min_score
        )
        records = [_record(item) for item in result["results"] if not _superseded(item)]
        return records[:limit]

    async def list(
        self, user_key: str, *, include_superseded: bool = False, include_expired: bool = False
    ) -> list[MemoryRecord]:
        """All of the user's facts, newest first."""
        result = await self._call(
            self._mem0.get_all, filters={"user_id": user_key}, top_k=self._config.max_list,
            show_expired=include_expired,
        )
        items = [i for i in result["results"] if include_superseded or not _superseded(i)]
        records = [_record(i) for i in items]
        records.sort(key=lambda r: r.created_at or datetime.min.astimezone(), reverse=True)
        return records

    async def history(self, user_key: str, memory_id: str) -> list[dict[str, Any]]:
        if await self.get(user_key, memory_id) is None:
            return []
        return list(await self._call(self._mem0.history, memory_id))


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
    )
