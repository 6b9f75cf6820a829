"""Recall channels on a store server (PostgreSQL + pgvector, or a Qdrant server), run where the data lives.

On pgvector every channel is our own SQL over one user's rows, found through a btree index on the user id
(created on start, beside a full-text index over the memory text). mem0's search orders by the distance its HNSW
index serves, so the planner may take that index and filter what it hands back, the nearest vectors of all
users: on a large table without a user index it always does, with one for a user with many rows; that user's
search then gets few or none of their own nearest memories (issue 18, bench/README.md). Ranking by similarity,
an expression no index serves, leaves one kind of plan: the user's rows (through the user index), ranked
exactly. The filters and the score (1 - cosine distance) are mem0's. The keyword and entity channels use
PostgreSQL's English full-text search ranked by `ts_rank_cd` (mem0's requires every word of the query to match
and reads a spaCy-lemmatized field; spaCy is not installed). The time channel filters on `source_ts`, the POSIX
time the memory's source was said.

A Qdrant server goes through mem0's search: mem0 gives a server collection a keyword payload index on `user_id`,
which Qdrant's planner uses for a filtered search. It has no full-text channel here (mem0's BM25 vectors need a
model from the hub), and recalls through dense and time alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from memory.recall import Hit, Keep
from memory.records import SOURCE_TS

TEXT_SEARCH_CONFIG = "english"
_RANGE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}  # mem0's range operators, compared as numbers
# Rows up to this size stay whole in their page. PostgreSQL's default (2 KB) moves a 384-dimension vector
# (1.5 KB) out to the TOAST table once the payload passes ~0.5 KB, and each vector a search reads then costs a
# second lookup; this keeps a vector and a payload of up to ~2.5 KB in the row.
ROW_BYTES = 4080


def prepare_table(vector_store: Any) -> None:
    """What recall on pgvector needs of mem0's table (idempotent; an existing table gets it, its rows written
    earlier keep their layout until rewritten): rows kept whole (`ROW_BYTES`), an index on the user id, so that
    a search reads only that user's rows, and the full-text index of the keyword channel."""
    from psycopg import sql

    table = vector_store.collection_name
    if table not in vector_store.list_cols():  # mem0 creates its table on first use; it is needed now
        vector_store.create_col()
    with vector_store.connection_pool.connection() as conn:
        conn.execute(sql.SQL("ALTER TABLE {} SET (toast_tuple_target = {})").format(
            sql.Identifier(table), sql.Literal(ROW_BYTES)))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ((payload->>'user_id'))").format(
            sql.Identifier(f"{table}_user_id"), sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin "
                             "(to_tsvector({}, coalesce(payload->>'data', '')))").format(
            sql.Identifier(f"{table}_text_{TEXT_SEARCH_CONFIG}"), sql.Identifier(table),
            sql.Literal(TEXT_SEARCH_CONFIG)))


def conditions(filters: dict[str, Any]) -> tuple[Any, list[Any]]:
    """mem0's payload filters (equality, a boolean as JSON, a numeric range) as an SQL condition and its
    arguments. Each key is written into the SQL text, as in the user-id index's expression, so that the index
    matches in every plan, a prepared statement's generic one too (mem0 passes keys as parameters)."""
    from psycopg import sql

    parts, args = [], []
    for key, value in filters.items():
        field = sql.SQL("payload->>{}").format(sql.Literal(key))
        if isinstance(value, dict):
            for op, bound in value.items():
                if op not in _RANGE:
                    raise ValueError(f"unsupported filter operator {op!r}")
                parts.append(sql.SQL("({})::numeric {} %s").format(field, sql.SQL(_RANGE[op])))
                args.append(float(bound))
        else:
            parts.append(sql.SQL("{} = %s").format(field))
            args.append(json.dumps(value) if isinstance(value, bool) else str(value))
    return sql.SQL(" AND ").join(parts), args


def nearest(table: str, filters: dict[str, Any], vector: list[float], limit: int) -> tuple[Any, list[Any]]:
    """The statement (and its arguments) of the `limit` rows matching `filters` most similar to `vector`, exact:
    ranked by similarity, which the HNSW index cannot serve, so the planner selects by the filters' indexes.
    Only the best rows' payloads are read out (carrying every candidate's through the ranking costs more)."""
    from psycopg import sql

    where, args = conditions(filters)
    statement = sql.SQL(
        "WITH best AS MATERIALIZED (SELECT id, 1 - (vector <=> %s::vector) AS similarity FROM {table} "
        "WHERE {where} ORDER BY similarity DESC LIMIT %s) "
        "SELECT best.id, best.similarity, {table}.payload FROM best JOIN {table} USING (id) "
        "ORDER BY best.similarity DESC"
    ).format(table=sql.Identifier(table), where=where)
    return statement, [vector, *args, limit]


def matching(table: str, filters: dict[str, Any], vector: list[float], words: str, limit: int
             ) -> tuple[Any, list[Any]]:
    """The statement (and its arguments) of the `limit` rows matching `filters` whose text matches `words` (web
    search syntax) best, with their similarity to `vector`."""
    from psycopg import sql

    where, args = conditions(filters)
    document = sql.SQL("to_tsvector({}, coalesce(payload->>'data', ''))").format(sql.Literal(TEXT_SEARCH_CONFIG))
    query = sql.SQL("websearch_to_tsquery({}, %s)").format(sql.Literal(TEXT_SEARCH_CONFIG))
    statement = sql.SQL(
        "SELECT id, 1 - (vector <=> %s::vector), payload FROM {table} WHERE {where} AND {doc} @@ {query} "
        "ORDER BY ts_rank_cd({doc}, {query}) DESC LIMIT %s"
    ).format(table=sql.Identifier(table), where=where, doc=document, query=query)
    return statement, [vector, *args, words, words, limit]


class ServerUser:
    """`memory.recall.UserChannels` for one user on a Qdrant server, for one query vector, through mem0's
    search. `filters` select the user's memories in scope (mem0 syntax); `keep` drops what the filters cannot
    (superseded, expired)."""

    def __init__(self, vector_store: Any, filters: dict[str, Any], keep: Keep, vector: list[float]) -> None:
        self._store = vector_store
        self._filters = filters
        self._keep = keep
        self._vector = vector

    def _found(self, filters: dict[str, Any], limit: int) -> list[Hit]:
        found = self._store.search(query="", vectors=self._vector, top_k=limit, filters=filters)
        return [Hit(str(p.id), dict(p.payload or {}), float(p.score)) for p in found]

    def _search(self, filters: dict[str, Any], depth: int) -> list[Hit]:
        # Superseded and expired memories stay in the store; fetch extra so that `depth` remain.
        return [hit for hit in self._found(filters, depth * 2) if self._keep(hit.payload)][:depth]

    def dense(self, depth: int) -> list[Hit]:
        return self._search(self._filters, depth)

    def within(self, window: tuple[datetime, datetime], depth: int) -> list[Hit]:
        span = {SOURCE_TS: {"gte": window[0].timestamp(), "lt": window[1].timestamp()}}
        return self._search({**self._filters, **span}, depth)

    def keyword(self, terms: Sequence[str], depth: int) -> list[Hit]:
        return []


class PgvectorUser(ServerUser):
    """`memory.recall.UserChannels` for one user on PostgreSQL + pgvector: the same channels in our own SQL,
    every one reading only the user's rows (see the module's docstring). `filters` must name the user."""

    def _rows(self, statement: Any, args: list[Any]) -> list[Any]:
        with self._store.connection_pool.connection() as conn:
            return conn.execute(statement, args).fetchall()

    def _found(self, filters: dict[str, Any], limit: int) -> list[Hit]:
        rows = self._rows(*nearest(self._store.collection_name, filters, self._vector, limit))
        return [Hit(str(row[0]), dict(row[2] or {}), max(0.0, float(row[1]))) for row in rows]  # as mem0 scores

    def keyword(self, terms: Sequence[str], depth: int) -> list[Hit]:
        if not terms:
            return []
        words = " or ".join(term.replace('"', " ") for term in terms)
        rows = self._rows(*matching(self._store.collection_name, self._filters, self._vector, words, depth * 2))
        hits = [Hit(str(row[0]), dict(row[2] or {}), float(row[1])) for row in rows]
        return [hit for hit in hits if self._keep(hit.payload)][:depth]
