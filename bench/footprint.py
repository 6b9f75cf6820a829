"""Peak resident memory of the whole bot with one backend: start, answer, learn, stop, in a fresh process.

    .venv/bin/python bench/footprint.py [--backend openvino|transformers|llama_cpp] [--weights int4|int8]
                                        [--model qwen2.5-coder-0.5b] [--embedder sentence_transformers|llama_cpp]

A fresh data folder (the prepared models, the GGUF embedder's copy too, are linked from the test cache, so
nothing is converted in the measured run after the first), one
message with a fact, its reply and its write-back (extraction + store), then the process's peak RSS (and its
RSS at that point). Run each
backend in its own process: peak RSS never goes down. Prints and appends to bench/results/footprint.json.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.app import MemoryBot  # noqa: E402
from bot.message import IncomingMessage  # noqa: E402
from bot.settings import load_settings  # noqa: E402

MODEL_CACHE = REPO / ".cache" / "test-data" / "models"


def rss_mb() -> float:
    """The process's peak resident size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """The process's resident size now (Linux), 0 where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0.0
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


class Reply:
    def __init__(self) -> None:
        self.text = ""

    async def send(self, text: str) -> None:
        self.text += text

    async def stream(self, deltas) -> str:
        async for delta in deltas:
            self.text += delta
        return self.text

    def typing(self):
        return nullcontext()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="openvino", choices=["openvino", "transformers", "llama_cpp"])
    parser.add_argument("--weights", default="int8", choices=["int4", "int8"], help="OPENVINO_WEIGHTS")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--embedder", default="", help="EMBEDDER_BACKEND; empty follows the backend")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "footprint.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        if MODEL_CACHE.is_dir():
            (data / "models").symlink_to(MODEL_CACHE, target_is_directory=True)
        settings = load_settings(env_file=None, data_dir=data, model=args.model, model_backend=args.backend,
                                 openvino_weights=args.weights, embedder_backend=args.embedder,
                                 writeback_quiet_seconds=0)
        started = time.perf_counter()
        async with MemoryBot(settings) as bot:
            loaded_s = time.perf_counter() - started
            after_load = rss_mb()
            msg = IncomingMessage(platform="bench", workspace="local", channel_id="c", user_id="u",
                                  user_name="Alex", text="I just adopted a beagle called Max. Any tips?",
                                  message_id="m1")
            reply = Reply()
            await bot.handle(msg, reply)
            await bot.writeback.drain()
            learned = await bot.store.list(msg.user.key)
            at_end = current_rss_mb()
    backend = f"openvino-{args.weights}" if args.backend == "openvino" else args.backend
    row = {"backend": backend, "model": args.model, "embedder": settings.embedder,
           "torch_imported": "torch" in sys.modules, "load_s": round(loaded_s, 1),
           "rss_after_load_mb": round(after_load), "peak_rss_mb": round(rss_mb()), "rss_at_end_mb": round(at_end),
           "reply_chars": len(reply.text), "memories_learned": len(learned)}
    print(json.dumps(row))
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    key = ("backend", "model", "embedder")
    rows = [r for r in rows if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)] + [row]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
