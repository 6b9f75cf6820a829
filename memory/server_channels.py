"""Recall channels on a store server (PostgreSQL + pgvector, or a Qdrant server), run where the data lives.

Dense and time channels go through mem0's own vector-store search with payload filters (the time channel filters
on `source_ts`, the POSIX time the memory's source was said). The keyword and entity channels need full-text
search, which PostgreSQL has: an English text-search index over the memory text (created on start) ranked by
`ts_rank_cd`. mem0's own keyword search on pgvector requires every word of the query to match and reads a
spaCy-lemmatized field (spaCy is not installed), so it is not used; a Qdrant server has no full-text channel
here (mem0's BM25 vectors need a model from the hub), and recalls through dense and time alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from memory.recall import Hit, Keep
from memory.records import SOURCE_TS

TEXT_SEARCH_CONFIG = "english"


def create_text_index(vector_store: Any) -> None:
    """The full-text index recall's keyword channel uses on pgvector (idempotent; an existing table gets it)."""
    from psycopg import sql

    table = vector_store.collection_name
    if table not in vector_store.list_cols():  # mem0 creates its table on first use; the index needs it now
        vector_store.create_col()
    with vector_store.connection_pool.connection() as conn:
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin "
                             "(to_tsvector({}, coalesce(payload->>'data', '')))").format(
            sql.Identifier(f"{table}_text_{TEXT_SEARCH_CONFIG}"), sql.Identifier(table),
            sql.Literal(TEXT_SEARCH_CONFIG)))


class ServerUser:
    """`memory.recall.UserChannels` for one user on a store server, for one query vector. `filters` select the
    user's memories in scope (mem0 syntax); `keep` drops what the filters cannot (superseded, expired)."""

    def __init__(self, vector_store: Any, filters: dict[str, Any], keep: Keep, vector: list[float],
                 text_search: bool) -> None:
        self._store = vector_store
        self._filters = filters
        self._keep = keep
        self._vector = vector
        self._text_search = text_search

    def _search(self, filters: dict[str, Any], depth: int) -> list[Hit]:
        # Superseded and expired memories stay in the store; fetch extra so that `depth` remain.
        found = self._store.search(query="", vectors=self._vector, top_k=depth * 2, filters=filters)
        return [Hit(str(p.id), dict(p.payload or {}), float(p.score)) for p in found
                if self._keep(dict(p.payload or {}))][:depth]

    def dense(self, depth: int) -> list[Hit]:
        return self._search(self._filters, depth)

    def within(self, window: tuple[datetime, datetime], depth: int) -> list[Hit]:
        span = {SOURCE_TS: {"gte": window[0].timestamp(), "lt": window[1].timestamp()}}
        return self._search({**self._filters, **span}, depth)

    def keyword(self, terms: Sequence[str], depth: int) -> list[Hit]:
        if not self._text_search or not terms:
            return []
        from psycopg import sql

        conditions = ["payload->>'user_id' = %s"]
        args: list[Any] = [self._filters["user_id"]]
        if "source_private" in self._filters:
            conditions.append("payload->>'source_private' = 'false'")
        document = sql.SQL("to_tsvector({}, coalesce(payload->>'data', ''))").format(sql.Literal(TEXT_SEARCH_CONFIG))
        query = sql.SQL("websearch_to_tsquery({}, %s)").format(sql.Literal(TEXT_SEARCH_CONFIG))
        statement = sql.SQL(
            "SELECT id, 1 - (vector <=> %s::vector), payload FROM {table} WHERE {conditions} AND {doc} @@ {query} "
            "ORDER BY ts_rank_cd({doc}, {query}) DESC LIMIT %s"
        ).format(table=sql.Identifier(self._store.collection_name),
                 conditions=sql.SQL(" AND ".join(conditions)), doc=document, query=query)
        words = " or ".join(term.replace('"', " ") for term in terms)
        with self._store.connection_pool.connection() as conn:
            rows = conn.execute(statement, [self._vector, *args, words, words, depth * 2]).fetchall()
        hits = [Hit(str(row[0]), dict(row[2] or {}), float(row[1])) for row in rows]
        return [hit for hit in hits if self._keep(hit.payload)][:depth]
