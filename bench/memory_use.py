"""Memory use: does the reply model answer from a remembered fact? The same questions on every backend.

    .venv/bin/python bench/memory_use.py [--backends openvino,openvino-int4,transformers] [--model M]
        [--set bench/memory_use_set.jsonl] [--out bench/results/memory-use.json]
        [--conversation N [--layouts held,fresh]]

Each item of the set (one JSON object a line: id, facts, question, expect) is a user of their own: their `facts`
(three things they said, one of which answers the question) are stored as their messages, the way the bot keeps
what users say, then the `question` goes through the real bot (recall, prompt, reply; write-back stopped, so
nothing else is learned). A reply is right when it contains, case-insensitively, one of the `expect` strings.
This checks the reply side only: extraction is bench/extraction.py. Prints and writes the share of right replies
per backend (`openvino-int4`: the openvino backend with OPENVINO_WEIGHTS=int4) and every reply.

`--conversation N`: N items in a row are one user instead, who said all their facts and asks the N questions
one after another in one conversation, so later questions need memories the conversation's first reply did not
recall. `--layouts` compares how such a conversation's prompt holds its memories on a backend that reuses prompt
starts: `held` (the bot's way: the system prompt keeps the first reply's memories, the ones a message adds come
just before it, the recent turns moving in steps; see bot/handler.py) and `fresh` (every reply recalls into the
system prompt anew, with the last HISTORY_TURNS turns). Each reply's first token is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEM0_TELEMETRY", "False")

from bot.app import MemoryBot  # noqa: E402
from bot.message import IncomingMessage  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from memory.records import MESSAGE, Source  # noqa: E402

MODEL_CACHE = REPO / ".cache" / "test-data" / "models"
DEFAULT_SET = REPO / "bench" / "memory_use_set.jsonl"


class Reply:
    def __init__(self) -> None:
        self.text = ""
        self.started = time.perf_counter()
        self.first_token_s: float | None = None

    async def send(self, text: str) -> None:
        self.text += text

    async def stream(self, deltas: Any) -> str:
        async for delta in deltas:
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
            self.text += delta
        return self.text

    def typing(self) -> Any:
        return nullcontext()


def incoming(item_id: str, text: str, message_id: str) -> IncomingMessage:
    return IncomingMessage(platform="bench", workspace="local", channel_id="c", user_id=item_id, user_name="Alex",
                           text=text, message_id=message_id, is_direct=False)


def fresh_every_reply() -> bool:
    """The `fresh` layout: no conversation keeps its prompt's start (stands in for the handler's own check)."""
    return False


def groups(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """The items as users: one item each, or `size` items in a row as one user who asks their questions in turn."""
    return [[item] for item in items] if size <= 1 else [items[i:i + size] for i in range(0, len(items), size)]


async def run_backend(spec: str, model: str, items: list[dict[str, Any]], max_new_tokens: int,
                      conversation: int = 1, layout: str = "held") -> dict[str, Any]:
    backend, _, weights = spec.partition("-")
    with tempfile.TemporaryDirectory(prefix="memorybot-memory-use-") as tmp:
        data = Path(tmp)
        MODEL_CACHE.mkdir(parents=True, exist_ok=True)  # a link to a missing folder fails once models are prepared
        (data / "models").symlink_to(MODEL_CACHE, target_is_directory=True)
        settings = load_settings(env_file=None, data_dir=data, model=model, model_backend=backend,
                                 **({"openvino_weights": weights} if weights else {}), rate_limit_messages=0,
                                 max_new_tokens=max_new_tokens)
        rows = []
        started = time.perf_counter()
        async with MemoryBot(settings) as bot:
            await bot.writeback.stop()
            if layout == "fresh":
                bot._handler._holds_prompt_start = fresh_every_reply  # type: ignore[method-assign]
            said = Source(platform="bench", workspace="local", channel="c", message_id="said", link=None,
                          time=datetime(2026, 11, 1, tzinfo=UTC).isoformat())
            for group in groups(items, conversation):
                user_id = group[0]["id"]
                user_key = incoming(user_id, "", "q").user.key
                for item in group:
                    for i, fact in enumerate(item["facts"]):
                        source = replace(said, message_id=f"{item['id']}-{i}")
                        await bot.store.add(user_key, fact, source, kind=MESSAGE, passage=0)
                for turn, item in enumerate(group):
                    reply = Reply()
                    await bot.handle(incoming(user_id, item["question"], f"{item['id']}-q"), reply)
                    right = any(e.lower() in reply.text.lower() for e in item["expect"])
                    first = None if reply.first_token_s is None else round(reply.first_token_s, 3)
                    rows.append({"id": item["id"], "turn": turn, "right": right, "reply": reply.text,
                                 "first_token_s": first})
                    print(f"[{spec} {layout}] {item['id']} {'right' if right else 'WRONG'}", flush=True)
        timed = [r for r in rows if r["first_token_s"] is not None]  # a reply that streamed nothing has none
        later = [r["first_token_s"] for r in timed if r["turn"] > 0]
        return {"backend": spec, "layout": layout, "model": model, "items": len(rows),
                "right": round(sum(r["right"] for r in rows) / len(rows), 3),
                "first_token_median_s": round(statistics.median(r["first_token_s"] for r in timed), 3) if timed
                else None,
                **({"first_token_median_later_turns_s": round(statistics.median(later), 3)} if later else {}),
                "wall_s": round(time.perf_counter() - started, 1), "replies": rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="openvino,openvino-int4,transformers")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory-use.json")
    parser.add_argument("--conversation", type=int, default=1, help="questions per user, asked in a row")
    parser.add_argument("--layouts", default="held", help="held,fresh: see above (backends reusing prompt starts)")
    args = parser.parse_args()
    items = [json.loads(line) for line in args.set.read_text().splitlines() if line.strip()]
    runs = [await run_backend(spec, args.model, items, args.max_new_tokens, args.conversation, layout)
            for layout in args.layouts.split(",") for spec in args.backends.split(",")]
    for run in runs:
        later = run.get("first_token_median_later_turns_s")
        print(f"{run['backend']:16} {run['layout']:6} right {run['right']:.3f} of {run['items']}  first token "
              f"median {run['first_token_median_s']} s{f' (later turns {later} s)' if later else ''}  "
              f"({run['wall_s']} s)")
    result = {"set": args.set.name, "conversation": args.conversation, "runs": runs,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
