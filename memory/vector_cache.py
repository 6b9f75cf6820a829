"""Fast recall on embedded Qdrant: each recently active user's memories held in memory, searchable by every
recall channel.

Embedded Qdrant evaluates payload filters in Python, point by point, so a search filtered to one user costs time
in proportion to everyone's memories (far over recall's budget at 10,000; bench/README.md). Recall only ever
looks at one user's memories, so the store loads a user's points once (one filtered scroll) into a numpy matrix
and answers a dense search with one matrix product.
The same load fills an in-memory SQLite FTS5 index of the user's texts (keyword and entity channels, BM25) and
an array of the times they were said (time channel). Every write goes through `MemoryStore`, which keeps the
cache in step; nothing of it is written to disk, so a forgotten memory leaves no copy behind. Qdrant and
Postgres servers index their filters, so the store uses this cache for embedded Qdrant only.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np

from memory.recall import Hit, Keep, match_expression
from memory.records import SOURCE_TS


def unit(vector: Any) -> np.ndarray:
    """`vector` as float32 scaled to length 1 (a zero vector stays zero)."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm else array


def said_at(payload: dict[str, Any]) -> float:
    """When the memory's source was said, as a POSIX timestamp (NaN if unknown)."""
    value = payload.get(SOURCE_TS)
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(payload.get("source_time", ""))).timestamp()
    except ValueError:
        return float("nan")


class _UserPoints:
    """One user's points: ids, payloads, unit vectors, said-at times, and an FTS5 index of their texts."""

    def __init__(self, ids: list[str], payloads: list[dict[str, Any]], vectors: list[np.ndarray]) -> None:
        self.ids: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.times = np.zeros(0, dtype=np.float64)
        self._index: dict[str, int] = {}
        self._text = sqlite3.connect(":memory:")  # used only from the store's thread, like the whole cache
        self._text.execute("CREATE VIRTUAL TABLE docs USING fts5(body, point UNINDEXED, "
                           "tokenize='porter unicode61 remove_diacritics 2')")
        if ids:
            self.ids, self.payloads = list(ids), list(payloads)
            self.vectors = np.vstack(vectors)
            self.times = np.array([said_at(p) for p in payloads], dtype=np.float64)
            self._index = {point_id: i for i, point_id in enumerate(ids)}
            self._text.executemany("INSERT INTO docs (body, point) VALUES (?, ?)",
                                   [(str(p.get("data", "")), i) for i, p in zip(ids, payloads, strict=True)])

    def put(self, point_id: str, payload: dict[str, Any], vector: np.ndarray) -> None:
        self.remove(point_id)
        self._index[point_id] = len(self.ids)
        self.ids.append(point_id)
        self.payloads.append(payload)
        row = vector.reshape(1, -1)
        self.vectors = row if self.vectors.size == 0 else np.vstack([self.vectors, row])
        self.times = np.append(self.times, said_at(payload))
        self._text.execute("INSERT INTO docs (body, point) VALUES (?, ?)", (str(payload.get("data", "")), point_id))

    def remove(self, point_id: str) -> None:
        i = self._index.get(point_id)
        if i is None:
            return
        del self.ids[i]
        del self.payloads[i]
        self.vectors = np.delete(self.vectors, i, axis=0)
        self.times = np.delete(self.times, i)
        self._index = {p: j for j, p in enumerate(self.ids)}
        self._text.execute("DELETE FROM docs WHERE point = ?", (point_id,))

    def close(self) -> None:
        self._text.close()

    def ranked(self, scores: np.ndarray, order: Sequence[int] | np.ndarray, keep: Keep, depth: int) -> list[Hit]:
        """The first `depth` points in `order` that `keep` admits, with their similarity from `scores`."""
        found = []
        for i in order:
            if keep(self.payloads[i]):
                found.append(Hit(self.ids[i], self.payloads[i], float(scores[i])))
                if len(found) == depth:
                    break
        return found

    def keyword(self, terms: Sequence[str], depth: int) -> list[int]:
        """Indexes of the points whose text matches any term, best BM25 first (at most `depth` * 4)."""
        match = match_expression(terms)
        if match is None:
            return []
        try:
            rows = self._text.execute("SELECT point FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?",
                                      (match, depth * 4)).fetchall()
        except sqlite3.OperationalError:  # a term FTS5 cannot parse: no keyword hits, dense recall still works
            return []
        return [self._index[row[0]] for row in rows if row[0] in self._index]


class CachedUser:
    """`memory.recall.UserChannels` over one cached user for one query vector: every channel, with `keep`
    deciding what may be recalled (current, unexpired, in scope)."""

    def __init__(self, points: _UserPoints, keep: Keep, vector: Any) -> None:
        self._points = points
        self._keep = keep
        self._scores = points.vectors @ unit(vector) if points.ids else np.zeros(0, dtype=np.float32)

    def dense(self, depth: int) -> list[Hit]:
        return self._points.ranked(self._scores, np.argsort(-self._scores), self._keep, depth)

    def keyword(self, terms: Sequence[str], depth: int) -> list[Hit]:
        return self._points.ranked(self._scores, self._points.keyword(terms, depth), self._keep, depth)

    def within(self, window: tuple[datetime, datetime], depth: int) -> list[Hit]:
        start, end = window[0].timestamp(), window[1].timestamp()
        inside = np.flatnonzero((self._points.times >= start) & (self._points.times < end))
        return self._points.ranked(self._scores, inside[np.argsort(-self._scores[inside])], self._keep, depth)


class VectorCache:
    """Per-user points of one embedded-Qdrant collection. Not thread-safe: call it from the store's thread."""

    def __init__(self, client: Any, collection: str, max_users: int = 256) -> None:
        probe = sqlite3.connect(":memory:")
        try:  # some Python builds leave FTS5 out of SQLite: say so at start, not at every recall
            probe.execute("CREATE VIRTUAL TABLE probe USING fts5(body)")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("this Python's SQLite has no FTS5, which keyword recall needs") from exc
        finally:
            probe.close()
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
        points = self._users[user_key] = _UserPoints(ids, payloads, vectors)
        while len(self._users) > self._max_users:
            self._users.popitem(last=False)[1].close()
        return points

    def user(self, user_key: str, keep: Keep, vector: Any) -> CachedUser:
        """The user's memories as recall channels for the query `vector` (loaded on first use)."""
        return CachedUser(self._load(user_key), keep, vector)

    def points(self, user_key: str, keep: Keep) -> list[tuple[str, dict[str, Any]]]:
        """(id, payload) of every point of the user for which `keep(payload)`."""
        points = self._load(user_key)
        return [(i, p) for i, p in zip(points.ids, points.payloads, strict=True) if keep(p)]

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
        dropped = list(self._users.values()) if user_key is None else [self._users.pop(user_key, None)]
        if user_key is None:
            self._users.clear()
        for points in dropped:
            if points is not None:
                points.close()


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
