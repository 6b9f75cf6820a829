"""Latency of the whole reply path on this machine, per turn, against a plain `model.generate`.

    .venv/bin/python bench/latency.py [--turns 8] [--memories 10000] \
        [--backends openvino,openvino-int4,llama_cpp,transformers] [--models qwen2.5-coder-0.5b]

Measures, through the real bot (bundled model, mem0 with embedded Qdrant):
  - recall p50/p95 with `--memories` facts stored for the user (seeded once into bench/data and reused);
  - first token for a new ~600-token prompt (a new user: nothing of it seen before), through the bot's model;
  - per turn: recall, prompt build, first token, decode tokens/s and total;
  - the same prompt through plain `model.generate` (decode tokens/s, first token);
  - reply latency with the write-back worker running vs. stopped (each question arrives while the fact said
    before it is being learned);
  - peak resident memory of the process;
for each backend and model in one run (`openvino-int4` is the openvino backend with OPENVINO_WEIGHTS=int4; the
environment's settings apply, e.g. OPENVINO_ACTIVATION_GROUP), and the ratios between backends. Writes JSON and a
PNG chart. Peak memory of one backend alone: bench/footprint.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import MemoryBot  # noqa: E402
from bot.llm.base import ChatMessage, GenerationParams  # noqa: E402
from bot.message import IncomingMessage  # noqa: E402
from bot.prompt import build_prompt  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from memory.records import Source  # noqa: E402

QUESTIONS = [  # asks for a few sentences, so decode speed is measured over more than a handful of tokens
    "Can you suggest three ideas for dinner tonight, and say why each would suit me?",
    "What could I do this weekend with my dog? Give me a short plan.",
    "Any tips for my next trip? A few points, please.",
    "Recommend me two books, please, with a sentence on each.",
    "How should I plan my week at work? Give me a short plan.",
    "What music would I enjoy? Name a few artists and why.",
    "Give me three ideas for a hobby that fits my life.",
    "What should I cook for my friends on Saturday? Describe the menu.",
]
FACT_MESSAGES = [
    "I just adopted a beagle called Max.",
    "I started learning the cello last month.",
    "My sister Ana lives in Madrid.",
    "I'm allergic to peanuts.",
    "I work night shifts at the hospital.",
    "I ran my first half marathon in October.",
    "I'm saving up for a trip to Japan.",
    "I prefer tea over coffee.",
]
TOPICS = ["food", "travel", "music", "work", "family", "sports", "books", "pets", "health", "movies"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def message(text: str, i: int, channel: str = "c") -> IncomingMessage:
    return IncomingMessage(platform="bench", workspace="local", channel_id=channel, user_id="bench-user",
                           user_name="Alex", text=text, message_id=f"m{i}", is_direct=False)


class TimedReply:
    """Records when the first and the last piece arrived and how much text came."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.text = ""

    async def send(self, text: str) -> None:
        self.text += text

    async def stream(self, deltas: AsyncIterator[str]) -> str:
        async for delta in deltas:
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
            self.text += delta
        return self.text

    def typing(self):
        return nullcontext()


class PromptRecorder:
    """Wraps the bot's model so the bench can replay the exact prompt of a reply through the plain library."""

    def __init__(self, bot: MemoryBot) -> None:
        self.messages: list[ChatMessage] = []
        self.params: GenerationParams | None = None
        model = bot.model
        original = model.stream

        def stream(messages: list[ChatMessage], params: GenerationParams, **kwargs: object):
            if not kwargs.get("background"):
                self.messages, self.params = list(messages), params
            return original(messages, params, **kwargs)

        model.stream = stream  # type: ignore[method-assign]


async def seed(bot: MemoryBot, user_key: str, count: int) -> float:
    """Store `count` synthetic memories for the user, once per data folder (a marker file says it is done)."""
    marker = bot.settings.data_dir / f"seeded-{count}"
    if marker.exists():
        return 0.0
    src = Source(platform="bench", workspace="local", channel="c", message_id="seed", link=None,
                 time=datetime.now(UTC).isoformat())
    started = time.perf_counter()
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        await bot.store.add(user_key, f"The user mentioned {topic} detail number {i}: item {i * 7 % 1000}.", src)
        if i % 500 == 0:
            print(f"  seeded {i}/{count}", flush=True)
    marker.touch()
    return time.perf_counter() - started


async def turn(bot: MemoryBot, recorder: PromptRecorder, text: str, i: int, channel: str = "c") -> dict[str, float]:
    msg = message(text, i, channel)
    t0 = time.perf_counter()
    memories = await bot.memories.recall.relevant(msg, text, bot.settings.memory.top_k, bot.settings.memory.min_score)
    t1 = time.perf_counter()
    build_prompt(bot_name="memorybot", user_name="Alex", text=text, memories=memories, history=[],
                 now=msg.sent_at, budget=1800, count_prompt=bot.model.prompt_tokens)
    t2 = time.perf_counter()
    reply = TimedReply()
    start = time.perf_counter()
    await bot.handle(msg, reply)
    end = time.perf_counter()
    return {"recall_ms": (t1 - t0) * 1000, "prompt_build_ms": (t2 - t1) * 1000,
            "prompt_tokens": bot.model.prompt_tokens(recorder.messages),
            **timings(bot, reply.text, start, reply.first, reply.last or end), "total_s": end - start}


def timings(bot: MemoryBot, text: str, start: float, first: float | None, last: float) -> dict[str, float]:
    """First visible token, and decode speed from the first piece to the last (the same rule for bot and plain)."""
    tokens = bot.model.count_tokens(text)
    first = first or last
    return {"first_token_s": first - start, "decode_tok_s": (tokens - 1) / max(1e-6, last - first),
            "tokens": tokens}


def plain_generate(bot: MemoryBot, messages: list[ChatMessage], params: GenerationParams) -> dict[str, float]:
    """The bot's last prompt, with its generation settings, through the library's own call without the bot."""
    backend = bot.model.backend
    if backend.name == "llama_cpp":
        backend.llm.reset()  # no reuse of the bot's cached prompt: the plain call processes all of it
        start = time.perf_counter()
        first, last, text = None, start, ""
        for chunk in backend.llm.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
            max_tokens=params.max_new_tokens, temperature=params.temperature, top_k=1,
            repeat_penalty=params.repetition_penalty,
        ):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                last = time.perf_counter()
                first = first or last
                text += piece
        return {**timings(bot, text, start, first, last), "total_s": time.perf_counter() - start}
    if backend.name == "openvino":  # the same pipeline (and its prefix cache), called directly
        start = time.perf_counter()
        stamps: list[float] = []
        pieces: list[str] = []

        def on_piece(piece: str) -> bool:
            stamps.append(time.perf_counter())
            pieces.append(piece)
            return False

        backend.pipe.generate([backend.render(messages)], backend._config(params), on_piece)
        first = next((t for t, p in zip(stamps, pieces, strict=True) if p), None)
        return {**timings(bot, "".join(pieces), start, first, stamps[-1] if stamps else start),
                "total_s": time.perf_counter() - start}
    import torch

    inputs = backend.tokenizer(backend.render(messages), return_tensors="pt", add_special_tokens=False)
    kwargs = dict(do_sample=False, temperature=None, top_p=None, top_k=None,
                  repetition_penalty=params.repetition_penalty, pad_token_id=backend.tokenizer.eos_token_id)
    with torch.inference_mode():
        t0 = time.perf_counter()
        backend.model.generate(**inputs, max_new_tokens=1, **kwargs)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = backend.model.generate(**inputs, max_new_tokens=params.max_new_tokens, **kwargs)
        total = time.perf_counter() - t0
    tokens = out.shape[1] - inputs["input_ids"].shape[1]
    return {"first_token_s": first, "decode_tok_s": (tokens - 1) / max(1e-6, total - first), "tokens": tokens,
            "total_s": total}


COLD_MEMORIES = [f"The user mentioned {TOPICS[i % len(TOPICS)]} detail number {i}: item {i * 7 % 1000}, "
                 f"seen in {2000 + i % 20}." for i in range(24)]


async def cold_first_token(bot: MemoryBot, rounds: int) -> dict[str, float]:
    """First token for prompts of ~600 tokens that share nothing with any earlier one (a unique first line), so no
    backend can reuse a cached start: what a new user waits for."""
    params = GenerationParams(max_new_tokens=8, repetition_penalty=bot.settings.model.repetition_penalty)
    seconds, tokens = [], 0
    for i in range(rounds):
        memories = "\n".join(f"- {m}" for m in COLD_MEMORIES)
        messages = [ChatMessage("system", f"Conversation {time.time_ns()}-{i}. You are memorybot, a helpful "
                                          f"assistant with a long-term memory.\nWhat you remember:\n{memories}"),
                    ChatMessage("user", QUESTIONS[i % len(QUESTIONS)])]
        tokens = bot.model.prompt_tokens(messages)
        started = time.perf_counter()
        async for _ in bot.model.stream(messages, params):
            seconds.append(time.perf_counter() - started)
            break
    return {"prompt_tokens": tokens, "first_token_s": round(statistics.median(seconds), 3),
            "all_s": [round(x, 3) for x in seconds]}


def machine() -> dict[str, object]:
    """The CPU the numbers belong to: its name and the vector instruction sets that decide CPU inference speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
    return {"cpus": os.cpu_count(), "cpu": name, "vector": [flag for flag in wanted if flag in flags]}


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys()
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in keys}


async def run_backend(settings, args: argparse.Namespace) -> dict[str, object]:
    """Everything measured for one backend/model, in one MemoryBot."""
    result: dict[str, object] = {"backend": settings.model.backend, "model": settings.model.name}
    rss_before = rss_mb()
    started = time.perf_counter()
    async with MemoryBot(settings) as bot:
        result["load_s"] = round(time.perf_counter() - started, 1)
        user_key = message("", 0).user.key
        label = f"{settings.model.backend} {settings.model.name}"
        print(f"[{label}] seeding {args.memories} memories (once)...", flush=True)
        result["seed_s"] = round(await seed(bot, user_key, args.memories), 1)
        result["memories_stored_at_least"] = args.memories

        await bot.memories.recall.relevant(message("warm up", 0), "warm up", 8, 0.1)  # loads the user's vectors
        recall = []
        for i in range(50):
            q = QUESTIONS[i % len(QUESTIONS)]
            t0 = time.perf_counter()
            await bot.memories.recall.relevant(message(q, i), q, settings.memory.top_k, settings.memory.min_score)
            recall.append((time.perf_counter() - t0) * 1000)
        result["recall_ms"] = {"p50": round(pct(recall, 0.5), 2), "p95": round(pct(recall, 0.95), 2)}
        print("recall", result["recall_ms"], flush=True)

        await bot.writeback.stop()
        result["cold"] = await cold_first_token(bot, args.turns)
        print("cold first token", result["cold"], flush=True)
        recorder = PromptRecorder(bot)
        await turn(bot, recorder, "Hello!", 0)  # warm-up
        quiet = [await turn(bot, recorder, QUESTIONS[i % len(QUESTIONS)], i + 1) for i in range(args.turns)]
        result["bot"] = summary(quiet)
        result["bot_turns"] = quiet
        print("bot (write-back stopped)", result["bot"], flush=True)

        paired, plain = [], []
        for i in range(args.turns):  # each bot reply, then its exact prompt through the plain library call
            paired.append(await turn(bot, recorder, QUESTIONS[i % len(QUESTIONS)], 200 + i))
            assert recorder.params is not None
            plain.append(plain_generate(bot, recorder.messages, recorder.params))
        result["bot_paired"], result["plain"] = summary(paired), summary(plain)
        print("bot, paired with plain", result["bot_paired"], flush=True)
        print("plain library call", result["plain"], flush=True)

        # The same conversation twice, each in a channel of its own: a fact, a pause of WRITEBACK_QUIET_SECONDS
        # plus one (learning waits that long without a reply, so it is now running), then a question, whose reply
        # has to take the model back from the extraction. Once with write-back stopped, once running.
        pause = settings.memory.writeback_quiet_seconds + 1.0
        for running in (False, True):
            if running:
                bot.writeback.start()
                await bot.writeback.drain()
            rows = []
            for i in range(args.turns):
                channel = f"wb-{running}"
                await turn(bot, recorder, FACT_MESSAGES[i % len(FACT_MESSAGES)], 300 + 2 * i + 100 * running, channel)
                await asyncio.sleep(pause)
                rows.append(await turn(bot, recorder, QUESTIONS[i % len(QUESTIONS)], 301 + 2 * i + 100 * running,
                                       channel))
            result["bot_with_writeback" if running else "bot_without_writeback"] = summary(rows)
            print(f"bot (write-back {'running' if running else 'stopped'})", summary(rows), flush=True)
        await bot.writeback.drain()

    bot_row, busy_row = result["bot_without_writeback"], result["bot_with_writeback"]
    pairs = zip(paired, plain, strict=True)  # the same prompts, so the same context lengths
    result["ratios"] = {
        "decode_bot_over_plain": round(statistics.median(b["decode_tok_s"] / p["decode_tok_s"] for b, p in pairs), 3),
        "reply_total_with_over_without_writeback": round(busy_row["total_s"] / bot_row["total_s"], 3),
        "seconds_per_token_with_over_without_writeback": round(
            (busy_row["total_s"] / busy_row["tokens"]) / (bot_row["total_s"] / bot_row["tokens"]), 3),
        "first_token_with_over_without_writeback": round(busy_row["first_token_s"] / bot_row["first_token_s"], 3),
    }
    result["peak_rss_mb_so_far"] = round(rss_mb(), 1)
    result["peak_rss_mb_before"] = round(rss_before, 1)
    print("ratios", result["ratios"], flush=True)
    return result


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each run against every other run of the same model: first token (new ~600-token prompt; returning user's
    conversation) and decode speed, as `a / b`."""
    out = {}
    for a in runs:
        for b in runs:
            if a is b or a["model"] != b["model"]:
                continue
            out[f"{a['backend']} / {b['backend']} ({a['model']})"] = {
                "cold_first_token": round(a["cold"]["first_token_s"] / b["cold"]["first_token_s"], 3),
                "conversation_first_token": round(a["bot"]["first_token_s"] / b["bot"]["first_token_s"], 3),
                "decode_tok_s": round(a["bot_paired"]["decode_tok_s"] / b["bot_paired"]["decode_tok_s"], 3),
            }
    return out


def plot(runs: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['backend']}\n{r['model']}" for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.38
    xs = range(len(runs))
    for ax, key, title in [(axes[0], "decode_tok_s", "decode tokens/s (higher is better)"),
                           (axes[1], "first_token_s", "first token, s (lower is better)")]:
        ax.bar([x - width / 2 for x in xs], [r["bot_paired"][key] for r in runs], width, label="bot")
        ax.bar([x + width / 2 for x in xs], [r["plain"][key] for r in runs], width, label="plain library call")
        ax.set_xticks(list(xs), labels)
        ax.set_title(title)
        ax.legend()
    axes[2].bar(list(xs), [r["cold"]["first_token_s"] for r in runs], width)
    axes[2].set_xticks(list(xs), labels)
    axes[2].set_title("first token, new ~600-token prompt, s")
    fig.suptitle("memorybot reply latency on this machine (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--backends", default="openvino,openvino-int4,llama_cpp,transformers",
                        help="comma-separated MODEL_BACKEND values (openvino-int4: OPENVINO_WEIGHTS=int4), run one "
                             "after the other")
    parser.add_argument("--models", default="qwen2.5-coder-0.5b", help="comma-separated MODEL values")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--data-dir", default=str(REPO / "bench" / "data"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "latency.json"))
    args = parser.parse_args()
    runs = []
    for model in args.models.split(","):
        for spec in args.backends.split(","):
            backend, _, weights = spec.partition("-")
            settings = load_settings(env_file=None, data_dir=args.data_dir, rate_limit_messages=0,
                                     max_new_tokens=args.max_new_tokens, model=model, model_backend=backend,
                                     **({"openvino_weights": weights} if weights else {}))
            runs.append({**await run_backend(settings, args), "backend": spec})
    result = {"machine": machine(), "turns": args.turns, "runs": runs, "ratios": ratios(runs),
              "peak_rss_mb": round(rss_mb(), 1)}
    print("between backends", json.dumps(result["ratios"], indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}; peak RSS {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    asyncio.run(main())
