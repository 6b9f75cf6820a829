"""Memory use: does the reply model answer from a remembered fact? The same questions on every backend.

    .venv/bin/python bench/memory_use.py [--backends openvino,openvino-int8,transformers] [--model M]
        [--set bench/memory_use_set.jsonl] [--out bench/results/memory-use.json]

Each item of the set (one JSON object a line: id, facts, question, expect) is a user of their own: their `facts`
(three things they said, one of which answers the question) are stored as their messages, the way the bot keeps
what users say, then the `question` goes through the real bot (recall, prompt, reply; write-back stopped, so
nothing else is learned). A reply is right when it contains, case-insensitively, one of the `expect` strings.
This checks the reply side only: extraction is bench/extraction.py. Prints and writes the share of right replies
per backend (`openvino-int8`: the openvino backend with OPENVINO_WEIGHTS=int8) and every reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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

    async def send(self, text: str) -> None:
        self.text += text

    async def stream(self, deltas: Any) -> str:
        async for delta in deltas:
            self.text += delta
        return self.text

    def typing(self) -> Any:
        return nullcontext()


def incoming(item_id: str, text: str, message_id: str) -> IncomingMessage:
    return IncomingMessage(platform="bench", workspace="local", channel_id="c", user_id=item_id, user_name="Alex",
                           text=text, message_id=message_id, is_direct=False)


async def run_backend(spec: str, model: str, items: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    backend, _, weights = spec.partition("-")
    with tempfile.TemporaryDirectory(prefix="memorybot-memory-use-") as tmp:
        data = Path(tmp)
        (data / "models").symlink_to(MODEL_CACHE, target_is_directory=True)
        settings = load_settings(env_file=None, data_dir=data, model=model, model_backend=backend,
                                 openvino_weights=weights or "int4", rate_limit_messages=0,
                                 max_new_tokens=max_new_tokens)
        rows = []
        started = time.perf_counter()
        async with MemoryBot(settings) as bot:
            await bot.writeback.stop()
            said = Source(platform="bench", workspace="local", channel="c", message_id="said", link=None,
                          time=datetime(2026, 11, 1, tzinfo=UTC).isoformat())
            for item in items:
                user_key = incoming(item["id"], "", "q").user.key
                for i, fact in enumerate(item["facts"]):
                    source = replace(said, message_id=f"{item['id']}-{i}")
                    await bot.store.add(user_key, fact, source, kind=MESSAGE, passage=0)
                reply = Reply()
                await bot.handle(incoming(item["id"], item["question"], f"{item['id']}-q"), reply)
                right = any(e.lower() in reply.text.lower() for e in item["expect"])
                rows.append({"id": item["id"], "right": right, "reply": reply.text})
                print(f"[{spec}] {item['id']} {'right' if right else 'WRONG'}", flush=True)
        return {"backend": spec, "model": model, "items": len(rows),
                "right": round(sum(r["right"] for r in rows) / len(rows), 3),
                "wall_s": round(time.perf_counter() - started, 1), "replies": rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="openvino,openvino-int8,transformers")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory-use.json")
    args = parser.parse_args()
    items = [json.loads(line) for line in args.set.read_text().splitlines() if line.strip()]
    runs = [await run_backend(spec, args.model, items, args.max_new_tokens) for spec in args.backends.split(",")]
    for run in runs:
        print(f"{run['backend']:16} right {run['right']:.3f} of {run['items']}  ({run['wall_s']} s)")
    result = {"set": args.set.name, "runs": runs,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
