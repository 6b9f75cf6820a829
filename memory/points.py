"""A whole store's points (id, vector, payload) and mem0's history rows, a page at a time, and points written back
with their own ids and vectors: what `bot/transfer.py` moves from one store to another.

mem0's `vector_store.list` returns no vectors and has no offset (one call, at most `top_k` points), so pages are
read here, per provider: Qdrant (embedded or server) with `scroll` from the last page's offset, pgvector with SQL
ordered by id from the last id seen. Writes go through mem0's `vector_store.insert`, as mem0's own adds do. The
history rows are mem0's SQLite `history` table (`mem0/memory/storage.py`), read and written on its lock.

Everything here blocks: `MemoryStore` calls it on its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

HISTORY_COLUMNS = ("id", "memory_id", "old_memory", "new_memory", "event", "created_at", "updated_at",
                   "is_deleted", "actor_id", "role")


@dataclass(frozen=True)
class Point:
    """One stored memory as the vector store holds it: its id, its vector (float32, as stored: anchored vectors
    are not the embedding of the text) and its payload (mem0's fields and memorybot's, as stored)."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]


def read_page(vector_store: Any, provider: str, after: Any, size: int) -> tuple[list[Point], Any]:
    """Up to `size` points following the page that ended at `after` (None: from the start), and where the next
    page starts (None: none left)."""
    if provider == "pgvector":
        return _pgvector_page(vector_store, after, size)
    records, offset = vector_store.client.scroll(collection_name=vector_store.collection_name, limit=size,
                                                 offset=after, with_payload=True, with_vectors=True)
    return [Point(str(r.id), _dense(r.vector), dict(r.payload or {})) for r in records], offset


def _pgvector_page(vector_store: Any, after: str | None, size: int) -> tuple[list[Point], str | None]:
    from psycopg import sql

    table = sql.Identifier(vector_store.collection_name)
    where = sql.SQL("WHERE id > %s::uuid") if after else sql.SQL("")
    statement = sql.SQL("SELECT id::text, vector::real[], payload FROM {} {} ORDER BY id LIMIT %s").format(table, where)
    with vector_store.connection_pool.connection() as conn:
        rows = conn.execute(statement, [after, size] if after else [size]).fetchall()
    points = [Point(str(r[0]), np.asarray(r[1], dtype=np.float32), dict(r[2] or {})) for r in rows]
    return points, (points[-1].id if len(points) == size else None)


def _dense(vector: Any) -> np.ndarray:
    """The dense vector of a Qdrant point (mem0's collections may also hold a named sparse `bm25` vector)."""
    if isinstance(vector, dict):
        vector = next(v for v in vector.values() if isinstance(v, list))
    return np.asarray(vector, dtype=np.float32)


def existing_ids(vector_store: Any, provider: str, ids: list[str]) -> set[str]:
    """Which of `ids` the store holds."""
    if not ids:
        return set()
    if provider == "pgvector":
        from psycopg import sql

        statement = sql.SQL("SELECT id::text FROM {} WHERE id = ANY(%s::uuid[])").format(
            sql.Identifier(vector_store.collection_name))
        with vector_store.connection_pool.connection() as conn:
            return {str(row[0]) for row in conn.execute(statement, [ids]).fetchall()}
    found = vector_store.client.retrieve(collection_name=vector_store.collection_name, ids=ids,
                                         with_payload=False, with_vectors=False)
    return {str(record.id) for record in found}


def count(vector_store: Any, provider: str) -> int:
    """How many points the store holds (every user's)."""
    if provider == "pgvector":
        from psycopg import sql

        statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(vector_store.collection_name))
        with vector_store.connection_pool.connection() as conn:
            return int(conn.execute(statement).fetchone()[0])
    return int(vector_store.client.count(collection_name=vector_store.collection_name, exact=True).count)


def insert(vector_store: Any, points: list[Point]) -> None:
    """Write `points` as they are: their ids, vectors and payloads (the caller left out ids already stored)."""
    if points:
        vector_store.insert(vectors=[p.vector.astype(np.float32).tolist() for p in points],
                            payloads=[p.payload for p in points], ids=[p.id for p in points])


def history_page(history: Any, after: int, size: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `size` rows of mem0's history after SQLite row `after` (0: from the start), in the order written,
    and the row the next page starts after."""
    with history._lock:
        rows = history.connection.execute(
            f"SELECT rowid, {', '.join(HISTORY_COLUMNS)} FROM history WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, size)).fetchall()
    return [dict(zip(HISTORY_COLUMNS, row[1:], strict=True)) for row in rows], (int(rows[-1][0]) if rows else after)


def insert_history(history: Any, rows: list[dict[str, Any]]) -> int:
    """Add history rows with their own ids; a row whose id is there already is left alone. How many were added."""
    with history._lock:
        before = history.connection.total_changes
        try:
            history.connection.executemany(
                f"INSERT OR IGNORE INTO history ({', '.join(HISTORY_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(HISTORY_COLUMNS))})",
                [tuple(row.get(column) for column in HISTORY_COLUMNS) for row in rows])
            history.connection.commit()
        except BaseException:
            history.connection.rollback()
            raise
        return history.connection.total_changes - before
