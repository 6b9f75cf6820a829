"""Fast recall on embedded Qdrant: each recently active user's vectors and payloads, held in memory.

Embedded Qdrant evaluates payload filters in Python, point by point: with 10,000 memories stored, one
search filtered to a user took 0.4–0.7 s here. Recall only ever looks at one user's memories, so the store
loads a user's points once (one filtered scroll) into a numpy matrix and answers searches with one matrix
product. Every write goes through `MemoryStore`, which keeps the cache in step. Qdrant and Postgres servers
index their filters, so the store uses this cache for embedded Qdrant only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np


@dataclass
class _UserPoints:
    ids: list[str] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def put(self, point_id: str, payload: dict[str, Any], vector: np.ndarray) -> None:
        if point_id in self.ids:
            self.remove(point_id)
        self.ids.append(point_id)
        self.payloads.append(payload)
        row = vector.reshape(1, -1)
        self.vectors = row if self.vectors.size == 0 else np.vstack([self.vectors, row])

    def remove(self, point_id: str) -> None:
        if point_id not in self.ids:
            return
        i = self.ids.index(point_id)
        del self.ids[i]
        del self.payloads[i]
        self.vectors = np.delete(self.vectors, i, axis=0)


def unit(vector: Any) -> np.ndarray:
    """`vector` as float32 scaled to length 1 (a zero vector stays zero)."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm else array


class VectorCache:
    """Per-user points of one embedded-Qdrant collection. Not thread-safe: call it from the store's thread."""

    def __init__(self, client: Any, collection: str, max_users: int = 256) -> None:
        self._client = client
        self._collection = collection
        self._max_users = max_users
        self._users: OrderedDict[str, _UserPoints] = OrderedDict()

    def _load(self, user_key: str) -> _UserPoints:
        from qdrant_client import models

        if user_key in self._users:
            self._users.move_to_end(user_key)
            return self._users[user_key]
        user_filter = models.Filter(must=[models.FieldCondition(key="user_id",
                                                                match=models.MatchValue(value=user_key))])
        ids, payloads, vectors = [], [], []
        offset = None
        while True:
            batch, offset = self._client.scroll(self._collection, scroll_filter=user_filter, limit=1024,
                                                offset=offset, with_payload=True, with_vectors=True)
            for point in batch:
                ids.append(str(point.id))
                payloads.append(dict(point.payload or {}))
                vectors.append(unit(_dense(point.vector)))
            if offset is None:
                break
        matrix = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        points = self._users[user_key] = _UserPoints(ids, payloads, matrix)
        while len(self._users) > self._max_users:
            self._users.popitem(last=False)
        return points

    def search(self, user_key: str, query_vector: Any, limit: int,
               keep: Any) -> list[tuple[str, dict[str, Any], float]]:
        """The best `limit` (id, payload, cosine score) of the user's points for which `keep(payload)`."""
        points = self._load(user_key)
        if not points.ids:
            return []
        scores = points.vectors @ unit(query_vector)
        found = []
        for i in np.argsort(-scores):
            if keep(points.payloads[i]):
                found.append((points.ids[i], points.payloads[i], float(scores[i])))
                if len(found) == limit:
                    break
        return found

    def refresh(self, user_key: str, point_id: str) -> None:
        """Re-read one point after it was added or changed (only if that user is loaded)."""
        if user_key not in self._users:
            return
        records = self._client.retrieve(self._collection, ids=[point_id], with_payload=True, with_vectors=True)
        for record in records:
            self._users[user_key].put(str(record.id), dict(record.payload or {}), unit(_dense(record.vector)))

    def remove(self, user_key: str, point_id: str) -> None:
        if user_key in self._users:
            self._users[user_key].remove(point_id)

    def drop(self, user_key: str | None = None) -> None:
        """Forget one user's points, or everybody's."""
        if user_key is None:
            self._users.clear()
        else:
            self._users.pop(user_key, None)


def _dense(vector: Any) -> Any:
    """The dense vector of a point (mem0's collections also hold a named sparse `bm25` vector)."""
    if isinstance(vector, dict):
        return next(v for v in vector.values() if isinstance(v, list))
    return vector


def expired(payload: dict[str, Any], today: date | None = None) -> bool:
    value = payload.get("expiration_date")
    if not value:
        return False
    try:
        return date.fromisoformat(str(value)) < (today or date.today())
    except ValueError:
        return False
