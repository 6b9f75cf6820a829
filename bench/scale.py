"""Recall at scale: many users' memories in one store, one user's search (issue 18).

    .venv/bin/python bench/scale.py [--sizes 100000,1000000] [--embedded-sizes 10000,100000] [--queries 500]
        [--topics 1000] [--mem0-layout] [--pg-install DIR] [--quick] [--out bench/results/scale.json]

Synthetic memories, no model: random unit vectors of 384 dimensions around `--topics` shared centres (a user
talks about five, a heavy user about fifty, so other users' memories of the same topics are the near neighbours
a search must see past; 0: spread evenly), with the payload memorybot stores (user id, text, kind, source fields,
`source_private`, `source_ts`). Each user's memories are a function of the seed and the user, so the exact
answer is recomputed in numpy, never read back. Most users have `--per-user` memories; two heavy users have 1%
of the table each (at most `--heavy-size`).

PostgreSQL + pgvector (a throwaway server from tests/servers/postgres.py; `--pg-install` names another build
of its `pginstall` folder, e.g. with a newer pgvector): the rows go straight into mem0's table with binary COPY
(users' rows interleaved, as written over time; the table's rows kept whole as `prepare_table` sets a new table
up, or as mem0 leaves them with `--mem0-layout`), then the indexes a memorybot table has are built (mem0's HNSW
and text index, memorybot's text index), timed. Then, per method, warm, for `--queries` random users and 40
queries of the heavy users: latency of a top-10 search and recall@10 against the exact top 10 of the user's rows:

- mem0's search as it is (HNSW ordered, filtered after), with `hnsw.ef_search` raised to its maximum, and with
  iterative index scans (pgvector 0.8 and later; strict and relaxed order);
- the user-id index made as `MemoryStore.open` makes it (timed), then mem0's search again and memorybot's
  (`memory/server_channels.py`: the user's rows through that index, ranked exactly), its time channel too;
- the write path: `MemoryStore.add` of facts anchored to a message (a stub embedder, so the store's own cost),
  and `MemoryStore.profile` (the reply path's other read), on the full table.

Embedded Qdrant (the default store) on a temporary folder through `memory/vector_cache.py`, as the store
recalls: a user's first search loads the user (cold), later ones are warm.

Prints a table, writes JSON (`--out`) and a PNG of p95 against size beside it. Peak resident memory of this
process, and of the server (its processes' own memory plus the largest shared part, sampled).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is first imported, as memory/config.py sets it
os.environ.setdefault("MEM0_DIR", str(Path(tempfile.gettempdir()) / "memorybot-bench-mem0"))

from memory.config import COLLECTION, EMBEDDING_DIMS, StoreConfig  # noqa: E402
from memory.recall import Hit  # noqa: E402
from memory.records import ATTRIBUTE, FACT, KIND, MESSAGE, Source  # noqa: E402
from memory.server_channels import ROW_BYTES, PgvectorUser, nearest, prepare_table  # noqa: E402
from memory.store import MemoryStore  # noqa: E402
from memory.vector_cache import VectorCache  # noqa: E402
from tests.servers import postgres  # noqa: E402

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
TOPICS_PER_USER, TOPICS_PER_HEAVY_USER = 5, 50
SPREAD = 0.8  # noise against a topic's centre: two memories of one topic are ~0.6 alike, of two topics ~0
BLOCK_USERS = 500  # users written (interleaved) per COPY block
K = 10
TARGET_P95_MS, TARGET_RECALL = 50.0, 0.99


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Corpus:
    """`total` synthetic memories: users 0 and 1 heavy, every other user `per_user`; around `topics` shared
    centres (0: spread evenly over the sphere, no neighbourhoods)."""

    total: int
    per_user: int
    heavy_size: int
    topics: int = 1000
    seed: int = 7
    heavy: int = 2

    @property
    def heavy_count(self) -> int:
        return min(self.heavy_size, self.total // 100)

    @property
    def users(self) -> int:
        return self.heavy + (self.total - self.heavy * self.heavy_count) // self.per_user

    def size(self, user: int) -> int:
        return self.heavy_count if user < self.heavy else self.per_user

    def key(self, user: int) -> str:
        return f"discord:g{user % 50}:u{user}"

    def centres(self) -> np.ndarray:
        if not self.topics:
            return np.zeros((1, EMBEDDING_DIMS), dtype=np.float32)
        return unit_rows(np.random.default_rng(self.seed).normal(size=(self.topics, EMBEDDING_DIMS)))

    def topics_of(self, user: int) -> np.ndarray:
        """The topics a user talks about (a heavy user about more of them)."""
        if not self.topics:
            return np.zeros(1, dtype=np.int64)
        count = TOPICS_PER_HEAVY_USER if user < self.heavy else TOPICS_PER_USER
        return np.random.default_rng([self.seed, user, 0]).choice(self.topics, count, replace=False)

    def near(self, centres: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` unit vectors around these centres (anywhere, without topics)."""
        scale = SPREAD / np.sqrt(EMBEDDING_DIMS) if self.topics else 1.0
        return unit_rows(centres + rng.normal(size=(count, EMBEDDING_DIMS)) * scale)

    def rows(self, user: int, centres: np.ndarray) -> tuple[list[uuid.UUID], np.ndarray, list[dict[str, Any]]]:
        """The user's memories: ids, unit vectors, payloads (the same for the same seed and user)."""
        rng = np.random.default_rng([self.seed, user])
        count = self.size(user)
        mine = self.topics_of(user)
        topics = mine[rng.integers(0, len(mine), count)]
        vectors = self.near(centres[topics], rng, count)
        ids = [uuid.UUID(bytes=bytes(b), version=4) for b in rng.integers(0, 256, (count, 16), dtype=np.uint8)]
        days = rng.uniform(0, 365, count)
        private = rng.random(count) < 0.1
        words = rng.integers(0, 5000, (count, 8))
        payloads = [self.payload(user, i, int(topics[i]), float(days[i]), bool(private[i]), words[i])
                    for i in range(count)]
        return ids, vectors, payloads

    def payload(self, user: int, i: int, topic: int, days_ago: float, private: bool, words: np.ndarray
                ) -> dict[str, Any]:
        said = NOW - timedelta(days=days_ago)
        text = f"The user said topic {topic} " + " ".join(f"word{w}" for w in words) + f" (note {i})."
        source = Source(platform="discord", workspace=f"g{user % 50}", channel=f"c{user % 7}",
                        message_id=f"m{user}-{i // 2}", link=None, time=said.isoformat(), private=private)
        return {"data": text, "hash": hashlib.md5(text.encode()).hexdigest(), "user_id": self.key(user),
                "role": "user", "created_at": said.isoformat(), "updated_at": said.isoformat(),
                "text_lemmatized": text, KIND: FACT if i % 2 else MESSAGE, **source.to_metadata()}

    def query(self, user: int, n: int, centres: np.ndarray) -> np.ndarray:
        """The n-th query of a user: near the centre of one of the user's topics."""
        rng = np.random.default_rng([self.seed, user, n + 1])
        return self.near(centres[[rng.choice(self.topics_of(user))]], rng, 1)[0]

    def blocks(self, centres: np.ndarray) -> Iterator[tuple[list[uuid.UUID], np.ndarray, list[dict[str, Any]]]]:
        """Every memory, in blocks of interleaved users (heavy users' memories spread over all blocks)."""
        normal = list(range(self.heavy, self.users))
        starts = range(0, len(normal), BLOCK_USERS)
        heavy = [self.rows(user, centres) for user in range(self.heavy)]
        for b, start in enumerate(starts):
            parts = [self.rows(user, centres) for user in normal[start:start + BLOCK_USERS]]
            for ids, vectors, payloads in heavy:
                share = slice(b * len(ids) // len(starts), (b + 1) * len(ids) // len(starts))
                parts.append((ids[share], vectors[share], payloads[share]))
            ids = [i for part in parts for i in part[0]]
            vectors = np.vstack([part[1] for part in parts])
            payloads = [p for part in parts for p in part[2]]
            order = np.random.default_rng([self.seed, 99, b]).permutation(len(ids))
            yield [ids[i] for i in order], vectors[order], [payloads[i] for i in order]


def copy_data(ids: list[uuid.UUID], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> bytes:
    """Rows in PostgreSQL's binary COPY format (no header): uuid, vector (pgvector's binary form), jsonb."""
    dims = vectors.shape[1]
    big = vectors.astype(">f4")
    vector_head = struct.pack(">ihh", 4 + 4 * dims, dims, 0)
    parts = []
    for point_id, vector, payload in zip(ids, big, payloads, strict=True):
        document = json.dumps(payload).encode()
        parts += [b"\x00\x03\x00\x00\x00\x10", point_id.bytes, vector_head, vector.tobytes(),
                  struct.pack(">ib", len(document) + 1, 1), document]
    return b"".join(parts)


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)


class ServerMemory:
    """Samples the server's memory: its processes' own (anonymous) memory summed, plus the largest shared part
    (shared buffers, and the HNSW graph of a parallel build), every 0.25 s; `peak_mb` is the largest seen."""

    def __init__(self, postmaster: int) -> None:
        self._postmaster = postmaster
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_mb = max(self.peak_mb, self.now_mb())

    def now_mb(self) -> float:
        own, shared = 0, 0
        for pid in [self._postmaster, *children(self._postmaster)]:
            fields = status(pid)
            own += fields.get("RssAnon", 0)
            shared = max(shared, fields.get("RssShmem", 0))
        return (own + shared) / 1024

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def status(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.endswith(" kB")}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Query:
    key: str
    vector: np.ndarray
    best: list[str]  # the exact top K of the user's rows
    heavy: bool


def make_queries(corpus: Corpus, centres: np.ndarray, count: int, heavy_count: int) -> list[Query]:
    rng = random.Random(corpus.seed)
    normal = range(corpus.heavy, corpus.users)
    users = rng.sample(normal, min(count, len(normal)))  # distinct users while there are enough
    users += [rng.choice(normal) for _ in range(count - len(users))]
    users += [i % corpus.heavy for i in range(heavy_count)]
    queries = []
    for n, user in enumerate(users):
        ids, vectors, _ = corpus.rows(user, centres)
        vector = corpus.query(user, n, centres)
        best = np.argsort(-(vectors @ vector))[:K]
        queries.append(Query(corpus.key(user), vector, [str(ids[i]) for i in best], user < corpus.heavy))
    return queries


Search = Callable[[str, list[float]], list[str]]


def measure(search: Search, queries: list[Query], warmup: int = 50) -> dict[str, Any]:
    """Latency and recall@K of `search` over the queries, after `warmup` untimed ones; the heavy users apart."""
    for query in queries[:warmup]:
        search(query.key, query.vector.tolist())
    result: dict[str, Any] = {}
    for label, heavy in (("users", False), ("heavy", True)):
        times, recalls = [], []
        for query in (q for q in queries if q.heavy == heavy):
            vector = query.vector.tolist()
            started = time.perf_counter()
            found = search(query.key, vector)
            times.append((time.perf_counter() - started) * 1000)
            recalls.append(len(set(found[:K]) & set(query.best)) / K)
        if times:
            result[label] = {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(pct(times, 0.95), 2),
                             f"recall@{K}": round(statistics.mean(recalls), 4), "queries": len(times),
                             "empty": sum(r == 0 for r in recalls)}
    return result


def mem0_search(vector_store: Any) -> Search:
    def search(key: str, vector: list[float]) -> list[str]:
        return [str(p.id) for p in vector_store.search(query="", vectors=vector, top_k=K, filters={"user_id": key})]
    return search


def listing_ms(vector_store: Any, queries: list[Query], count: int = 30) -> dict[str, float]:
    """Latency of mem0's listing of a user's profile facts, as `MemoryStore.profile` asks for them on a server."""
    times = []
    for query in queries[:count]:
        started = time.perf_counter()
        vector_store.list(filters={"user_id": query.key, ATTRIBUTE: {"in": ["name", "home", "job"]}},
                          top_k=1_000_000)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(pct(times, 0.95), 2)}


def ours(vector_store: Any, window: tuple[datetime, datetime] | None = None) -> Search:
    def search(key: str, vector: list[float]) -> list[str]:
        user = PgvectorUser(vector_store, {"user_id": key}, lambda payload: True, vector)
        hits: list[Hit] = user.within(window, K) if window else user.dense(K)
        return [hit.id for hit in hits]
    return search


def pgvector_store(url: str, settings: dict[str, str] | None = None) -> Any:
    """mem0's pgvector store on the bench table; `settings` are set on each of its connections."""
    from mem0.vector_stores.pgvector import PGVector
    from psycopg_pool import ConnectionPool

    def configure(conn: Any) -> None:
        for name, value in (settings or {}).items():
            conn.execute(f"SET {name} = {value}")
        conn.commit()

    pool = ConnectionPool(conninfo=url, min_size=1, max_size=2, configure=configure, open=True)
    pool.wait(30)
    return PGVector(dbname=None, collection_name=COLLECTION, embedding_model_dims=EMBEDDING_DIMS, user=None,
                    password=None, host=None, port=None, diskann=False, hnsw=True, connection_pool=pool)


MEM0_SQL = ("SELECT id, vector <=> %s::vector AS distance, payload FROM memorybot WHERE payload->>%s = %s "
            "ORDER BY distance LIMIT %s")


def plan(conn: Any, statement: str, args: list[Any]) -> str:
    """The access paths of a statement's plan, e.g. "Index Scan using memorybot_hnsw_idx"."""
    lines = [row[0] for row in conn.execute("EXPLAIN " + statement, args)]
    paths = [re.sub(r"\s+\(cost.*", "", line).strip(" ->") for line in lines if "Scan" in line]
    return "; ".join(paths)


def timed(label: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    timings[label] = round(time.perf_counter() - started, 2)
    print(f"  {label}: {timings[label]} s", flush=True)
    return value


class StubEmbedding:
    """Random unit vectors in place of the embedder: the write path's own cost."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(1)

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        return unit_rows(self._rng.normal(size=(1, EMBEDDING_DIMS)))[0].tolist()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StubConfig(StoreConfig):
    """The store's configuration with `StubEmbedding` as its embedder (mem0 gets its placeholder provider)."""

    def _own_embedder(self) -> Any:
        return StubEmbedding()


async def store_path(url: str, folder: Path, writes: int, profiles: list[str]) -> dict[str, Any]:
    """Rows/s of `MemoryStore.add` (facts anchored to their message) and `MemoryStore.profile` latency."""
    config = StubConfig(directory=folder, provider="pgvector", embedder="openvino", pgvector_url=url)
    async with MemoryStore(config) as store:
        started = time.perf_counter()
        for i in range(writes):
            source = Source("discord", "g1", "c1", f"w{i}", None, NOW.isoformat())
            await store.add("discord:g1:writer", f"The user wrote fact {i}.", source,
                            context=f"Message {i} the fact came from", attribute="home" if i % 10 == 0 else None)
        add_s = time.perf_counter() - started
        times = []
        for key in profiles:
            started = time.perf_counter()
            await store.profile(key, ("name", "home", "job"), include_private=False)
            times.append((time.perf_counter() - started) * 1000)
    return {"add_rows_per_s": round(writes / add_s, 1), "adds": writes,
            "profile_p50_ms": round(statistics.median(times), 2), "profile_p95_ms": round(pct(times, 0.95), 2)}


def sizes_mb(conn: Any) -> dict[str, float]:
    rows = conn.execute("SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON "
                        "c.oid = i.indexrelid WHERE i.indrelid = %s::regclass", [COLLECTION]).fetchall()
    table = conn.execute("SELECT pg_table_size(%s::regclass)", [COLLECTION]).fetchone()[0]
    return {"table": round(table / 2**20, 1), **{name: round(size / 2**20, 1) for name, size in rows}}


def run_pgvector(server: Any, size: int, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg
    from psycopg import sql

    corpus = Corpus(size, args.per_user, args.heavy_size, args.topics)
    centres = corpus.centres()
    url = server.new_database()
    print(f"pgvector, {size:,} memories of {corpus.users:,} users (2 heavy with {corpus.heavy_count:,})", flush=True)
    result: dict[str, Any] = {"store": "pgvector", "size": size, "topics": corpus.topics, "users": corpus.users,
                              "heavy_user_memories": corpus.heavy_count}
    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        result["pgvector"] = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        result["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
        memory = ServerMemory(int((data_dir / "postmaster.pid").read_text().split()[0]))
        conn.execute(sql.SQL("CREATE TABLE {} (id UUID PRIMARY KEY, vector vector({}), payload JSONB)").format(
            sql.Identifier(COLLECTION), sql.Literal(EMBEDDING_DIMS)))  # mem0's, its indexes built after the rows
        if not args.mem0_layout:  # as `prepare_table` leaves a new table, before its first row
            conn.execute(f"ALTER TABLE {COLLECTION} SET (toast_tuple_target = {ROW_BYTES})")
        result["layout"] = "mem0" if args.mem0_layout else "memorybot"

        encode_s, begun = 0.0, time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {COLLECTION} (id, vector, payload) FROM STDIN (FORMAT BINARY)"
                                            ) as copy:
            copy.write(COPY_HEADER)
            started = time.perf_counter()
            for block in corpus.blocks(centres):
                data = copy_data(*block)
                encode_s += time.perf_counter() - started
                copy.write(data)
                started = time.perf_counter()
            copy.write(COPY_TRAILER)
        copy_s = time.perf_counter() - begun - encode_s  # the server's share: sending and storing the rows
        result["copy_rows_per_s"] = round(size / copy_s)
        timings["generate_s"], timings["copy_s"] = round(encode_s, 1), round(copy_s, 1)
        print(f"  {size:,} rows: generated in {encode_s:.0f} s, COPY {copy_s:.0f} s", flush=True)

        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        conn.execute("SET max_parallel_maintenance_workers = 1")  # 2 cores: the leader and one worker
        timed("hnsw_index_s", timings, lambda: conn.execute(
            f"CREATE INDEX {COLLECTION}_hnsw_idx ON {COLLECTION} USING hnsw (vector vector_cosine_ops)"))
        timed("mem0_text_index_s", timings, lambda: conn.execute(
            f"CREATE INDEX {COLLECTION}_text_lemmatized_idx ON {COLLECTION} "
            "USING gin(to_tsvector('simple', payload->>'text_lemmatized'))"))
        timed("memorybot_text_index_s", timings, lambda: conn.execute(
            f"CREATE INDEX {COLLECTION}_text_english ON {COLLECTION} "
            "USING gin (to_tsvector('english', coalesce(payload->>'data', '')))"))
        conn.execute("RESET maintenance_work_mem")
        timed("analyze_s", timings, lambda: conn.execute(f"ANALYZE {COLLECTION}"))

        queries = make_queries(corpus, centres, args.queries, 40)
        normal = next(q for q in queries if not q.heavy)
        heavy = next(q for q in queries if q.heavy)
        methods: dict[str, Any] = {}
        plans: dict[str, str] = {}

        def mem0_plans(label: str) -> None:
            for name, query in (("user", normal), ("heavy user", heavy)):
                plans[f"{label}, {name}"] = plan(conn, MEM0_SQL, [str(query.vector.tolist()), "user_id", query.key, K])

        variants = {"mem0 (HNSW, then filter)": {},
                    "mem0, hnsw.ef_search=1000": {"hnsw.ef_search": "1000"}}
        if tuple(int(p) for p in result["pgvector"].split(".")[:2]) >= (0, 8):
            variants["mem0 + iterative scan, strict"] = {"hnsw.iterative_scan": "strict_order"}
            variants["mem0 + iterative scan, relaxed"] = {"hnsw.iterative_scan": "relaxed_order"}
            variants["mem0 + iterative scan, relaxed, max_scan_tuples=200000"] = {
                "hnsw.iterative_scan": "relaxed_order", "hnsw.max_scan_tuples": "200000"}
        mem0_plans("mem0, no user index")
        for label, settings in variants.items():
            store = pgvector_store(url, settings)
            methods[label] = measure(mem0_search(store), queries)
            store.connection_pool.close()
            print(f"  {label}: {methods[label]}", flush=True)

        store = pgvector_store(url)
        result["profile_listing"] = {"no user index": listing_ms(store, queries)}
        timed("user_index_s", timings, lambda: prepare_table(store))  # what MemoryStore.open does
        conn.execute(f"ANALYZE {COLLECTION}")
        result["profile_listing"]["user index"] = listing_ms(store, queries)
        print(f"  mem0's listing of a user's profile facts: {result['profile_listing']}", flush=True)
        mem0_plans("mem0, user index")
        for name, query in (("user", normal), ("heavy user", heavy)):
            statement, statement_args = nearest(COLLECTION, {"user_id": query.key}, query.vector.tolist(), 2 * K)
            plans[f"memorybot, {name}"] = plan(conn, statement.as_string(conn), statement_args)
        window = (NOW - timedelta(days=90), NOW)
        indexed = {"mem0 + user index": mem0_search(store), "memorybot (user index, exact)": ours(store),
                   "memorybot, time channel (90 days)": ours(store, window)}
        for label, search in indexed.items():
            if "time" in label:
                for query in queries:  # the exact answer within the window
                    query.best = exact_within(corpus, centres, query, window)
            methods[label] = measure(search, queries)
            print(f"  {label}: {methods[label]}", flush=True)
        store.connection_pool.close()

        folder = Path(tempfile.mkdtemp(prefix="scale-store-"))
        try:
            result["store_path"] = asyncio.run(store_path(url, folder, args.writes,
                                                          [q.key for q in queries[:args.profiles]]))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"  store path: {result['store_path']}", flush=True)
        result["sizes_mb"] = sizes_mb(conn)
        memory.stop()
        result["server_peak_mb"] = round(memory.peak_mb)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(COLLECTION)))
    result.update(timings=timings, methods=methods, plans=plans,
                  bench_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return result


def exact_within(corpus: Corpus, centres: np.ndarray, query: Query, window: tuple[datetime, datetime]
                 ) -> list[str]:
    user = int(query.key.rsplit(":u", 1)[1])
    ids, vectors, payloads = corpus.rows(user, centres)
    start, end = window[0].timestamp(), window[1].timestamp()
    inside = [i for i, p in enumerate(payloads) if start <= p["source_ts"] < end]
    ranked = sorted(inside, key=lambda i: -float(vectors[i] @ query.vector))
    return [str(ids[i]) for i in ranked[:K]]


def run_embedded(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Embedded Qdrant as the store recalls on it: the user's points cached by `VectorCache`."""
    from mem0.vector_stores.qdrant import Qdrant
    from qdrant_client import models

    corpus = Corpus(size, args.per_user, args.heavy_size, args.topics, heavy=0)
    centres = corpus.centres()
    folder = Path(tempfile.mkdtemp(prefix="scale-qdrant-"))
    print(f"embedded Qdrant, {size:,} memories of {corpus.users:,} users", flush=True)
    result: dict[str, Any] = {"store": "embedded-qdrant", "size": size, "topics": corpus.topics,
                              "users": corpus.users}
    try:
        store = Qdrant(collection_name=COLLECTION, embedding_model_dims=EMBEDDING_DIMS, path=str(folder / "qdrant"),
                       on_disk=True)
        started = time.perf_counter()
        for ids, vectors, payloads in corpus.blocks(centres):
            for first in range(0, len(ids), 1000):
                points = [models.PointStruct(id=str(i), vector={"": v.tolist()}, payload=p) for i, v, p in
                          zip(ids[first:first + 1000], vectors[first:first + 1000], payloads[first:first + 1000],
                              strict=True)]
                store.client.upsert(COLLECTION, points=points)
        result["insert_rows_per_s"] = round(size / (time.perf_counter() - started))
        print(f"  inserted at {result['insert_rows_per_s']} rows/s", flush=True)
        queries = make_queries(corpus, centres, args.embedded_queries, 0)
        cache = VectorCache(store.client, COLLECTION, max_users=len(queries) + 1)

        def cached(key: str, vector: list[float]) -> list[str]:
            return [hit.id for hit in cache.user(key, lambda payload: True, vector).dense(K)]

        # cold: each query a user not loaded yet (the cache holds 256 users; with many active users most are cold)
        result["methods"] = {"embedded, user not cached (cold)": measure(cached, queries, warmup=0),
                             "embedded, user cached (warm)": measure(cached, queries, warmup=0),
                             "embedded, mem0's search": measure(mem0_search(store), queries[:20], warmup=0)}
        for label, measured in result["methods"].items():
            print(f"  {label}: {measured}", flush=True)
        cache.drop()
        store.client.close()
        result["folder_mb"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"| store | memories | topics | method | p50 ms | p95 ms | recall@{K} | heavy user p95 ms "
             f"| heavy recall@{K} |", "|---|---|---|---|---|---|---|---|---|"]
    for run in results:
        for label, measured in run["methods"].items():
            users, heavy = measured.get("users", {}), measured.get("heavy", {})
            cells = [run["store"], f"{run['size']:,}", run["topics"] or "none", label, users.get("p50_ms", ""),
                     users.get("p95_ms", ""), users.get(f"recall@{K}", ""), heavy.get("p95_ms", ""),
                     heavy.get(f"recall@{K}", "")]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float, float]]] = {}
    for run in results:
        for label, measured in run["methods"].items():
            if "users" in measured:
                series.setdefault(label, []).append((run["size"], measured["users"]["p95_ms"],
                                                     measured["users"][f"recall@{K}"]))
    fig, (latency, recall) = plt.subplots(1, 2, figsize=(11, 5.5))
    styles = [(marker, line) for line in ("-", "--", ":") for marker in "osD^v"]
    for (label, points), (marker, line) in zip(series.items(), styles, strict=False):
        points.sort()
        sizes = [p[0] for p in points]
        latency.plot(sizes, [p[1] for p in points], marker=marker, linestyle=line, label=label)
        recall.plot(sizes, [p[2] for p in points], marker=marker, linestyle=line)
    latency.axhline(TARGET_P95_MS, color="grey", linewidth=0.8)
    recall.axhline(TARGET_RECALL, color="grey", linewidth=0.8)
    latency.set(xscale="log", yscale="log", xlabel="memories in the store (all users)",
                ylabel=f"p95 ms, one user's top-{K} search (target {TARGET_P95_MS:.0f})")
    recall.set(xscale="log", xlabel="memories in the store (all users)",
               ylabel=f"recall@{K} against the user's exact top {K} (target {TARGET_RECALL})")
    fig.suptitle("Recall at scale, one user's search among all users' memories, 2 cores (bench/scale.py)",
                 fontsize=9)
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="pgvector table sizes (memories, all users)")
    parser.add_argument("--embedded-sizes", default="10000,100000", help="embedded Qdrant sizes ('' for none)")
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--topics", type=int, default=1000, help="shared topics (0: vectors spread evenly)")
    parser.add_argument("--heavy-size", type=int, default=10_000, help="most memories of each of 2 heavy users")
    parser.add_argument("--queries", type=int, default=500, help="timed queries per method (random users)")
    parser.add_argument("--embedded-queries", type=int, default=100)
    parser.add_argument("--writes", type=int, default=200, help="MemoryStore.add calls on the full table")
    parser.add_argument("--profiles", type=int, default=50, help="MemoryStore.profile calls on the full table")
    parser.add_argument("--maintenance-work-mem", default="4GB", help="for building the HNSW index")
    parser.add_argument("--mem0-layout", action="store_true",
                        help="leave the table's rows as mem0 makes them (vectors moved out of rows over 2 KB)")
    parser.add_argument("--pg-install", type=Path, help="another pgserver `pginstall` folder (its bin/ is used)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 and 5,000 memories, few queries")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG (and table) of --out")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    args = parser.parse_args()
    if args.replot:
        results = json.loads(args.out.read_text())["runs"]
        plot(results, args.out.with_suffix(".png"))
        print(table(results))
        return
    if args.quick:
        args.sizes, args.embedded_sizes, args.queries, args.embedded_queries = "20000", "5000", 60, 20
        args.writes, args.profiles = 20, 10
    if args.pg_install:
        postgres._bin = lambda name: str(args.pg_install / "bin" / name)  # type: ignore[assignment]
    results = []
    with postgres.postgres_server() as server:
        for size in (int(s) for s in args.sizes.split(",") if s):
            results.append(run_pgvector(server, size, args))
    for size in (int(s) for s in args.embedded_sizes.split(",") if s):
        results.append(run_embedded(size, args))
    report = {"cpus": len(os.sched_getaffinity(0)), "dims": EMBEDDING_DIMS, "topics": args.topics,
              "per_user": args.per_user, "targets": {"p95_ms": TARGET_P95_MS, f"recall@{K}": TARGET_RECALL},
              "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(table(results))


if __name__ == "__main__":
    main()
