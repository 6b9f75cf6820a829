"""Learning throughput of 1, 2 and 3 `memorybot worker` processes sharing one queue in PostgreSQL (issue 18).

    .venv/bin/python bench/scale_workers.py [--processes 1,2,3] [--exchanges 240] [--users 30]
        [--out bench/results/scale-workers.json]

The store and queue side of scaling out (bench/scale.py measures recall): the model is an OpenAI-compatible
stand-in that answers every extraction at once with one fact made from the message, so what is measured is the
queue, the claims, the locks, the embedder and the store. For each process count: a new database on a throwaway
PostgreSQL + pgvector (tests/servers/postgres.py) holding the memories and the bot's state, the workers started
and idle, then `--exchanges` exchanges of `--users` users queued at once; the time until the queue is empty
gives exchanges learned per minute. Each worker embeds with one thread (MODEL_THREADS=1) with OpenVINO (what
`MODEL_BACKEND=openai` picks), exported once beforehand into a folder every worker shares. The CPU time the
workers, the PostgreSQL server and this process (the stand-in model's answers, the queueing) spend per exchange
is measured too: divided into the machine's cores it gives the most exchanges per minute the machine can learn
however many workers share the queue.

Checked every run: each exchange's fact stored once for its own user (none lost, none twice) and each extraction
asked for once. Prints a table, writes JSON (`--out`) and a PNG of throughput against processes beside it; peak
resident memory of each worker (VmHWM) and of this process. BENCH_LOG_LEVEL=INFO and BENCH_KEEP=DIR keep the
workers' logs (in DIR) for a look at where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from bot.database import BotDatabase  # noqa: E402
from bot.exchange import QueuedExchange  # noqa: E402
from memory.config import COLLECTION, EMBEDDING_DIMS, bundled_embedder_path  # noqa: E402
from memory.records import Source  # noqa: E402
from tests.fakes.openai_server import FakeModelServer  # noqa: E402
from tests.servers.postgres import PostgresServer, postgres_server  # noqa: E402
from tests.servers.processes import stop_all  # noqa: E402

NUMBER = re.compile(r"order number is (\d+)")


class InstantModel(FakeModelServer):
    """Answers each extraction at once with `The user's order number is N.` for the message naming N."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: dict[str, int] = {}

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        numbers = NUMBER.findall(json.dumps(body["messages"][-1]))
        number = numbers[-1] if numbers else "?"
        self.asked[number] = self.asked.get(number, 0) + 1
        self.facts = [f"The user's order number is {number}."]
        return await self._answer(request, body)


def exchange(n: int, users: int) -> tuple[str, QueuedExchange]:
    user = f"u{n % users}"
    source = Source(platform="slack", workspace="T1", channel="C1", message_id=f"m{n}", link="",
                    time="2026-12-01T10:00:00+00:00", origin="extracted", private=False)
    text = f"Hello again. My order number is {1000 + n}, and it should arrive on Friday at the office."
    return f"slack:T1:{user}", QueuedExchange(text=text, reply="Noted!", user_name=user, source=source)


def prepare_embedder(models: Path) -> None:
    """Export the default embedder once into `models`, which every worker's DATA_DIR/models links to."""
    from memory.openvino_embedder import OpenVinoEmbedding

    OpenVinoEmbedding(Path(bundled_embedder_path()), models, threads=1, dims=EMBEDDING_DIMS).close()


def worker_env(data_dir: Path, url: str, model_url: str) -> dict[str, str]:
    return {**os.environ, "DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "DATABASE_URL": url,
            "VECTOR_STORE": "pgvector", "PGVECTOR_URL": url, "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model_url,
            "MODEL_THREADS": "1", "WRITEBACK_QUIET_SECONDS": "0",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, with that of their children (reaped ones included)."""
    import psutil

    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for one in [process, *process.children(recursive=True)]:
            try:
                times = one.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_pid(server: PostgresServer) -> int:
    """The postmaster of `server` (its backends are its children)."""
    import psutil

    return next(p.pid for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "postgres" and str(server.port) in (p.info["cmdline"] or []))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(server: PostgresServer, processes: int, exchanges: int, users: int, models: Path,
              work: Path) -> dict[str, Any]:
    url = server.new_database()
    state = BotDatabase(work / "unused.sqlite3", url)
    await state.open()
    async with InstantModel() as model:
        workers = []
        for n in range(processes):
            data_dir = work / f"p{processes}-w{n}"
            data_dir.mkdir(parents=True)
            (data_dir / "models").symlink_to(models, target_is_directory=True)
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", "worker"], cwd=REPO,
                env=worker_env(data_dir, url, model.base_url), stdout=subprocess.DEVNULL,
                stderr=(data_dir / "worker.log").open("w")))
        try:
            await asyncio.sleep(2)
            # idle once each has opened the store (mem0 makes its table on first use: made here, at once)
            deadline = time.monotonic() + 180
            while not all((work / f"p{processes}-w{n}" / "memory").exists() for n in range(processes)):
                assert time.monotonic() < deadline, "workers did not start"
                if any(w.poll() is not None for w in workers):
                    logs = [(work / f"p{processes}-w{n}" / "worker.log").read_text()[-2000:] for n in range(processes)]
                    raise RuntimeError("a worker exited:\n" + "\n".join(logs))
                await asyncio.sleep(0.5)
            await asyncio.sleep(8)  # loading the embedder and connecting
            queued = [exchange(n, users) for n in range(exchanges)]
            worker_pids, database_pid = [w.pid for w in workers], postgres_pid(server)
            cpu_before = cpu_seconds(worker_pids), cpu_seconds([database_pid]), own_cpu_seconds()
            started = time.perf_counter()
            for user_key, record in queued:
                await state.enqueue(user_key, record)
            while await state.pending_count():
                assert all(w.poll() is None for w in workers), "a worker exited"
                await asyncio.sleep(0.1)
            seconds = time.perf_counter() - started
            cpu = (cpu_seconds(worker_pids) - cpu_before[0], cpu_seconds([database_pid]) - cpu_before[1],
                   own_cpu_seconds() - cpu_before[2])
            rss = [peak_rss_mb(w.pid) for w in workers]
            if os.environ.get("BENCH_KEEP"):
                shutil.copytree(work, os.environ["BENCH_KEEP"], dirs_exist_ok=True, symlinks=True)
        finally:
            stop_all(workers, timeout=60)
        rows = await state.sql.fetchall(
            f"SELECT payload->>'user_id', payload->>'data' FROM {COLLECTION} WHERE payload->>'kind' = 'fact'")
        asked = dict(model.asked)
    await state.close()
    wanted = sorted((key, f"The user's order number is {1000 + n}.") for n, (key, _) in enumerate(queued))
    learned = sorted((str(u), str(d)) for u, d in rows)
    return {
        "processes": processes, "exchanges": exchanges, "users": users, "seconds": round(seconds, 2),
        "per_minute": round(exchanges / seconds * 60, 1),
        "lost": len(set(wanted) - set(learned)), "twice": len(learned) - len(set(learned)),
        "foreign": len(set(learned) - set(wanted)),
        "extractions_repeated": sum(count - 1 for count in asked.values()),
        "cpu_ms_per_exchange": {"workers": round(cpu[0] / exchanges * 1000, 1),
                                "postgres": round(cpu[1] / exchanges * 1000, 1),
                                "model_and_queueing": round(cpu[2] / exchanges * 1000, 1)},
        "core_bound_per_minute": round((os.cpu_count() or 1) * 60 / (sum(cpu) / exchanges), 1),
        "worker_peak_rss_mb": [round(r, 1) for r in rss],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    counts = [r["processes"] for r in results]
    ax.plot(counts, [r["per_minute"] for r in results], "o-", label="measured")
    ax.plot(counts, [results[0]["per_minute"] * c for c in counts], ":", color="grey", label="linear")
    ax.set_xlabel("worker processes")
    ax.set_ylabel("exchanges learned per minute")
    ax.set_xticks(counts)
    ax.legend()
    ax.set_title("Learning throughput, one shared queue")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument("--exchanges", type=int, default=240)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale-workers.json")
    args = parser.parse_args()
    counts = [int(c) for c in args.processes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="memorybot-scale-workers-") as tmp, postgres_server() as server:
        work = Path(tmp)
        models = work / "models"
        prepare_embedder(models)
        for processes in counts:
            result = await run(server, processes, args.exchanges, args.users, models, work)
            results.append(result)
            print(json.dumps(result), flush=True)
    base = results[0]["per_minute"]
    print(f"\n{'processes':>9} {'seconds':>8} {'per min':>8} {'speed-up':>8} {'lost':>5} {'twice':>5} "
          f"{'asked again':>11} {'CPU ms/exchange (workers+pg+model)':>34} {'core bound/min':>14} "
          f"{'worker peak RSS MB':>20}")
    for r in results:
        print(f"{r['processes']:>9} {r['seconds']:>8} {r['per_minute']:>8} {r['per_minute'] / base:>8.2f} "
              f"{r['lost']:>5} {r['twice']:>5} {r['extractions_repeated']:>11} "
              f"{r['cpu_ms_per_exchange']['workers']:>14} + {r['cpu_ms_per_exchange']['postgres']:>6} + "
              f"{r['cpu_ms_per_exchange']['model_and_queueing']:>8} "
              f"{r['core_bound_per_minute']:>14} "
              f"{', '.join(map(str, r['worker_peak_rss_mb'])):>20}")
    report = {"cpu_count": os.cpu_count(), "results": results,
              "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    asyncio.run(main())
