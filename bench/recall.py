"""Recall latency at scale: one user with many memories, every recall channel alone and all together.

    .venv/bin/python bench/recall.py [--memories 10000] [--queries 200] [--embedder openvino|sentence_transformers]
        [--out bench/results/recall.json]

Seeds `--memories` memories for one user (half facts, half passages of messages, said over the past year;
written straight to the vector store once into the data folder, and reused), then times the reply path's own
calls, `Recall.profile` and `Recall.relevant` (query reading, time window, embedding, every channel,
fusion), for questions with and without names and times. Prints and writes p50/p95 per channel set, and peak
resident memory; a PNG beside the JSON. No model is loaded: recall does not use it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import open_memories, store_config  # noqa: E402
from bot.message import IncomingMessage  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from memory.config import bundled_embedder_path  # noqa: E402
from memory.recall import CHANNELS  # noqa: E402
from memory.records import FACT, KIND, MESSAGE, PASSAGE, Source  # noqa: E402
from memory.store import MemoryStore  # noqa: E402

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
PLACES = ["Lisbon", "Porto", "Madrid", "Berlin", "Oslo", "Kyoto", "Lima", "Accra", "Hanoi", "Quebec"]
PEOPLE = ["Ana", "Joaquim", "Mira", "Tom", "Ines", "Kofi", "Yuki", "Lars", "Sofia", "Omar"]
THINGS = ["bicycle", "cello", "garden", "marathon", "recipe", "novel", "camera", "kayak", "puzzle", "telescope"]
QUESTIONS = [
    "What did I tell you about my bicycle?", "Where does Ana live?", "What did I do last month?",
    "Do you remember the recipe I mentioned?", "What happened in Kyoto?", "What did I say yesterday?",
    "How is my marathon training going?", "Who is Joaquim?", "What did we talk about in March?",
    "Any ideas for a weekend trip?", "what was the name of the novel", "When did I buy the telescope?",
]


def memory_text(i: int, rng: random.Random) -> str:
    place, person, thing = rng.choice(PLACES), rng.choice(PEOPLE), rng.choice(THINGS)
    if i % 2:
        return f"The user talked with {person} about a {thing} in {place} (note {i})."
    return (f"Yesterday {person} and I took the {thing} to {place}; it was number {i} on my list and we "
            f"laughed about it for hours.")


async def seed(settings: Settings, user_key: str, count: int) -> float:
    """Store `count` memories for the user, once per data folder: embedded in batches and written to the vector
    store in batches, with the payload mem0 writes (the write path's duplicate checks, one memory at a time,
    would take most of an hour on 2 cores; recall reads the same points either way)."""
    marker = settings.data_dir / f"seeded-{count}"
    if marker.exists():
        return 0.0
    from sentence_transformers import SentenceTransformer

    rng = random.Random(7)
    started = time.perf_counter()
    encoder = SentenceTransformer(settings.memory.embedder_model or bundled_embedder_path(), device="cpu")
    async with MemoryStore(store_config(settings)) as store:
        vectors = store._mem0.vector_store  # the bench writes the points itself; recall goes through the bot
        for first in range(0, count, 500):
            ids, payloads, texts = [], [], []
            for i in range(first, min(count, first + 500)):
                said = NOW - timedelta(days=rng.uniform(0, 365))
                source = Source(platform="bench", workspace="local", channel="c", message_id=f"m{i}", link=None,
                                time=said.isoformat())
                texts.append(memory_text(i, rng))
                ids.append(str(uuid.uuid4()))
                payloads.append({"data": texts[-1], "user_id": user_key, "created_at": said.isoformat(),
                                 "updated_at": said.isoformat(), **source.to_metadata(),
                                 KIND: FACT if i % 2 else MESSAGE, **({} if i % 2 else {PASSAGE: 0})})
            embedded = encoder.encode(texts, batch_size=32, normalize_embeddings=True).tolist()
            await asyncio.to_thread(vectors.insert, vectors=embedded, payloads=payloads, ids=ids)
            print(f"  seeded {first + len(ids)}/{count}", flush=True)
    marker.touch()
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def message(text: str) -> IncomingMessage:
    return IncomingMessage(platform="bench", workspace="local", channel_id="c", user_id="u", user_name="Alex",
                           text=text, message_id="q", is_direct=True, sent_at=NOW)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench" / "data" / "recall")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recall.json")
    parser.add_argument("--embedder", default="", help="EMBEDDER_BACKEND (empty: the default bot's, openvino)")
    args = parser.parse_args()
    settings = load_settings(env_file=None, data_dir=args.data_dir, embedder_backend=args.embedder)
    msg = message("")
    result: dict[str, object] = {"memories": args.memories, "queries": args.queries, "cpus": settings.model.threads,
                                 "embedder": settings.embedder}
    result["seed_s"] = round(await seed(settings, msg.user.key, args.memories), 1)
    async with open_memories(settings) as memories:
        await memories.recall.relevant(msg, "warm up", 8, 0.1)  # loads the user's memories into the cache
        timings: dict[str, dict[str, float]] = {}
        configurations = [(name,) for name in CHANNELS] + [CHANNELS]
        for channels in configurations:
            memories.recall._channels = channels
            times = []
            for i in range(args.queries):
                question = QUESTIONS[i % len(QUESTIONS)]
                started = time.perf_counter()
                await memories.recall.profile(message(question))
                await memories.recall.relevant(message(question), question, settings.memory.top_k,
                                               settings.memory.min_score)
                times.append((time.perf_counter() - started) * 1000)
            label = "+".join(channels)
            timings[label] = {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(pct(times, 0.95), 2)}
            print(label, timings[label], flush=True)
    result["profile_and_recall"] = timings
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(timings, args.out.with_suffix(".png"), args.memories)
    print(json.dumps(result, indent=2))


def plot(timings: dict[str, dict[str, float]], path: Path, count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(timings)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for offset, key in [(-0.2, "p50_ms"), (0.2, "p95_ms")]:
        bars = ax.bar([i + offset for i in range(len(labels))], [timings[label][key] for label in labels], 0.4,
                      label=key.replace("_ms", ""))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(25, color="grey", linestyle="--", linewidth=0.8, label="25 ms target (p95)")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("ms per message (profile + recall)")
    ax.set_title(f"Recall latency, one user with {count:,} memories, embedded Qdrant, 2 cores", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    asyncio.run(main())
