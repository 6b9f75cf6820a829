"""Several processes on one PostgreSQL (state, queue and pgvector): a bot that only queues (WRITEBACK_WORKER=false)
and two `memorybot worker` processes that learn. Every exchange is learned exactly once; a worker killed
(`SIGKILL`) in the middle of an extraction has its exchange taken over by the other once its lease runs out, and
an idle worker learns what another process queues later.

The model is an OpenAI-compatible stand-in (tests/fakes/openai_server.py) answering each extraction with a fact
made from the message, so a fact learned twice or lost shows; the first extraction it is asked for never gets an
answer, so the worker that asked is caught mid-exchange."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from bot.app import MemoryBot
from bot.database import BotDatabase
from tests.bot.helpers import RecordingReply, message
from tests.conftest import REPO
from tests.fakes.model import ScriptedBackend
from tests.fakes.openai_server import FakeModelServer
from tests.servers.processes import stop_all

USERS = ("dana", "sam", "kim")
EXCHANGES = 12
LOCKER = re.compile(r"locker number is (\d+)")


class FactPerMessage(FakeModelServer):
    """Extraction answers `The user's locker number is N.` for the message naming N; the first extraction
    request hangs (its worker is killed meanwhile). `asked[N]` counts extractions of message N."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: dict[str, int] = {}
        self.held = asyncio.Event()  # the first extraction request arrived
        self.release = asyncio.Event()  # its worker is dead: the handler may end

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "response_format" in body:
            numbers = LOCKER.findall(json.dumps(body["messages"][-1]))
            number = numbers[-1] if numbers else "?"
            self.asked[number] = self.asked.get(number, 0) + 1
            if not self.held.is_set():
                self.held.set()
                await self.release.wait()  # not answered while the worker asking is alive
            self.facts = [f"The user's locker number is {number}."]
        return await self._answer(request, body)


def worker_env(tmp_path: Path, n: int, url: str, model_url: str) -> dict[str, str]:
    return {**os.environ, "DATA_DIR": str(tmp_path / f"worker{n}"), "HF_HUB_OFFLINE": "1", "DATABASE_URL": url,
            "VECTOR_STORE": "pgvector", "PGVECTOR_URL": url, "MODEL_BACKEND": "openai", "OPENAI_BASE_URL": model_url,
            "EMBEDDER_BACKEND": "sentence_transformers", "WRITEBACK_QUIET_SECONDS": "0",
            "WRITEBACK_LEASE_SECONDS": "4", "LOG_LEVEL": "INFO"}


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_two_workers_learn_every_exchange_once_and_take_over_a_killed_ones(make_settings, postgres, tmp_path):
    url = postgres.new_database()
    shared = {"database_url": url, "vector_store": "pgvector", "pgvector_url": url}
    async with MemoryBot(make_settings(writeback_worker=False, **shared), backend=ScriptedBackend("ok")) as bot:
        for n in range(EXCHANGES):
            user = USERS[n % len(USERS)]
            await bot.handle(message(f"My locker number is {100 + n}.", user=user, message_id=f"m{n}"),
                             RecordingReply())
        assert await bot.db.pending_count() == EXCHANGES  # queued, not learned: this bot has no worker

    state = BotDatabase(tmp_path / "unused.sqlite3", url)
    await state.open()
    log = (tmp_path / "workers.log").open("w")
    async with FactPerMessage() as model:
        workers = [subprocess.Popen([sys.executable, "-m", "adapters.cli", "--env-file", "/dev/null", "worker"],
                                    cwd=REPO, env=worker_env(tmp_path, n, url, model.base_url),
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)
                   for n in range(2)]
        try:
            await asyncio.wait_for(model.held.wait(), 120)
            [held] = model.asked
            [(claimed_by,)] = await state.sql.fetchall("SELECT claimed_by FROM pending_exchanges WHERE message_id = ?",
                                                       (f"m{int(held) - 100}",))
            killed = next(w for w in workers if f":{w.pid}:" in claimed_by)
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            model.release.set()

            async def drained() -> bool:
                return await state.pending_count() == 0

            await wait_for(drained, 120, "the queue was never drained")
            # idle workers notice what another process queues later
            async with MemoryBot(make_settings(writeback_worker=False, **shared), backend=ScriptedBackend("ok")) as bot:
                await bot.handle(message(f"My locker number is {100 + EXCHANGES}.", user=USERS[0],
                                         message_id="late"), RecordingReply())
            await wait_for(drained, 60, "an exchange queued later was never learned")
        finally:
            stop_all(workers)
            await state.close()
        survivor = next(w for w in workers if w is not killed)
        log.close()
        assert survivor.returncode == 0, (tmp_path / "workers.log").read_text()[-3000:]
        asked = model.asked

    assert sorted(asked) == [str(100 + n) for n in range(EXCHANGES + 1)]
    assert sorted(asked.values()) == [1] * EXCHANGES + [2]  # the killed one's was asked again, once
    async with MemoryBot(make_settings(writeback_worker=False, **shared), backend=ScriptedBackend("ok")) as bot:
        for i, user in enumerate(USERS):
            records = (await bot.memories.controls.list(message("x", user=user).user, page_size=100)).records
            facts = sorted(r.text for r in records if "locker number is" in r.text and r.kind == "fact")
            numbers = [*range(i, EXCHANGES, len(USERS)), *([EXCHANGES] if i == 0 else [])]
            wanted = sorted(f"The user's locker number is {100 + n}." for n in numbers)
            assert facts == wanted, user  # each exchange learned once, for its own user only
